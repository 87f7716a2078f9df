// The group-commit recorder: the same outcomes whether commits sync themselves (CLI) or the
// server's group sync makes them durable afterwards. The group sync itself is driven through its
// seam (an injected sync function): commits made while an fdatasync is in flight, and a failing one.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { fdatasync, fstatSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { verifyAudit } from "../src/audit/log.js";
import { addDevice, showDevice } from "../src/authority/devices.js";
import {
  ApprovalAlreadyIssued,
  AuthenticationFailed,
  CertificateAlreadyRenewed,
  DeviceNotActive,
  NotPermitted,
  UnknownDevice,
} from "../src/authority/errors.js";
import { FleetServices } from "../src/authority/services.js";
import { issueForKey, subjectKeyOf, type SubjectKey } from "../src/authority/issue/issuance.js";
import { checkToken, createToken } from "../src/authority/enroll/tokens.js";
import { StoreError } from "../src/store/errors.js";
import type { SyncFunction } from "../src/store/wal-sync.js";
import { tempFleet } from "./helpers.js";
import { ManualClock } from "./support/clock.js";
import { sqliteStore } from "./support/sqlite.js";

function p256Key(): SubjectKey {
  return subjectKeyOf(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey);
}

/**
 * The WAL sync seam (WalSync's sync function): every fdatasync is held in flight until the test
 * releases it, then runs the real fdatasync, or fails with the error given. Records the size of
 * the WAL when each sync began: a sync covers exactly the frames written before it began.
 */
class HeldSync {
  private readonly calls: Array<{ walBytes: number; released: boolean; run: (err?: NodeJS.ErrnoException) => void }> = [];
  private readonly waiting: Array<{ n: number; resolve: () => void }> = [];
  private holding = true;

  readonly sync: SyncFunction = (fd, callback) => {
    const call = {
      walBytes: fstatSync(fd).size,
      released: false,
      run: (err?: NodeJS.ErrnoException) => (err ? setImmediate(() => callback(err)) : fdatasync(fd, callback)),
    };
    this.calls.push(call);
    for (const w of this.waiting.filter((w) => this.calls.length >= w.n)) w.resolve();
    if (!this.holding) this.release(this.calls.length);
  };

  get count(): number {
    return this.calls.length;
  }

  /** Resolves once the n-th sync (1-based) has begun. */
  started(n: number): Promise<void> {
    return this.calls.length >= n ? Promise.resolve() : new Promise((resolve) => this.waiting.push({ n, resolve }));
  }

  walBytesAtStart(n: number): number {
    return this.calls[n - 1]!.walBytes;
  }

  release(n: number, err?: NodeJS.ErrnoException): void {
    const call = this.calls[n - 1]!;
    assert.equal(call.released, false, `sync ${n} released twice`);
    call.released = true;
    call.run(err);
  }

  /** Clean-up (also after a failed assertion): lets every sync, held or future, run, so close() can finish. */
  stopHolding(): void {
    this.holding = false;
    this.calls.forEach((c, i) => c.released || this.release(i + 1));
  }
}

/** Tracks whether a promise has settled, without awaiting it. */
function watch<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let settled = false;
  const promise = p.finally(() => {
    settled = true;
  });
  promise.catch(() => undefined); // rejections are asserted where the test awaits them
  return { promise, settled: () => settled };
}

/** Lets every callback already queued run (promise jobs and one turn of the event loop). */
const drain = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Polls `cond` once per event-loop turn (no timers), failing after many turns. */
async function until(cond: () => Promise<boolean>, what: string): Promise<void> {
  for (let turn = 0; turn < 10_000; turn++) {
    if (await cond()) return;
    await drain();
  }
  assert.fail(`never happened: ${what}`);
}

const deviceExists = async (fleet: FleetServices, id: string): Promise<boolean> =>
  (await sqliteStore(fleet).db.selectFrom("devices").select("id").where("id", "=", id).executeTakeFirst()) !== undefined;

