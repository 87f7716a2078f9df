// EST enrollment throughput (issues 3 and 9): `simpleenroll` requests per second against the
// real registration server (`fleetpki serve` in a child process, durable recording, one-time
// tokens) from 4 keep-alive clients (latency-bound), 32 keep-alive clients (throughput) and 4
// clients with a full TLS handshake per request, next to two baselines run in the same way
// against a bare node:https server in another child process: DER issuance without a database,
// and a fixed body (the TLS + HTTP ceiling).
//
// The load generator is this process: raw HTTP/1.1 over TLS sockets (lib.ts Http1Connection), so
// that 32 clients cost it far less than the servers; its CPU and event-loop load are reported.
// Run as a script with BASELINE_FLAG, this module is the bare server instead (baselineServerMain).
import { spawnSync } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { cpus, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from "node:tls";
import { fileURLToPath } from "node:url";
import SqliteDatabase from "better-sqlite3";
import { canonicalJson, rowHash, verifyAudit } from "../src/audit/log.js";
import { FleetServices } from "../src/authority/services.js";
import { sqlitePath } from "../src/store/open.js";
import { initFleet } from "../src/authority/ca/init.js";
import { keyFromCsr } from "../src/authority/issue/issuance.js";
import { layout } from "../src/authority/layout.js";
import { checkToken } from "../src/authority/enroll/tokens.js";
import { parseDuration } from "../src/config/duration.js";
import { readPassphraseFile, readPrivateKey } from "../src/keys/keys.js";
import type { AuditLogTable, DeviceTable, EnrollmentTokenTable } from "../src/store/schema.js";
import { parseCertificate } from "../src/x509/certificate.js";
import { toPem } from "../src/x509/pem.js";
import { certsOnly, fromBase64Body, parseCertsOnly, toBase64Body } from "../src/x509/pkcs7.js";
import { deviceDnsName, deviceSpiffeId } from "../src/x509/profiles.js";
import {
  BenchFailure,
  contentionWarning,
  Http1Connection,
  WARMUP_SECONDS,
  check,
  cleanUpOnInterrupt,
  fmtMs,
  fmtRate,
  formatTable,
  median,
  opensslSpeedEcdsaP256,
  runLoad,
  watchContention,
  type BenchOptions,
  type Benchmark,
  type HttpReply,
  type LoadResult,
  type OpensslSpeed,
  prepareP256Csrs,
} from "./lib.js";
import { LIVE, ServerProcess, killLive, serverNodeArgs } from "./server-process.js";
import { sqliteStore } from "../test/support/sqlite.js";

const CSR_COUNT = 500;
/** From issue 3: keep-alive simpleenroll throughput (4 clients) fleetpki must reach on this machine class. */
const TARGET_KEEPALIVE = 1500;
/** From issue 3: "a bare Node server with DER issuance and no database measured 2,100/s here" (4 clients). */
const ISSUE_BARE_RATE = 2100;
/** As in bench/issuance.ts: ARCHITECTURE.md's per-core `openssl speed` for this machine class. */
const REFERENCE_BOUND = 1 / (1 / 48000 + 1 / 15700);
/**
 * Tokens are single-use, so every enrollment needs one made beforehand: enough for each mode's
 * maxRate (MODES) sustained through every warm-up and run; a faster machine fails loudly rather
 * than reusing one.
 */
const MIN_TOKENS = 30_000;
const ACTOR = "bench";
/** src/authority/enroll/tokens.ts's format: "fpt_" + 24 random bytes, base64url; only its SHA-256 (hex) is stored. */
const TOKEN_PREFIX = "fpt_";
const BARE_DEVICE = "est-bare-robot";
const EST_ENROLL = "/.well-known/est/simpleenroll";
const CEILING_PATH = "/ceiling";
const CEILING_BODY = "ok\n";
const PKCS7_TYPE = "application/pkcs7-mime; smime-type=certs-only";
const BASELINE_FLAG = "--est-baseline-server";
/** What both servers print once they listen (fleetpki's banner, the baseline's own line). */
const LISTENING = /listening on [^\s]*?:(\d+)\)?\s/;
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const THIS_FILE = fileURLToPath(import.meta.url);

export const benchmark: Benchmark = {
  name: "est",
  description: "EST simpleenroll/s against fleetpki serve (4 and 32 keep-alive clients, full handshakes) next to a bare node:https server",
  run,
};

// ---- child processes ----------------------------------------------------------------------

/** Temporary directories, removed synchronously if this process exits early (e.g. run.ts's watchdog). */
const TEMP_DIRS = new Set<string>();
function emergencyCleanup(): void {
  killLive();
  for (const d of TEMP_DIRS) rmSync(d, { recursive: true, force: true });
}

// ---- fixtures -------------------------------------------------------------------------------

interface EstCsr {
  /** The request body: base64 of the DER CSR, in 64-character lines as EST sends it. */
  body: string;
  spki: Buffer;
}

function prepareCsrs(count: number): EstCsr[] {
  return prepareP256Csrs(count, "est-robot").map((c) => ({ body: toBase64Body(c.der), spki: c.spki }));
}

