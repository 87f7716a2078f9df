// The agent directory: key.pem (0600), cert.pem, chain.pem, ca.pem, agent.json, in a 0700 dir.
//
// Crash safety. A renewal replaces key.pem and cert.pem (and chain.pem) together; no single
// rename can do that, so commitState() uses a tiny redo log:
//
//   1. stage: every new file is written as <name>.new through writeFileAtomic (temporary file,
//      fsync, rename, fsync of the directory), so a .new file is either complete or absent;
//   2. commit point: commit.json, listing the staged names, is written the same way;
//   3. apply: each <name>.new is renamed over <name> (key.pem first, then cert.pem, ...), and
//      the directory is fsynced;
//   4. commit.json is removed (and the directory fsynced).
//
// recoverState() runs before any use of the directory (and at the start of every commit):
// with commit.json present it redoes step 3 (renames whose source is gone already happened)
// and step 4, so the new set wins; without it, any *.new or temporary files are leftovers of
// an unfinished step 1 and are deleted, so the old set, never touched, stays. Either way the
// directory holds a matching key/cert pair: the old one or the new one, never a mix. (A reader
// outside the agent can see the two renames of step 3 a few microseconds apart; it should
// retry if key and certificate do not match, or react to the --on-renew hook.)
import { X509Certificate, createPrivateKey, randomBytes, type KeyObject } from "node:crypto";
import { existsSync, linkSync, readFileSync, readdirSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ensurePrivateDir, fsyncDir, writeFileAtomic } from "../keys/files.js";
import { parseCertificate, type ParsedCertificate } from "../x509/certificate.js";
import { PemError, parsePemBlocks } from "../x509/pem.js";
import { AgentError } from "./errors.js";
import { pinnedRootFrom, type PinnedRoot } from "./client.js";
import { parseFingerprint } from "./fingerprint.js";
import { chainToRoot, deviceIdentityOf, sameKey } from "./verify.js";

export const AGENT_FILES = {
  key: "key.pem",
  cert: "cert.pem",
  chain: "chain.pem",
  ca: "ca.pem",
  config: "agent.json",
} as const;
export type StateFile = keyof typeof AGENT_FILES;

/** Apply order of step 3. */
const APPLY_ORDER: readonly StateFile[] = ["key", "cert", "chain", "ca", "config"];
const MODES: Record<StateFile, number> = { key: 0o600, cert: 0o644, chain: 0o644, ca: 0o644, config: 0o644 };

export const COMMIT_MARKER = "commit.json";
export const LOCK_FILE = "agent.lock";
const STAGED_SUFFIX = ".new";

/** agent.json */
export interface AgentConfig {
  server: string;
  root_fingerprint: string;
  device_id: string;
}

