// ROS 2 permissions (issue 12): `fleetpki ros2 permissions` (read an SROS2 policy with its includes,
// validate it, render permissions.xml) next to sros2's own way, `xsltproc --xinclude permissions.xsl`,
// on the same files in the same run. Inputs: sros2's sample policy (7 enclaves, 3 levels of includes)
// and a generated policy of 1,000 enclaves, each profile including sros2's common/node.xml as real
// policies do. Every output is checked byte for byte against xsltproc's before anything is timed.
//
// Ours runs in-process (what `ros2 enclave create` and the fleet-policy path call); xsltproc is a
// process per document, as sros2 runs it (through lxml, in-process, but libxslt's work is the same).
// Lock-step is one document at a time; parallel keeps 4 in flight (ours on 4 worker threads, xsltproc
// as 4 processes) on this 2-core machine. The CLI's own start-up is reported once, beside xsltproc's.
import { execFile, spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { renderPermissions, SROS2_TEMPLATE_PARAMETERS } from "../src/ros2/permissions.js";
import { readSros2PolicyFile } from "../src/ros2/policy-xml/index.js";
import { devBuild } from "../scripts/dev-build.mjs";
import {
  WARMUP_SECONDS,
  check,
  cleanUpOnInterrupt,
  contentionWarning,
  fmtMs,
  fmtRate,
  formatTable,
  median,
  runLoad,
  type BenchOptions,
  type Benchmark,
  type LoadResult,
} from "./lib.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const THIS_FILE = fileURLToPath(import.meta.url);
const SROS2 = join(REPO, "test", "vectors", "sros2", "sros2");
const XSL = join(SROS2, "sros2", "policy", "templates", "dds", "permissions.xsl");
const PARALLEL = 4;
const ENCLAVES = 1000;
const execFileAsync = promisify(execFile);
/** Documents per second: the 1,000-enclave policy takes about a second, so keep the decimals there. */
const fmtDocs = (n: number): string => (n < 10 ? n.toFixed(2) : fmtRate(n));

/** What one document costs us: read (parse, XInclude, validate, names) and render. */
function ours(file: string): string {
  return renderPermissions(readSros2PolicyFile(file), SROS2_TEMPLATE_PARAMETERS);
}

if (!isMainThread && (workerData as { ros2Worker?: boolean } | null)?.ros2Worker) {
  parentPort!.on("message", (file: string) => parentPort!.postMessage(ours(file).length));
}

async function xsltproc(file: string): Promise<string> {
  const { stdout } = await execFileAsync("xsltproc", ["--nonet", "--xinclude", XSL, file], { maxBuffer: 256 * 1024 * 1024 });
  return stdout;
}

function generatedPolicy(): string {
  const out = [
    '<?xml version="1.0" encoding="UTF-8"?>\n<policy version="0.2.0" xmlns:xi="http://www.w3.org/2001/XInclude">\n  <enclaves>\n',
  ];
  for (let i = 0; i < ENCLAVES; i++) {
    const robot = `robot_${Math.floor(i / 10)}`;
    const node = `node_${i % 10}`;
    out.push(`    <enclave path="/${robot}/${node}">
      <profiles>
        <profile ns="/${robot}" node="${node}">
          <xi:include href="common/node.xml" xpointer="xpointer(/profile/*)"/>
          <topics publish="ALLOW" subscribe="ALLOW"><topic>chatter_${i % 7}</topic><topic>~/status</topic></topics>
          <topics subscribe="ALLOW"><topic>/fleet/cmd</topic></topics>
          <topics publish="DENY"><topic>/fleet/cmd</topic></topics>
          <services reply="ALLOW"><service>~/reset</service></services>
          <actions call="ALLOW"><action>/navigate</action></actions>
        </profile>
      </profiles>
    </enclave>\n`);
  }
  out.push("  </enclaves>\n</policy>\n");
  return out.join("");
}

interface Row {
  input: string;
  who: string;
  mode: string;
  result: LoadResult;
}

async function measure(op: (i: number, w: number) => Promise<unknown>, concurrency: number, o: BenchOptions): Promise<LoadResult> {
  await runLoad(op, concurrency, WARMUP_SECONDS);
  const runs: LoadResult[] = [];
  for (let r = 0; r < o.runs; r++) runs.push(await runLoad(op, concurrency, o.seconds));
  const mid = median(runs.map((x) => x.perSecond));
  return runs.find((x) => x.perSecond === mid) ?? runs.sort((a, b) => a.perSecond - b.perSecond)[runs.length >> 1]!;
}

/** Median milliseconds of `f` over `n` calls. */
function timeMs(f: () => unknown, n: number): number {
  const t: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    f();
    t.push(performance.now() - t0);
  }
  return median(t);
}