interface Credential {
  deviceId: string;
  token: string;
  authorization: string;
}

/**
 * `count` devices with one token each, as `fleetpki device add` (addDevice) and `fleetpki token
 * create` (createToken) would leave them, but written in one transaction with prepared statements
 * instead of two Kysely transactions (two fsync'd commits) per device. The rows are the same:
 * devices and enrollment_tokens rows of the same shape, each token stored as the hex SHA-256 of its
 * string, and the same audit events (device.add, token.create) appended to the hash chain with the
 * audit module's own canonicalJson and rowHash. The final checks verify the whole chain, and
 * checkToken (the library's check) must accept bulk-made tokens before the servers start.
 */
async function createDevicesWithTokens(dir: string, count: number): Promise<Credential[]> {
  const fleet = await FleetServices.open(dir);
  const dbPath = sqlitePath(fleet.config.database.url, dir)!;
  const tokenTtlMs = parseDuration(fleet.config.enrollment.token_ttl);
  await fleet.close();

  const now = new Date();
  const nowIso = now.toISOString();
  const expiresAt = new Date(now.getTime() + tokenTtlMs).toISOString();
  const credentials: Credential[] = [];
  const native = new SqliteDatabase(dbPath, { fileMustExist: true });
  try {
    native.pragma("busy_timeout = 10000");
    native.pragma("foreign_keys = ON");
    const insertDevice = native.prepare<DeviceTable>(
      "insert into devices (id, group_name, labels, status, created_at, updated_at) " +
        "values (@id, @group_name, @labels, @status, @created_at, @updated_at)",
    );
    const insertToken = native.prepare<EnrollmentTokenTable>(
      "insert into enrollment_tokens (id, device_id, token_hash, created_at, expires_at, used_at, created_by) " +
        "values (@id, @device_id, @token_hash, @created_at, @expires_at, @used_at, @created_by)",
    );
    const insertAudit = native.prepare<AuditLogTable>(
      "insert into audit_log (seq, at, actor, action, subject, details, prev_hash, hash) " +
        "values (@seq, @at, @actor, @action, @subject, @details, @prev_hash, @hash)",
    );
    const readHead = native.prepare<[], { seq: number; hash: string }>("select seq, hash from audit_head where id = 1");
    const writeHead = native.prepare<[number, string]>("update audit_head set seq = ?, hash = ? where id = 1");
    native
      .transaction(() => {
        const head = readHead.get();
        check(head, "the fleet's audit log has no head row after init");
        let { seq, hash: prev } = head;
        const audit = (action: string, subject: string, details: Record<string, unknown>) => {
          const base = { seq: ++seq, at: nowIso, actor: ACTOR, action, subject, details: canonicalJson(details) };
          const hash = rowHash(prev, base);
          insertAudit.run({ ...base, prev_hash: prev, hash });
          prev = hash;
        };
        for (let i = 0; i < count; i++) {
          const deviceId = `est-robot-${String(i).padStart(6, "0")}`;
          const token = TOKEN_PREFIX + randomBytes(24).toString("base64url");
          insertDevice.run({ id: deviceId, group_name: null, labels: "{}", status: "active", created_at: nowIso, updated_at: nowIso });
          audit("device.add", `device:${deviceId}`, { group: null, labels: {} });
          const row: EnrollmentTokenTable = {
            id: randomUUID(),
            device_id: deviceId,
            token_hash: createHash("sha256").update(token, "utf8").digest("hex"),
            created_at: nowIso,
            expires_at: expiresAt,
            used_at: null,
            created_by: ACTOR,
            certificate_serial: null,
          };
          insertToken.run(row);
          audit("token.create", `device:${deviceId}`, { token_id: row.id, expires_at: row.expires_at });
          credentials.push({ deviceId, token, authorization: `Basic ${Buffer.from(`${deviceId}:${token}`).toString("base64")}` });
        }
        writeHead.run(seq, prev);
      })
      .immediate();
  } finally {
    native.close();
  }

  // The library itself must accept a bulk-made token (same hashing, same row), or every request would be a 401.
  const fleetAfter = await FleetServices.open(dir);
  try {
    await checkToken(fleetAfter, credentials[0]!.deviceId, credentials[0]!.token);
    await checkToken(fleetAfter, credentials[count - 1]!.deviceId, credentials[count - 1]!.token);
  } finally {
    await fleetAfter.close();
  }
  return credentials;
}

// ---- client ---------------------------------------------------------------------------------

/**
 * A TLS connection to a server on 127.0.0.1 that trusts the fleet root, resolved once the
 * handshake is done. secureContext is built once: a per-connection `ca` would build a new
 * OpenSSL context and trust store for every connection. No session is offered, so every
 * connection is a full handshake (the checks confirm none was resumed).
 */
function connectTls(port: number, secureContext: SecureContext): Promise<TLSSocket> {
  return new Promise((resolveSocket, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, secureContext }, () => {
      socket.off("error", reject);
      socket.setNoDelay(true);
      resolveSocket(socket);
    });
    socket.once("error", reject);
  });
}

