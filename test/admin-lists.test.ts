// The admin API's lists (devices, certificates, expiring certificates, audit log) against a real
// fleet, real SQLite and real TLS: filters, search, keyset pagination that visits every row once,
// bad cursors and bad query strings as problem bodies, the query plans the indexes give, and
// devices' "last seen" and "connected now" from a real gateway session.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { AccessPolicy } from "../src/access/policy.js";
import type { OperatorRole } from "../src/access/identity.js";
import { issueOwnLeaf } from "../src/authority/ca/init.js";
import { addDevice } from "../src/authority/devices.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { LAST_SEEN_RESOLUTION_MS, LastSeenRecorder } from "../src/authority/last-seen.js";
import { layout } from "../src/authority/layout.js";
import { listDevicePage } from "../src/authority/queries.js";
import { holdDevice, removeDevice, revokeDevice } from "../src/authority/status/revocation.js";
import { readPrivateKey } from "../src/keys/keys.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import type { DeviceTable } from "../src/store/schema.js";
import { auditPageQuery } from "../src/store/sqlite/audit.js";
import { certificatePageQuery } from "../src/store/sqlite/certificates.js";
import { devicePageQuery } from "../src/store/sqlite/devices.js";
import { operatorSpiffeId } from "../src/x509/profiles.js";
import { tempFleet } from "./helpers.js";
import { assertProblem, https, makeCsr, rootPemPath, type HttpOptions } from "./server-helpers.js";
import { ManualClock } from "./support/clock.js";
import { sqliteStore } from "./support/sqlite.js";

interface Operator {
  cert: string;
  key: string;
}

type Fleet = Awaited<ReturnType<typeof tempFleet>>;

/** An operator certificate from the operators CA ("admin" exists after init). */
async function operatorBundle(f: Fleet, name: string): Promise<Operator> {
  const dirRel = layout.operatorDir(name);
  if (name !== "admin")
    await issueOwnLeaf(
      f.fleet,
      { caId: "operators", kind: "operator", commonName: name, sans: [{ uri: operatorSpiffeId(f.fleet.domain, name) }], dirRel, lifetime: "30d" },
      "test",
      new Date(),
    );
  const dir = f.fleet.path(dirRel);
  const key = readPrivateKey(join(dir, "key.pem"), f.fleet.passphrase()).export({ type: "pkcs8", format: "pem" }).toString();
  return { cert: readFileSync(join(dir, "cert.pem"), "utf8") + readFileSync(join(dir, "chain.pem"), "utf8"), key };
}

const GROUPS = ["north", "south", "east"] as const;
const N = 130;
const id = (i: number) => `dev-${String(i).padStart(3, "0")}`;