async function certificateCount(fleet: FleetServices, deviceId: string): Promise<number> {
  return (await sqliteStore(fleet).db.selectFrom("certificates").select("serial").where("device_id", "=", deviceId).execute()).length;
}

describe("WAL group sync: commits during a sync, and a failed sync", () => {
  it("a commit made while an fdatasync is in flight is answered by a later sync, never by the one already running", async () => {
    const ctx = await tempFleet();
    let held: HeldSync | undefined;
    try {
      const { fleet } = ctx;
      await addDevice(fleet, { id: "r1", actor: "test" });
      await addDevice(fleet, { id: "r2", actor: "test" });
      held = new HeldSync();
      sqliteStore(fleet).useGroupSync({ sync: held.sync });
      const wal = join(ctx.dir, "fleetpki.db-wal");

      // Issuance A commits its batch, then waits for sync 1, which the test holds in flight.
      const a = watch(issueForKey(fleet, { deviceId: "r1", actor: "test" }, p256Key()));
      await held.started(1);
      assert.equal(await certificateCount(fleet, "r1"), 1, "A's certificate is committed");
      assert.equal(a.settled(), false, "but not handed out before it is on disk");

      // Commit C while sync 1 runs: a real write transaction (Store.transaction commits, then
      // waits for durability before it resolves).
      const c = watch(addDevice(fleet, { id: "r3", actor: "test" }));
      await until(() => deviceExists(fleet, "r3"), "C committed");
      const walAfterC = statSync(wal).size;
      assert.ok(walAfterC > held.walBytesAtStart(1), "C's frames were written after sync 1 began, so sync 1 does not cover them");
      // Issuance B arrives during sync 1 as well.
      const b = watch(issueForKey(fleet, { deviceId: "r2", actor: "test" }, p256Key()));
      await drain();
      assert.equal(held.count, 1, "no second sync runs concurrently with the first");

      held.release(1);
      await a.promise;
      await drain();
      assert.equal(c.settled(), false, "C is not answered by the sync that was running when it committed");
      assert.equal(b.settled(), false);
      assert.equal(held.count, 2, "the next sync began as soon as sync 1 finished");
      assert.ok(held.walBytesAtStart(2) >= walAfterC, "and it covers C's frames");

      // B's batch commits only after A's sync (the recorder records one batch at a time); it
      // then waits behind sync 2, which began before B's frames were written, so B needs sync 3.
      held.release(2);
      await c.promise;
      await held.started(3);
      assert.equal(await certificateCount(fleet, "r2"), 1, "B's certificate is committed");
      assert.equal(held.walBytesAtStart(3), statSync(wal).size, "sync 3 covers everything written, B included");
      await drain();
      assert.equal(b.settled(), false, "B waits for sync 3");
      held.release(3);
      await b.promise;
      assert.equal(held.count, 3);
      assert.equal((await verifyAudit(fleet.store.ops.audit)).ok, true);
    } finally {
      held?.stopHolding();
      await ctx.close();
    }
  });

  it("a failed fdatasync rejects the waits it served and every later one, and no later sync is trusted", async () => {
    const ctx = await tempFleet();
    let held: HeldSync | undefined;
    try {
      const { fleet } = ctx;
      await addDevice(fleet, { id: "r1", actor: "test" });
      await addDevice(fleet, { id: "r2", actor: "test" });
      held = new HeldSync();
      sqliteStore(fleet).useGroupSync({ sync: held.sync });

      const a = watch(issueForKey(fleet, { deviceId: "r1", actor: "test" }, p256Key()));
      await held.started(1);
      const c = watch(addDevice(fleet, { id: "r3", actor: "test" })); // committed during the sync that will fail
      await until(() => deviceExists(fleet, "r3"), "C committed");
      await drain();

      held.release(1, Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
      const failed = (e: unknown): boolean => e instanceof StoreError && /syncing the write-ahead log .* failed \(EIO/.test(e.message);
      await assert.rejects(a.promise, failed, "the issuance whose sync failed gets no certificate");
      await drain();
      assert.ok(c.settled(), "the commit that waited for the next sync is answered too, not left waiting");
      await assert.rejects(c.promise, failed, "and refused");

      // The kernel may have dropped the dirty pages: a later fdatasync could succeed without them.
      const later = watch(fleet.store.durable());
      await drain();
      assert.equal(held.count, 1, "no sync is started after the failure");
      assert.ok(later.settled(), "a later durable wait is refused at once");
      await assert.rejects(later.promise, failed);
      await assert.rejects(issueForKey(fleet, { deviceId: "r2", actor: "test" }, p256Key()), failed, "a later issuance is refused");
      assert.equal(held.count, 1, "no sync was started after the failure");
    } finally {
      held?.stopHolding();
      await ctx.close();
    }
  });
});

describe("WAL group sync", () => {
  it("durable() calls made while a sync runs share the next sync (real fdatasync), and close waits for it", async () => {
    const ctx = await tempFleet();
    try {
      const store = sqliteStore(ctx.fleet);
      store.useGroupSync();
      const native = (await store.withNative((n) => n)) as { pragma(s: string, o: { simple: true }): unknown };
      assert.equal(native.pragma("synchronous", { simple: true }), 1, "commits no longer sync themselves");
      const first = store.durable();
      const [second, third] = [store.durable(), store.durable()];
      assert.notEqual(first, second, "a commit made during a running sync waits for the next one");
      assert.equal(second, third, "and shares it with every other commit made meanwhile");
      await Promise.all([first, second, third]);
      await addDevice(ctx.fleet, { id: "after-sync", actor: "test" });
      assert.ok(await store.db.selectFrom("devices").select("id").where("id", "=", "after-sync").executeTakeFirst());
    } finally {
      await ctx.close();
    }
  });
});

for (const mode of ["synchronous commits", "group sync"] as const) {
  describe(`issuance recorded with ${mode}`, () => {
    let ctx: Awaited<ReturnType<typeof tempFleet>>;
    let fleet: FleetServices;
    before(async () => {
      ctx = await tempFleet();
      fleet = ctx.fleet;
      if (mode === "group sync") sqliteStore(fleet).useGroupSync();
      await addDevice(fleet, { id: "r1", actor: "test" });
      await addDevice(fleet, { id: "r2", actor: "test" });
    });
    after(() => ctx.close());

    it("records concurrent issuances, spends a token once and refuses the rest precisely", async () => {
      const { token } = await createToken(fleet, { deviceId: "r1", actor: "test" });
      const condition = await checkToken(fleet, "r1", token);
      const results = await Promise.allSettled([
        issueForKey(fleet, { deviceId: "r1", actor: "test", condition }, p256Key()),
        issueForKey(fleet, { deviceId: "r1", actor: "test", condition }, p256Key()),
        issueForKey(fleet, { deviceId: "r2", actor: "test" }, p256Key()),
        issueForKey(fleet, { deviceId: "nobody", actor: "test" }, p256Key()),
      ]);
      const [a, b, c, d] = results;
      assert.equal([a, b].filter((r) => r.status === "fulfilled").length, 1, "exactly one certificate for one token");
      const lost = [a, b].find((r) => r.status === "rejected") as PromiseRejectedResult;
      assert.ok(lost.reason instanceof AuthenticationFailed, String(lost.reason));
      assert.equal((lost.reason as AuthenticationFailed).reason, "token-used");
      assert.equal(c!.status, "fulfilled");
      assert.equal(d!.status, "rejected");
      assert.ok((d as PromiseRejectedResult).reason instanceof UnknownDevice);

      const rows = await sqliteStore(fleet)
        .db.selectFrom("certificates")
        .select(["serial", "device_id"])
        .where("device_id", "in", ["r1", "r2"])
        .execute();
      assert.equal(rows.length, 2);
      const issued = results
        .filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<typeof issueForKey>>> => r.status === "fulfilled")
        .map((r) => r.value.serial);
      assert.deepEqual(rows.map((r) => r.serial).sort(), issued.sort());
      assert.equal((await verifyAudit(fleet.store.ops.audit)).ok, true);
    });

    it("refuses a device that is no longer active, leaving no row", async () => {
      await sqliteStore(fleet).db.updateTable("devices").set({ status: "disabled" }).where("id", "=", "r2").execute();
      const before = await sqliteStore(fleet).db.selectFrom("certificates").select("serial").where("device_id", "=", "r2").execute();
      await assert.rejects(issueForKey(fleet, { deviceId: "r2", actor: "test" }, p256Key()), DeviceNotActive);
      const afterRows = await sqliteStore(fleet).db.selectFrom("certificates").select("serial").where("device_id", "=", "r2").execute();
      assert.equal(afterRows.length, before.length);
    });
  });
}

describe("refusals at record time", () => {
  let ctx: Awaited<ReturnType<typeof tempFleet>>;
  let fleet: FleetServices;
  before(async () => {
    ctx = await tempFleet();
    fleet = ctx.fleet;
    for (const id of ["t1", "t2", "f1", "n1", "n2"]) await addDevice(fleet, { id, actor: "test" });
  });
  after(() => ctx.close());

  const counts = async (): Promise<{ certificates: number; audit: number }> => ({
    certificates: (await sqliteStore(fleet).db.selectFrom("certificates").select("serial").execute()).length,
    audit: (await sqliteStore(fleet).db.selectFrom("audit_log").select("seq").execute()).length,
  });
  const issue = (deviceId: string, condition?: Parameters<typeof issueForKey>[1]["condition"]) =>
    issueForKey(fleet, { deviceId, actor: "test", condition }, p256Key());
  /** Asserts the refusal's class, reason and exact message, and that nothing was written for it. */
  async function refused(p: Promise<unknown>, type: abstract new (...a: never[]) => Error, message: string, reason?: string) {
    const before = await counts();
    await assert.rejects(p, (e: Error & { reason?: string }) => {
      assert.ok(e instanceof type, `${e.name}: ${e.message}`);
      assert.equal(e.message, message);
      if (reason !== undefined) assert.equal(e.reason, reason);
      return true;
    });
    assert.deepEqual(await counts(), before, "a refused certificate leaves no row and no audit event");
  }

  it("a token: unknown, another device's, expired at the request time, and spent", async () => {
    const { token } = await createToken(fleet, { deviceId: "t1", actor: "test" });
    const condition = await checkToken(fleet, "t1", token);
    await refused(
      issue("t1", { ...condition, tokenId: "no-such-token" }),
      AuthenticationFailed,
      'invalid token for device "t1"',
      "token-invalid",
    );
    await refused(issue("t2", { ...condition, deviceId: "t2" }), AuthenticationFailed, 'invalid token for device "t2"', "token-invalid");
    const expiresAt = (
      await sqliteStore(fleet)
        .db.selectFrom("enrollment_tokens")
        .select("expires_at")
        .where("id", "=", condition.tokenId)
        .executeTakeFirstOrThrow()
    ).expires_at;
    await refused(
      issue("t1", { ...condition, at: expiresAt }),
      AuthenticationFailed,
      `the token for device "t1" expired at ${expiresAt}`,
      "token-expired",
    );
    await issue("t1", condition);
    await refused(issue("t1", condition), AuthenticationFailed, 'the token for device "t1" was already used', "token-used");
  });

  it("a renewal: of a certificate renewed already (its nonce stays unspent), and with a bad nonce", async () => {
    const first = await issue("n1");
    const at = fleet.clock.now().toISOString();
    const renewal = await issue("n1", { kind: "renewal", deviceId: "n1", renews: first.serial, at });
    const nonce = "nonce-for-n1";
    const expires = new Date(Date.parse(at) + 60_000).toISOString();
    await sqliteStore(fleet)
      .db.insertInto("renewal_nonces")
      .values({ nonce, device_id: "n1", expires_at: expires, used_at: null })
      .execute();
    await refused(
      issue("n1", { kind: "renewal", deviceId: "n1", renews: first.serial, nonce, at }),
      CertificateAlreadyRenewed,
      new CertificateAlreadyRenewed(first.serial, renewal.serial).message,
    );
    const unspent = await sqliteStore(fleet)
      .db.selectFrom("renewal_nonces")
      .select("used_at")
      .where("nonce", "=", nonce)
      .executeTakeFirstOrThrow();
    assert.equal(unspent.used_at, null, "the nonce of a refused renewal is not spent");

    const second = await issue("n2");
    const badNonce = "the renewal challenge is unknown, expired, already used or for another device";
    for (const [what, c] of [
      ["unknown", { nonce: "no-such-nonce", at }],
      ["another device's", { nonce, at }],
      ["expired", { nonce, at: expires, deviceId: "n1" }],
    ] as const) {
      const condition = { kind: "renewal" as const, deviceId: "n2", renews: second.serial, ...c };
      const device = condition.deviceId;
      await refused(issue(device, condition), AuthenticationFailed, badNonce, "nonce-invalid").catch((e: Error) => {
        throw new Error(`${what} nonce: ${e.message}`);
      });
    }
  });

  it("an approval no longer approved, and a second factory enrollment", async () => {
    await refused(issue("f1", { kind: "approval", requestId: "no-such-request" }), ApprovalAlreadyIssued, "the approval was already used");
    const at = fleet.clock.now().toISOString();
    await issue("f1", { kind: "factory", deviceId: "f1", factorySerial: "aa", at });
    await refused(
      issue("f1", { kind: "factory", deviceId: "f1", factorySerial: "aa", at }),
      NotPermitted,
      'device "f1" already enrolled with a factory certificate; an operator must run `fleetpki device reprovision f1` to allow another',
      "factory-already-enrolled",
    );
  });

  it("refusals among concurrent issuances leave the others recorded", async () => {
    const before = await counts();
    const results = await Promise.allSettled([
      issue("t2"),
      issue("nobody"),
      issue("f1", { kind: "factory", deviceId: "f1", factorySerial: "aa", at: fleet.clock.now().toISOString() }),
      issue("t2"),
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      ["fulfilled", "rejected", "rejected", "fulfilled"],
    );
    assert.ok((results[1] as PromiseRejectedResult).reason instanceof UnknownDevice);
    assert.deepEqual(await counts(), { certificates: before.certificates + 2, audit: before.audit + 2 });
    assert.equal((await verifyAudit(fleet.store.ops.audit)).ok, true);
  });

  it("takes the time from the fleet's clock", async () => {
    // A day ahead of the system clock, on a whole second (certificate times have seconds).
    const at = new Date(Math.floor(Date.now() / 1000) * 1000 + 86_400_000);
    const clock = new ManualClock(at);
    const clocked = await FleetServices.open(ctx.dir, { clock });
    try {
      const cert = await issueForKey(clocked, { deviceId: "t2", actor: "test" }, p256Key());
      const row = await clocked.store.ops.certificates.bySerial(cert.serial);
      assert.equal(row?.created_at, at.toISOString());
      const backdated = at.getTime() - cert.notBefore.getTime();
      assert.ok(backdated >= 0 && backdated <= 5 * 60_000, `notBefore ${cert.notBefore.toISOString()} is the clock's time (backdated)`);
      await addDevice(clocked, { id: "clocked", actor: "test" });
      const device = await clocked.store.ops.devices.get("clocked");
      assert.equal(device?.created_at, at.toISOString());
      const shown = await showDevice(clocked, "t2");
      clock.advance(400 * 86_400_000);
      assert.ok(shown.certificates.every((c) => c.status === "valid"));
      const later = await showDevice(clocked, "t2");
      assert.ok(
        later.certificates.every((c) => c.status === "expired"),
        "showDevice reads now from the clock",
      );
    } finally {
      await clocked.close();
    }
  });
});
