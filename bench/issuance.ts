// Issuance throughput (issue 2): certificates per second in one process from prepared P-256
// CSRs, (a) without the database and (b) through the real issueDeviceCertificate path with
// durable group-commit recording, next to two peers measured in the same run: the `openssl speed`
// sign+verify bound, and the same certificate issued with @peculiar/x509 over WebCrypto.
import "reflect-metadata";
import { spawnSync } from "node:child_process";
import { createPublicKey, randomBytes, sign, verify, webcrypto } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import * as px from "@peculiar/x509";
import { verifyAudit } from "../src/audit/log.js";
import { addDevice } from "../src/authority/devices.js";
import { FleetServices } from "../src/authority/services.js";
import { initFleet } from "../src/authority/ca/init.js";
import { assertDeviceId, issueDeviceCertificate, keyFromCsr } from "../src/authority/issue/issuance.js";
import { layout } from "../src/authority/layout.js";
import { parseDuration } from "../src/config/duration.js";
import { OID } from "../src/der/oids.js";
import { parseCertificate } from "../src/x509/certificate.js";
import { decodeCsr } from "../src/x509/csr.js";
import type { GeneralName } from "../src/x509/extensions.js";
import { toPem } from "../src/x509/pem.js";
import { deviceDnsName, deviceSpiffeId } from "../src/x509/profiles.js";
import {
  contentionWarning,
  WARMUP_SECONDS,
  check,
  cleanUpOnInterrupt,
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
import { sqliteStore } from "../test/support/sqlite.js";

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
/**
 * Issue 2's figures for implementations this bench does not run (cert/s on this machine class).
 * @peculiar/x509 (quoted there at 270/s) is no longer quoted: it is measured below, in the same run.
 */
const QUOTED: readonly [string, number][] = [
  ["plain DER encoder", 3700],
  ["libcrypto C loop", 2200],
];

/** fleetpki without recording, fleetpki's real durable path, or the @peculiar/x509 peer. */
type Path = "noDb" | "db" | "peer";

interface Scenario {
  label: string;
  path: Path;
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

const PEER_LABEL = "peer: @peculiar/x509 (no DB)";

/** The SANs issueForKey writes into an operational device certificate. */
function deviceSans(domain: string): GeneralName[] {
  return [{ uri: deviceSpiffeId(domain, DEVICE) }, { dns: deviceDnsName(domain, DEVICE)! }];
}

/**
 * The peer: the same certificate (issuer, subject, validity rule, extensions in the same order,
 * 128-bit random serial, ECDSA P-256 / SHA-256 by the devices CA) issued with @peculiar/x509 over
 * Node's WebCrypto, as an application using that library would: parse the CSR, check its
 * signature, generate and sign, PEM. Constant extensions are built once, as fleetpki's template
 * does. No database. Returns the DER so the checks can compare it with fleetpki's certificate.
 */
async function peculiarIssuer(fleet: FleetServices): Promise<(csr: Buffer) => Promise<Buffer>> {
  px.cryptoProvider.set(webcrypto as unknown as Crypto);
  const ca = await fleet.issuingCa("devices");
  const curve = ca.signer.key.asymmetricKeyDetails?.namedCurve;
  const keyType = ca.signer.key.asymmetricKeyType;
  check(keyType === "ec" && curve === "prime256v1", `the @peculiar/x509 peer signs with P-256 only; the devices CA is ${keyType} ${curve}`);
  const signingKey = await webcrypto.subtle.importKey(
    "pkcs8",
    ca.signer.key.export({ format: "der", type: "pkcs8" }),
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign"],
  );
  const caCert = new px.X509Certificate(new Uint8Array(ca.certificate.der));
  const caKeyId = caCert.getExtension(px.SubjectKeyIdentifierExtension);
  check(caKeyId, "the devices CA certificate has no subject key identifier");
  const usage = new px.KeyUsagesExtension(px.KeyUsageFlags.digitalSignature, true);
  const eku = new px.ExtendedKeyUsageExtension([px.ExtendedKeyUsage.clientAuth, px.ExtendedKeyUsage.serverAuth]);
  const aki = new px.AuthorityKeyIdentifierExtension(caKeyId.keyId);
  const status = [
    ...(ca.status.crl ? [new px.CRLDistributionPointsExtension([ca.status.crl])] : []),
    ...(ca.status.ocsp ? [new px.AuthorityInfoAccessExtension({ ocsp: ca.status.ocsp })] : []),
  ];
  const san = new px.SubjectAlternativeNameExtension([
    { type: "url", value: deviceSpiffeId(fleet.domain, DEVICE) },
    { type: "dns", value: deviceDnsName(fleet.domain, DEVICE)! },
  ]);
  const lifetimeMs = parseDuration(fleet.config.validity.device);
  const caNotAfter = ca.certificate.notAfter.getTime();
  return async (der) => {
    const csr = new px.Pkcs10CertificateRequest(new Uint8Array(der));
    if (!(await csr.verify())) throw new Error("@peculiar/x509: CSR signature does not verify");
    const now = Date.now();
    const serial = randomBytes(16);
    serial[0] = (serial[0]! & 0x7f) | 0x01; // positive, and no leading zero byte to trim
    const cert = await px.X509CertificateGenerator.create({
      serialNumber: serial.toString("hex"),
      issuer: caCert.subjectName,
      // UTF8String, as fleetpki (and RFC 5280 4.1.2.6) has it; the string form would be a PrintableString.
      subject: new px.Name([{ CN: [{ utf8String: DEVICE }] }]),
      notBefore: new Date(Math.floor(now / 1000) * 1000 - 60_000),
      notAfter: new Date(Math.min(Math.floor((now + lifetimeMs) / 1000) * 1000, caNotAfter)),
      publicKey: csr.publicKey,
      signingKey,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" } as EcdsaParams,
      extensions: [usage, eku, await px.SubjectKeyIdentifierExtension.create(csr.publicKey), aki, ...status, san],
    });
    cert.toString("pem");
    return Buffer.from(cert.rawData);
  };
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
  // Interrupted, or cut short by run.ts's watchdog: the fleet directory goes too.
  const uninstall = cleanUpOnInterrupt(() => rmSync(tmp, { recursive: true, force: true }));
  let fleet: FleetServices | undefined;
  try {
    const dir = join(tmp, "fleet");
    await initFleet({ dir, name: "Bench Robots", domain: "fleet.example" });
    fleet = await FleetServices.open(dir);
    await addDevice(fleet, { id: DEVICE, actor: "bench" });
    const csrs = prepareP256Csrs(CSR_COUNT, DEVICE);

    // Count and time write transactions: how many certificates one group commit carries, and
    // how long the event loop spends in them. The recorder's store.ops.certificates.record runs
    // the batch's transaction synchronously within the call on SQLite (this process keeps
    // synchronous = FULL, so the fsync is inside), before the promise it returns settles.
    let commits = 0;
    let commitSeconds = 0;
    const certificates = fleet.store.ops.certificates;
    const record = certificates.record.bind(certificates);
    certificates.record = (batch) => {
      commits++;
      const t0 = performance.now();
      try {
        return record(batch);
      } finally {
        commitSeconds += (performance.now() - t0) / 1000;
      }
    };

    const f = fleet;
    const samples: Partial<Record<Path, Sample>> = {};
    // The steps issueForKey performs, minus recording: verified key from the CSR, the cached
    // device template, build + sign (with the same SANs: SPIFFE URI and DNS name), and the PEM
    // handed back to the caller.
    const sans = deviceSans(f.domain);
    const issueWithoutDb = async (i: number): Promise<void> => {
      const csrIndex = i % CSR_COUNT;
      assertDeviceId(DEVICE);
      const key = await keyFromCsr(csrs[csrIndex]!.der);
      const template = await f.leafTemplate("devices", "device");
      const issued = template.issue(DEVICE, sans, {
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
      const cert = await issueDeviceCertificate(f, {
        deviceId: DEVICE,
        actor: "bench",
        csr: csrs[csrIndex]!.der,
        context: { via: "bench" },
      });
      issuedWithDb++;
      samples.db = { der: cert.der, csrIndex };
    };
    const peer = await peculiarIssuer(fleet);
    const issueWithPeer = async (i: number): Promise<void> => {
      const csrIndex = i % CSR_COUNT;
      samples.peer = { der: await peer(csrs[csrIndex]!.der), csrIndex };
    };
    const ops: Record<Path, (i: number) => Promise<void>> = { noDb: issueWithoutDb, db: issueWithDb, peer: issueWithPeer };

    const stepCosts = await measureSteps(fleet, csrs);

    const scenarios: Scenario[] = [
      { label: "without database", path: "noDb", concurrency: CONCURRENCY, target: TARGET_WITHOUT_DB, results: [] },
      { label: "without database", path: "noDb", concurrency: 1, results: [] },
      { label: "with database (durable)", path: "db", concurrency: CONCURRENCY, target: TARGET_WITH_DB, results: [] },
      { label: "with database (durable)", path: "db", concurrency: 1, results: [] },
      { label: PEER_LABEL, path: "peer", concurrency: CONCURRENCY, results: [] },
      { label: PEER_LABEL, path: "peer", concurrency: 1, results: [] },
    ];
    const measure = async (s: Scenario, seconds: number): Promise<Run> => {
      const [c0, t0] = [commits, commitSeconds];
      const r = await runLoad(ops[s.path], s.concurrency, seconds);
      return { ...r, commits: commits - c0, commitSeconds: commitSeconds - t0 };
    };
    // JIT, thread pool start-up, SQLite page cache: none of it belongs in the figures.
    for (const s of scenarios) await measure(s, WARMUP_SECONDS);
    // Runs are interleaved so that drift (thermal, page cache, database growth) hits every scenario alike.
    for (let round = 0; round < options.runs; round++) for (const s of scenarios) s.results.push(await measure(s, options.seconds));

    const verification = await verifyOutput(fleet, tmp, dir, csrs, samples, issuedWithDb);
    printReport(options, speed, stepCosts, scenarios, verification, tmp);
  } finally {
    await fleet?.close();
    rmSync(tmp, { recursive: true, force: true });
    uninstall();
  }
}

interface StepCost {
  step: string;
  us: number;
  where: string;
}

/** Per-step cost on one core, each step alone in a tight loop: where one issuance's time goes. */
async function measureSteps(fleet: FleetServices, csrs: readonly PreparedCsr[]): Promise<StepCost[]> {
  const template = await fleet.leafTemplate("devices", "device");
  const { signer } = await fleet.issuingCa("devices");
  const decoded = csrs.map((c) => decodeCsr(c.der));
  const sans = deviceSans(fleet.domain);
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
    {
      step: "  key import via DER SPKI (avoided)",
      us: usPerOp((i) => createPublicKey({ key: csrs[i % csrs.length]!.spki, format: "der", type: "spki" })),
      where: "-",
    },
    {
      step: "CSR signature verify (ECDSA)",
      us: usPerOp((i) => verify(d(i).hash, d(i).signedInfo, d(i).publicKey, d(i).signature)),
      where: "libuv pool",
    },
    { step: "certificate build + sign", us: usPerOp(issueOne), where: "event loop" },
    { step: "  of which ECDSA sign", us: usPerOp(() => sign(signer.scheme.hash, tbsSized, signer.key)), where: "event loop" },
    { step: "PEM encode", us: usPerOp(() => toPem("CERTIFICATE", certDer)), where: "event loop" },
  ];
}

/** Proof that what was timed is real: rows committed, audit chain intact, chains that OpenSSL accepts. */
async function verifyOutput(
  fleet: FleetServices,
  tmp: string,
  dir: string,
  csrs: readonly PreparedCsr[],
  samples: Partial<Record<Path, Sample>>,
  issuedWithDb: number,
): Promise<string[]> {
  const passed: string[] = [];
  const db = sqliteStore(fleet).db;

  const { n: rows } = await db
    .selectFrom("certificates")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("device_id", "=", DEVICE)
    .executeTakeFirstOrThrow();
  check(
    Number(rows) === issuedWithDb,
    `certificates table holds ${rows} rows for ${DEVICE}, but ${issuedWithDb} certificates were issued with the database`,
  );
  passed.push(`certificates rows for ${DEVICE} = ${rows} = certificates issued with the database (warm-up included)`);

  const { n: events } = await db
    .selectFrom("audit_log")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("action", "=", "certificate.issue")
    .where("subject", "=", `device:${DEVICE}`)
    .executeTakeFirstOrThrow();
  check(Number(events) === issuedWithDb, `audit log holds ${events} certificate.issue events for ${DEVICE}, expected ${issuedWithDb}`);
  const audit = await verifyAudit(fleet.store.ops.audit);
  check(audit.ok, `audit chain broken: ${audit.ok ? "" : audit.problem}`);
  passed.push(`audit log: ${events} certificate.issue events, hash chain of ${audit.rows} rows verifies`);

  const named = [
    ["without database", samples.noDb],
    ["with database", samples.db],
    ["by @peculiar/x509", samples.peer],
  ] as const;
  for (const [name, sample] of named) {
    check(sample, `no certificate was produced ${name}`);
    const cert = parseCertificate(sample.der);
    check(cert.spki.equals(csrs[sample.csrIndex]!.spki), `certificate issued ${name} does not carry its CSR's key`);
    if (name === "with database") {
      const row = await db.selectFrom("certificates").select("der").where("serial", "=", cert.serialHex).executeTakeFirst();
      check(row && Buffer.from(row.der).equals(sample.der), `certificate ${cert.serialHex} issued ${name} is not stored byte for byte`);
    }
    const file = join(tmp, `sample ${name}.pem`.replace(/[^a-z0-9.]+/gi, "-"));
    writeFileSync(file, toPem("CERTIFICATE", sample.der));
    const args = ["verify", "-CAfile", join(dir, layout.caCert("root")), "-untrusted", join(dir, layout.caCert("devices")), file];
    const r = spawnSync("openssl", args, { encoding: "utf8", timeout: 30_000 });
    check(
      r.status === 0 && r.stdout.includes(": OK"),
      `openssl ${args.join(" ")} failed for the certificate issued ${name}:\n${r.stdout}${r.stderr}`,
    );
    passed.push(`openssl verify (root + devices CA) accepts a certificate issued ${name}, serial ${cert.serialHex}`);
  }
  passed.push(`the @peculiar/x509 peer issues the same certificate: ${samePeerProfile(samples.noDb!.der, samples.peer!.der)}`);
  return passed;
}

/**
 * The peer is only a fair comparison if it does the same work: same issuer and subject, the same
 * extensions in the same order and criticality, byte for byte except the SKI (its own key's).
 */
function samePeerProfile(fleetDer: Buffer, peerDer: Buffer): string {
  const ours = parseCertificate(fleetDer);
  const peer = parseCertificate(peerDer);
  for (const field of ["issuer", "subject"] as const)
    check(
      peer[field].equals(ours[field]),
      `${field} differs: @peculiar/x509 ${peer[field].toString("hex")}, fleetpki ${ours[field].toString("hex")}`,
    );
  check(
    peer.signatureAlgorithm === ours.signatureAlgorithm,
    `@peculiar/x509 signed with ${peer.signatureAlgorithm}, fleetpki with ${ours.signatureAlgorithm}`,
  );
  const oids = [...ours.extensions.keys()];
  const peerOids = [...peer.extensions.keys()];
  check(oids.join() === peerOids.join(), `extensions differ: fleetpki ${oids.join(", ")}; @peculiar/x509 ${peerOids.join(", ")}`);
  for (const [oid, e] of ours.extensions) {
    const p = peer.extensions.get(oid)!;
    check(p.critical === e.critical, `extension ${oid}: critical ${p.critical} in the @peculiar/x509 certificate, ${e.critical} in ours`);
    if (oid === OID.subjectKeyIdentifier) continue;
    check(p.value.equals(e.value), `extension ${oid} differs between the @peculiar/x509 certificate and fleetpki's`);
  }
  const validity = (c: typeof ours) => c.notAfter.getTime() - c.notBefore.getTime();
  check(Math.abs(validity(peer) - validity(ours)) <= 2_000, "the @peculiar/x509 certificate's validity period differs from fleetpki's");
  return `issuer, subject, validity, signature algorithm and ${oids.length} extensions (in order) match fleetpki's`;
}

const fmtCores = (n: number): string => (Number.isNaN(n) ? "?" : n.toFixed(2));

function filesystemOf(path: string): string {
  const r = spawnSync("df", ["--output=fstype", path], { encoding: "utf8" });
  return r.status === 0 ? (r.stdout.trim().split("\n").pop()?.trim() ?? "?") : "?";
}

function printReport(
  options: BenchOptions,
  speed: OpensslSpeed,
  steps: readonly StepCost[],
  scenarios: readonly Scenario[],
  checks: readonly string[],
  tmp: string,
): void {
  const cpu = cpus();
  const ratio = (rate: number): string => `${(rate / speed.boundPerSecond).toFixed(2)}x`;
  const scale = REFERENCE_BOUND / speed.boundPerSecond;
  const out: string[] = [];
  out.push("== issuance: device certificates from prepared CSRs ==");
  out.push(`machine   ${cpu.length} x ${cpu[0]?.model ?? "?"}, Node ${process.version}, ${speed.version}`);
  out.push(`setup     fresh P-256 fleet in ${tmp} (${filesystemOf(tmp)}), ${CSR_COUNT} distinct P-256 CSRs (DER)`);
  out.push(
    `method    ${WARMUP_SECONDS} s warm-up per scenario, then ${options.runs} interleaved runs of ${options.seconds} s each; ` +
      `median reported`,
  );
  out.push("");
  out.push(`baseline  openssl speed -seconds ${speed.seconds} ecdsap256 (one process): ${speed.line}`);
  out.push(
    `          sign ${fmtRate(speed.signPerSecond)}/s, verify ${fmtRate(speed.verifyPerSecond)}/s -> ` +
      `bound 1/(1/sign + 1/verify) = ${fmtRate(speed.boundPerSecond)} cert/s on one core` +
      (speed.otherCores === undefined ? "" : ` (other processes: ${speed.otherCores.toFixed(2)} cores)`),
  );
  out.push("");
  out.push("Per-step cost (one core, tight loop)");
  out.push(
    formatTable(
      ["step", "us/op", "runs on"],
      steps.map((s) => [s.step, s.us.toFixed(1), s.where]),
    ),
  );
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
  out.push(
    formatTable(
      ["scenario", "in flight", "cert/s", "runs min..max", "vs bound", "normalized", "p50 ms", "p99 ms", "others", "target", "status"],
      rows,
    ),
  );
  out.push("  in flight: concurrent requests. vs bound: cert/s / this run's openssl bound. normalized: cert/s x reference");
  out.push(`  bound ${fmtRate(REFERENCE_BOUND)} / this run's bound (host speed drifts). others: CPU taken meanwhile by other processes`);
  out.push(`  or the hypervisor, in cores of ${cpu.length}. Every column is the median over the runs.`);
  out.push("");
  out.push("Group commit (with database)");
  const commitRows = scenarios
    .filter((s) => s.path === "db")
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
  const contended = contentionWarning([speed.otherCores, ...scenarios.flatMap((s) => s.results.map((r) => r.otherCores))]);
  if (contended) out.push(contended);
  out.push("");
  out.push("Peer: @peculiar/x509 issuing the same certificate, measured in this run (medians)");
  const rateOf = (path: Path, concurrency: number) =>
    median(scenarios.find((s) => s.path === path && s.concurrency === concurrency)!.results.map((r) => r.perSecond));
  const peerRows = [CONCURRENCY, 1].map((c) => {
    const [noDb, db, peer] = [rateOf("noDb", c), rateOf("db", c), rateOf("peer", c)];
    const over = (rate: number) => `${(rate / peer).toFixed(1)}x`;
    return [String(c), fmtRate(peer), ratio(peer), fmtRate(noDb), over(noDb), fmtRate(db), over(db)];
  });
  out.push(formatTable(["in flight", "peer cert/s", "peer vs bound", "fleetpki no DB", "/ peer", "fleetpki durable", "/ peer"], peerRows));
  out.push("  / peer: fleetpki's cert/s over the peer's in the same run. The peer parses and verifies the CSR, builds, signs (WebCrypto)");
  out.push("  and PEM-encodes, without a database; the checks below confirm it issues the same certificate as fleetpki.");
  out.push("");
  out.push(`Quoted from issue 2, not measured in this run (against ARCHITECTURE.md's reference bound ${fmtRate(REFERENCE_BOUND)}/s)`);
  const quoted = QUOTED.map(([name, rate]) => [name, fmtRate(rate), `${(rate / REFERENCE_BOUND).toFixed(2)}x`]);
  out.push(formatTable(["implementation", "cert/s", "vs reference bound"], quoted));
  out.push("");
  out.push("Checks");
  for (const c of checks) out.push(`  ok  ${c}`);
  console.log(out.join("\n"));
}