async function run(o: BenchOptions): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), "fleetpki-bench-ros2-"));
  const uninstall = cleanUpOnInterrupt(() => rmSync(tmp, { recursive: true, force: true }));
  const workers: Worker[] = [];
  try {
    cpSync(join(SROS2, "test", "policies"), tmp, { recursive: true });
    const big = join(tmp, "fleet.policy.xml");
    writeFileSync(big, generatedPolicy());
    const inputs = [
      { name: "sample (7 enclaves)", file: join(tmp, "sample.policy.xml") },
      { name: `generated (${ENCLAVES} enclaves)`, file: big },
    ];
    for (const input of inputs) {
      const want = await xsltproc(input.file);
      check(ours(input.file) === want, `${input.name}: our permissions.xml differs from xsltproc's`);
      check(want.includes("<grant "), `${input.name}: no grants`);
    }
    for (let w = 0; w < PARALLEL; w++)
      // A worker does not inherit `--import tsx`: it registers tsx itself, then loads this module.
      workers.push(
        new Worker(
          `import("tsx/esm/api").then((t) => { t.register(); return import(${JSON.stringify(pathToFileURL(THIS_FILE).href)}); })`,
          { eval: true, workerData: { ros2Worker: true } },
        ),
      );
    const pending = workers.map(() => [] as ((n: number) => void)[]);
    workers.forEach((w, i) => w.on("message", (n: number) => pending[i]!.shift()!(n)));
    const inWorker = (w: number, file: string) =>
      new Promise<number>((res) => {
        pending[w]!.push(res);
        workers[w]!.postMessage(file);
      });
    const wantLength = new Map(await Promise.all(inputs.map(async (i) => [i.file, (await xsltproc(i.file)).length] as const)));
    check((await inWorker(0, big)) === wantLength.get(big), "worker output differs");

    const rows: Row[] = [];
    for (const input of inputs) {
      rows.push({ input: input.name, who: "fleetpki", mode: "lock-step", result: await measure(async () => ours(input.file), 1, o) });
      rows.push({ input: input.name, who: "xsltproc", mode: "lock-step", result: await measure(() => xsltproc(input.file), 1, o) });
      rows.push({
        input: input.name,
        who: "fleetpki",
        mode: `${PARALLEL} in parallel`,
        result: await measure((_i, w) => inWorker(w, input.file), PARALLEL, o),
      });
      rows.push({
        input: input.name,
        who: "xsltproc",
        mode: `${PARALLEL} in parallel`,
        result: await measure(() => xsltproc(input.file), PARALLEL, o),
      });
    }

    // Where the time goes, in-process and one document at a time.
    const breakdown = inputs.map((input) => {
      const policy = readSros2PolicyFile(input.file);
      const n = input.file === big ? 15 : 200;
      return [
        input.name,
        fmtMs(timeMs(() => readSros2PolicyFile(input.file), n)),
        fmtMs(timeMs(() => renderPermissions(policy, SROS2_TEMPLATE_PARAMETERS), n)),
        fmtRate(Buffer.byteLength(ours(input.file))),
      ];
    });
    const startup = (cmd: string, args: string[]) =>
      timeMs(() => check(spawnSync(cmd, args, { cwd: REPO }).status === 0, `${cmd} failed`), 5);
    const minimal = join(tmp, "talker_listener.policy.xml");
    // The CLI as the tests run it: a build of the current src/ (scripts/dev-build.mjs), no tsx.
    const cliMs = startup(process.execPath, [devBuild(), "ros2", "permissions", minimal]);
    const xsltMs = startup("xsltproc", ["--nonet", "--xinclude", XSL, minimal]);

    console.log(`ros2 permissions: ${o.runs} runs of ${o.seconds} s per scenario (median), documents per second\n`);
    const byKey = (input: string, who: string, mode: string) =>
      rows.find((r) => r.input === input && r.who === who && r.mode === mode)!.result;
    const table: string[][] = [];
    for (const input of inputs)
      for (const mode of ["lock-step", `${PARALLEL} in parallel`]) {
        const a = byKey(input.name, "fleetpki", mode);
        const b = byKey(input.name, "xsltproc", mode);
        table.push([
          `${input.name}, ${mode}`,
          fmtDocs(a.perSecond),
          fmtMs(a.p50Ms),
          fmtDocs(b.perSecond),
          fmtMs(b.p50Ms),
          `${(a.perSecond / b.perSecond).toFixed(2)}x`,
        ]);
      }
    console.log(formatTable(["input, mode", "fleetpki/s", "p50 ms", "xsltproc/s", "p50 ms", "ratio"], table));
    console.log("\nwhere fleetpki's time goes (one document, in-process, median ms):\n");
    console.log(formatTable(["input", "read+validate ms", "render ms", "output bytes"], breakdown));
    console.log(`\nprocess start-up on talker_listener: fleetpki CLI ${fmtMs(cliMs)} ms (node, built), xsltproc ${fmtMs(xsltMs)} ms`);
    const warning = contentionWarning(rows.map((r) => r.result.otherCores));
    if (warning) console.log(`\n${warning}`);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
    rmSync(tmp, { recursive: true, force: true });
    uninstall();
  }
}

export const benchmark: Benchmark = {
  name: "ros2",
  description:
    "SROS2 policy -> permissions.xml per second, fleetpki in-process next to xsltproc --xinclude permissions.xsl, " +
    "lock-step and 4 in parallel",
  run,
};
