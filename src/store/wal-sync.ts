// Group sync for a WAL-mode SQLite connection. With `synchronous = NORMAL` a commit only
// write()s its frames to the WAL; it is consistent after a crash but not yet durable after a
// power loss. Calling fdatasync on the WAL file afterwards makes every frame written before the
// call durable, so "commit, then sync" gives what `synchronous = FULL` gives, except that the
// sync runs on libuv's thread pool instead of blocking the event loop, and one sync serves every
// commit made while the previous one was running.
import { closeSync, fdatasync, openSync } from "node:fs";
import { StoreError } from "./errors.js";

export class WalSync {
  private readonly fd: number;
  /** The sync in progress, if any. */
  private running: Promise<void> | undefined;
  /** The sync that starts when the running one ends, for commits made after it started. */
  private queued: Promise<void> | undefined;
  private closed = false;

  /**
   * `walPath`: the connection's `-wal` file. SQLite deletes it only when the last connection to
   * the database closes, so it stays the same file while the caller's connection is open.
   */
  constructor(private readonly walPath: string) {
    try {
      this.fd = openSync(walPath, "r");
    } catch (e) {
      throw new StoreError(`cannot open the write-ahead log ${walPath} for syncing: ${(e as Error).message}`);
    }
  }

  /** Resolves once everything written to the WAL before this call is on disk. */
  sync(): Promise<void> {
    if (this.closed) return Promise.reject(new StoreError("the database is closed"));
    if (!this.running) return (this.running = this.start());
    // The running sync may have begun before the caller's commit: wait for the next one.
    this.queued ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return (this.running ??= this.start());
      });
    return this.queued;
  }

  private start(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      fdatasync(this.fd, (err) => {
        this.running = undefined;
        if (err) reject(new StoreError(`syncing the write-ahead log ${this.walPath} failed: ${err.message}`));
        else resolve();
      });
    });
  }

  /** After the last sync the caller waits for; pending syncs still complete. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([this.running, this.queued]);
    closeSync(this.fd);
  }
}
