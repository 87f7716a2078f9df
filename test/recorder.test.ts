// The group-commit recorder: the same outcomes whether commits sync themselves (CLI) or the
// server's group sync makes them durable afterwards.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { verifyAudit } from "../src/audit/log.js";
import { addDevice } from "../src/authority/devices.js";
import { AuthenticationFailed, DeviceNotActive, UnknownDevice } from "../src/authority/errors.js";
import type { Fleet } from "../src/authority/fleet.js";
import { issueForKey, subjectKeyOf, type SubjectKey } from "../src/authority/issuance.js";
import { checkToken, createToken } from "../src/authority/tokens.js";
import { tempFleet } from "./helpers.js";

function p256Key(): SubjectKey {
  return subjectKeyOf(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey);
}

describe("WAL group sync", () => {
  it("one sync serves the commits made while the previous one ran, and close waits for it", async () => {
    const ctx = await tempFleet();
    try {
      const store = ctx.fleet.store;
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
    let fleet: Fleet;
    before(async () => {
      ctx = await tempFleet();
      fleet = ctx.fleet;
      if (mode === "group sync") fleet.store.useGroupSync();
      await addDevice(fleet, { id: "r1", actor: "test" });
      await addDevice(fleet, { id: "r2", actor: "test" });
    });
    after(() => ctx.close());

    it("records concurrent issuances, spends a token once and refuses the rest precisely", async () => {
      const { token } = await createToken(fleet, { deviceId: "r1", actor: "test" });
      const claim = await checkToken(fleet, "r1", token);
      const results = await Promise.allSettled([
        issueForKey(fleet, { deviceId: "r1", actor: "test", claim }, p256Key()),
        issueForKey(fleet, { deviceId: "r1", actor: "test", claim }, p256Key()),
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

      const rows = await fleet.store.db.selectFrom("certificates").select(["serial", "device_id"]).where("device_id", "in", ["r1", "r2"]).execute();
      assert.equal(rows.length, 2);
      const issued = results.filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<typeof issueForKey>>> => r.status === "fulfilled").map((r) => r.value.serial);
      assert.deepEqual(rows.map((r) => r.serial).sort(), issued.sort());
      assert.equal((await verifyAudit(fleet.store.db)).ok, true);
    });

    it("refuses a device that is no longer active, leaving no row", async () => {
      await fleet.store.db.updateTable("devices").set({ status: "disabled" }).where("id", "=", "r2").execute();
      const before = await fleet.store.db.selectFrom("certificates").select("serial").where("device_id", "=", "r2").execute();
      await assert.rejects(issueForKey(fleet, { deviceId: "r2", actor: "test" }, p256Key()), DeviceNotActive);
      const afterRows = await fleet.store.db.selectFrom("certificates").select("serial").where("device_id", "=", "r2").execute();
      assert.equal(afterRows.length, before.length);
    });
  });
}