/** The whole request, head and body, as one string: written with one write per request. */
function postRequest(port: number, path: string, authorization: string, body: string, close: boolean): string {
  return (
    `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\ncontent-type: application/pkcs10\r\nauthorization: ${authorization}\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\n${close ? "connection: close\r\n" : ""}\r\n${body}`
  );
}

/** A 200 with one certificate in a certs-only PKCS#7, as RFC 7030 4.2.3 has it. */
function enrolledCertificate(body: Buffer, what: string): Buffer {
  const certs = parseCertsOnly(fromBase64Body(body));
  check(certs.length === 1, `${what}: the PKCS#7 holds ${certs.length} certificates, expected 1`);
  return certs[0]!;
}

// ---- scenarios ------------------------------------------------------------------------------

type Target = "fleet" | "bare" | "ceiling";

/** How the clients talk to a server: how many, each with one request in flight, and over which TLS. */
interface Mode {
  clients: number;
  keepAlive: boolean;
  /** A rate no server here should exceed in this mode: the budget of one-time tokens made beforehand. */
  maxRate: number;
  /** Why this mode is measured, for the report. */
  role: string;
}

const ALL_MODES: readonly Mode[] = [
  { clients: 4, keepAlive: true, maxRate: 3000, role: "latency-bound: each answer waits for a durable commit" },
  { clients: 32, keepAlive: true, maxRate: 8000, role: "throughput: group sync amortizes the fsync" },
  { clients: 4, keepAlive: false, maxRate: 1500, role: "what a new connection adds (TLS handshake on both sides)" },
];
/**
 * BENCH_EST_MODES="32" (comma-separated client counts; "4full" for the full-handshake mode) measures
 * only those modes: for profiling one load or iterating on it. The default measures all of them.
 */
const MODES: readonly Mode[] = (() => {
  const wanted = (process.env.BENCH_EST_MODES ?? "").split(",").filter(Boolean);
  if (wanted.length === 0) return ALL_MODES;
  const modes = ALL_MODES.filter((m) => wanted.includes(`${m.clients}${m.keepAlive ? "" : "full"}`));
  if (modes.length === 0) throw new BenchFailure(`BENCH_EST_MODES=${wanted.join(",")} names no mode; use 4, 32 or 4full`);
  return modes;
})();
/** From issue 9: at 32 keep-alive clients fleetpki must reach this share of the bare server's rate. */
const TARGET_RATIO_32 = 0.7;
/** Above this share of wall time busy, the client's event loop may be what limits the rate. */
const CLIENT_BUSY_LIMIT = 0.9;

interface Scenario {
  target: Target;
  label: string;
  mode: Mode;
  results: Run[];
  sample?: { der: Buffer; csrIndex: number };
}

interface Run extends LoadResult {
  serverCores: number;
  clientCores: number;
  /** Share of wall time the client's event loop was busy (performance.eventLoopUtilization). */
  clientBusy: number;
  others: number | undefined;
  /** TLS connections opened, and of those resumed from a session ticket. */
  connections: number;
  resumed: number;
}

const TARGET_LABEL: Record<Target, string> = {
  fleet: "fleetpki serve, simpleenroll (DB)",
  bare: "bare node:https, DER issuance, no DB",
  ceiling: "bare node:https, fixed body",
};

const tlsLabel = (m: Mode): string => (m.keepAlive ? "keep-alive" : "full");

async function run(options: BenchOptions): Promise<void> {
  // Interrupted (Ctrl-C, a CI timeout) or cut short (run.ts's watchdog exits): leave nothing behind.
  const uninstall = cleanUpOnInterrupt(emergencyCleanup);
  try {
    await runBench(options);
  } finally {
    for (const s of [...LIVE]) await s.stop(5_000);
    for (const d of TEMP_DIRS) rmSync(d, { recursive: true, force: true });
    TEMP_DIRS.clear();
    uninstall();
  }
}