function unlinkIfPresent(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

/** True when the directory holds an enrollment (or a committed-but-unapplied one). */
export function isEnrolled(dir: string): boolean {
  return existsSync(join(dir, AGENT_FILES.config)) || existsSync(join(dir, COMMIT_MARKER));
}

function markedFiles(dir: string): string[] {
  const known = APPLY_ORDER.map((f) => AGENT_FILES[f]);
  try {
    const parsed = JSON.parse(readFileSync(join(dir, COMMIT_MARKER), "utf8")) as { files?: unknown };
    if (Array.isArray(parsed.files)) return known.filter((name) => (parsed.files as unknown[]).includes(name));
  } catch {
    // unreadable marker (cannot happen with atomic writes): apply whatever is staged
  }
  return known;
}

export type Recovery = "clean" | "rolled-forward" | "rolled-back";

/** Finishes or discards an interrupted commit (see the top of this file). */
export function recoverState(dir: string): Recovery {
  if (!existsSync(dir)) return "clean";
  if (existsSync(join(dir, COMMIT_MARKER))) {
    for (const name of markedFiles(dir)) {
      try {
        renameSync(join(dir, name + STAGED_SUFFIX), join(dir, name));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e; // applied before the crash
      }
    }
    fsyncDir(dir);
    unlinkSync(join(dir, COMMIT_MARKER));
    fsyncDir(dir);
    return "rolled-forward";
  }
  let removed = false;
  for (const entry of readdirSync(dir)) {
    const staged = entry.endsWith(STAGED_SUFFIX);
    const temporary = /^\..+\.[0-9a-f]{12}\.tmp$/.test(entry);
    if (staged || temporary) {
      unlinkIfPresent(join(dir, entry));
      removed = true;
    }
  }
  if (removed) fsyncDir(dir);
  return removed ? "rolled-back" : "clean";
}

export interface CommitOptions {
  /** Test hook: called after each step; throwing there simulates a crash at that point. */
  onStep?: (step: string) => void;
}

/** Replaces the given files as one unit (see the top of this file). Creates the dir 0700. */
export function commitState(dir: string, files: Partial<Record<StateFile, string>>, options: CommitOptions = {}): void {
  const step = options.onStep ?? (() => {});
  ensurePrivateDir(dir);
  recoverState(dir);
  const names = APPLY_ORDER.filter((f) => files[f] !== undefined);
  for (const f of names) {
    writeFileAtomic(join(dir, AGENT_FILES[f] + STAGED_SUFFIX), files[f]!, MODES[f]);
    step(`staged ${AGENT_FILES[f]}`);
  }
  writeFileAtomic(join(dir, COMMIT_MARKER), JSON.stringify({ files: names.map((f) => AGENT_FILES[f]) }) + "\n", 0o600);
  step("committed");
  for (const f of names) {
    renameSync(join(dir, AGENT_FILES[f] + STAGED_SUFFIX), join(dir, AGENT_FILES[f]));
    step(`applied ${AGENT_FILES[f]}`);
  }
  fsyncDir(dir);
  unlinkSync(join(dir, COMMIT_MARKER));
  fsyncDir(dir);
  step("done");
}

// ---- the key of a renewal in flight ---------------------------------------------------------
//
// A certificate renews once: asked again, the server re-delivers that renewal to the same key
// and refuses any other (re-enroll-required). So the key of a renewal is made durable BEFORE the
// request is sent, reused by every retry of that renewal (over mTLS or after expiry), and
// removed only once the new certificate is committed (or a final refusal made it useless). The
// file is named after the serial it renews: a kept key for any other certificate is stale (its
// renewal was committed, or the directory was enrolled again) and is removed, never reused.

const RENEWAL_KEY = /^renewal-([0-9a-f]+)\.key\.pem$/;

/** renewal-<serial>.key.pem: the key of the renewal of certificate `serial` (lower-case hex). */
export function renewalKeyFile(serial: string): string {
  if (!/^[0-9a-f]+$/.test(serial)) throw new AgentError(`invalid certificate serial "${serial}"`);
  return `renewal-${serial}.key.pem`;
}

/** Keeps the renewal key durably: 0600, written atomically, the directory fsynced. */
export function keepRenewalKey(dir: string, serial: string, keyPem: string): string {
  const path = join(dir, renewalKeyFile(serial));
  writeFileAtomic(path, keyPem, 0o600);
  return path;
}

/** The PEM kept for renewing certificate `serial`, or undefined when there is none. */
export function readRenewalKey(dir: string, serial: string): string | undefined {
  try {
    return readFileSync(join(dir, renewalKeyFile(serial)), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new AgentError(`cannot read ${join(dir, renewalKeyFile(serial))}: ${(e as Error).message}`);
  }
}

/** Removes the kept renewal keys, except the one for serial `except`; returns the names removed. */
export function dropRenewalKeys(dir: string, options: { except?: string } = {}): string[] {
  if (!existsSync(dir)) return [];
  const removed: string[] = [];
  for (const entry of readdirSync(dir)) {
    const m = RENEWAL_KEY.exec(entry);
    if (!m || m[1] === options.except) continue;
    unlinkIfPresent(join(dir, entry));
    removed.push(entry);
  }
  if (removed.length > 0) fsyncDir(dir);
  return removed;
}

export interface AgentState {
  dir: string;
  config: AgentConfig;
  key: KeyObject;
  keyPem: string;
  certPem: string;
  chainPem: string;
  certificate: X509Certificate;
  parsed: ParsedCertificate;
  root: PinnedRoot;
  deviceId: string;
  spiffeId: string | undefined;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** An interrupted commit is waiting in the directory (only with `pending: true`). */
  commitPending: boolean;
}

function readText(dir: string, name: string, pending: boolean): string {
  const staged = join(dir, name + STAGED_SUFFIX);
  const path = pending && existsSync(staged) ? staged : join(dir, name);
  try {
    return readFileSync(path, "utf8");
  } catch {
    throw new AgentError(`cannot read ${path}${name === AGENT_FILES.config ? " (run `fleetpki agent enroll` first)" : ""}`);
  }
}

function certificatesIn(text: string, path: string): X509Certificate[] {
  try {
    return parsePemBlocks(text)
      .filter((b) => b.label === "CERTIFICATE")
      .map((b) => new X509Certificate(b.der));
  } catch (e) {
    if (e instanceof PemError) throw new AgentError(`${path}: ${e.message}`);
    throw new AgentError(`${path}: a certificate cannot be parsed`);
  }
}

export function parseConfig(text: string, path: string): AgentConfig {
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new AgentError(`${path} is not valid JSON`);
  }
  for (const field of ["server", "root_fingerprint", "device_id"] as const)
    if (typeof parsed?.[field] !== "string") throw new AgentError(`${path} has no "${field}"`);
  return {
    server: parsed.server as string,
    root_fingerprint: parseFingerprint(parsed.root_fingerprint as string),
    device_id: parsed.device_id as string,
  };
}

/**
 * Reads and cross-checks the directory: key matches certificate, certificate chains to the
 * pinned root, ca.pem is the pinned root. Read-only; call recoverState() first, or pass
 * `pending: true` to see what recovery would produce (for status while an agent runs).
 */
export function loadState(dirPath: string, options: { pending?: boolean } = {}): AgentState {
  const dir = resolve(dirPath);
  if (!existsSync(join(dir, AGENT_FILES.config)) && !existsSync(join(dir, COMMIT_MARKER)))
    throw new AgentError(`${dir} holds no agent enrollment (no ${AGENT_FILES.config}; run \`fleetpki agent enroll\` first)`);
  const pending = !!options.pending && existsSync(join(dir, COMMIT_MARKER));
  const config = parseConfig(readText(dir, AGENT_FILES.config, pending), join(dir, AGENT_FILES.config));
  const keyPem = readText(dir, AGENT_FILES.key, pending);
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    throw new AgentError(`${join(dir, AGENT_FILES.key)} is not a readable unencrypted private key`);
  }
  const certPem = readText(dir, AGENT_FILES.cert, pending);
  const leaf = certificatesIn(certPem, join(dir, AGENT_FILES.cert))[0];
  if (!leaf) throw new AgentError(`${join(dir, AGENT_FILES.cert)} holds no certificate`);
  const chainPem = readText(dir, AGENT_FILES.chain, pending);
  const chain = certificatesIn(chainPem, join(dir, AGENT_FILES.chain));
  const roots = certificatesIn(readText(dir, AGENT_FILES.ca, pending), join(dir, AGENT_FILES.ca));
  const rootCert = roots.find((c) => {
    try {
      pinnedRootFrom(Buffer.from(c.raw), config.root_fingerprint);
      return true;
    } catch {
      return false;
    }
  });
  if (!rootCert) throw new AgentError(`${join(dir, AGENT_FILES.ca)} does not hold the pinned root ${config.root_fingerprint}`);
  const root = pinnedRootFrom(Buffer.from(rootCert.raw), config.root_fingerprint);
  if (!sameKey(leaf.publicKey, key)) throw new AgentError(`${join(dir, AGENT_FILES.key)} does not match ${join(dir, AGENT_FILES.cert)}`);
  chainToRoot(leaf, chain, root.certificate);
  const parsed = parseCertificate(Buffer.from(leaf.raw));
  return {
    dir,
    config,
    key,
    keyPem,
    certPem,
    chainPem,
    certificate: leaf,
    parsed,
    root,
    deviceId: config.device_id,
    spiffeId: deviceIdentityOf(parsed)?.spiffeId,
    serial: parsed.serialHex,
    notBefore: parsed.notBefore,
    notAfter: parsed.notAfter,
    commitPending: pending,
  };
}

