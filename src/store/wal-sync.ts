// Group sync for a WAL-mode SQLite connection. With `synchronous = NORMAL` a commit only
// write()s its frames to the WAL; it is consistent after a crash but not yet durable after a
// power loss. Calling fdatasync on the WAL file afterwards makes every frame written before the
// call durable, so "commit, then sync" gives what `synchronous = FULL` gives, except that the
// sync runs on libuv's thread pool instead of blocking the event loop, and one sync serves every
// commit made while the previous one was running.
import { closeSync, fdatasync, openSync } from "node:fs";
import { dirname } from "node:path";
import { fsyncDir } from "../keys/files.js";
import { StoreError } from "./errors.js";

interface Waiters {
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: Error) => void;
}

function waiters(): Waiters {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** fdatasync's shape; a seam so tests can hold a sync in flight or make it fail. */
export type SyncFunction = (fd: number, callback: (err: NodeJS.ErrnoException | null) => void) => void;

export class WalSync {
  private readonly fd: number;
  /** Callers of the sync in progress; undefined when none runs. */
  private running: Waiters | undefined;
  /** Callers who came while a sync ran: their commits may be newer than it, so they get the next one. */
  private next: Waiters | undefined;
  /**
   * After a failed fdatasync the kernel may have dropped the dirty pages, and a later sync can
   * succeed without them. Nothing may be called durable after that: the failure sticks.
   */
  private failed: StoreError | undefined;
  private closed = false;

  /**
   * `walPath`: the connection's `-wal` file. SQLite deletes it only when the last connection to
   * the database closes, so it stays the same file while the caller's connection is open.
   */
  constructor(
    private readonly walPath: string,
    private readonly syncFile: SyncFunction = fdatasync,
  ) {
    try {
      this.fd = openSync(walPath, "r");
      // The WAL's directory entry must survive a power loss too.
      fsyncDir(dirname(walPath));
    } catch (e) {
      throw new StoreError(`cannot open the write-ahead log ${walPath} for syncing: ${(e as Error).message}`);
    }
  }

  /** Resolves once everything written to the WAL before this call is on disk. */
  sync(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.closed) return Promise.reject(new StoreError("the database is closed"));
    if (!this.running) {
      this.running = waiters();
      this.start();
      return this.running.promise;
    }
    this.next ??= waiters();
    return this.next.promise;
  }

  private start(): void {
    this.syncFile(this.fd, (err) => {
      const done = this.running!;
      if (err) {
        this.failed = new StoreError(
          `syncing the write-ahead log ${this.walPath} failed (${err.message}); recent commits may not be on disk, restart the server`,
        );
        done.reject(this.failed);
        this.next?.reject(this.failed);
        this.running = this.next = undefined;
        return;
      }
      done.resolve();
      // Started here, in the same callback, so nobody can join a sync that began before their commit.
      this.running = this.next;
      this.next = undefined;
      if (this.running) this.start();
    });
  }

  /** After the last sync the caller waits for; pending syncs still complete. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([this.running?.promise, this.next?.promise]);
    closeSync(this.fd);
  }
}