async function runBench(options: BenchOptions): Promise<void> {
  const timings: [string, number][] = [];
  let t = performance.now();
  const lap = (what: string) => {
    const now = performance.now();
    timings.push([what, (now - t) / 1000]);
    t = now;
  };

  // Before anything else uses the CPU: the host's speed right now.
  const speed = opensslSpeedEcdsaP256(options.seconds);
  lap("openssl speed");

  const tmp = mkdtempSync(join(tmpdir(), "fleetpki-bench-est-"));
  TEMP_DIRS.add(tmp);
  const dir = join(tmp, "fleet");
  await initFleet({ dir, name: "Bench Robots", domain: "fleet.example" });
  lap("init fleet");
  const secondsPerMode = WARMUP_SECONDS + options.runs * options.seconds;
  const tokenCount = Math.max(MIN_TOKENS, Math.ceil(MODES.reduce((n, m) => n + m.maxRate * secondsPerMode, 0)));
  const credentials = await createDevicesWithTokens(dir, tokenCount);
  lap(`${fmtRate(tokenCount)} devices and tokens`);
  const csrs = prepareCsrs(CSR_COUNT);
  lap(`${CSR_COUNT} CSRs`);

  const [fleetServer, bareServer] = await Promise.all([
    ServerProcess.start(
      "fleetpki serve",
      process.execPath,
      [...serverNodeArgs(), join(REPO, "bin", "fleetpki.js"), "serve", "--dir", dir, "--listen", "127.0.0.1:0", "--only", "registration"],
      {
        env: { FLEETPKI_LOG_LEVEL: "warn" },
        logFile: join(tmp, "fleetpki-serve.log"),
        port: LISTENING,
      },
    ),
    ServerProcess.start("bare server", process.execPath, ["--import", "tsx", THIS_FILE, BASELINE_FLAG, dir], {
      logFile: join(tmp, "bare-server.log"),
      port: LISTENING,
    }),
  ]);
  lap("servers started");
  const servers = [fleetServer.server, bareServer.server];
  const ports: Record<Target, number> = { fleet: fleetServer.port, bare: bareServer.port, ceiling: bareServer.port };
  const secureContext = createSecureContext({ ca: readFileSync(join(dir, layout.caCert("root")), "utf8") });
  const bareAuthorization = `Basic ${Buffer.from(`${BARE_DEVICE}:not-checked`).toString("base64")}`;

  let nextCredential = 0;
  let fleetOk = 0;
  interface Counts {
    connections: number;
    resumed: number;
  }
  /** Issued bodies, checked after the timed run so that parsing them costs the client nothing meanwhile. */
  interface Issued {
    body: Buffer;
    csrIndex: number;
  }
  const op = (s: Scenario, clients: (Http1Connection | undefined)[], counts: Counts, issued: Issued[]) => async (i: number, w: number) => {
    let csrIndex = i % CSR_COUNT;
    let authorization = bareAuthorization;
    if (s.target === "fleet") {
      const n = nextCredential++;
      if (n >= credentials.length)
        throw new BenchFailure(`all ${credentials.length} pre-made tokens are used; raise maxRate in MODES (bench/est.ts)`);
      authorization = credentials[n]!.authorization;
      csrIndex = n % CSR_COUNT;
    }
    const port = ports[s.target];
    const path = s.target === "ceiling" ? CEILING_PATH : EST_ENROLL;
    const request = postRequest(port, path, authorization, csrs[csrIndex]!.body, !s.mode.keepAlive);
    let conn = clients[w];
    if (!conn?.usable) {
      const socket = await connectTls(port, secureContext);
      counts.connections++;
      if (socket.isSessionReused()) counts.resumed++;
      conn = new Http1Connection(socket);
      if (s.mode.keepAlive) clients[w] = conn;
    }
    let reply: HttpReply;
    try {
      reply = await conn.request(request);
    } finally {
      if (!s.mode.keepAlive) conn.close();
    }
    if (s.target === "ceiling") {
      check(
        reply.status === 200 && reply.body.toString("utf8") === CEILING_BODY,
        `${s.label}: HTTP ${reply.status} ${reply.body.toString("utf8").slice(0, 200)}`,
      );
      return;
    }
    if (reply.status !== 200) throw new BenchFailure(`${s.label}: HTTP ${reply.status}: ${reply.body.toString("utf8").slice(0, 500)}`);
    const type = reply.headers["content-type"];
    check(type === PKCS7_TYPE, `${s.label}: content-type ${type}, expected ${PKCS7_TYPE}`);
    if (s.target === "fleet") fleetOk++;
    issued.push({ body: reply.body, csrIndex });
  };

  const measure = async (s: Scenario, seconds: number): Promise<Run> => {
    const counts: Counts = { connections: 0, resumed: 0 };
    const issued: Issued[] = [];
    // Keep-alive connections are opened before the clock starts: their handshakes are not the figure.
    const clients: (Http1Connection | undefined)[] = [];
    try {
      if (s.mode.keepAlive) {
        const sockets = await Promise.all(Array.from({ length: s.mode.clients }, () => connectTls(ports[s.target], secureContext)));
        for (const socket of sockets) clients.push(new Http1Connection(socket));
        counts.connections = sockets.length;
      }
      const cpu0 = servers.map((p) => p.cpuSeconds());
      const own0 = process.cpuUsage();
      const loop0 = performance.eventLoopUtilization();
      const stop = watchContention();
      const t0 = performance.now();
      const r = await runLoad(op(s, clients, counts, issued), s.mode.clients, seconds);
      const wall = (performance.now() - t0) / 1000;
      const clientBusy = performance.eventLoopUtilization(loop0).utilization;
      const cores = servers.map((p, k) => (p.cpuSeconds() - cpu0[k]!) / wall);
      const own = process.cpuUsage(own0);
      const serverCores = cores[s.target === "fleet" ? 0 : 1]!;
      const others = stop(cores.reduce((a, b) => a + b, 0));
      for (const [k, x] of issued.entries()) {
        const der = enrolledCertificate(x.body, s.label);
        if (k === issued.length - 1) s.sample = { der, csrIndex: x.csrIndex };
      }
      return { ...r, serverCores, clientCores: (own.user + own.system) / 1e6 / wall, clientBusy, others, ...counts };
    } catch (e) {
      await new Promise((r) => setTimeout(r, 500)); // a crashed server's exit may be reported after its sockets' errors
      const dead = servers.find((p) => p.exit);
      if (dead)
        throw new BenchFailure(
          `${dead.name} exited (${dead.exitText}) during "${s.label}": ${(e as Error).message}; its output:\n${dead.log}`,
        );
      throw e;
    } finally {
      for (const c of clients) c?.close();
    }
  };

  const scenarios: Scenario[] = [];
  for (const mode of MODES)
    for (const target of ["fleet", "bare", "ceiling"] as const) scenarios.push({ target, label: TARGET_LABEL[target], mode, results: [] });
  // JIT, thread pools, SQLite page cache, TLS contexts: none of it belongs in the figures.
  for (const s of scenarios) await measure(s, WARMUP_SECONDS);
  lap("warm-up");
  // Interleaved, so that drift in the host's speed hits every scenario alike.
  for (let round = 0; round < options.runs; round++) for (const s of scenarios) s.results.push(await measure(s, options.seconds));
  lap("measured runs");

  for (const s of scenarios)
    for (const r of s.results) {
      const what = `${s.label}, ${s.mode.clients} clients, ${tlsLabel(s.mode)}`;
      if (s.mode.keepAlive)
        check(r.connections === s.mode.clients, `${what}: ${r.connections} connections for ${s.mode.clients} clients; not kept alive`);
      else
        check(
          r.connections === r.completed && r.resumed === 0,
          `${what}: ${r.connections} connections (${r.resumed} resumed) for ${r.completed} requests`,
        );
    }

  // Graceful stop (SIGTERM: close the listener, then the database) before the database is read.
  const stops = await Promise.all(servers.map(async (p) => ({ name: p.name, log: p.log, ...(await p.stop()) })));
  lap("servers stopped");
  const checks = await verifyOutput(dir, tmp, csrs, scenarios, fleetOk);
  lap("checks");
  for (const st of stops) {
    check(!st.killed, `${st.name} did not exit within 10 s of SIGTERM; its output:\n${st.log}`);
    check(st.code === 0, `${st.name} exited with ${st.code}; its output:\n${st.log}`);
  }
  const fleetLog = stops[0]!.log.split("\n").filter((l) => l.startsWith("{"));
  check(fleetLog.length === 0, `fleetpki serve logged warnings or errors:\n${fleetLog.slice(0, 10).join("\n")}`);
  checks.push(`fleetpki serve and the bare server exited 0 on SIGTERM; fleetpki serve logged no warnings or errors`);
  printReport(options, speed, scenarios, checks, tmp, tokenCount, timings);
}