describe("admin API lists", () => {
  let f: Fleet;
  let server: FleetServer;
  let base: string;
  let ca: string;
  let alice: Operator;
  /** The fleet as the test made it: id -> group, zone label, status. */
  const model = new Map<string, { group: string; zone: string; status: DeviceTable["status"] }>();
  const serials: Record<string, string[]> = {};

  const as = (who: Operator | undefined): HttpOptions => (who ? { ca, cert: who.cert, key: who.key } : { ca });
  const get = (path: string) => https(`${base}${path}`, as(alice));
  const anonymous = (path: string) => https(`${base}${path}`, as(undefined));

  /** Every page of a list; asserts the page sizes and returns the items in the order served. */
  async function all(path: string, limit: number): Promise<{ items: any[]; pages: number }> {
    const items: any[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const sep = path.includes("?") ? "&" : "?";
      const res = await get(`${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      assert.equal(res.status, 200, res.text);
      const page = res.json();
      assert.ok(page.items.length <= limit);
      if (page.nextCursor !== null) assert.equal(page.items.length, limit, "only the last page is short");
      items.push(...page.items);
      cursor = page.nextCursor;
      pages++;
      assert.ok(pages < 1000, "pagination ends");
    } while (cursor !== null);
    return { items, pages };
  }

  before(async () => {
    f = await tempFleet();
    ca = readFileSync(rootPemPath(f.dir), "utf8");
    alice = await operatorBundle(f, "alice");
    const now = f.fleet.clock.now();
    const rows: DeviceTable[] = [];
    for (let i = 0; i < N; i++) {
      const group = GROUPS[i % 3]!;
      const zone = i % 5 === 0 ? "a" : "b";
      rows.push({
        id: id(i),
        group_name: group,
        labels: JSON.stringify({ zone }),
        status: "active",
        created_at: now.toISOString(),
        updated_at: now.toISOString(),
      });
      model.set(id(i), { group, zone, status: "active" });
    }
    // Added in bulk (the registry's own insert and audit events), as the bench seeds.
    await f.fleet.store.transaction(async (tx) => {
      assert.deepEqual(await tx.devices.add(rows), []);
      await tx.audit.append(rows.map((r) => ({ actor: "test", action: "device.add", subject: `device:${r.id}`, details: {}, at: now })));
    });
    // dev-010 renewed: its first certificate began (and ends) a minute before its second.
    const minuteAgo = new Date(now.getTime() - 60_000);
    for (const [d, at] of [["dev-010", minuteAgo], ["dev-010", now], ["dev-011", now], ["dev-012", now]] as const) {
      const { csr } = await makeCsr(d);
      const issued = await issueDeviceCertificate(f.fleet, { deviceId: d, csr: csr.der, actor: "test", now: at });
      (serials[d] ??= []).push(issued.serial);
    }
    await holdDevice(f.fleet, { deviceId: "dev-001", actor: "test" });
    await revokeDevice(f.fleet, { deviceId: "dev-012", actor: "test" });
    await removeDevice(f.fleet, { deviceId: "dev-003", actor: "test" });
    model.get("dev-001")!.status = "held";
    model.get("dev-012")!.status = "revoked";
    model.get("dev-003")!.status = "removed";
    server = await startFleetServer({
      dir: f.dir,
      only: ["admin"],
      adminListen: "127.0.0.1:0",
      logger: silentLogger,
      operators: { role: (n): OperatorRole | null => (n === "alice" ? "viewer" : null) },
    });
    await server.changes.poll();
    base = `https://127.0.0.1:${server.admin!.address.port}`;
  });
  after(async () => {
    await server?.close();
    await f?.close();
  });

  const expected = (keep: (id: string, d: { group: string; zone: string; status: string }) => boolean) =>
    [...model].filter(([i, d]) => keep(i, d)).map(([i]) => i);

  test("pagination visits every device exactly once, by id; removed devices only when asked for", async () => {
    const { items, pages } = await all("/api/devices", 7);
    const ids = items.map((d) => d.id);
    assert.deepEqual(ids, expected((_, d) => d.status !== "removed"));
    assert.equal(new Set(ids).size, ids.length);
    assert.equal(pages, Math.ceil((N - 1) / 7));
    const removed = await all("/api/devices?state=removed", 50);
    assert.deepEqual(
      removed.items.map((d) => d.id),
      ["dev-003"],
    );
    // The default page size is 50.
    const first = (await get("/api/devices")).json();
    assert.equal(first.items.length, 50);
    assert.equal(typeof first.nextCursor, "string");
  });

  test("filters: group, state, label, id search, and together", async () => {
    const ids = async (q: string, limit = 9) => (await all(`/api/devices?${q}`, limit)).items.map((d) => d.id);
    assert.deepEqual(await ids("group=south"), expected((_, d) => d.group === "south" && d.status !== "removed"));
    assert.deepEqual(await ids("state=held"), ["dev-001"]);
    assert.deepEqual(await ids("state=revoked"), ["dev-012"]);
    assert.deepEqual(await ids("group=north&state=active", 4), expected((_, d) => d.group === "north" && d.status === "active"));
    assert.deepEqual(await ids("label=zone%3Da"), expected((_, d) => d.zone === "a" && d.status !== "removed"));
    assert.deepEqual(await ids("label=zone%3Da&group=east"), expected((_, d) => d.zone === "a" && d.group === "east" && d.status !== "removed"));
    assert.deepEqual(await ids("q=12"), ["dev-012", "dev-112", "dev-120", "dev-121", "dev-122", "dev-123", "dev-124", "dev-125", "dev-126", "dev-127", "dev-128", "dev-129"]);
    assert.deepEqual(await ids("q=dev-00&state=removed"), ["dev-003"]);
    // A search text is a substring, never a pattern.
    assert.deepEqual(await ids("q=dev_0"), []);
    assert.deepEqual(await ids("q=%25"), []);
    assert.deepEqual(await ids("group=nowhere"), []);
  });

  test("each device carries its newest certificate, last seen and connected", async () => {
    const page = (await get("/api/devices?q=dev-01&limit=3")).json();
    assert.deepEqual(
      page.items.map((d: any) => d.id),
      ["dev-010", "dev-011", "dev-012"],
    );
    const [d10, d11, d12] = page.items;
    const certs = await f.fleet.store.ops.certificates.ofDevice("dev-010");
    const newest = [...certs].sort((a, b) => (a.not_after < b.not_after ? 1 : -1))[0]!;
    assert.deepEqual(d10.certificate, { serial: newest.serial, notAfter: newest.not_after, status: "valid" });
    assert.deepEqual(d10.labels, { zone: "a" });
    assert.equal(d10.group, "south");
    assert.equal(d10.connected, false, "no gateway in this process");
    const issuedAt = (await f.fleet.store.ops.certificates.bySerial(newest.serial))!.created_at;
    assert.equal(d10.lastSeen, issuedAt, "last seen: its last enrollment");
    assert.equal(d11.certificate.serial, serials["dev-011"]![0]);
    assert.deepEqual({ status: d12.status, cert: d12.certificate.status }, { status: "revoked", cert: "revoked" });
    const never = (await get("/api/devices?q=dev-000")).json().items[0];
    assert.deepEqual({ certificate: never.certificate, lastSeen: never.lastSeen }, { certificate: null, lastSeen: null });
  });

  test("bad cursors: malformed, altered, issued for other filters or another list -> 400 invalid-cursor", async () => {
    const first = (await get("/api/devices?group=north&limit=5")).json();
    const cursor: string = first.nextCursor;
    const next = await get(`/api/devices?group=north&limit=5&cursor=${encodeURIComponent(cursor)}`);
    assert.equal(next.status, 200, next.text);
    assert.equal(next.json().items[0].id > first.items[4].id, true);
    // Altered: a cursor that starts after another id (a well-formed key, not one this server issued).
    const [body, mac] = cursor.split(".");
    const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(body!, "base64url").toString()), k: "dev-100" })).toString(
      "base64url",
    );
    const flip = (s: string) => (s[0] === "A" ? "B" : "A") + s.slice(1);
    for (const bad of ["garbage", `${forged}.${mac}`, `${body}.${flip(mac!)}`, `${flip(body!)}.${mac}`, `${body}.`, ".x", "a.b.c"]) {
      const res = await get(`/api/devices?group=north&limit=5&cursor=${encodeURIComponent(bad)}`);
      assertProblem(res, 400, "invalid-cursor");
    }
    // The same cursor with other filters, or for another list.
    assertProblem(await get(`/api/devices?group=south&limit=5&cursor=${encodeURIComponent(cursor)}`), 400, "invalid-cursor");
    assertProblem(await get(`/api/devices?limit=5&cursor=${encodeURIComponent(cursor)}`), 400, "invalid-cursor");
    assertProblem(await get(`/api/certificates?cursor=${encodeURIComponent(cursor)}`), 400, "invalid-cursor");
    assertProblem(await get(`/api/audit?cursor=${encodeURIComponent(cursor)}`), 400, "invalid-cursor");
    assertProblem(await get(`/api/devices?cursor=${"x".repeat(2000)}`), 400, "invalid-request");
  });

  test("bad query strings: limit out of range or not a number, unknown field, repeated or malformed filter -> 400", async () => {
    for (const q of [
      "limit=0",
      "limit=501",
      "limit=abc",
      "limit=5.5",
      "limit=-1",
      "limit=050",
      "color=red",
      "state=pending-ish",
      "group=North!",
      "label=zone",
      "label=zone%3Da&label=zone%3Db",
      "q=" + "x".repeat(64),
    ])
      assertProblem(await get(`/api/devices?${q}`), 400, "invalid-request");
    assertProblem(await get("/api/certificates?kind=robot"), 400, "invalid-request");
    assertProblem(await get("/api/certificates?serial=1"), 400, "invalid-request");
    assertProblem(await get("/api/audit?from=yesterday"), 400, "invalid-request");
    assertProblem(await get("/api/audit?from=2026-13-45"), 400, "invalid-argument");
    assertProblem(await get("/api/certificates/expiring?within=soon"), 400, "invalid-request");
    assertProblem(await get("/api/certificates/expiring?within=0d"), 400, "invalid-argument");
    assertProblem(await get("/api/certificates/expiring?within=14d&kind=device"), 400, "invalid-request");
  });

  test("no credential: 401 on every list; a viewer may read them all", async () => {
    for (const path of ["/api/devices", "/api/certificates", "/api/certificates/expiring", "/api/audit"]) {
      assertProblem(await anonymous(path), 401, "unauthenticated");
      assert.equal((await get(path)).status, 200, path);
    }
  });

  test("certificates: filters and pagination by serial", async () => {
    const { items } = await all("/api/certificates", 3);
    const serialsServed = items.map((c) => c.serial);
    assert.deepEqual(serialsServed, [...serialsServed].sort());
    assert.equal(new Set(serialsServed).size, serialsServed.length);
    const { n } = await sqliteStore(f.fleet).db
      .selectFrom("certificates")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .executeTakeFirstOrThrow();
    assert.equal(items.length, Number(n));
    const devices = (await all("/api/certificates?kind=device", 2)).items;
    assert.deepEqual(devices.map((c) => c.serial).sort(), Object.values(serials).flat().sort());
    const ten = (await all("/api/certificates?subject=dev-010", 5)).items;
    assert.deepEqual(ten.map((c) => c.serial).sort(), [...serials["dev-010"]!].sort());
    assert.ok(ten.every((c) => c.deviceId === "dev-010" && c.issuer === "devices" && c.kind === "device"));
    const revoked = (await all("/api/certificates?status=revoked&kind=device", 5)).items;
    assert.deepEqual(
      revoked.map((c) => c.serial),
      serials["dev-012"],
    );
    assert.ok(revoked[0].revokedAt);
    const held = (await all("/api/certificates?status=hold&issuer=devices", 5)).items;
    assert.deepEqual(held, []);
    assert.ok((await all("/api/certificates?kind=operator&status=valid", 5)).items.some((c) => c.subject === "alice"));
    assert.deepEqual((await all("/api/certificates?status=expired", 5)).items, []);
  });

  test("expiring certificates: the device certificates in force end within 31 days, none within a minute", async () => {
    const soon = (await get("/api/certificates/expiring?within=31d")).json().items;
    const serialsSoon = soon.filter((c: any) => c.kind === "device").map((c: any) => c.serial);
    // dev-010's first certificate was outlasted by its second (a renewal); dev-012's were revoked.
    assert.deepEqual(serialsSoon.sort(), [serials["dev-010"]![1], serials["dev-011"]![0]].sort());
    assert.ok(soon.every((c: any) => c.secondsLeft > 0));
    assert.deepEqual((await get("/api/certificates/expiring?within=1m")).json().items, []);
  });

  test("audit: newest first, filters by action, actor, subject and time, every row once", async () => {
    const adds = (await all("/api/audit?action=device.add", 17)).items;
    assert.equal(adds.length, N);
    const seqs = adds.map((r) => r.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a));
    assert.equal(new Set(seqs).size, N);
    const all1 = (await all("/api/audit", 40)).items;
    const head = await f.fleet.store.ops.audit.head();
    assert.equal(all1[0].seq, head!.seq);
    assert.deepEqual(
      all1.map((r) => r.seq),
      Array.from({ length: head!.seq }, (_, i) => head!.seq - i),
    );
    const subj = (await all("/api/audit?subject=device%3Adev-012", 5)).items;
    assert.deepEqual(
      subj.map((r) => r.action),
      ["device.revoke", "certificate.issue", "device.add"],
    );
    assert.equal(subj[1].details.serial, serials["dev-012"]![0]);
    assert.ok((await all("/api/audit?actor=test&action=device.hold", 5)).items.length === 1);
    // Time: nothing before the fleet existed, everything from then on.
    assert.deepEqual((await get("/api/audit?to=2000-01-01")).json().items, []);
    const from = (await all(`/api/audit?from=2000-01-01T00:00:00Z&to=2999-01-01`, 50)).items;
    assert.equal(from.length, all1.length);
    const later = all1[Math.floor(all1.length / 2)].at;
    const since = (await all(`/api/audit?from=${encodeURIComponent(later)}`, 50)).items;
    assert.deepEqual(
      since.map((r) => r.seq),
      all1.filter((r) => r.at >= later).map((r) => r.seq),
    );
  });

  test("query plans: every offered filter is answered from an index in key order (no scan, no sort)", async () => {
    const store = sqliteStore(f.fleet);
    const plan = async (q: { compile(): { sql: string; parameters: readonly unknown[] } }) => {
      const c = q.compile();
      return store.withNative((db) =>
        (db.prepare(`explain query plan ${c.sql}`).all(...(c.parameters as unknown[])) as { detail: string }[]).map((r) => r.detail).join("; "),
      );
    };
    const now = new Date().toISOString();
    const cases: [string, string][] = [
      [await plan(devicePageQuery(store.db, { limit: 51 })), "devices: first page"],
      [await plan(devicePageQuery(store.db, { limit: 51, afterId: "dev-090" })), "devices: deep cursor"],
      [await plan(devicePageQuery(store.db, { limit: 51, group: "north", status: "active", afterId: "dev-050" })), "devices: group+state"],
      [await plan(devicePageQuery(store.db, { limit: 51, group: "north" })), "devices: group"],
      [await plan(devicePageQuery(store.db, { limit: 51, status: "held" })), "devices: state"],
      [await plan(certificatePageQuery(store.db, { limit: 51, now })), "certificates: first page"],
      [await plan(certificatePageQuery(store.db, { limit: 51, now, kind: "device", afterSerial: "80" })), "certificates: kind"],
      [await plan(certificatePageQuery(store.db, { limit: 51, now, subject: "dev-010" })), "certificates: subject"],
      [await plan(certificatePageQuery(store.db, { limit: 51, now, issuer: "devices" })), "certificates: issuer"],
      [await plan(certificatePageQuery(store.db, { limit: 51, now, status: "revoked" })), "certificates: status"],
      [await plan(auditPageQuery(store.db, { limit: 51 })), "audit: first page"],
      [await plan(auditPageQuery(store.db, { limit: 51, beforeSeq: 40 })), "audit: deep cursor"],
      [await plan(auditPageQuery(store.db, { limit: 51, action: "device.add" })), "audit: action"],
      [await plan(auditPageQuery(store.db, { limit: 51, actor: "test", beforeSeq: 40 })), "audit: actor"],
      [await plan(auditPageQuery(store.db, { limit: 51, subject: "device:dev-001" })), "audit: subject"],
      [await plan(auditPageQuery(store.db, { limit: 51, from: now }, true)), "audit: small time window"],
    ];
    // "SCAN t USING INDEX i" with no sort is a walk in key order that LIMIT stops; a bare "SCAN t"
    // or a temporary b-tree would read every row.
    for (const [p, what] of cases) {
      assert.doesNotMatch(p, /\bSCAN (devices|certificates|audit_log)(;|$)/, `${what}: ${p}`);
      if (!what.includes("time window")) assert.doesNotMatch(p, /TEMP B-TREE/, `${what}: ${p}`);
    }
    assert.match(cases[cases.length - 1]![0], /USING INDEX audit_log_at/);
  });
});

