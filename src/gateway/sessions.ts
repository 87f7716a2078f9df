// Who is connected now. Each running gateway keeps its sessions in memory and writes them, at most
// once a second and only when they changed, to <dir>/run/gateway-<pid>.json (0600, removed at
// close), so `fleetpki gateway sessions` can list every gateway's sessions on this fleet directory.
import { randomBytes } from "node:crypto";
import { closeSync, openSync, readdirSync, readFileSync, renameSync, rmSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { ensurePrivateDir } from "../keys/files.js";

export interface SessionInfo {
  /** The MQTT client id. */
  id: string;
  kind: "device" | "service" | "operator";
  /** Device id, service or operator name. */
  name: string;
  /** Peer address and port. */
  address: string;
  since: string;
  messagesIn: number;
  messagesOut: number;
  /** Topic filters subscribed to now. */
  subscriptions: number;
}

export interface GatewaySessionsFile {
  pid: number;
  /** When this file was written. */
  at: string;
  sessions: SessionInfo[];
}

export const RUN_DIR = "run";
const FILE = /^gateway-(\d+)\.json$/;

export const sessionsFile = (dir: string, pid = process.pid): string => join(dir, RUN_DIR, `gateway-${pid}.json`);

/** Writes the sessions file of this process when marked changed, at most every intervalMs. */
export class SessionsFileWriter {
  private changed = true;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly dir: string,
    private readonly list: () => SessionInfo[],
    private readonly onError: (e: unknown) => void = () => {},
    private readonly now: () => Date = () => new Date(),
  ) {}

  start(intervalMs = 1000): void {
    this.write();
    this.timer = setInterval(() => this.write(), intervalMs);
    this.timer.unref();
  }

  markChanged(): void {
    this.changed = true;
  }

  private write(): void {
    if (!this.changed) return;
    this.changed = false;
    try {
      ensurePrivateDir(join(this.dir, RUN_DIR));
      const file: GatewaySessionsFile = { pid: process.pid, at: this.now().toISOString(), sessions: this.list() };
      replaceFile(sessionsFile(this.dir), JSON.stringify(file) + "\n");
    } catch (e) {
      this.changed = true;
      this.onError(e);
    }
  }

  close(): void {
    clearInterval(this.timer);
    rmSync(sessionsFile(this.dir), { force: true });
  }
}

/**
 * Replaces `path` (0600) by a rename, so a reader sees the old or the new list, never half of one.
 * No fsync (writeFileAtomic's two would block the event loop every second): the file describes
 * this running process only and is removed when it stops, so losing it in a crash loses nothing.
 */
function replaceFile(path: string, data: string): void {
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, data);
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, under another user.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The sessions of every gateway running on this fleet directory (files of dead processes skipped). */
export function listGatewaySessions(dir: string): GatewaySessionsFile[] {
  let names: string[];
  try {
    names = readdirSync(join(dir, RUN_DIR));
  } catch {
    return [];
  }
  const files: GatewaySessionsFile[] = [];
  for (const name of names.sort()) {
    const pid = Number(FILE.exec(name)?.[1]);
    if (!pid || !alive(pid)) continue;
    try {
      const file = JSON.parse(readFileSync(join(dir, RUN_DIR, name), "utf8")) as GatewaySessionsFile;
      if (Array.isArray(file.sessions)) files.push(file);
    } catch {
      // Being replaced this very moment, or not ours: skip it.
    }
  }
  return files;
}