/** Proof that what was timed is real: one row per 200, tokens consumed, audit intact, chains that OpenSSL accepts. */
async function verifyOutput(
  dir: string,
  tmp: string,
  csrs: readonly EstCsr[],
  scenarios: readonly Scenario[],
  fleetOk: number,
): Promise<string[]> {
  const passed: string[] = [];
  const fleet = await FleetServices.open(dir);
  try {
    const db = sqliteStore(fleet).db;
    const count = async (q: Promise<{ n: number | string | bigint }>) => Number((await q).n);
    const rows = await count(
      db
        .selectFrom("certificates")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .where("kind", "=", "device")
        .executeTakeFirstOrThrow(),
    );
    check(
      rows === fleetOk,
      `the certificates table holds ${rows} device certificates, but fleetpki answered 200 to ${fleetOk} simpleenroll requests`,
    );
    passed.push(`device certificate rows = ${fmtRate(rows)} = simpleenroll 200 responses from fleetpki (warm-up included)`);
    const used = await count(
      db
        .selectFrom("enrollment_tokens")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .where("used_at", "is not", null)
        .executeTakeFirstOrThrow(),
    );
    check(used === fleetOk, `${used} tokens are marked used, expected ${fleetOk}`);
    const events = await count(
      db
        .selectFrom("audit_log")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .where("action", "=", "certificate.issue")
        .where("subject", "like", "device:%")
        .executeTakeFirstOrThrow(),
    );
    check(events === fleetOk, `the audit log holds ${events} certificate.issue events for devices, expected ${fleetOk}`);
    const audit = await verifyAudit(fleet.store.ops.audit);
    check(audit.ok, `audit chain broken: ${audit.ok ? "" : audit.problem}`);
    passed.push(
      `tokens used = certificate.issue audit events = ${fmtRate(fleetOk)}; the audit hash chain of ${fmtRate(audit.rows)} rows verifies`,
    );

    const root = join(dir, layout.caCert("root"));
    const devicesCa = join(dir, layout.caCert("devices"));
    for (const s of scenarios) {
      if (s.target === "ceiling") continue;
      const what = `${s.label}, ${s.mode.clients} clients, ${s.mode.keepAlive ? "keep-alive" : "full handshake"}`;
      check(s.sample, `${what}: no certificate was returned`);
      const cert = parseCertificate(s.sample.der);
      check(cert.spki.equals(csrs[s.sample.csrIndex]!.spki), `${what}: the returned certificate does not carry its CSR's key`);
      if (s.target === "fleet") {
        const row = await db.selectFrom("certificates").select("der").where("serial", "=", cert.serialHex).executeTakeFirst();
        check(row && Buffer.from(row.der).equals(s.sample.der), `${what}: certificate ${cert.serialHex} is not stored byte for byte`);
      }
      const file = join(tmp, `sample-${s.target}-${s.mode.clients}-${s.mode.keepAlive ? "ka" : "fh"}.pem`);
      writeFileSync(file, toPem("CERTIFICATE", s.sample.der));
      const args = ["verify", "-CAfile", root, "-untrusted", devicesCa, file];
      const r = spawnSync("openssl", args, { encoding: "utf8", timeout: 30_000 });
      check(r.status === 0 && r.stdout.includes(": OK"), `openssl ${args.join(" ")} failed for ${what}:\n${r.stdout}${r.stderr}`);
      passed.push(
        `${what}: the last certificate carries its CSR's key${s.target === "fleet" ? ", is stored byte for byte" : ""}, ` +
          `and openssl verify (root + devices CA) accepts it`,
      );
    }
    passed.push("every response: 200 with a certs-only PKCS#7 holding one certificate (ceiling: 200 with its fixed body)");
    passed.push("keep-alive runs used exactly one TLS connection per client; full-handshake runs one connection per request, none resumed");
  } finally {
    await fleet.close();
  }
  return passed;
}

