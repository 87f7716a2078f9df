// `npm run bench [-- <name>...] [--seconds N] [--runs N]`: runs each benchmark module in turn
// (all of them, or the ones named) in this one process. Add a benchmark by adding a line to
// BENCHMARKS; modules are imported only when selected so one benchmark's set-up never slows another.
import { parseArgs } from "node:util";
import { BenchFailure, WARMUP_SECONDS, type BenchOptions, type Benchmark } from "./lib.js";

const BENCHMARKS: readonly { name: string; load: () => Promise<Benchmark>; setupSeconds?: number }[] = [
  { name: "issuance", load: async () => (await import("./issuance.js")).benchmark },
  { name: "est", load: async () => (await import("./est.js")).benchmark },
  { name: "ocsp", load: async () => (await import("./ocsp.js")).benchmark },
  { name: "gateway", load: async () => (await import("./gateway.js")).benchmark },
  // Seeding 100,000 devices and 300,000 certificates took 82-181 s on the shared 2-core VM.
  { name: "admin", load: async () => (await import("./admin.js")).benchmark, setupSeconds: 600 },
  { name: "ros2", load: async () => (await import("./ros2.js")).benchmark },
];

/**
 * A benchmark that hangs must not hang CI: each one is capped. The cap grows with --seconds and
 * --runs: set-up and checks, plus up to 20 scenarios of one warm-up and the measured runs each.
 */
const watchdogMs = (o: BenchOptions, setupSeconds = 180): number => (setupSeconds + 20 * (WARMUP_SECONDS + o.runs * o.seconds)) * 1000;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      seconds: { type: "string", default: "2" },
      runs: { type: "string", default: "3" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(`usage: npm run bench -- [${BENCHMARKS.map((b) => b.name).join("|")}]... [--seconds N] [--runs N]`);
    console.log("  --seconds N  length of each measured run (default 2; fractions allowed, openssl speed rounds to whole seconds)");
    console.log("  --runs N     measured runs per scenario, interleaved; the median is reported (default 3)");
    console.log("  A quick end-to-end check of the plumbing and the checks (figures meaningless): --seconds 0.3 --runs 1");
    return 0;
  }
  const options: BenchOptions = { seconds: Number(values.seconds), runs: Number(values.runs) };
  if (!(options.seconds > 0) || !Number.isInteger(options.runs) || options.runs < 1) {
    console.error("bench: --seconds must be > 0 and --runs a positive integer");
    return 2;
  }
  const unknown = positionals.filter((p) => !BENCHMARKS.some((b) => b.name === p));
  if (unknown.length > 0) {
    console.error(`bench: unknown benchmark(s) ${unknown.join(", ")}; available: ${BENCHMARKS.map((b) => b.name).join(", ")}`);
    return 2;
  }
  const selected = positionals.length > 0 ? BENCHMARKS.filter((b) => positionals.includes(b.name)) : BENCHMARKS;

  console.log(`fleetpki benchmarks, ${new Date().toISOString()}`);
  let failed = 0;
  for (const entry of selected) {
    const started = Date.now();
    console.log("");
    const limit = watchdogMs(options, entry.setupSeconds);
    const watchdog = setTimeout(() => {
      console.error(`bench ${entry.name}: still running after ${limit / 1000} s, giving up`);
      process.exit(1); // the benchmarks' exit handlers stop their servers and remove their files
    }, limit);
    watchdog.unref();
    try {
      const bench = await entry.load();
      await bench.run(options);
      console.log(`\n(${bench.name}: ${((Date.now() - started) / 1000).toFixed(1)} s)`);
    } catch (e) {
      failed++;
      const what = e instanceof BenchFailure ? "check failed" : "error";
      console.error(`\nbench ${entry.name}: ${what}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    } finally {
      clearTimeout(watchdog);
    }
  }
  return failed > 0 ? 1 : 0;
}

process.exitCode = await main();