function bootId(): string | undefined {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return undefined;
  }
}

function holderAlive(text: string): { alive: boolean; pid?: number } {
  let holder: { pid?: unknown; boot?: unknown };
  try {
    holder = JSON.parse(text) as { pid?: unknown; boot?: unknown };
  } catch {
    return { alive: false };
  }
  if (typeof holder.pid !== "number") return { alive: false };
  const boot = bootId();
  if (typeof holder.boot === "string" && boot && holder.boot !== boot) return { alive: false, pid: holder.pid };
  try {
    process.kill(holder.pid, 0);
    return { alive: true, pid: holder.pid };
  } catch (e) {
    return { alive: (e as NodeJS.ErrnoException).code === "EPERM", pid: holder.pid };
  }
}

/**
 * One agent process per directory: agent.lock holds {pid, boot id}; a lock whose process is
 * gone (or from an earlier boot) is taken over. Returns the release function.
 */
export function lockAgentDir(dir: string): () => void {
  ensurePrivateDir(dir);
  const path = join(dir, LOCK_FILE);
  const mine = JSON.stringify({ pid: process.pid, boot: bootId() });
  for (let attempt = 0; attempt < 3; attempt++) {
    // Complete content first, then link(): the lock never exists half-written.
    const tmp = join(dir, `.${LOCK_FILE}.${randomBytes(6).toString("hex")}.tmp`);
    writeFileAtomic(tmp, mine, 0o600);
    try {
      try {
        linkSync(tmp, path);
      } catch (e) {
        // File systems without hard links: exclusive create, then write (a tiny window in
        // which a reader could see an empty lock, which counts as stale).
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP") throw e;
        writeFileSync(path, mine, { flag: "wx", mode: 0o600 });
      }
      unlinkSync(tmp);
      return () => {
        try {
          if (readFileSync(path, "utf8") === mine) unlinkSync(path);
        } catch {
          // already gone
        }
      };
    } catch (e) {
      unlinkSync(tmp);
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    let text = "";
    try {
      text = readFileSync(path, "utf8");
    } catch {
      continue; // released meanwhile
    }
    const holder = holderAlive(text);
    if (holder.alive) throw new AgentError(`another fleetpki agent (pid ${holder.pid}) is using ${dir}`);
    unlinkIfPresent(path);
  }
  throw new AgentError(`cannot lock ${dir}: ${join(dir, LOCK_FILE)} keeps changing`);
}