// ---- report ---------------------------------------------------------------------------------

const fmtCores = (n: number | undefined): string => (n === undefined || Number.isNaN(n) ? "?" : n.toFixed(2));
const fmtRatio = (a: number, b: number): string => `${(a / b).toFixed(2)}x`;

function printReport(
  options: BenchOptions,
  speed: OpensslSpeed,
  scenarios: readonly Scenario[],
  checks: readonly string[],
  tmp: string,
  tokens: number,
  timings: readonly [string, number][],
): void {
  const cpu = cpus();
  const rate = (s: Scenario) => median(s.results.map((r) => r.perSecond));
  const find = (target: Target, mode: Mode) => scenarios.find((s) => s.target === target && s.mode === mode)!;
  const med = (s: Scenario, f: (r: Run) => number) => median(s.results.map(f));
  const cpuUs = (cores: number, perSecond: number) => (cores / perSecond) * 1e6;
  const scale = REFERENCE_BOUND / speed.boundPerSecond;
  const modeName = (m: Mode) => `${m.clients} clients, ${m.keepAlive ? "keep-alive" : "full handshake per request"}`;
  const out: string[] = [];
  out.push(`== est: EST simpleenroll over HTTPS, ${[...new Set(MODES.map((m) => m.clients))].join(" and ")} concurrent clients ==`);
  out.push(
    `machine   ${cpu.length} x ${cpu[0]?.model ?? "?"}, Node ${process.version} ` +
      `(OpenSSL ${process.versions.openssl}), CLI ${speed.version}`,
  );
  out.push(
    `setup     fresh P-256 fleet in ${tmp}, ${fmtRate(tokens)} devices with one token each, ${CSR_COUNT} distinct P-256 CSRs (base64 DER)`,
  );
  out.push(
    `          servers: \`fleetpki serve\` (FLEETPKI_LOG_LEVEL=warn) and a bare node:https server, ` +
      `each its own process; the client is this process`,
  );
  out.push(`          (HTTP/1.1 written and read directly on TLS sockets, one request in flight per client)`);
  out.push(`method    ${WARMUP_SECONDS} s warm-up per scenario, ${options.runs} interleaved runs of ${options.seconds} s, median reported`);
  out.push("          Modes:");
  for (const m of MODES) out.push(`            ${modeName(m)}: ${m.role}`);
  out.push(
    `baseline  openssl speed -seconds ${speed.seconds} ecdsap256: sign ${fmtRate(speed.signPerSecond)}/s, ` +
      `verify ${fmtRate(speed.verifyPerSecond)}/s, bound ${fmtRate(speed.boundPerSecond)}/s` +
      ` (reference ${fmtRate(REFERENCE_BOUND)}/s; host speed factor ${(1 / scale).toFixed(2)})` +
      (speed.otherCores === undefined ? "" : `, other processes ${speed.otherCores.toFixed(2)} cores`),
  );
  out.push("");
  out.push("Throughput");
  const rows = scenarios.map((s) => {
    const r = rate(s);
    const bare = rate(find("bare", s.mode));
    const ceiling = rate(find("ceiling", s.mode));
    const rates = s.results.map((x) => x.perSecond);
    return [
      s.label,
      String(s.mode.clients),
      tlsLabel(s.mode),
      fmtRate(r),
      `${fmtRate(Math.min(...rates))}..${fmtRate(Math.max(...rates))}`,
      s.target === "bare" ? "-" : fmtRatio(r, bare),
      s.target === "ceiling" ? "-" : fmtRatio(r, ceiling),
      fmtMs(med(s, (x) => x.p50Ms)),
      fmtMs(med(s, (x) => x.p99Ms)),
      Math.round(med(s, (x) => cpuUs(x.serverCores, x.perSecond))).toString(),
      Math.round(med(s, (x) => cpuUs(x.clientCores, x.perSecond))).toString(),
      fmtCores(med(s, (x) => x.serverCores)),
      fmtCores(med(s, (x) => x.clientCores)),
      `${Math.round(100 * med(s, (x) => x.clientBusy))}%`,
      fmtCores(med(s, (x) => x.others ?? NaN)),
    ];
  });
  out.push(
    formatTable(
      ["scenario", "clients", "TLS", "req/s", "runs min..max", "vs bare", "vs ceiling", "p50 ms", "p99 ms"].concat([
        "srv us/req",
        "cli us/req",
        "srv cores",
        "cli cores",
        "cli busy",
        "others",
      ]),
      rows,
    ),
  );
  out.push("  clients: concurrent clients, one request in flight each. TLS: keep-alive = one connection per client for the whole");
  out.push("  run (opened before the clock starts); full = a new connection and full handshake per request (no resumption).");
  out.push("  vs bare / vs ceiling: req/s over the bare server's DER-issuance / fixed-body figure with the same clients in this run.");
  out.push("  srv/cli us/req: CPU time (all threads, user + system) of the server process / of this client process per request.");
  out.push("  srv/cli cores: the same as cores busy. cli busy: share of wall time the client's event loop was busy; near 100% the");
  out.push("  client, not the server, sets the rate (on a contended machine it includes time spent waiting for a CPU).");
  out.push(`  others: CPU taken meanwhile by other processes or the hypervisor, in cores of ${cpu.length}.`);
  out.push("  Every column is the median over the runs.");
  out.push("");

  out.push("Server CPU per request, by layer (differences of the srv us/req medians)");
  const srvUs = (target: Target, mode: Mode) => med(find(target, mode), (x) => cpuUs(x.serverCores, x.perSecond));
  const layers = MODES.map((m) => {
    const ceiling = srvUs("ceiling", m);
    const bare = srvUs("bare", m);
    const fleet = srvUs("fleet", m);
    return [String(m.clients), tlsLabel(m), ...[ceiling, bare - ceiling, fleet - bare, fleet].map((us) => Math.round(us).toString())];
  });
  const layerHeaders = ["TLS + HTTP (ceiling)", "+ CSR check, issue, PKCS#7", "+ fleetpki (token, DB, audit, log)", "= fleetpki us/req"];
  out.push(formatTable(["clients", "TLS", ...layerHeaders], layers));
  out.push("");

  out.push("fleetpki against the bare server (DER issuance, no DB) in the same run");
  const against = MODES.map((m) => {
    const fleet = find("fleet", m);
    const bare = find("bare", m);
    const ratio = rate(fleet) / rate(bare);
    const target = m.clients === 32 && m.keepAlive ? TARGET_RATIO_32 : undefined;
    return [
      String(m.clients),
      tlsLabel(m),
      fmtRate(rate(fleet)),
      fmtMs(med(fleet, (x) => x.p50Ms)),
      fmtMs(med(fleet, (x) => x.p99Ms)),
      fmtRate(rate(bare)),
      fmtMs(med(bare, (x) => x.p50Ms)),
      fmtMs(med(bare, (x) => x.p99Ms)),
      `${ratio.toFixed(2)}x`,
      target === undefined ? "-" : `>= ${target.toFixed(2)}x`,
      target === undefined ? "" : ratio >= target ? "ok" : "BELOW",
    ];
  });
  const againstHeaders = ["fleetpki req/s", "p50 ms", "p99 ms", "bare req/s", "p50 ms", "p99 ms", "fleetpki / bare", "target", "status"];
  out.push(formatTable(["clients", "TLS", ...againstHeaders], against));
  for (const m of MODES) out.push(`  ${modeName(m)}: ${m.role}.`);
  out.push("  Every fleetpki 200 means the certificate, the token's use and the audit event are committed and synced to disk.");
  out.push("  The 32-client target (>= 0.70x) is issue 9's.");
  const ka4 = MODES.find((m) => m.clients === 4 && m.keepAlive);
  if (ka4) {
    const fleetKa = rate(find("fleet", ka4));
    const asIf = (fleetKa / rate(find("bare", ka4))) * ISSUE_BARE_RATE;
    const status = fleetKa >= TARGET_KEEPALIVE ? "ok" : asIf >= TARGET_KEEPALIVE ? "ok (vs bare)" : "BELOW";
    const issue3 = `4 keep-alive clients >= ${fmtRate(TARGET_KEEPALIVE)}/s (its bare server made ${fmtRate(ISSUE_BARE_RATE)}/s)`;
    out.push(`  Issue 3's target, ${issue3}: ${status}.`);
    out.push(`  ${fmtRate(fleetKa)}/s here; ${fmtRate(asIf)}/s as if bare = ${fmtRate(ISSUE_BARE_RATE)}/s (the ratio above times that);`);
    out.push(`  ${fmtRate(fleetKa * scale)}/s normalized (x reference bound ${fmtRate(REFERENCE_BOUND)}/s / this run's openssl bound).`);
  }
  out.push("");

  const busyOf = (s: Scenario) => med(s, (x) => x.clientBusy);
  const clientBound = scenarios.filter((s) => busyOf(s) > CLIENT_BUSY_LIMIT);
  const busiest = scenarios.reduce((a, b) => (busyOf(b) > busyOf(a) ? b : a));
  out.push(`Client: busiest event loop ${Math.round(100 * busyOf(busiest))}% (${busiest.label}, ${modeName(busiest.mode)}).`);
  for (const s of clientBound)
    out.push(
      `WARNING: the client's event loop was busy ${Math.round(100 * busyOf(s))}% in "${s.label}, ${modeName(s.mode)}": ` +
        "that figure may measure the client",
    );
  const contended = contentionWarning([speed.otherCores, ...scenarios.flatMap((s) => s.results.map((r) => r.others))]);
  if (contended) out.push(contended);
  out.push("");
  out.push(`Phases: ${timings.map(([w, s]) => `${w} ${s.toFixed(1)} s`).join(", ")}`);
  out.push("");
  out.push("Checks");
  for (const c of checks) out.push(`  ok  ${c}`);
  console.log(out.join("\n"));
}

