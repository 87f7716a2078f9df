// GET /metrics on the admin listener against a real fleet: every listener running (registration,
// status, gateway, admin) on 127.0.0.1:0, devices enrolled and renewed by the agent library over
// HTTPS, mosquitto_pub against the gateway, openssl against the OCSP responder. The text exposition
// is parsed here and the series are checked to exist and to move.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { enroll } from "../src/agent/enroll.js";
import { renew } from "../src/agent/renew.js";
import { loadState } from "../src/agent/state.js";
import { AccessPolicy } from "../src/access/policy.js";
import type { OperatorRole } from "../src/access/identity.js";
import { metricsAllowList, SESSION_COOKIE } from "../src/admin/auth.js";
import { issueOwnLeaf } from "../src/authority/ca/init.js";
import { addDevice } from "../src/authority/devices.js";
import { createLoginLink, redeemLoginLink } from "../src/authority/identities/operator-sessions.js";
import { ChangeFeed } from "../src/authority/events/change-feed.js";
import { CertificateStatus } from "../src/authority/status/certificate-status.js";
import { layout } from "../src/authority/layout.js";
import { expiringCertificates } from "../src/authority/status/expiry.js";
import { revokeCertificate } from "../src/authority/status/revocation.js";
import { readPrivateKey } from "../src/keys/keys.js";
import { silentLogger } from "../src/log.js";
import { FleetMetrics } from "../src/metrics/metrics.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { sha256Fingerprint } from "../src/x509/certificate.js";
import { fromPem } from "../src/x509/pem.js";
import { operatorSpiffeId } from "../src/x509/profiles.js";
import { tempFleet } from "./helpers.js";
import { assertProblem, editConfig, https, postJson, rootPemPath, run, type HttpOptions } from "./server-helpers.js";
import { ManualClock } from "./support/clock.js";

const DAY = 86_400_000;

/** One sample per name and label set: `name{a="x",b="y"}` (labels sorted) -> value; plus each family's TYPE. */
interface Exposition {
  samples: Map<string, number>;
  types: Map<string, string>;
}

/** A small parser of the Prometheus text format 0.0.4 (what a scraper reads), strict enough to catch a malformed line. */
function parseExposition(text: string): Exposition {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
      assert.ok(m, `malformed comment line: ${line}`);
      if (m[1] === "TYPE") {
        assert.match(m[3]!, /^(counter|gauge|histogram|summary|untyped)$/, line);
        types.set(m[2]!, m[3]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: -?\d+)?$/.exec(line);
    assert.ok(m, `malformed sample line: ${line}`);
    const labels: string[] = [];
    const labelText = m[2] ?? "";
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;
    for (let at = 0; at < labelText.length;) {
      re.lastIndex = at;
      const l = re.exec(labelText);
      assert.ok(l, `malformed labels in: ${line}`);
      labels.push(`${l[1]}="${l[2]}"`);
      at = re.lastIndex;
    }
    // Prometheus reads values as Go's ParseFloat does: NaN and Inf in any case (prom-client writes
    // "Nan" for an event-loop lag not sampled yet).
    const word = m[3]!.toLowerCase();
    const value = word === "+inf" || word === "inf" ? Infinity : word === "-inf" ? -Infinity : Number(m[3]);
    assert.ok(!Number.isNaN(value) || word === "nan", `bad value in: ${line}`);
    const key = labels.length ? `${m[1]}{${labels.sort().join(",")}}` : m[1]!;
    assert.ok(!samples.has(key), `duplicate sample ${key}`);
    samples.set(key, value);
  }
  return { samples, types };
}

/** The sample's value (0 when absent: a labelled counter shows a label set once it was counted). */
function sample(e: Exposition, name: string, labels: Record<string, string> = {}): number {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  return e.samples.get(parts.length ? `${name}{${parts.sort().join(",")}}` : name) ?? 0;
}

/** Sum over every label set of a family. */
function total(e: Exposition, name: string): number {
  let sum = 0;
  for (const [key, value] of e.samples) if (key === name || key.startsWith(`${name}{`)) sum += value;
  return sum;
}

const POLICY = AccessPolicy.parse(
  `version: 1
rules:
  - name: devices-publish-own
    devices: all
    publish: ["fleet/\${device}/#"]
`,
  "metrics-test-policy.yaml",
);

interface Operator {
  cert: string;
  key: string;
}

