// Unauthenticated clients must not grow the audit log without bound, and the limiter must stay a
// limit when it is full or fed from a whole IPv6 /48 (issue 9 follow-up, items 1.3-1.8); a renewal
// whose answer was lost is collected after the grace with the same key.
import assert from "node:assert/strict";
import { createHash, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AuthFailureLog, MAX_DETAILED_PER_SOURCE } from "../src/authority/enroll/auth-failures.js";
import { issueBatch } from "../src/authority/issue/batch.js";
import { createLocalCa } from "../src/authority/ca/cas.js";
import { addDevice } from "../src/authority/devices.js";
import { enrollWithToken, renewExpired, renewalChallenge } from "../src/authority/enroll/enrollment.js";
import type { FleetServices } from "../src/authority/services.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { createToken } from "../src/authority/enroll/tokens.js";
import { FailureLimiter } from "../src/authority/enroll/rate-limit.js";
import { sourceKey } from "../src/authority/enroll/request-source.js";
import { tempFleet } from "./helpers.js";
import { makeCsr, pool, postJson, rootPemPath, startTestServer, type ClientKey } from "./server-helpers.js";
import { sqliteStore } from "./support/sqlite.js";

type TempFleet = Awaited<ReturnType<typeof tempFleet>>;

const auditCount = async (fleet: FleetServices, action: string): Promise<number> =>
  Number(
    (
      await sqliteStore(fleet)
        .db.selectFrom("audit_log")
        .select((eb) => eb.fn.countAll().as("n"))
        .where("action", "=", action)
        .executeTakeFirstOrThrow()
    ).n,
  );

