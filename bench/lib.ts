// Shared benchmark plumbing: the module contract run.ts relies on, a fixed-concurrency load
// loop, the `openssl speed` baseline, and plain-text tables.
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
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
 * in flight has finished, so the tail is included rather than dropped.
 */
export async function runLoad(op: (i: number) => Promise<unknown>, concurrency: number, seconds: number): Promise<LoadResult> {
  const latencies: number[] = [];
  let next = 0;
  const stop = watchContention();
  const start = performance.now();
  const deadline = start + seconds * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const i = next++;
      const t0 = performance.now();
      await op(i);
      latencies.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - start) / 1000;
  const otherCores = stop();
  latencies.sort((a, b) => a - b);
  return { otherCores, completed: latencies.length, seconds: elapsed, perSecond: latencies.length / elapsed, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99) };
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
  const r = spawnSync("openssl", ["speed", "-seconds", String(seconds), "ecdsap256"], { encoding: "utf8", timeout: (seconds * 2 + 30) * 1000 });
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
  const line = (r: readonly string[]): string => r.map((s, c) => cell(s, c)).join("  ").trimEnd();
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
