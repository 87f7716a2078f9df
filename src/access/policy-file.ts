// The policy file as a running server holds it: loaded at start (a missing or invalid file is an
// error then), reloaded when it changes. A file that turns invalid, or disappears, keeps the policy
// in force and is reported once; editors that save by rename are followed (the directory is watched).
import { readFileSync, statSync, watch, type FSWatcher } from "node:fs";
import { basename, dirname } from "node:path";
import { AccessPolicy, MAX_POLICY_BYTES, PolicyError } from "./policy.js";

/** How often the file's metadata is compared as well, for file systems where fs.watch says nothing. */
export const POLICY_POLL_MS = 1000;
/** fs.watch reports one save as several events: they are gathered for this long. */
const SETTLE_MS = 25;

export type ReloadResult =
  { outcome: "unchanged" } | { outcome: "reloaded"; policy: AccessPolicy } | { outcome: "invalid"; error: PolicyError };

function readPolicy(path: string): { text: string; signature: string } {
  let size: number;
  let signature: string;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new PolicyError(path, [{ line: 0, field: "", message: "is not a regular file" }]);
    size = st.size;
    signature = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
  } catch (e) {
    if (e instanceof PolicyError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new PolicyError(path, [
      {
        line: 0,
        field: "",
        message:
          code === "ENOENT"
            ? "not found (`fleetpki policy init` writes the default policy into a fleet directory; docs/policy.md)"
            : `cannot be read (${code})`,
      },
    ]);
  }
  if (size > MAX_POLICY_BYTES) throw new PolicyError(path, [{ line: 0, field: "", message: `larger than ${MAX_POLICY_BYTES} bytes` }]);
  try {
    return { text: readFileSync(path, "utf8"), signature };
  } catch (e) {
    throw new PolicyError(path, [{ line: 0, field: "", message: `cannot be read (${(e as NodeJS.ErrnoException).code})` }]);
  }
}

/** Reads and validates a policy file once (for `policy check` and `policy test`). */
export function loadPolicyFile(path: string): AccessPolicy {
  return AccessPolicy.parse(readPolicy(path).text, path);
}

export class PolicyFile {
  private policy: AccessPolicy;
  private versionNumber = 1;
  private text: string;
  private signature: string;
  /** The last refused content (or "missing"): reported once, not on every poll. */
  private refused: string | undefined;
  private watcher: FSWatcher | undefined;
  private readonly poller: NodeJS.Timeout;
  private settle: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    readonly path: string,
    first: { text: string; signature: string; policy: AccessPolicy },
    private readonly onInvalid: ((e: PolicyError) => void) | undefined,
    private readonly onReload: ((p: AccessPolicy) => void) | undefined,
  ) {
    this.policy = first.policy;
    this.text = first.text;
    this.signature = first.signature;
    try {
      // The directory, not the file: a rename over the file replaces the inode a file watch would follow.
      this.watcher = watch(dirname(path), { persistent: false }, (_event, name) => {
        if (name === null || name.toString() === basename(path)) this.soon();
      });
      this.watcher.on("error", () => this.watcher?.close());
      this.watcher.unref();
    } catch {
      this.watcher = undefined; // the poll still sees changes
    }
    this.poller = setInterval(() => this.poll(), POLICY_POLL_MS);
    this.poller.unref();
  }

  /** Loads and validates the file; a missing or invalid file is a PolicyError naming it. */
  static async open(path: string, onInvalid?: (e: PolicyError) => void, onReload?: (p: AccessPolicy) => void): Promise<PolicyFile> {
    const read = readPolicy(path);
    return new PolicyFile(path, { ...read, policy: AccessPolicy.parse(read.text, path) }, onInvalid, onReload);
  }

  /** The policy in force. */
  get current(): AccessPolicy {
    return this.policy;
  }

  /** 1 at open, +1 for every change that was taken (grants compiled for an older version are stale). */
  get version(): number {
    return this.versionNumber;
  }

  /** Reads the file now: a valid change replaces the policy, an invalid one is reported and ignored. */
  reload(): ReloadResult {
    if (this.closed) return { outcome: "unchanged" };
    let read: { text: string; signature: string };
    try {
      read = readPolicy(this.path);
    } catch (e) {
      this.signature = "missing";
      return this.refuse("missing", e as PolicyError);
    }
    this.signature = read.signature;
    if (read.text === this.text) {
      this.refused = undefined;
      return { outcome: "unchanged" };
    }
    let policy: AccessPolicy;
    try {
      policy = AccessPolicy.parse(read.text, this.path);
    } catch (e) {
      if (!(e instanceof PolicyError)) throw e;
      return this.refuse(read.text, e);
    }
    this.policy = policy;
    this.text = read.text;
    this.refused = undefined;
    this.versionNumber++;
    this.onReload?.(policy);
    return { outcome: "reloaded", policy };
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    clearInterval(this.poller);
    clearTimeout(this.settle);
  }

  private refuse(content: string, error: PolicyError): ReloadResult {
    if (this.refused !== content) {
      this.refused = content;
      this.onInvalid?.(error);
    }
    return { outcome: "invalid", error };
  }

  private soon(): void {
    if (this.closed || this.settle) return;
    this.settle = setTimeout(() => {
      this.settle = undefined;
      this.reload();
    }, SETTLE_MS);
    this.settle.unref();
  }

  private poll(): void {
    let signature: string;
    try {
      const st = statSync(this.path);
      signature = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    } catch {
      signature = "missing";
    }
    if (signature !== this.signature) this.reload();
  }
}
