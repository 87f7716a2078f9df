// Plumbing for agent-e2e.test.ts: every fleetpki process (serve, device, ca, agent) and every
// openssl/curl call runs as an ASYNC child process, tracked so that an after hook can kill
// whatever is still running, even when a test failed half-way.
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseDocument } from "yaml";
import { CLI } from "./helpers.js";

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  stdout(): string;
  stderr(): string;
  /** Resolves once the process has exited and its output is complete. */
  readonly exited: Promise<Exit>;
  running(): boolean;
  /** Signals the process (if still running) and waits for it, SIGKILL after graceMs. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<Exit>;
}

/** Every child started through this module; killAll() ends the ones still running. */
const live = new Set<Proc>();

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export function spawnProc(name: string, command: string, args: readonly string[], options: SpawnOptions = {}): Proc {
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: { ...process.env, ...(options.env ?? {}) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (c: string) => (out += c));
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (err += c));
  let done = false;
  const exited = new Promise<Exit>((resolve) => {
    child.on("error", (e) => {
      err += `\n[spawn error: ${e.message}]`;
      done = true;
      resolve({ code: -1, signal: null });
    });
    child.on("close", (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
  });
  const proc: Proc = {
    name,
    child,
    pid: child.pid ?? -1,
    stdout: () => out,
    stderr: () => err,
    exited,
    running: () => !done,
    async stop(signal = "SIGTERM", graceMs = 10_000) {
      if (!done) child.kill(signal);
      const timer = setTimeout(() => {
        if (!done) child.kill("SIGKILL");
      }, graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
  live.add(proc);
  void exited.then(() => live.delete(proc));
  return proc;
}

/** Kills (SIGKILL, by pid) every child of this module still running and waits for them. */
export async function killAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop("SIGKILL", 1_000)));
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion asynchronously; SIGKILL after timeoutMs. */
export async function run(
  command: string,
  args: readonly string[],
  options: SpawnOptions & { timeoutMs?: number } = {},
): Promise<RunResult> {
  const p = spawnProc(`${command} ${args[0] ?? ""}`, command, args, options);
  const timer = setTimeout(() => p.child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
  try {
    const exit = await p.exited;
    return { ...exit, stdout: p.stdout(), stderr: p.stderr() };
  } finally {
    clearTimeout(timer);
  }
}

/** The fleetpki CLI (helpers.ts CLI: compiled from the current src/) as a child process. */
export function spawnCli(name: string, args: readonly string[], options: SpawnOptions = {}): Proc {
  return spawnProc(name, process.execPath, [CLI, ...args], options);
}

export function fleetpki(args: readonly string[], options: SpawnOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], options);
}

/** Like fleetpki() but fails with the output when the exit code is not 0. */
export async function fleetpkiOk(args: readonly string[], options: SpawnOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
  const r = await fleetpki(args, options);
  if (r.code !== 0) throw new Error(`fleetpki ${args.join(" ")} exited ${r.code ?? r.signal}:\n${r.stderr}${r.stdout}`);
  return r;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls fn until it returns something other than undefined/false; throws after timeoutMs. */
export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs: number,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ""}`,
      );
    await sleep(intervalMs);
  }
}

/** Sets one value in <fleet>/fleetpki.yaml, keeping its comments. Call before `serve` starts. */
export function setConfig(fleetDir: string, path: readonly string[], value: unknown): void {
  const file = join(fleetDir, "fleetpki.yaml");
  const doc = parseDocument(readFileSync(file, "utf8"));
  doc.setIn(path, value);
  writeFileSync(file, doc.toString());
}

/** sha256:<hex> of the DER of a PEM certificate file, computed here (not by fleetpki). */
export function fingerprintOfPemFile(path: string): string {
  return `sha256:${createHash("sha256")
    .update(new X509Certificate(readFileSync(path)).raw)
    .digest("hex")}`;
}

export interface Server {
  proc: Proc;
  port: number;
  url: string;
  /** SIGTERM and wait; returns the exit. */
  stop(): Promise<Exit>;
}

/** `fleetpki serve --dir DIR --listen 127.0.0.1:PORT` (PORT 0 = any); resolves once it listens. */
export async function startServer(fleetDir: string, port = 0, timeoutMs = 30_000): Promise<Server> {
  const proc = spawnCli(`serve ${fleetDir}`, [
    "serve",
    "--dir",
    fleetDir,
    "--listen",
    `127.0.0.1:${port}`,
    "--status-listen",
    "127.0.0.1:0",
    "--gateway-listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
  ]);
  const listening = await Promise.race([
    waitFor(`"listening on" from fleetpki serve`, () => /\(listening on 127\.0\.0\.1:(\d+)\)/.exec(proc.stderr())?.[1], timeoutMs, 50),
    proc.exited.then((e) => {
      throw new Error(`fleetpki serve exited ${e.code ?? e.signal} before listening:\n${proc.stderr()}`);
    }),
  ]);
  const actual = Number(listening);
  if (port !== 0 && actual !== port) throw new Error(`serve listens on ${actual}, not ${port}`);
  return { proc, port: actual, url: `https://127.0.0.1:${actual}`, stop: () => proc.stop("SIGTERM", 15_000) };
}

export interface LogLine {
  time: string;
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** The agent's JSON log lines on stderr (non-JSON lines are skipped). */
export function logLines(stderr: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of stderr.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a line still being written
    }
  }
  return out;
}
