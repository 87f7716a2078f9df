// Issuance throughput (issue 2): certificates per second in one process from prepared P-256
// CSRs, (a) without the database and (b) through the real issueDeviceCertificate path with
// durable group-commit recording, next to the `openssl speed` sign+verify bound.
import { spawnSync } from "node:child_process";
import { createPublicKey, sign, verify } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { verifyAudit } from "../src/audit/log.js";
import { addDevice } from "../src/authority/devices.js";
import { Fleet } from "../src/authority/fleet.js";
import { initFleet } from "../src/authority/init.js";
import { assertDeviceId, issueDeviceCertificate, keyFromCsr } from "../src/authority/issuance.js";
import { layout } from "../src/authority/layout.js";
import { parseDuration } from "../src/config/duration.js";
import type { Db } from "../src/store/store.js";
import { parseCertificate } from "../src/x509/certificate.js";
import { decodeCsr } from "../src/x509/csr.js";
import { toPem } from "../src/x509/pem.js";
import { deviceSpiffeId } from "../src/x509/profiles.js";
import {
  CONTENDED_CORES,
  WARMUP_SECONDS,
  check,
  fmtMs,
  fmtRate,
  formatTable,
  median,
  opensslSpeedEcdsaP256,
  runLoad,
  type BenchOptions,
  type Benchmark,
  type LoadResult,
  type OpensslSpeed,
  prepareP256Csrs,
  type PreparedCsr,
} from "./lib.js";

const DEVICE = "bench-robot";
const CSR_COUNT = 500;
/** Requests in flight, as a busy enrollment server would have. */
const CONCURRENCY = 64;
/** From the issue: throughput fleetpki must reach on this machine class. */
const TARGET_WITHOUT_DB = 3000;
const TARGET_WITH_DB = 2000;
/**
 * `openssl speed ecdsap256` per core for this machine class as ARCHITECTURE.md quotes it
 * (sign 48k/s, verify 15.7k/s). The host's speed drifts (shared VMs: the baseline has ranged
 * from 23k to 38k signs/s within minutes), so each figure is also shown scaled by
 * reference bound / this run's bound, i.e. at the documented reference speed.
 */
const REFERENCE_SPEED = { sign: 48000, verify: 15700 };
const REFERENCE_BOUND = 1 / (1 / REFERENCE_SPEED.sign + 1 / REFERENCE_SPEED.verify);
/** From the issue: other implementations measured on this machine class (cert/s). */
const REFERENCES: readonly [string, number][] = [
  ["plain DER encoder", 3700],
  ["libcrypto C loop", 2200],
  ["@peculiar/x509", 270],
];


interface Scenario {
  label: string;
  db: boolean;
  concurrency: number;
  target?: number;
  results: Run[];
}

interface Run extends LoadResult {
  /** Write transactions during the run, and the time spent inside them. */
  commits: number;
  commitSeconds: number;
}

interface Sample {
  der: Buffer;
  csrIndex: number;
}

export const benchmark: Benchmark = {
  name: "issuance",
  description: "device certificates/second from prepared P-256 CSRs, without and with durable recording",
  run,
};

