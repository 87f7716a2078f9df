// A server in a child process for the benchmarks: started, its port read from its output, its
// CPU read from /proc, stopped. Output goes to a file, not a pipe: `openssl ocsp` writes a line
// per request, which the load generator would otherwise have to read.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, fstatSync, openSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { BenchFailure } from "./lib.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");

const CLK_TCK = (() => {
  const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const n = Number(r.stdout?.trim());
  return r.status === 0 && n > 0 ? n : 100;
})();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The last `bytes` of a file, as text ("" if it cannot be read). */
function tail(path: string, bytes = 16_000): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    const size = fstatSync(fd).size;
    const length = Math.min(size, bytes);
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, size - length);
    return buf.toString("utf8");
  } catch {
    return "";
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export class ServerProcess {
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exited: Promise<void>;

  private constructor(
    readonly name: string,
    readonly proc: ChildProcess,
    readonly logFile: string,
  ) {
    this.exited = new Promise((resolveExit) => {
      proc.once("exit", (code, signal) => {
        this.exit = { code, signal };
        resolveExit();
      });
      proc.once("error", (e) => {
        this.exit ??= { code: -1, signal: null };
        writeFileSync(logFile, `\nspawn failed: ${e.message}\n`, { flag: "a" });
        resolveExit();
      });
    });
    LIVE.add(this);
  }

  static async start(
    name: string,
    command: string,
    args: readonly string[],
    options: { env?: Record<string, string>; logFile: string; port: RegExp },
  ): Promise<{ server: ServerProcess; port: number }> {
    const fd = openSync(options.logFile, "w");
    let proc: ChildProcess;
    try {
      proc = spawn(command, args, { cwd: REPO, env: { ...process.env, ...options.env }, stdio: ["pipe", fd, fd] });
    } finally {
      closeSync(fd);
    }
    proc.stdin?.on("error", () => {});
    const server = new ServerProcess(name, proc, options.logFile);
    const deadline = Date.now() + 60_000;
    for (;;) {
      const m = options.port.exec(server.log);
      if (m) return { server, port: Number(m[1]) };
      if (server.exit) throw new BenchFailure(`${name} exited (${server.exitText}) before listening; its output:\n${server.log}`);
      if (Date.now() > deadline) throw new BenchFailure(`${name} did not report its port within 60 s; its output:\n${server.log}`);
      await sleep(50);
    }
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get log(): string {
    return tail(this.logFile);
  }

  get exitText(): string {
    return this.exit ? (this.exit.signal ?? String(this.exit.code)) : "running";
  }

  /** CPU seconds (user + system, all threads) used so far, or NaN where /proc is missing. */
  cpuSeconds(): number {
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, "latin1");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime
    } catch {
      return NaN;
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null; killed: boolean }> {
    if (!this.exit) {
      this.proc.kill("SIGTERM");
      let timer: NodeJS.Timeout | undefined;
      const inTime = await Promise.race([
        this.exited.then(() => true),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(false), graceMs))),
      ]);
      clearTimeout(timer);
      if (!inTime) {
        this.proc.kill("SIGKILL");
        await this.exited;
        LIVE.delete(this);
        return { code: null, signal: "SIGKILL", killed: true };
      }
    }
    LIVE.delete(this);
    return { code: this.exit!.code, signal: this.exit!.signal, killed: false };
  }
}

/** Children still running; killed synchronously if this process ends early. */
export const LIVE = new Set<ServerProcess>();
export function killLive(): void {
  for (const s of LIVE) s.proc.kill("SIGKILL");
}

/**
 * Extra node arguments for the fleetpki server only, e.g. BENCH_SERVER_NODE_ARGS="--cpu-prof
 * --cpu-prof-dir=/tmp/prof" to profile it (NODE_OPTIONS refuses --cpu-prof).
 */
export function serverNodeArgs(): string[] {
  return (process.env.BENCH_SERVER_NODE_ARGS ?? "").split(/\s+/).filter(Boolean);
}