// ---- the bare baseline server (child process) -----------------------------------------------

/**
 * What the issue describes as "a bare Node server with DER issuance and no database": the fleet
 * server's TLS certificate, key and client-certificate request, and a handler that reads the
 * body, base64-decodes it and runs the issuance core (keyFromCsr: CSR parse, key import,
 * signature check on the thread pool; the cached device template: build + CA signature; certs-only
 * PKCS#7; base64) with no token check and nothing recorded. POST /ceiling answers a fixed body
 * after reading the request: the TLS + HTTP ceiling.
 */
async function baselineServerMain(dir: string): Promise<void> {
  const passphrase = readPassphraseFile(join(dir, layout.passphrase));
  const key = readPrivateKey(join(dir, layout.serverDir, "key.pem"), passphrase)
    .export({ type: "pkcs8", format: "pem" })
    .toString();
  const cert =
    readFileSync(join(dir, layout.serverDir, "cert.pem"), "utf8") + readFileSync(join(dir, layout.serverDir, "chain.pem"), "utf8");
  const ca = ["root", "devices"].map((id) => readFileSync(join(dir, layout.caCert(id)), "utf8"));
  // The database only to load the devices CA (certificate and decrypted key) once, as the fleet server does.
  const fleet = await FleetServices.open(dir);
  const template = await fleet.leafTemplate("devices", "device");
  const lifetimeMs = parseDuration(fleet.config.validity.device);
  const domain = fleet.domain;
  await fleet.close();

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (req.url === CEILING_PATH) {
      res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(CEILING_BODY) });
      res.end(CEILING_BODY);
      return;
    }
    const basic = Buffer.from((req.headers.authorization ?? "").replace(/^Basic\s+/i, ""), "base64").toString("utf8");
    const deviceId = basic.slice(0, Math.max(0, basic.indexOf(":"))) || BARE_DEVICE;
    const subjectKey = await keyFromCsr(fromBase64Body(Buffer.concat(chunks)));
    const issued = template.issue(deviceId, [{ uri: deviceSpiffeId(domain, deviceId) }, { dns: deviceDnsName(domain, deviceId)! }], {
      spki: subjectKey.spki,
      subjectPublicKey: subjectKey.subjectPublicKey,
      now: new Date(),
      lifetimeMs,
    });
    const body = toBase64Body(certsOnly([issued.der]));
    res.writeHead(200, { "content-type": PKCS7_TYPE, "content-transfer-encoding": "base64", "content-length": Buffer.byteLength(body) });
    res.end(body);
  };
  // TLS options as in src/enroll/server.ts, so the two servers differ only in what happens after TLS.
  const server = createServer(
    { key, cert, ca, requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.2", handshakeTimeout: 10_000 },
    (req, res) => {
      handle(req, res).catch((e: unknown) => {
        const body = `${(e as Error)?.message ?? e}\n`;
        if (!res.headersSent) res.writeHead(400, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
        res.end(body);
      });
    },
  );
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const shutdown = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
  // The parent holds our stdin: if it dies without stopping us, stdin ends and so do we.
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
  const { address, port } = server.address() as AddressInfo;
  process.stderr.write(`bare server listening on ${address}:${port}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === THIS_FILE && process.argv[2] === BASELINE_FLAG) {
  const dir = process.argv[3];
  if (!dir) throw new Error(`usage: node --import tsx bench/est.ts ${BASELINE_FLAG} FLEET_DIR`);
  await baselineServerMain(dir);
}