async function run(options: BenchOptions): Promise<void> {
  // First, while nothing else in this process uses the CPU.
  const speed = opensslSpeedEcdsaP256(options.seconds);

  const tmp = mkdtempSync(join(tmpdir(), "fleetpki-bench-"));
  let fleet: Fleet | undefined;
  try {
    const dir = join(tmp, "fleet");
    await initFleet({ dir, name: "Bench Robots", domain: "fleet.example" });
    fleet = await Fleet.open(dir);
    await addDevice(fleet, { id: DEVICE, actor: "bench" });
    const csrs = prepareP256Csrs(CSR_COUNT, DEVICE);

    // Count and time write transactions: how many certificates one group commit carries, and
    // how long the event loop spends in them (better-sqlite3 is synchronous, fsync included).
    let commits = 0;
    let commitSeconds = 0;
    const store = fleet.store;
    const transaction = store.transaction.bind(store);
    store.transaction = async <T>(fn: (tx: Db) => Promise<T>): Promise<T> => {
      commits++;
      const t0 = performance.now();
      try {
        return await transaction(fn);
      } finally {
        commitSeconds += (performance.now() - t0) / 1000;
      }
    };

    const f = fleet;
    const samples: { noDb?: Sample; db?: Sample } = {};
    // The steps issueForKey performs, minus recording: verified key from the CSR, the cached
    // device template, build + sign, and the PEM handed back to the caller.
    const issueWithoutDb = async (i: number): Promise<void> => {
      const csrIndex = i % CSR_COUNT;
      assertDeviceId(DEVICE);
      const key = await keyFromCsr(csrs[csrIndex]!.der);
      const template = await f.leafTemplate("devices", "device");
      const issued = template.issue(DEVICE, [{ uri: deviceSpiffeId(f.domain, DEVICE) }], {
        spki: key.spki,
        subjectPublicKey: key.subjectPublicKey,
        now: new Date(),
        lifetimeMs: parseDuration(f.config.validity.device),
      });
      toPem("CERTIFICATE", issued.der);
      samples.noDb = { der: issued.der, csrIndex };
    };
    // The real path: resolves only after the certificate's row and audit event have committed.
    let issuedWithDb = 0;
    const issueWithDb = async (i: number): Promise<void> => {
      const csrIndex = i % CSR_COUNT;
      const cert = await issueDeviceCertificate(f, { deviceId: DEVICE, actor: "bench", csr: csrs[csrIndex]!.der, context: { via: "bench" } });
      issuedWithDb++;
      samples.db = { der: cert.der, csrIndex };
    };

    const stepCosts = await measureSteps(fleet, csrs);

    const scenarios: Scenario[] = [
      { label: "without database", db: false, concurrency: CONCURRENCY, target: TARGET_WITHOUT_DB, results: [] },
      { label: "without database", db: false, concurrency: 1, results: [] },
      { label: "with database (durable)", db: true, concurrency: CONCURRENCY, target: TARGET_WITH_DB, results: [] },
      { label: "with database (durable)", db: true, concurrency: 1, results: [] },
    ];
    const measure = async (s: Scenario, seconds: number): Promise<Run> => {
      const [c0, t0] = [commits, commitSeconds];
      const r = await runLoad(s.db ? issueWithDb : issueWithoutDb, s.concurrency, seconds);
      return { ...r, commits: commits - c0, commitSeconds: commitSeconds - t0 };
    };
    // JIT, thread pool start-up, SQLite page cache: none of it belongs in the figures.
    for (const s of scenarios) await measure(s, WARMUP_SECONDS);
    // Runs are interleaved so that drift (thermal, page cache, database growth) hits every scenario alike.
    for (let round = 0; round < options.runs; round++)
      for (const s of scenarios) s.results.push(await measure(s, options.seconds));

    const verification = await verifyOutput(fleet, tmp, dir, csrs, samples, issuedWithDb);
    printReport(options, speed, stepCosts, scenarios, verification, tmp);
  } finally {
    await fleet?.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}

interface StepCost {
  step: string;
  us: number;
  where: string;
}

/** Per-step cost on one core, each step alone in a tight loop: where one issuance's time goes. */
async function measureSteps(fleet: Fleet, csrs: readonly PreparedCsr[]): Promise<StepCost[]> {
  const template = await fleet.leafTemplate("devices", "device");
  const { signer } = await fleet.issuingCa("devices");
  const decoded = csrs.map((c) => decodeCsr(c.der));
  const sans = [{ uri: deviceSpiffeId(fleet.domain, DEVICE) }];
  const lifetimeMs = parseDuration(fleet.config.validity.device);
  const issueOne = (i: number): Buffer => {
    const d = decoded[i % decoded.length]!;
    return template.issue(DEVICE, sans, { spki: d.spki, subjectPublicKey: d.subjectPublicKey, now: new Date(), lifetimeMs }).der;
  };
  const certDer = issueOne(0);
  // A TBSCertificate is the certificate minus ~80 bytes of signature; the exact bytes do not matter to ECDSA.
  const tbsSized = certDer.subarray(0, certDer.length - 80);
  const usPerOp = (fn: (i: number) => unknown): number => {
    for (let i = 0; i < 50; i++) fn(i);
    const n = csrs.length;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn(i);
    return ((performance.now() - t0) * 1000) / n;
  };
  const d = (i: number) => decoded[i % decoded.length]!;
  return [
    { step: "CSR parse + key import (JWK)", us: usPerOp((i) => decodeCsr(csrs[i % csrs.length]!.der)), where: "event loop" },
    { step: "  key import via DER SPKI (avoided)", us: usPerOp((i) => createPublicKey({ key: csrs[i % csrs.length]!.spki, format: "der", type: "spki" })), where: "-" },
    { step: "CSR signature verify (ECDSA)", us: usPerOp((i) => verify(d(i).hash, d(i).signedInfo, d(i).publicKey, d(i).signature)), where: "libuv pool" },
    { step: "certificate build + sign", us: usPerOp(issueOne), where: "event loop" },
    { step: "  of which ECDSA sign", us: usPerOp(() => sign(signer.scheme.hash, tbsSized, signer.key)), where: "event loop" },
    { step: "PEM encode", us: usPerOp(() => toPem("CERTIFICATE", certDer)), where: "event loop" },
  ];
}

/** Proof that what was timed is real: rows committed, audit chain intact, chains that OpenSSL accepts. */
async function verifyOutput(
  fleet: Fleet,
  tmp: string,
  dir: string,
  csrs: readonly PreparedCsr[],
  samples: { noDb?: Sample; db?: Sample },
  issuedWithDb: number,
): Promise<string[]> {
  const passed: string[] = [];
  const db = fleet.store.db;

  const { n: rows } = await db
    .selectFrom("certificates")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("device_id", "=", DEVICE)
    .executeTakeFirstOrThrow();
  check(Number(rows) === issuedWithDb, `certificates table holds ${rows} rows for ${DEVICE}, but ${issuedWithDb} certificates were issued with the database`);
  passed.push(`certificates rows for ${DEVICE} = ${rows} = certificates issued with the database (warm-up included)`);

  const { n: events } = await db
    .selectFrom("audit_log")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("action", "=", "certificate.issue")
    .where("subject", "=", `device:${DEVICE}`)
    .executeTakeFirstOrThrow();
  check(Number(events) === issuedWithDb, `audit log holds ${events} certificate.issue events for ${DEVICE}, expected ${issuedWithDb}`);
  const audit = await verifyAudit(db);
  check(audit.ok, `audit chain broken: ${audit.ok ? "" : audit.problem}`);
  passed.push(`audit log: ${events} certificate.issue events, hash chain of ${audit.rows} rows verifies`);

  for (const [name, sample] of [["without database", samples.noDb], ["with database", samples.db]] as const) {
    check(sample, `no certificate was produced ${name}`);
    const cert = parseCertificate(sample.der);
    check(cert.spki.equals(csrs[sample.csrIndex]!.spki), `certificate issued ${name} does not carry its CSR's key`);
    if (name === "with database") {
      const row = await db.selectFrom("certificates").select("der").where("serial", "=", cert.serialHex).executeTakeFirst();
      check(row && Buffer.from(row.der).equals(sample.der), `certificate ${cert.serialHex} issued ${name} is not stored byte for byte`);
    }
    const file = join(tmp, `sample ${name}.pem`.replaceAll(" ", "-"));
    writeFileSync(file, toPem("CERTIFICATE", sample.der));
    const args = ["verify", "-CAfile", join(dir, layout.caCert("root")), "-untrusted", join(dir, layout.caCert("devices")), file];
    const r = spawnSync("openssl", args, { encoding: "utf8", timeout: 30_000 });
    check(r.status === 0 && r.stdout.includes(": OK"), `openssl ${args.join(" ")} failed for the certificate issued ${name}:\n${r.stdout}${r.stderr}`);
    passed.push(`openssl verify (root + devices CA) accepts a certificate issued ${name}, serial ${cert.serialHex}`);
  }
  return passed;
}

const fmtCores = (n: number): string => (Number.isNaN(n) ? "?" : n.toFixed(2));

function filesystemOf(path: string): string {
  const r = spawnSync("df", ["--output=fstype", path], { encoding: "utf8" });
  return r.status === 0 ? (r.stdout.trim().split("\n").pop()?.trim() ?? "?") : "?";
}

function printReport(options: BenchOptions, speed: OpensslSpeed, steps: readonly StepCost[], scenarios: readonly Scenario[], checks: readonly string[], tmp: string): void {
  const cpu = cpus();
  const ratio = (rate: number): string => `${(rate / speed.boundPerSecond).toFixed(2)}x`;
  const scale = REFERENCE_BOUND / speed.boundPerSecond;
  const out: string[] = [];
  out.push("== issuance: device certificates from prepared CSRs ==");
  out.push(`machine   ${cpu.length} x ${cpu[0]?.model ?? "?"}, Node ${process.version}, ${speed.version}`);
  out.push(`setup     fresh P-256 fleet in ${tmp} (${filesystemOf(tmp)}), ${CSR_COUNT} distinct P-256 CSRs (DER)`);
  out.push(`method    ${WARMUP_SECONDS} s warm-up per scenario, then ${options.runs} interleaved runs of ${options.seconds} s each; median reported`);
  out.push("");
  out.push(`baseline  openssl speed -seconds ${speed.seconds} ecdsap256 (one process): ${speed.line}`);
  out.push(
    `          sign ${fmtRate(speed.signPerSecond)}/s, verify ${fmtRate(speed.verifyPerSecond)}/s -> bound 1/(1/sign + 1/verify) = ${fmtRate(speed.boundPerSecond)} cert/s on one core` +
      (speed.otherCores === undefined ? "" : ` (other processes: ${speed.otherCores.toFixed(2)} cores)`),
  );
  out.push("");
  out.push("Per-step cost (one core, tight loop)");
  out.push(formatTable(["step", "us/op", "runs on"], steps.map((s) => [s.step, s.us.toFixed(1), s.where])));
  out.push("");
  out.push("Throughput (one process)");
  const rows = scenarios.map((s) => {
    const rates = s.results.map((r) => r.perSecond);
    const rate = median(rates);
    return [
      s.label,
      String(s.concurrency),
      fmtRate(rate),
      `${fmtRate(Math.min(...rates))}..${fmtRate(Math.max(...rates))}`,
      ratio(rate),
      fmtRate(rate * scale),
      fmtMs(median(s.results.map((r) => r.p50Ms))),
      fmtMs(median(s.results.map((r) => r.p99Ms))),
      fmtCores(median(s.results.map((r) => r.otherCores ?? NaN))),
      s.target ? `>= ${fmtRate(s.target)}` : "-",
      s.target ? (rate >= s.target ? "ok" : rate * scale >= s.target ? "ok (normalized)" : "BELOW") : "",
    ];
  });
  out.push(formatTable(["scenario", "in flight", "cert/s", "runs min..max", "vs bound", "normalized", "p50 ms", "p99 ms", "others", "target", "status"], rows));
  out.push("  in flight: concurrent requests. vs bound: cert/s / this run's openssl bound. normalized: cert/s x reference");
  out.push(`  bound ${fmtRate(REFERENCE_BOUND)} / this run's bound (host speed drifts). others: CPU taken meanwhile by other processes`);
  out.push(`  or the hypervisor, in cores of ${cpu.length}. Every column is the median over the runs.`);
  out.push("");
  out.push("Group commit (with database)");
  const commitRows = scenarios
    .filter((s) => s.db)
    .map((s) => [
      String(s.concurrency),
      median(s.results.map((r) => r.completed / Math.max(1, r.commits))).toFixed(1),
      fmtMs(median(s.results.map((r) => (r.commitSeconds * 1000) / Math.max(1, r.commits)))),
      fmtMs(median(s.results.map((r) => (r.commitSeconds * 1000) / Math.max(1, r.completed)))),
      `${Math.round(median(s.results.map((r) => (100 * r.commitSeconds) / r.seconds)))}%`,
    ]);
  out.push(formatTable(["in flight", "certs/commit", "ms/commit", "ms/cert", "of wall time"], commitRows));
  out.push("  Time inside write transactions (device check, inserts, audit chain, fsync'd commit); better-sqlite3 is");
  out.push("  synchronous, so the event loop does nothing else meanwhile.");
  const contention = Math.max(speed.otherCores ?? 0, ...scenarios.flatMap((s) => s.results.map((r) => r.otherCores ?? 0)));
  if (contention > CONTENDED_CORES)
    out.push(`WARNING: other processes used up to ${contention.toFixed(2)} cores during measurement; these figures are pessimistic, rerun on an idle machine`);
  out.push("");
  out.push(`Reference points quoted in the issue for this machine class, against ARCHITECTURE.md's openssl figures (sign ${fmtRate(REFERENCE_SPEED.sign)}/s, verify ${fmtRate(REFERENCE_SPEED.verify)}/s, bound ${fmtRate(REFERENCE_BOUND)}/s)`);
  out.push(formatTable(["implementation", "cert/s", "vs reference bound"], REFERENCES.map(([name, rate]) => [name, fmtRate(rate), `${(rate / REFERENCE_BOUND).toFixed(2)}x`])));
  out.push("");
  out.push("Checks");
  for (const c of checks) out.push(`  ok  ${c}`);
  console.log(out.join("\n"));
}
