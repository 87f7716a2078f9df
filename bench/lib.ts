// Shared benchmark plumbing: the module contract run.ts relies on, a fixed-concurrency load
// loop, a lean HTTP/1.1 client connection, the `openssl speed` baseline, and plain-text tables.
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Socket } from "node:net";
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { OID } from "../src/der/oids.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { buildCsr } from "../src/x509/csr.js";
import { encodeName } from "../src/x509/name.js";

export interface BenchOptions {
  /** Seconds per measured run. */
  seconds: number;
  /** Measured runs per scenario; the median is reported. */
  runs: number;
}

/** What each bench/<name>.ts exports as `benchmark`; run.ts runs them in turn. */
export interface Benchmark {
  name: string;
  description: string;
  run(options: BenchOptions): Promise<void>;
}

/** A check on the benchmark's own output failed: the figures cannot be trusted. */
export class BenchFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BenchFailure";
  }
}

export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new BenchFailure(message);
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Nearest-rank percentile of an ascending array. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export interface LoadResult {
  /** CPU used by other processes during the run, in cores (undefined when unknown). */
  otherCores: number | undefined;
  completed: number;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * Keeps `concurrency` operations in flight until `seconds` have passed, as a server with that
 * many open requests would, and counts completions. The clock stops when the last operation
 * in flight has finished, so the tail is included rather than dropped. `op` gets a running
 * number and its worker's index (0..concurrency-1), e.g. to use that worker's own connection.
 */
export async function runLoad(
  op: (i: number, worker: number) => Promise<unknown>,
  concurrency: number,
  seconds: number,
): Promise<LoadResult> {
  const latencies: number[] = [];
  let next = 0;
  const stop = watchContention();
  const start = performance.now();
  const deadline = start + seconds * 1000;
  const worker = async (w: number): Promise<void> => {
    while (performance.now() < deadline) {
      const i = next++;
      const t0 = performance.now();
      await op(i, w);
      latencies.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  const elapsed = (performance.now() - start) / 1000;
  const otherCores = stop();
  latencies.sort((a, b) => a - b);
  return {
    otherCores,
    completed: latencies.length,
    seconds: elapsed,
    perSecond: latencies.length / elapsed,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}

/** Busy and total jiffies over all CPUs from /proc/stat (Linux), or undefined elsewhere. */
function systemCpu(): { busy: number; total: number } | undefined {
  try {
    const fields = readFileSync("/proc/stat", "latin1").split("\n", 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    return { busy: total - fields[3]! - fields[4]!, total }; // minus idle and iowait
  } catch {
    return undefined;
  }
}

/**
 * Starts watching how much CPU the rest of the machine uses. The stop function returns the
 * cores' worth of CPU that other processes (not this one, nor `childCores` of our own children)
 * used meanwhile: on a shared machine it says which figures are pessimistic.
 */
export function watchContention(): (childCores?: number) => number | undefined {
  const sys0 = systemCpu();
  const own0 = process.cpuUsage();
  const t0 = performance.now();
  return (childCores = 0) => {
    const sys1 = systemCpu();
    if (!sys0 || !sys1 || sys1.total === sys0.total) return undefined;
    const wall = (performance.now() - t0) / 1000;
    const cores = cpus().length;
    const busyCores = ((sys1.busy - sys0.busy) / (sys1.total - sys0.total)) * cores;
    const own = process.cpuUsage(own0);
    const ownCores = (own.user + own.system) / 1e6 / wall;
    return Math.max(0, busyCores - ownCores - childCores);
  };
}

export interface OpensslSpeed {
  seconds: number;
  /** CPU used by other processes meanwhile, in cores (undefined when unknown). */
  otherCores: number | undefined;
  version: string;
  signPerSecond: number;
  verifyPerSecond: number;
  /** One sign plus one verify per certificate, back to back on one core. */
  boundPerSecond: number;
  line: string;
}

/** Parses the result line of `openssl speed ecdsap256`: "... (nistp256)  0.0000s  0.0001s  36228.5  10116.0". */
export function parseOpensslSpeed(output: string): { signPerSecond: number; verifyPerSecond: number; line: string } {
  const line = output
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => /nistp256/.test(l))
    .pop();
  const m = line?.match(/([\d.]+)s\s+([\d.]+)s\s+([\d.]+)\s+([\d.]+)\s*$/);
  if (!line || !m) throw new BenchFailure(`cannot find the ecdsa nistp256 result line in openssl speed output:\n${output}`);
  return { signPerSecond: Number(m[3]), verifyPerSecond: Number(m[4]), line };
}

/** `openssl speed -seconds N ecdsap256`, single process (no -multi), the libcrypto ceiling per core. */
export function opensslSpeedEcdsaP256(requestedSeconds: number): OpensslSpeed {
  const seconds = Math.max(1, Math.round(requestedSeconds)); // openssl takes whole seconds only
  const stop = watchContention();
  const r = spawnSync("openssl", ["speed", "-seconds", String(seconds), "ecdsap256"], {
    encoding: "utf8",
    timeout: (seconds * 2 + 30) * 1000,
  });
  if (r.status !== 0) throw new BenchFailure(`openssl speed failed (status ${r.status}): ${r.error?.message ?? r.stderr}`);
  const { signPerSecond, verifyPerSecond, line } = parseOpensslSpeed(r.stdout);
  const otherCores = stop(1); // openssl speed keeps one core busy
  return {
    otherCores,
    seconds,
    version: opensslVersion(),
    signPerSecond,
    verifyPerSecond,
    boundPerSecond: 1 / (1 / signPerSecond + 1 / verifyPerSecond),
    line,
  };
}

export function opensslVersion(): string {
  const r = spawnSync("openssl", ["version"], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : "openssl not found";
}

/** Left-aligned first column, right-aligned figures. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? "").length)));
  const cell = (s: string, c: number): string => (c === 0 ? s.padEnd(widths[c]!) : s.padStart(widths[c]!));
  const line = (r: readonly string[]): string =>
    r
      .map((s, c) => cell(s, c))
      .join("  ")
      .trimEnd();
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

export const fmtRate = (n: number): string => Math.round(n).toLocaleString("en-US");
export const fmtMs = (n: number): string => (n < 10 ? n.toFixed(2) : n.toFixed(1));

export interface PreparedCsr {
  der: Buffer;
  spki: Buffer;
}

/** `count` distinct P-256 keys and DER CSRs (CN=<prefix>-<i>), built before any clock starts. */
export function prepareP256Csrs(count: number, prefix: string): PreparedCsr[] {
  const out: PreparedCsr[] = [];
  for (let i = 0; i < count; i++) {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const spki = publicKey.export({ format: "der", type: "spki" });
    const subject = encodeName([{ type: OID.commonName, value: `${prefix}-${i}` }]);
    out.push({ der: buildCsr(subject, spki, { key: privateKey, scheme: signatureSchemeFor(privateKey) }), spki });
  }
  check(new Set(out.map((c) => c.der.toString("base64"))).size === count, "prepared CSRs are not distinct");
  return out;
}

/** Warm-up of each scenario before its measured runs (JIT, pools, caches). */
export const WARMUP_SECONDS = 0.5;
/** Above this much CPU taken by other processes (in cores) a report warns that it is pessimistic. */
export const CONTENDED_CORES = 0.1;

/**
 * The report's warning when other processes took more than CONTENDED_CORES during measurement
 * (the most of `others`, in cores), or undefined.
 */
export function contentionWarning(others: readonly (number | undefined)[]): string | undefined {
  const contention = Math.max(0, ...others.map((o) => o ?? 0));
  if (contention <= CONTENDED_CORES) return undefined;
  return (
    `WARNING: other processes used up to ${contention.toFixed(2)} cores during measurement; ` +
    `these figures are pessimistic, rerun on an idle machine`
  );
}

/**
 * Runs `cleanup` when this process is interrupted (SIGINT or SIGTERM, after which it dies of the
 * same signal) or exits early (run.ts's watchdog). Returns the function that uninstalls it.
 */
export function cleanUpOnInterrupt(cleanup: () => void): () => void {
  const interrupted = (signal: NodeJS.Signals) => {
    cleanup();
    process.kill(process.pid, signal);
  };
  process.on("exit", cleanup);
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  return () => {
    process.off("exit", cleanup);
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
  };
}

export interface HttpReply {
  status: number;
  /** Header names in lower case; a repeated header keeps its last value. */
  headers: Record<string, string>;
  body: Buffer;
}

const HEADER_END = Buffer.from("\r\n\r\n");
const EMPTY = Buffer.alloc(0);

/**
 * One HTTP/1.1 client connection over an open socket (net or TLS), one request at a time. A
 * load generator's client must cost far less than the server it measures: node:http's client
 * allocates a request, a response stream and a parser per request and spends more CPU per
 * request than a keep-alive server does. This writes the caller's prepared request bytes in one
 * write and reads a response framed by Content-Length (which every server measured here sends;
 * anything else is an error, not a guess).
 */
export class Http1Connection {
  private buffered: Buffer = EMPTY;
  private pending: { resolve: (r: HttpReply) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  constructor(
    readonly socket: Socket,
    timeoutMs = 30_000,
  ) {
    // A server that stops answering fails the run instead of hanging it.
    socket.setTimeout(timeoutMs, () => {
      this.fail(new Error(`no answer from the server within ${timeoutMs / 1000} s`));
      socket.destroy();
    });
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (e: Error) => this.fail(e));
    socket.on("close", () => this.fail(new Error("the server closed the connection")));
  }

  /** False once the connection failed or closed; a keep-alive client then opens a new one. */
  get usable(): boolean {
    return this.failure === undefined;
  }

  /** Sends a complete request (head and body) and resolves with the response. */
  request(bytes: Buffer | string): Promise<HttpReply> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.pending) return Promise.reject(new Error("Http1Connection: one request at a time"));
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.socket.write(bytes);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private fail(e: Error): void {
    this.failure ??= e;
    const p = this.pending;
    this.pending = undefined;
    p?.reject(e);
  }

  private onData(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    if (!this.pending) {
      this.fail(new Error(`unexpected bytes from the server with no request outstanding: ${chunk.toString("latin1", 0, 80)}`));
      this.socket.destroy();
      return;
    }
    const headEnd = this.buffered.indexOf(HEADER_END);
    if (headEnd < 0) return;
    const lines = this.buffered.toString("latin1", 0, headEnd).split("\r\n");
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!);
    const headers: Record<string, string> = {};
    for (let k = 1; k < lines.length; k++) {
      const line = lines[k]!;
      const colon = line.indexOf(":");
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const length = Number(headers["content-length"]);
    if (!status || !Number.isInteger(length) || length < 0) {
      this.fail(new Error(`unsupported response (a status line and Content-Length are required): ${lines.slice(0, 8).join(" | ")}`));
      this.socket.destroy();
      return;
    }
    const bodyStart = headEnd + HEADER_END.length;
    if (this.buffered.length < bodyStart + length) return;
    if (this.buffered.length > bodyStart + length) {
      this.fail(new Error(`${this.buffered.length - bodyStart - length} bytes beyond the response's Content-Length`));
      this.socket.destroy();
      return;
    }
    const body = this.buffered.subarray(bodyStart);
    this.buffered = EMPTY;
    const p = this.pending;
    this.pending = undefined;
    p.resolve({ status: Number(status[1]), headers, body });
  }
}