describe("bounded audit rows from unauthenticated clients", { concurrency: false }, () => {
  let f: TempFleet;
  before(async () => {
    f = await tempFleet();
  });
  after(async () => {
    await f?.close();
  });

  it("AuthFailureLog: 1,500 failures with distinct device ids from one address -> a handful of rows, the total counted", async () => {
    const log = new AuthFailureLog(f.fleet, 3_600_000);
    const before = await auditCount(f.fleet, "auth.failure");
    for (let i = 0; i < 1500; i++)
      log.record({ address: "198.51.100.7", deviceId: `junk-${i}`, reason: "unknown-device", via: "api-token" });
    // An IPv6 host moving through its /64 is one source.
    for (let i = 0; i < 500; i++)
      log.record({
        address: `2001:db8:0:1::${i.toString(16)}`,
        source: "2001:db8:0:1::/64",
        deviceId: `v6-${i}`,
        reason: "token-invalid",
        via: "est-basic",
      });
    await log.close();
    const rows = await sqliteStore(f.fleet)
      .db.selectFrom("audit_log")
      .select(["subject", "details"])
      .where("action", "=", "auth.failure")
      .where("seq", ">", before)
      .execute();
    assert.ok(rows.length <= 2 * (MAX_DETAILED_PER_SOURCE + 1), `${rows.length} rows for two sources`);
    const total = rows.reduce((n, r) => n + (JSON.parse(r.details) as { count: number }).count, 0);
    assert.equal(total, 2000, "every failure is counted in some row");
    assert.ok(rows.some((r) => r.subject === "address:198.51.100.7" && JSON.parse(r.details).reason === "many-devices"));
  });

  it("1,500 wrong-token logins with distinct device ids over HTTPS: 401 then 429, and at most a few auth.failure rows", async () => {
    const server = await startTestServer(f.dir);
    const ca = readFileSync(rootPemPath(f.dir), "utf8");
    const before = await auditCount(f.fleet, "auth.failure");
    const { csr } = await makeCsr("junk");
    const statuses = new Map<number, number>();
    const started = Date.now();
    try {
      await pool(
        Array.from({ length: 1500 }, (_, i) => i),
        16,
        async (i) => {
          const r = await postJson(`${server.url}/api/v1/enroll`, { device_id: `junk-${i}`, token: "fpt_wrong", csr: csr.pem }, { ca });
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        },
      );
    } finally {
      await server.close(); // flushes the tallies
    }
    assert.deepEqual([...statuses.keys()].sort(), [401, 429]);
    const rows = (await auditCount(f.fleet, "auth.failure")) - before;
    // The bound holds per flush interval (60 s): a loaded machine may stretch the run over several.
    const intervals = Math.floor((Date.now() - started) / 60_000) + 1;
    assert.ok(
      rows >= 1 && rows <= intervals * (MAX_DETAILED_PER_SOURCE + 1),
      `${rows} auth.failure rows for one source in ${intervals} interval(s)`,
    );
  });

  it("a copied factory bundle: refusals are counted per source (429 past the limit) and tallied, not one row each", async () => {
    await createLocalCa(f.fleet, { name: "line1", actor: "test" });
    const out = join(f.dir, "..", "bundles");
    await issueBatch(f.fleet, { localName: "line1", ids: ["bot-1"], outDir: out, actor: "test" });
    const server = await startTestServer(f.dir);
    const ca = readFileSync(rootPemPath(f.dir), "utf8");
    const b = (n: string) => readFileSync(join(out, "bot-1", n), "utf8");
    const opts = { ca, cert: b("cert.pem") + b("chain.pem"), key: b("key.pem") };
    const statuses: number[] = [];
    try {
      const first = await postJson(`${server.url}/api/v1/enroll`, { csr: (await makeCsr("bot-1")).csr.pem }, opts);
      assert.equal(first.status, 200, first.text);
      const { csr } = await makeCsr("bot-1");
      for (let i = 0; i < 40; i++) statuses.push((await postJson(`${server.url}/api/v1/enroll`, { csr: csr.pem }, opts)).status);
    } finally {
      await server.close();
    }
    assert.equal(statuses[0], 403);
    assert.ok(
      statuses.slice(-10).every((s) => s === 429),
      `the source is limited after repeated refusals: ${statuses.join(" ")}`,
    );
    const rows = await sqliteStore(f.fleet)
      .db.selectFrom("audit_log")
      .select("details")
      .where("action", "=", "enrollment.refuse")
      .where("subject", "=", "device:bot-1")
      .execute();
    assert.equal(rows.length, 1, "one tally for one source, device and bundle");
    const d = JSON.parse(rows[0]!.details) as Record<string, unknown>;
    assert.equal(d.count, 40);
    assert.equal(d.reason, "factory-already-enrolled");
    assert.equal(d.address, "127.0.0.1");
    assert.equal(typeof d.enrolled_certificate, "string");
  });

  it("re-deliveries of one certificate to one key are audited once per window, not once per request", async () => {
    await addDevice(f.fleet, { id: "retry-loop", actor: "test" });
    const { token } = await createToken(f.fleet, { deviceId: "retry-loop", actor: "test" });
    const { csr } = await makeCsr("retry-loop");
    const source = { via: "test", address: "192.0.2.1" };
    const first = await enrollWithToken(f.fleet, { deviceId: "retry-loop", token, csr: csr.der, source });
    // Concurrent retries too (each would otherwise find no row audited yet).
    const parallel = await Promise.all(
      Array.from({ length: 10 }, () => enrollWithToken(f.fleet, { deviceId: "retry-loop", token, csr: csr.der, source })),
    );
    assert.ok(parallel.every((c) => c.serial === first.serial));
    for (let i = 0; i < 15; i++)
      assert.equal((await enrollWithToken(f.fleet, { deviceId: "retry-loop", token, csr: csr.der, source })).serial, first.serial);
    const rows = await sqliteStore(f.fleet)
      .db.selectFrom("audit_log")
      .select("details")
      .where("action", "=", "certificate.redeliver")
      .where("subject", "=", "device:retry-loop")
      .execute();
    assert.equal(rows.length, 1);
    // Another key for the spent token is still refused, re-delivery or not.
    await assert.rejects(
      enrollWithToken(f.fleet, { deviceId: "retry-loop", token, csr: (await makeCsr("retry-loop")).csr.der, source }),
      /already used/,
    );
  });
});

