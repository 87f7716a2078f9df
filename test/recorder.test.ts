// The issuance recorders: the same outcomes whether a batch is recorded on the calling thread or
// on the server's recording thread, errors crossing the thread boundary as their own classes.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { verifyAudit } from "../src/audit/log.js";
import { addDevice } from "../src/authority/devices.js";
import { AuthenticationFailed, CsrInvalid, DeviceNotActive, TooManyRequests, UnknownDevice } from "../src/authority/errors.js";
import type { Fleet } from "../src/authority/fleet.js";
import { issueForKey, type SubjectKey } from "../src/authority/issuance.js";
import { reviveError, transferError } from "../src/authority/recording-thread.js";
import { checkToken, createToken } from "../src/authority/tokens.js";
import { isUniqueViolation } from "../src/store/store.js";
import { tempFleet } from "./helpers.js";

function p256Key(): SubjectKey {
  const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ format: "der", type: "spki" });
  return { spki, subjectPublicKey: spki.subarray(spki.length - 65), keyType: "p256" };
}

describe("errors crossing the recording thread", () => {
  it("AuthorityErrors come back as their own class with their fields", () => {
    const revived = reviveError(structuredClone(transferError(new TooManyRequests("slow down", 42))));
    assert.ok(revived instanceof TooManyRequests);
    assert.equal((revived as TooManyRequests).retryAfterSeconds, 42);
    assert.equal((revived as TooManyRequests).code, "too-many-requests");
    assert.equal(revived.message, "slow down");
    const csr = reviveError(structuredClone(transferError(new CsrInvalid("signature-invalid", "bad signature"))));
    assert.ok(csr instanceof CsrInvalid);
    assert.equal((csr as CsrInvalid).reason, "signature-invalid");
  });

  it("database errors keep their SQLite code (serial collisions are retried on it)", () => {
    const e = Object.assign(new Error("UNIQUE constraint failed: certificates.serial"), { code: "SQLITE_CONSTRAINT_PRIMARYKEY" });
    const revived = reviveError(structuredClone(transferError(e)));
    assert.ok(isUniqueViolation(revived));
    assert.ok(!(revived instanceof AuthenticationFailed));
  });
});

for (const mode of ["in-process", "recording thread"] as const) {
  describe(`issuance recorded ${mode === "in-process" ? "on the calling thread" : "on the recording thread"}`, () => {
    let ctx: Awaited<ReturnType<typeof tempFleet>>;
    let fleet: Fleet;
    before(async () => {
      ctx = await tempFleet();
      fleet = ctx.fleet;
      if (mode === "recording thread") await fleet.recordOnThread();
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