/** A TLS connection and MQTT CONNECT held open; resolves with the CONNACK return code. */
function mqttConnect(port: number, tls: { ca: string; cert: string; key: string }, clientId: string): Promise<{ code: number; socket: TLSSocket }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, servername: "localhost", ...tls });
    const idBytes = Buffer.from(clientId);
    const body = Buffer.concat([Buffer.from([0, 4]), Buffer.from("MQTT"), Buffer.from([4, 2, 0, 60, 0, idBytes.length]), idBytes]);
    let got = Buffer.alloc(0);
    socket.on("secureConnect", () => socket.write(Buffer.concat([Buffer.from([0x10, body.length]), body])));
    socket.on("data", (c: Buffer) => {
      got = Buffer.concat([got, c]);
      if (got.length >= 4 && got[0] === 0x20) resolve({ code: got[3]!, socket });
    });
    socket.on("error", reject);
    socket.setTimeout(20_000, () => reject(new Error("no CONNACK")));
  });
}

describe("devices' last seen and connected now", () => {
  test("a gateway session shows as connected; its admission becomes last seen, written when the recorder flushes", async () => {
    const f = await tempFleet();
    let server: FleetServer | undefined;
    let socket: TLSSocket | undefined;
    try {
      await addDevice(f.fleet, { id: "robot-gw", actor: "test" });
      await addDevice(f.fleet, { id: "robot-idle", actor: "test" });
      const { key, csr } = await makeCsr("robot-gw");
      const issued = await issueDeviceCertificate(f.fleet, { deviceId: "robot-gw", csr: csr.der, actor: "test" });
      const admin = await operatorBundle(f, "admin");
      const ca = readFileSync(rootPemPath(f.dir), "utf8");
      server = await startFleetServer({
        dir: f.dir,
        only: ["admin", "gateway"],
        adminListen: "127.0.0.1:0",
        gatewayListen: "127.0.0.1:0",
        policy: AccessPolicy.parse("version: 1\nrules: []\n", "test-policy.yaml"),
        logger: silentLogger,
        operators: { role: (n) => (n === "admin" ? "admin" : null) },
      });
      await server.changes.poll();
      const connected = await mqttConnect(server.gateway!.address.port, { ca, cert: issued.certificatePem + issued.chainPem, key: key.keyPem }, "robot-gw");
      socket = connected.socket;
      assert.equal(connected.code, 0);
      const res = await https(`https://127.0.0.1:${server.admin!.address.port}/api/devices?q=robot`, { ca, cert: admin.cert, key: admin.key });
      assert.equal(res.status, 200, res.text);
      const byId = Object.fromEntries(res.json().items.map((d: any) => [d.id, d]));
      assert.equal(byId["robot-gw"].connected, true);
      assert.equal(byId["robot-idle"].connected, false);
      socket.destroy();
      await server.close(); // flushes the recorder
      server = undefined;
      const row = await f.fleet.store.ops.devices.get("robot-gw");
      const issuedAt = (await f.fleet.store.ops.certificates.bySerial(issued.serial))!.created_at;
      assert.ok(row!.last_seen_at && row!.last_seen_at >= issuedAt, `last_seen_at ${row!.last_seen_at} after issuance ${issuedAt}`);
      const page = await listDevicePage(f.fleet, { q: "robot" });
      assert.equal(page.items.find((d) => d.id === "robot-gw")!.lastSeen, row!.last_seen_at);
      assert.equal((await f.fleet.store.ops.devices.get("robot-idle"))!.last_seen_at, null);
    } finally {
      socket?.destroy();
      await server?.close();
      await f.close();
    }
  });

  test("the recorder writes a device at most once a minute, one transaction per batch, and never moves last seen back", async () => {
    const f = await tempFleet();
    try {
      const ids = Array.from({ length: 40 }, (_, i) => `bot-${i}`);
      for (const d of ids) await addDevice(f.fleet, { id: d, actor: "test" });
      const clock = new ManualClock(Date.parse("2030-01-01T00:00:00Z"));
      let transactions = 0;
      const store = { ...f.fleet.store, transaction: <T,>(fn: Parameters<typeof f.fleet.store.transaction<T>>[0]) => (transactions++, f.fleet.store.transaction(fn)) };
      const recorder = new LastSeenRecorder({ store, clock }, silentLogger, 3_600_000);
      const seenAt = async (d: string) => (await f.fleet.store.ops.devices.get(d))!.last_seen_at;
      for (const d of ids) recorder.seen(d);
      recorder.seen("unknown-device"); // never registered: nothing written, nothing fails
      await recorder.flush();
      assert.equal(transactions, 1, "one transaction for the whole batch");
      assert.equal(await seenAt("bot-7"), "2030-01-01T00:00:00.000Z");
      clock.advance(LAST_SEEN_RESOLUTION_MS - 1);
      for (const d of ids) recorder.seen(d);
      await recorder.flush();
      assert.equal(transactions, 1, "within the minute: nothing to write");
      assert.equal(await seenAt("bot-7"), "2030-01-01T00:00:00.000Z");
      clock.advance(1);
      recorder.seen("bot-7");
      recorder.seen("bot-7");
      await recorder.flush();
      assert.equal(transactions, 2);
      assert.equal(await seenAt("bot-7"), "2030-01-01T00:01:00.000Z");
      assert.equal(await seenAt("bot-8"), "2030-01-01T00:00:00.000Z");
      // Another process wrote a later time meanwhile: an older sighting does not replace it.
      await f.fleet.store.transaction((tx) => tx.devices.recordLastSeen([{ id: "bot-9", at: "2031-01-01T00:00:00.000Z" }]));
      clock.advance(LAST_SEEN_RESOLUTION_MS);
      recorder.seen("bot-9");
      await recorder.close();
      assert.equal(await seenAt("bot-9"), "2031-01-01T00:00:00.000Z");
      recorder.seen("bot-10"); // after close: ignored
      await recorder.flush();
      assert.equal(await seenAt("bot-10"), "2030-01-01T00:00:00.000Z");
    } finally {
      await f.close();
    }
  });
});