describe("FailureLimiter", () => {
  it("when full, a source it cannot track is limited instead of unlimited", () => {
    const limiter = new FailureLimiter(2, 60_000, 3);
    const t = 1_000_000;
    for (const k of ["a", "b", "c"]) limiter.fail(k, t);
    assert.equal(limiter.blockedFor("a", t), 0, "a tracked source under its limit");
    assert.ok(limiter.blockedFor("d", t + 1) > 0, "an untracked source while the table is full");
    assert.ok(limiter.take("d", t + 1) > 0, "nor does it get a renewal challenge");
    // Once the windows end, room is made again.
    assert.equal(limiter.blockedFor("d", t + 60_000), 0);
    limiter.fail("d", t + 60_000);
    assert.equal(limiter.blockedFor("d", t + 60_001), 0);
  });

  it("counts a whole /48 as one source once many of its /64s fail", () => {
    const limiter = new FailureLimiter(3, 60_000, 1000, 4);
    const t = 5_000_000;
    const subnet = (n: number) => sourceKey(`2001:db8:7:${n.toString(16)}::1`);
    assert.equal(subnet(1), "2001:db8:7:1::/64");
    for (let n = 1; n <= 4; n++) limiter.fail(subnet(n), t);
    // From here on every /64 of 2001:db8:7::/48 shares one window.
    for (let n = 5; n <= 7; n++) limiter.fail(subnet(n), t);
    assert.ok(limiter.blockedFor(subnet(100), t + 1) > 0, "a fresh /64 of the same /48 is over the limit");
    assert.equal(limiter.blockedFor(sourceKey("2001:db8:8:1::1"), t + 1), 0, "another /48 is not");
    assert.equal(limiter.blockedFor(subnet(100), t + 60_001), 0, "for one window");
  });
});

describe("renewal after expiry, after the grace, with a renewal already recorded", () => {
  let f: TempFleet;
  before(async () => {
    f = await tempFleet();
  });
  after(async () => {
    await f?.close();
  });

  const proof = (key: ClientKey, id: string, nonce: string, csrDer: Buffer): string =>
    sign(
      "sha256",
      Buffer.from(`fleetpki-renew-expired/v1\n${id}\n${nonce}\n${createHash("sha256").update(csrDer).digest("hex")}`),
      key.privateKey,
    ).toString("base64");

  it("the same key gets the renewal already issued; another key is refused; without a renewal the grace holds", async () => {
    const id = "offline-bot";
    await addDevice(f.fleet, { id, actor: "test" });
    const { key, csr } = await makeCsr(id);
    const tenDays = 10 * 24 * 3_600_000;
    const old = await issueDeviceCertificate(f.fleet, {
      deviceId: id,
      actor: "test",
      csr: csr.der,
      now: new Date(Date.now() - tenDays - 60_000),
      lifetimeMs: 60_000,
    });
    const source = { via: "test" };
    const renew = async (c: { pem: string; der: Buffer }, now: Date) => {
      const { nonce } = await renewalChallenge(f.fleet, id, now);
      return renewExpired(f.fleet, {
        certificate: old.certificatePem,
        csr: c.pem,
        nonce,
        signature: proof(key, id, nonce, c.der),
        source,
        now,
      });
    };
    // Within the grace (an hour after expiry), the renewal is issued; its answer is lost.
    const next = await makeCsr(id);
    const lost = await renew(next.csr, new Date(old.notAfter.getTime() + 3_600_000));
    // Ten days later (past the 7-day grace), the robot asks again with the same new key.
    const again = await renew(next.csr, new Date());
    assert.equal(again.serial, lost.serial);
    assert.equal(again.certificatePem, lost.certificatePem);
    await assert.rejects(renew((await makeCsr(id)).csr, new Date()), /already renewed/);

    // A certificate past the grace that never renewed still has to re-enroll.
    await addDevice(f.fleet, { id: "late-bot", actor: "test" });
    const late = await makeCsr("late-bot");
    const lateCert = await issueDeviceCertificate(f.fleet, {
      deviceId: "late-bot",
      actor: "test",
      csr: late.csr.der,
      now: new Date(Date.now() - tenDays - 60_000),
      lifetimeMs: 60_000,
    });
    const { nonce } = await renewalChallenge(f.fleet, "late-bot");
    const fresh = await makeCsr("late-bot");
    await assert.rejects(
      renewExpired(f.fleet, {
        certificate: lateCert.certificatePem,
        csr: fresh.csr.pem,
        nonce,
        signature: proof(late.key, "late-bot", nonce, fresh.csr.der),
        source,
      }),
      /beyond the 7d renewal grace: re-enroll/,
    );
  });
});
