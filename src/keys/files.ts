// Files that hold secrets or must never be seen half-written.
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync, chmodSync, existsSync, unlinkSync } from "node:fs";
import { dirname, join, basename } from "node:path";
import { randomBytes } from "node:crypto";

/** Creates the directory (and parents) and forces mode 0700 on the leaf directory. */
export function ensurePrivateDir(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  chmodSync(path, 0o700);
}

/**
 * Writes via a temporary file in the same directory, fsyncs it, then renames it into place,
 * so a reader (or a crash) sees the old content or the new, never a mix.
 */
export function writeFileAtomic(path: string, data: string | Buffer, mode = 0o644): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  const fd = openSync(tmp, "wx", mode);
  try {
    writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  chmodSync(tmp, mode); // the umask may have narrowed or the caller wants it exact
  renameSync(tmp, path);
  fsyncDir(dir);
}

/** Makes a rename or file creation in `dir` durable. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function writeSecretFile(path: string, data: string | Buffer): void {
  ensurePrivateDir(dirname(path));
  writeFileAtomic(path, data, 0o600);
}

export { existsSync };