describe("GET /metrics", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let base: string;
  let ca: string;
  let rootFp: string;
  const clock = new ManualClock();
  const roles = new Map<string, OperatorRole>();
  const ops: Record<string, Operator> = {};

  async function operator(name: string, role: OperatorRole | undefined): Promise<Operator> {
    const dirRel = layout.operatorDir(name);
    if (name !== "admin")
      await issueOwnLeaf(
        f.fleet,
        {
          caId: "operators",
          kind: "operator",
          commonName: name,
          sans: [{ uri: operatorSpiffeId(f.fleet.domain, name) }],
          dirRel,
          lifetime: "30d",
        },
        "test",
        clock.now(),
      );
    if (role) roles.set(name, role);
    const dir = f.fleet.path(dirRel);
    const key = readPrivateKey(join(dir, "key.pem"), f.fleet.passphrase()).export({ type: "pkcs8", format: "pem" }).toString();
    return { cert: readFileSync(join(dir, "cert.pem"), "utf8") + readFileSync(join(dir, "chain.pem"), "utf8"), key };
  }

  const as = (who: Operator | undefined, from?: string): HttpOptions => ({
    ca,
    ...(who ? { cert: who.cert, key: who.key } : {}),
    ...(from ? { localAddress: from } : {}),
  });

  async function scrape(options: HttpOptions = as(undefined)): Promise<Exposition> {
    // What the feed has not delivered yet is not counted yet.
    await server.changes.poll();
    const res = await https(`${base}/metrics`, options);
    assert.equal(res.status, 200, res.text);
    assert.match(String(res.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
    return parseExposition(res.text);
  }

  async function enrollDevice(id: string): Promise<string> {
    const added = await addDevice(server.fleet, { id, actor: "test", token: {} });
    const dir = join(f.dir, "..", `agent-${id}`);
    await enroll({
      server: `https://127.0.0.1:${server.registration!.port}`,
      rootFingerprint: rootFp,
      deviceId: id,
      mode: { kind: "token", token: added.token!.token },
      dir,
    });
    return dir;
  }

  before(async () => {
    f = await tempFleet();
    editConfig(f.dir, (doc) => {
      doc.admin = { ...doc.admin, metrics_allow: ["127.0.0.1/32"] };
    });
    ca = readFileSync(rootPemPath(f.dir), "utf8");
    rootFp = `sha256:${sha256Fingerprint(fromPem(ca, ["CERTIFICATE"]))}`;
    ops.admin = await operator("admin", "admin");
    ops.alice = await operator("alice", "viewer");
    ops.nobody = await operator("nobody", undefined);
    server = await startFleetServer({
      dir: f.dir,
      registrationListen: "127.0.0.1:0",
      statusListen: "127.0.0.1:0",
      gatewayListen: "127.0.0.1:0",
      adminListen: "127.0.0.1:0",
      policy: POLICY,
      logger: silentLogger,
      clock,
      metricsCacheMs: 0,
      operators: { role: (n) => roles.get(n) ?? null },
    });
    base = `https://127.0.0.1:${server.admin!.address.port}`;
  });
  after(async () => {
    await server?.close();
    await f?.close();
  });

  test("the allow list matches the TCP peer, IPv4-mapped IPv6 as IPv4", () => {
    const allowed = metricsAllowList(["127.0.0.1/32", "10.1.0.0/16", "fd00::/8"]);
    assert.equal(allowed("127.0.0.1"), true);
    assert.equal(allowed("::ffff:127.0.0.1"), true);
    assert.equal(allowed("::ffff:10.1.200.3"), true);
    assert.equal(allowed("fd12::1"), true);
    assert.equal(allowed("127.0.0.2"), false);
    assert.equal(allowed("::ffff:127.0.0.2"), false);
    assert.equal(allowed("10.2.0.1"), false);
    assert.equal(allowed("::1"), false);
    assert.equal(allowed(undefined), false);
    assert.equal(metricsAllowList([])("127.0.0.1"), false);
  });

  test("from an allowed address without a credential: every series, parsed, starting from the fleet's totals", async () => {
    const e = await scrape();
    for (const [name, type] of [
      ["fleetpki_certificates_issued_total", "counter"],
      ["fleetpki_certificates_renewed_total", "counter"],
      ["fleetpki_certificates_revoked_total", "counter"],
      ["fleetpki_enrollment_failures_total", "counter"],
      ["fleetpki_devices", "gauge"],
      ["fleetpki_certificates_expiring", "gauge"],
      ["fleetpki_gateway_connections", "gauge"],
      ["fleetpki_gateway_messages_total", "counter"],
      ["fleetpki_gateway_denials_total", "counter"],
      ["fleetpki_gateway_handshake_failures_total", "counter"],
      ["fleetpki_ocsp_requests_total", "counter"],
      ["fleetpki_crl_age_seconds", "gauge"],
      ["fleetpki_audit_chain_length", "gauge"],
      ["fleetpki_process_cpu_seconds_total", "counter"],
      ["fleetpki_process_resident_memory_bytes", "gauge"],
    ])
      assert.equal(e.types.get(name!), type, `${name} is exposed as a ${type}`);
    // The counters start from what the database holds (made by init and by this test before the server started).
    const cas = await f.fleet.store.ops.certificates.ofKind("ca");
    assert.ok(cas.length >= 4);
    assert.equal(sample(e, "fleetpki_certificates_issued_total", { kind: "ca" }), cas.length);
    assert.equal(sample(e, "fleetpki_certificates_issued_total", { kind: "operator" }), 3, "admin, alice, nobody");
    assert.ok(e.samples.has('fleetpki_certificates_renewed_total{kind="device"}'), "a zero series for every kind");
    assert.equal(sample(e, "fleetpki_audit_chain_length"), await f.fleet.store.ops.changes.headSeq());
    for (const caId of ["devices", "services", "operators"])
      assert.ok(e.samples.has(`fleetpki_crl_age_seconds{ca="${caId}"}`), `the ${caId} CA's CRL age`);
    assert.ok(e.samples.has('fleetpki_devices{state="active"}'));
    // The sample Grafana dashboard asks only for series that exist.
    const dashboard = JSON.parse(readFileSync(join(import.meta.dirname, "..", "docs", "grafana-dashboard.json"), "utf8"));
    assert.ok(
      dashboard.templating.list.some((v: { type: string }) => v.type === "datasource"),
      "a data source variable",
    );
    const asked = new Set<string>();
    for (const panel of dashboard.panels)
      for (const target of panel.targets ?? []) for (const m of String(target.expr).matchAll(/fleetpki_[a-z0-9_]+/g)) asked.add(m[0]);
    assert.ok(asked.size >= 15);
    for (const name of asked) assert.ok(e.types.has(name), `${name} (in docs/grafana-dashboard.json) is exposed`);
    assert.ok(e.samples.has('fleetpki_certificates_expiring{kind="device",window="7d"}'));
  });

  test("from another address: 401 without a credential, 401 for a certificate without a role, 200 with an operator's", async () => {
    const url = `${base}/metrics`;
    assertProblem(await https(url, as(undefined, "127.0.0.2")), 401, "unauthenticated");
    assertProblem(await https(url, as(ops.nobody, "127.0.0.2")), 401, "unauthenticated");
    const res = await https(url, as(ops.alice, "127.0.0.2"));
    assert.equal(res.status, 200, res.text);
    assert.ok(parseExposition(res.text).types.has("fleetpki_devices"));
    // A browser session is no scraping credential: an unknown one is 401, a live one 403.
    const withCookie = (secret: string) => ({ ...as(undefined, "127.0.0.2"), headers: { cookie: `${SESSION_COOKIE}=${secret}` } });
    assertProblem(await https(url, withCookie("abcdefghijklmnopqrstu")), 401, "unauthenticated");
    const link = await createLoginLink(f.fleet, { name: "admin", actor: "test" });
    const session = await redeemLoginLink(f.fleet, { token: link.token });
    assert.equal((await https(`${base}/api/devices/nobody-here`, withCookie(session.secret))).status, 404, "the session works for the API");
    assertProblem(await https(url, withCookie(session.secret)), 403, "certificate-required");
    // The skeleton's strict schemas hold here too.
    assertProblem(await https(`${url}?debug=1`, as(undefined)), 400, "invalid-request");
  });

  test("enrollment, renewal, failures, gateway traffic and denials, OCSP, revocation: the series move", async () => {
    const t0 = await scrape();
    const issued = (e: Exposition, kind: string) => sample(e, "fleetpki_certificates_issued_total", { kind });

    // Two devices enrolled through the registration listener; robot-1 renews over mTLS.
    const dir1 = await enrollDevice("robot-1");
    await enrollDevice("robot-2");
    await renew(loadState(dir1));
    // A bad token: an enrollment failure by reason.
    await assert.rejects(
      enroll({
        server: `https://127.0.0.1:${server.registration!.port}`,
        rootFingerprint: rootFp,
        deviceId: "robot-1",
        mode: { kind: "token", token: "not-a-token-at-all-0123456789" },
        dir: join(f.dir, "..", "agent-bad"),
      }),
    );
    const t1 = await scrape();
    assert.equal(issued(t1, "device") - issued(t0, "device"), 3, "two enrollments and a renewal");
    const renewed = (e: Exposition) => sample(e, "fleetpki_certificates_renewed_total", { kind: "device" });
    assert.equal(renewed(t1) - renewed(t0), 1);
    assert.equal(sample(t1, "fleetpki_devices", { state: "active" }) - sample(t0, "fleetpki_devices", { state: "active" }), 2);
    assert.ok(total(t1, "fleetpki_enrollment_failures_total") > total(t0, "fleetpki_enrollment_failures_total"));
    assert.ok(sample(t1, "fleetpki_enrollment_failures_total", { reason: "token-invalid" }) >= 1, JSON.stringify([...t1.samples]));
    assert.ok(sample(t1, "fleetpki_audit_chain_length") > sample(t0, "fleetpki_audit_chain_length"));

    // The gateway: an allowed publish, a denied one, a TLS handshake without a client certificate.
    const d = join(f.dir, "..", "agent-robot-1");
    const tls = ["-h", "127.0.0.1", "-p", String(server.gateway!.address.port), "--cafile", join(d, "ca.pem"),
      "--cert", join(d, "cert.pem"), "--key", join(d, "key.pem"), "-i", "robot-1"]; // prettier-ignore
    assert.equal((await run("mosquitto_pub", [...tls, "-t", "fleet/robot-1/telemetry", "-m", "ok"], undefined, 30_000)).status, 0);
    assert.equal((await run("mosquitto_pub", [...tls, "-t", "fleet/robot-2/cmd/stop", "-m", "no"], undefined, 30_000)).status, 0);
    await new Promise<void>((resolve) => {
      const socket = tlsConnect({ host: "127.0.0.1", port: server.gateway!.address.port, rejectUnauthorized: false });
      socket.on("error", () => resolve());
      socket.on("close", () => resolve());
      socket.on("data", () => {});
    });
    // OCSP: a real request (openssl) and a malformed one.
    const status = `http://127.0.0.1:${server.status!.port}`;
    const ocsp = await run("openssl", ["ocsp", "-issuer", join(f.dir, "ca", "devices", "cert.pem"), "-cert", join(d, "cert.pem"),
      "-url", `${status}/ocsp`, "-noverify"]); // prettier-ignore
    assert.equal(ocsp.status, 0, ocsp.stderr);
    const bad = await fetch(`${status}/ocsp`, { method: "POST", headers: { "content-type": "application/ocsp-request" }, body: "junk" });
    assert.equal(bad.status, 200);
    await bad.arrayBuffer();

    const t2 = await scrape();
    const moved = (name: string, labels: Record<string, string>) => sample(t2, name, labels) - sample(t1, name, labels);
    assert.equal(moved("fleetpki_gateway_connections_total", {}), 2);
    assert.equal(moved("fleetpki_gateway_messages_total", { direction: "in" }), 2);
    assert.equal(moved("fleetpki_gateway_denials_total", { reason: "publish" }), 1);
    assert.ok(total(t2, "fleetpki_gateway_handshake_failures_total") > total(t1, "fleetpki_gateway_handshake_failures_total"));
    assert.equal(moved("fleetpki_ocsp_requests_total", { outcome: "successful" }), 1);
    assert.equal(moved("fleetpki_ocsp_requests_total", { outcome: "malformedRequest" }), 1);

    // Revocations: a device through the admin API, an operator's certificate through the domain (as the CLI would).
    const revoked = await postJson(`${base}/api/devices/robot-2/revoke`, { reason: "keyCompromise" }, as(ops.admin));
    assert.equal(revoked.status, 200, revoked.text);
    const aliceSerial = (await f.fleet.store.ops.certificates.ofKind("operator", "alice"))[0]!.serial;
    await revokeCertificate(f.fleet, { serial: aliceSerial, actor: "test" });
    const t3 = await scrape();
    const revokedOf = (e: Exposition, kind: string) => sample(e, "fleetpki_certificates_revoked_total", { kind });
    assert.equal(revokedOf(t3, "device") - revokedOf(t2, "device"), 1, "robot-2's one certificate");
    assert.equal(revokedOf(t3, "operator") - revokedOf(t2, "operator"), 1);
    assert.equal(sample(t3, "fleetpki_devices", { state: "revoked" }) - sample(t2, "fleetpki_devices", { state: "revoked" }), 1);
    assert.equal(sample(t3, "fleetpki_devices", { state: "active" }) - sample(t2, "fleetpki_devices", { state: "active" }), -1);

    // A second scraper process would start from the same totals: the database agrees with what was counted.
    const totals = await f.fleet.store.ops.metrics.totals();
    for (const kind of ["device", "operator", "ca", "server"]) {
      assert.equal(issued(t3, kind), totals.issued[kind] ?? 0, `issued ${kind}`);
      assert.equal(revokedOf(t3, kind), totals.revoked[kind] ?? 0, `revoked ${kind}`);
    }
    assert.equal(sample(t3, "fleetpki_certificates_renewed_total", { kind: "device" }), totals.renewed.device ?? 0);
  });

  test("certificates expiring: a subject's latest certificate in force, per window, at the fleet clock", async () => {
    const expiring = (e: Exposition, window: string, kind: string) => sample(e, "fleetpki_certificates_expiring", { window, kind });
    const now = await scrape();
    // 30-day device certificates: robot-1 (renewed: its first certificate is outlasted) counts once; robot-2 is revoked.
    assert.equal(expiring(now, "30d", "device"), 1);
    assert.equal(expiring(now, "7d", "device"), 0);
    clock.advance(24 * DAY);
    const later = await scrape();
    assert.equal(expiring(later, "7d", "device"), 1, "robot-1's renewed certificate, not its old one too");
    assert.equal(expiring(later, "1d", "device"), 0);
    assert.equal(expiring(later, "7d", "operator"), 1, "nobody's; alice's is revoked, admin's lasts longer");
    // The same count as `fleetpki cert expiring --within 7d` lists. Not for devices here: robot-1 renewed
    // within the second it enrolled, and expiry.ts only lets a later notBefore (whole seconds) replace a certificate.
    const listed = await expiringCertificates(f.fleet, { within: 7 * DAY, now: clock.now() });
    for (const kind of ["operator", "service", "factory"])
      assert.equal(expiring(later, "7d", kind), listed.filter((c) => c.kind === kind).length, kind);
    clock.advance(6 * DAY + DAY / 2);
    const expired = await scrape();
    assert.equal(expiring(expired, "30d", "device"), 0, "expired certificates no longer count");
  });
});

describe("FleetMetrics start totals", () => {
  test("events the feed delivers late but the totals already hold are not counted twice", async () => {
    const f = await tempFleet();
    const changes = new ChangeFeed(f.fleet.store, 3_600_000);
    try {
      await changes.start();
      const status = await CertificateStatus.load(f.fleet);
      changes.subscribe((events) => status.apply(events));
      // Written after the feed's position and before the metrics read their totals: in both.
      const record = await issueOwnLeaf(
        f.fleet,
        {
          caId: "operators",
          kind: "operator",
          commonName: "late",
          sans: [{ uri: operatorSpiffeId(f.fleet.domain, "late") }],
          dirRel: layout.operatorDir("late"),
          lifetime: "30d",
        },
        "test",
        new Date(),
      );
      await revokeCertificate(f.fleet, { serial: record.issued.serialHex, actor: "test" });
      const metrics = new FleetMetrics({ fleet: f.fleet, changes, certificateStatus: status, processMetrics: false });
      await metrics.start();
      await changes.poll();
      // And one after the totals: counted once, from the feed.
      await addDevice(f.fleet, { id: "late-robot", actor: "test" });
      await changes.poll();
      const e = parseExposition((await metrics.scrape()).body);
      assert.equal(sample(e, "fleetpki_certificates_issued_total", { kind: "operator" }), 2, "admin and late");
      assert.equal(sample(e, "fleetpki_certificates_revoked_total", { kind: "operator" }), 1);
      assert.equal(sample(e, "fleetpki_devices", { state: "active" }), 1);
      assert.equal(e.types.get("fleetpki_process_cpu_seconds_total"), undefined, "process metrics off");
      metrics.stop();
    } finally {
      await changes.stop();
      await f.close();
    }
  });
});
