// Hostile and wrong input to every mutating route of the admin API (real server, real TLS): unknown
// fields, wrong types, oversized bodies, bad path parameters, things that do not exist. Each gets its
// status and an RFC 9457 problem body, and nothing changes: no audit row, the device and the policy
// file as they were. Then the routes doing their job, with the operator named in the audit log.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { layout } from "../src/authority/layout.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { openssl, opensslCsr, tempDir } from "./helpers.js";
import { assertProblem, https, postJson, type HttpResult } from "./server-helpers.js";
import { startAdminFleet, type AdminFleet, type Who } from "./support/admin-fleet.js";

const HUGE = "x".repeat(1024 * 1024 + 8192);

describe("admin API input", () => {
  let a: AdminFleet;
  const send = (method: string, path: string, who: Who, body?: unknown, raw?: string): Promise<HttpResult> =>
    https(a.base + path, {
      ...a.as(who),
      method,
      ...(body !== undefined || raw !== undefined
        ? { headers: { "content-type": "application/json" }, body: raw ?? JSON.stringify(body) }
        : {}),
    });
  const head = async () => (await a.f.fleet.store.ops.audit.head())!.seq;
  const policyText = () => readFileSync(a.f.fleet.path(layout.policy), "utf8");

  before(async () => {
    a = await startAdminFleet();
  });
  after(async () => {
    await a?.close();
  });

  /** A bad request: its status and problem type, and the fleet exactly as before. */
  async function refused(res: Promise<HttpResult>, status: number, type: string): Promise<any> {
    const seq = await head();
    const policy = policyText();
    const problem = assertProblem(await res, status, type);
    assert.equal(await head(), seq, `${type}: nothing audited`);
    assert.equal((await a.f.fleet.store.ops.devices.get("robot-1"))!.status, "active");
    assert.equal(policyText(), policy, "the policy file is untouched");
    return problem;
  }

  // Each mutating route: a valid body (to add an unknown field to), a body of the wrong type, a bad
  // path parameter, and a target that does not exist with the problem it gets.
  const ROUTES: {
    method: string;
    path: (p: string) => string;
    who: Who;
    valid: Record<string, unknown> | undefined;
    wrongType?: Record<string, unknown>;
    badParam?: string;
    unknown?: { param: string; body?: unknown; status: number; type: string };
  }[] = [
    { method: "POST", path: () => "/api/devices", who: "operator", valid: { id: "robot-new" }, wrongType: { id: 7 } },
    {
      method: "PATCH",
      path: (p) => `/api/devices/${p}`,
      who: "operator",
      valid: { group: "lab" },
      wrongType: { group: 5 },
      badParam: "Robot!",
      unknown: { param: "robot-404", body: { group: "lab" }, status: 404, type: "unknown-device" },
    },
    {
      method: "DELETE",
      path: (p) => `/api/devices/${p}`,
      who: "operator",
      valid: undefined,
      badParam: "Robot.1",
      unknown: { param: "robot-404", status: 404, type: "unknown-device" },
    },
    {
      method: "POST",
      path: (p) => `/api/devices/${p}/tokens`,
      who: "operator",
      valid: { ttl: "1h" },
      wrongType: { ttl: 3600 },
      badParam: "robot%2F1",
      unknown: { param: "robot-404", body: {}, status: 404, type: "unknown-device" },
    },
    {
      method: "POST",
      path: (p) => `/api/devices/${p}/hold`,
      who: "operator",
      valid: {},
      badParam: "ROBOT",
      unknown: { param: "robot-404", body: {}, status: 404, type: "unknown-device" },
    },
    {
      method: "POST",
      path: (p) => `/api/approvals/${p}/approve`,
      who: "operator",
      valid: { fingerprint: `sha256:${"a".repeat(64)}` },
      wrongType: { fingerprint: 1 },
      badParam: "-robot",
      unknown: { param: "robot-404", body: { fingerprint: `sha256:${"a".repeat(64)}` }, status: 400, type: "invalid-argument" },
    },
    {
      method: "POST",
      path: (p) => `/api/approvals/${p}/deny`,
      who: "operator",
      valid: { reason: "not ours" },
      wrongType: { reason: ["x"] },
      badParam: "robot 1",
    },
    {
      method: "POST",
      path: (p) => `/api/certificates/${p}/revoke`,
      who: "operator",
      valid: { reason: "keyCompromise" },
      wrongType: { reason: 1 },
      badParam: "serial-zz",
      unknown: { param: "0a0b0c", body: {}, status: 404, type: "unknown-certificate" },
    },
    {
      method: "PUT",
      path: () => "/api/policy",
      who: "admin",
      valid: { yaml: "version: 1\nrules: []\n", dryRun: true },
      wrongType: { yaml: 1 },
    },
    {
      method: "DELETE",
      path: (p) => `/api/gateway/sessions/${p}`,
      who: "operator",
      valid: undefined,
      badParam: "a%20b",
      unknown: { param: "robot-1", status: 404, type: "unknown-session" },
    },
    {
      method: "POST",
      path: () => "/api/operators",
      who: "admin",
      valid: { name: "dave", role: "viewer" },
      wrongType: { name: "dave", role: 2 },
    },
    {
      method: "DELETE",
      path: (p) => `/api/operators/${p}`,
      who: "admin",
      valid: undefined,
      badParam: "Alice",
      unknown: { param: "nobody", status: 404, type: "unknown-operator" },
    },
    {
      method: "POST",
      path: (p) => `/api/operators/${p}/login-link`,
      who: "admin",
      valid: {},
      badParam: "a.b",
      unknown: { param: "nobody", body: {}, status: 404, type: "unknown-operator" },
    },
    {
      method: "POST",
      path: () => "/api/services",
      who: "admin",
      valid: { name: "backend", csr: "x" },
      wrongType: { name: "backend", csr: 5 },
    },
    {
      method: "DELETE",
      path: (p) => `/api/services/${p}`,
      who: "admin",
      valid: undefined,
      badParam: "..%2Fetc",
      unknown: { param: "nobody", status: 404, type: "unknown-service" },
    },
  ];

  for (const r of ROUTES) {
    const name = `${r.method} ${r.path(":param")}`;
    test(`${name}: unknown field, wrong type, oversized body, bad path parameter, unknown target`, async () => {
      const target = r.path("robot-1");
      if (r.valid !== undefined) {
        await refused(send(r.method, target, r.who, { ...r.valid, sneaky: true }), 400, "invalid-request");
        await refused(send(r.method, target, r.who, undefined, `{"a":"${HUGE}"}`), 413, "body-too-large");
        await refused(send(r.method, target, r.who, undefined, "{"), 400, "invalid-json");
        await refused(send(r.method, target, r.who, [r.valid]), 400, "invalid-request");
      }
      if (r.wrongType) await refused(send(r.method, target, r.who, r.wrongType), 400, "invalid-request");
      if (r.badParam !== undefined) await refused(send(r.method, r.path(r.badParam), r.who, r.valid), 400, "invalid-request");
      if (r.unknown) await refused(send(r.method, r.path(r.unknown.param), r.who, r.unknown.body), r.unknown.status, r.unknown.type);
    });
  }

  test("hostile values the schemas let through are refused by the domain: labels and groups that would widen a topic filter", async () => {
    await refused(send("POST", "/api/devices", "operator", { id: "robot-x", labels: { site: "a/#" } }), 400, "invalid-argument");
    await refused(send("POST", "/api/devices", "operator", { id: "robot-x", group: "+" }), 400, "invalid-argument");
    await refused(send("PATCH", "/api/devices/robot-1", "operator", { labels: { site: "$SYS" } }), 400, "invalid-argument");
    await refused(send("PATCH", "/api/devices/robot-1", "operator", {}), 400, "invalid-argument");
    await refused(send("POST", "/api/devices", "operator", { id: "robot-1" }), 409, "device-exists");
    await refused(send("POST", "/api/devices/robot-1/tokens", "operator", { ttl: "0s" }), 400, "invalid-request");
  });

  test("an invalid policy is refused with every problem and its line; the file and the log stay as they were", async () => {
    const yaml = "version: 1\nrules:\n  - name: a\n    devices: all\n    publish: ['x/#']\n    bogus: 1\n  - name: a\n    devices: all\n";
    const p = await refused(send("PUT", "/api/policy", "admin", { yaml }), 400, "policy-invalid");
    assert.ok(Array.isArray(p.errors) && p.errors.length >= 2, JSON.stringify(p));
    assert.ok(
      p.errors.some((e: { line: number; message: string }) => e.line === 6 && /unknown key "bogus"/.test(e.message)),
      JSON.stringify(p.errors),
    );
    await refused(send("PUT", "/api/policy", "admin", { yaml: "version: [" }), 400, "policy-invalid");
    await refused(
      send("POST", "/api/policy/test", "viewer", { device: "robot-1", service: "x", action: "publish", topic: "t" }),
      400,
      "invalid-request",
    );
    await refused(
      send("POST", "/api/policy/test", "viewer", { device: "robot-404", action: "publish", topic: "t" }),
      404,
      "unknown-device",
    );
  });

  test("a service CSR that is not one, or whose key the key policy refuses, is refused; nothing is issued", async () => {
    const tmp = tempDir();
    try {
      const weak = opensslCsr(tmp.path, "weak", ["-newkey", "rsa:1024"]);
      const res = send("POST", "/api/services", "admin", { name: "backend", csr: readFileSync(weak.csr, "utf8") });
      const p = await refused(res, 400, "key-type-not-allowed");
      assert.match(p.detail, /RSA|bits|2048/i);
      const good = readFileSync(opensslCsr(tmp.path, "good").csr, "utf8");
      // One flipped byte inside the signature: parsed, then refused for the signature.
      const der = Buffer.from(good.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
      der.writeUInt8(der.readUInt8(der.length - 5) ^ 0x01, der.length - 5);
      const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
      await refused(send("POST", "/api/services", "admin", { name: "backend", csr: forged }), 400, "csr-invalid");
      await refused(
        send("POST", "/api/services", "admin", { name: "backend", csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END" }),
        400,
        "csr-invalid",
      );
      await refused(send("POST", "/api/services", "admin", { name: "telemetry", csr: good }), 409, "service-exists");
      assert.deepEqual((await a.f.fleet.store.ops.certificates.ofKind("service", "backend")).length, 0);
    } finally {
      tmp.cleanup();
    }
  });

  test("an operator adds a device with a token, changes it, sees its events, removes it: audited as the operator", async () => {
    const added = await postJson(
      `${a.base}/api/devices`,
      { id: "robot-7", group: "lab", labels: { site: "berlin" }, token: { ttl: "2h" } },
      a.as("operator"),
    );
    assert.equal(added.status, 201, added.text);
    assert.match(added.json().token.token, /^fpt_/);
    const patched = await send("PATCH", "/api/devices/robot-7", "operator", { group: null, labels: { site: null, rack: "r4" } });
    assert.equal(patched.status, 200, patched.text);
    assert.deepEqual([patched.json().group, patched.json().labels], [null, { rack: "r4" }]);
    const token = await send("POST", "/api/devices/robot-7/tokens", "operator", {});
    assert.equal(token.status, 201, token.text);
    const shown = await send("GET", "/api/devices/robot-7", "viewer");
    assert.equal(shown.status, 200, shown.text);
    const d = shown.json();
    assert.equal(d.connected, false);
    assert.deepEqual(
      d.recentEvents.map((e: { action: string; actor: string }) => `${e.action} ${e.actor}`),
      ["token.create operator:bob", "device.update operator:bob", "token.create operator:bob", "device.add operator:bob"],
    );
    assert.equal(JSON.stringify(d).includes(added.json().token.token), false, "a token is never shown again");
    const removed = await send("DELETE", "/api/devices/robot-7", "operator");
    assert.equal(removed.status, 200, removed.text);
    assert.equal((await a.f.fleet.store.ops.devices.get("robot-7"))!.status, "removed");
  });

  test("policy: a dry run lists the decisions that would change and writes nothing; the replacement is written and audited", async () => {
    const before = policyText();
    const current = await send("GET", "/api/policy", "viewer");
    assert.equal(current.status, 200);
    assert.equal(current.json().valid, true);
    assert.equal(current.json().yaml, before);
    const allowed = await postJson(
      `${a.base}/api/policy/test`,
      { device: "robot-1", action: "publish", topic: "fleet/robot-1/telemetry" },
      a.as("viewer"),
    );
    assert.equal(allowed.status, 200, allowed.text);
    assert.deepEqual([allowed.json().outcome, allowed.json().rule], ["allow", "devices-publish-own"]);
    // Nothing allowed: every decision the old policy allowed for robot-1 changes.
    const yaml = "version: 1\nmode: enforce\nrules: []\n";
    const seq = await head();
    const dry = await send("PUT", "/api/policy", "admin", { yaml, dryRun: true });
    assert.equal(dry.status, 200, dry.text);
    const r = dry.json();
    assert.equal(r.dryRun, true);
    assert.ok(r.devices >= 1);
    const mine = r.changes.filter((c: { device: string }) => c.device === "robot-1");
    assert.ok(mine.length > 0, dry.text);
    assert.ok(
      mine.every(
        (c: { before: { outcome: string }; after: { outcome: string } }) => c.before.outcome === "allow" && c.after.outcome === "deny",
      ),
    );
    assert.equal(policyText(), before, "a dry run writes nothing");
    assert.equal(await head(), seq, "and audits nothing");
    const put = await send("PUT", "/api/policy", "admin", { yaml });
    assert.equal(put.status, 200, put.text);
    assert.equal(policyText(), yaml);
    const row = (await a.f.fleet.store.ops.audit.list({})).find((x) => x.action === "policy.replace")!;
    assert.equal(row.actor, "operator:admin");
    const details = JSON.parse(row.details);
    assert.equal(details.sha256, put.json().sha256);
    assert.equal(details.previous_sha256, current.json().sha256);
    const denied = await postJson(
      `${a.base}/api/policy/test`,
      { device: "robot-1", action: "publish", topic: "fleet/robot-1/telemetry" },
      a.as("viewer"),
    );
    assert.equal(denied.json().outcome, "deny");
  });

  test("services from a CSR: the certificate verifies with openssl as a client certificate of the services CA", async () => {
    const tmp = tempDir();
    try {
      const { csr } = opensslCsr(tmp.path, "backend");
      const res = await postJson(`${a.base}/api/services`, { name: "backend", csr: readFileSync(csr, "utf8") }, a.as("admin"));
      assert.equal(res.status, 201, res.text);
      const s = res.json();
      const certPath = join(tmp.path, "cert.pem");
      const chainPath = join(tmp.path, "chain.pem");
      const caPath = join(tmp.path, "ca.pem");
      writeFileSync(certPath, s.certificatePem);
      writeFileSync(chainPath, s.chainPem);
      writeFileSync(caPath, s.caPem);
      const v = openssl(["verify", "-purpose", "sslclient", "-CAfile", caPath, "-untrusted", chainPath, certPath]);
      assert.equal(v.status, 0, v.stderr + v.stdout);
      const list = await send("GET", "/api/services", "viewer");
      assert.ok(list.json().some((x: { name: string }) => x.name === "backend"));
      const gone = await send("DELETE", "/api/services/backend", "admin");
      assert.equal(gone.status, 200, gone.text);
      const shown = await send("GET", `/api/certificates/${s.serial}`, "viewer");
      assert.equal(shown.json().status, "revoked");
    } finally {
      tmp.cleanup();
    }
  });

  test("operators: added with a one-time login link (no key), listed, given a new link, removed", async () => {
    const res = await postJson(`${a.base}/api/operators`, { name: "erin", role: "operator" }, a.as("admin"));
    assert.equal(res.status, 201, res.text);
    assert.match(res.json().loginUrl, /\/login#[A-Za-z0-9_-]{43}$/);
    assert.equal(JSON.stringify(res.json()).includes("PRIVATE KEY"), false);
    await refused(send("POST", "/api/operators", "admin", { name: "erin", role: "admin" }), 409, "operator-exists");
    const list = await send("GET", "/api/operators", "admin");
    assert.equal(list.json().find((o: { name: string }) => o.name === "erin").role, "operator");
    const link = await send("POST", "/api/operators/erin/login-link", "admin", {});
    assert.equal(link.status, 201, link.text);
    assert.notEqual(link.json().loginUrl, res.json().loginUrl);
    const rows = await a.f.fleet.store.ops.audit.list({});
    for (const token of [res.json().loginUrl, link.json().loginUrl].map((u: string) => u.split("#")[1]!))
      assert.equal(
        rows.some((r) => r.details.includes(token)),
        false,
        "the audit log never holds a login token",
      );
    const removed = await send("DELETE", "/api/operators/erin", "admin");
    assert.equal(removed.status, 200, removed.text);
    await refused(send("POST", "/api/operators/erin/login-link", "admin", {}), 400, "invalid-argument");
  });

  test("approvals, CAs, audit verify and certificates answer viewers", async () => {
    assert.deepEqual((await send("GET", "/api/approvals", "viewer")).json(), []);
    const cas = (await send("GET", "/api/cas", "viewer")).json();
    assert.deepEqual(
      cas.slice(0, 4).map((c: { id: string }) => c.id),
      ["root", "devices", "services", "operators"],
    );
    assert.ok(cas.every((c: { notAfter: string }) => Date.parse(c.notAfter) > Date.now()));
    const verify = await send("GET", "/api/audit/verify", "viewer");
    assert.equal(verify.status, 200, verify.text);
    assert.equal(verify.json().ok, true, verify.text);
    const serial = (await a.f.fleet.store.ops.certificates.ofDevice("robot-1"))[0]!.serial;
    const cert = await send("GET", `/api/certificates/${serial.toUpperCase().match(/../g)!.join(":")}`, "viewer");
    assert.equal(cert.status, 200, cert.text);
    assert.equal(cert.json().serial, serial);
    assert.match(cert.json().pem, /^-----BEGIN CERTIFICATE-----/);
  });
});

describe("admin API: kicking a gateway session held by another server on the fleet", () => {
  let a: AdminFleet;
  let gateway: FleetServer;
  let tmp: ReturnType<typeof tempDir>;
  let sub: ChildProcess | undefined;

  before(async () => {
    a = await startAdminFleet();
    // The gateway runs apart from the admin listener: it learns of the kick only through the audit log.
    gateway = await startFleetServer({ dir: a.f.dir, only: ["gateway"], gatewayListen: "127.0.0.1:0", logger: silentLogger });
    tmp = tempDir();
  });
  after(async () => {
    sub?.kill();
    await gateway?.close();
    await a?.close();
    tmp?.cleanup();
  });

  /** Polls `check` until it holds (a deadline, not a sleep that stands for the event). */
  async function eventually(what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
    const end = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  test("DELETE /api/gateway/sessions/:clientId is audited and the other server's gateway closes the session", async () => {
    writeFileSync(join(tmp.path, "cert.pem"), a.creds.device.cert);
    writeFileSync(join(tmp.path, "key.pem"), a.creds.device.key, { mode: 0o600 });
    writeFileSync(join(tmp.path, "ca.pem"), a.ca);
    const port = String(gateway.gateway!.address.port);
    const args = ["-h", "127.0.0.1", "-p", port, "--cafile", join(tmp.path, "ca.pem"), "--cert", join(tmp.path, "cert.pem")];
    args.push("--key", join(tmp.path, "key.pem"), "-i", "robot-1", "-t", "fleet/robot-1/cmd/#", "-W", "60");
    sub = spawn("mosquitto_sub", args, { stdio: "ignore" });
    // Listed by the admin server from the gateway's sessions file.
    await eventually("the session in GET /api/gateway/sessions", async () => {
      const res = await https(`${a.base}/api/gateway/sessions`, a.as("viewer"));
      return res.status === 200 && res.json().some((s: { id: string; kind: string }) => s.id === "robot-1" && s.kind === "device");
    });
    const shown = await https(`${a.base}/api/devices/robot-1`, a.as("viewer"));
    assert.equal(shown.json().connected, true);
    assertProblem(await https(`${a.base}/api/gateway/sessions/robot-1`, { ...a.as("viewer"), method: "DELETE" }), 403, "role-too-weak");
    assert.equal(gateway.gateway!.counters.disconnected.kicked ?? 0, 0);
    const kicked = await https(`${a.base}/api/gateway/sessions/robot-1`, { ...a.as("operator"), method: "DELETE" });
    assert.equal(kicked.status, 202, kicked.text);
    const row = await a.f.fleet.store.ops.audit.row(kicked.json().seq);
    assert.deepEqual([row?.action, row?.actor, row?.subject], ["gateway.kick", "operator:bob", "session:robot-1"]);
    await eventually("the gateway to close the session", () => (gateway.gateway!.counters.disconnected.kicked ?? 0) === 1, 5_000);
    const verified = await https(`${a.base}/api/audit/verify`, a.as("viewer"));
    assert.equal(verified.json().ok, true, verified.text);
  });
});
