// The OCSP status lookup (StatusOperations.lookupStatuses) runs a prepared statement on the
// store's native connection. Outside a transaction it must never read another caller's
// uncommitted writes (it waits for the open transaction); inside one it reads that transaction's
// own writes without waiting for itself.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { addDevice } from "../src/authority/devices.js";
import { issueForKey, subjectKeyOf } from "../src/authority/issue/issuance.js";
import { tempFleet } from "./helpers.js";

describe("lookupStatuses on the native connection", { concurrency: false }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  const serials: string[] = [];

  before(async () => {
    f = await tempFleet();
    for (const id of ["lk-a", "lk-b"]) {
      await addDevice(f.fleet, { id, actor: "test" });
      const key = subjectKeyOf(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey);
      serials.push((await issueForKey(f.fleet, { deviceId: id, actor: "test" }, key)).serial);
    }
  });
  after(async () => {
    await f?.close();
  });

  it("answers per serial, in order; undefined for an unknown serial or another CA", async () => {
    const [a, unknown, b] = await f.fleet.store.ops.status.lookupStatuses("devices", [serials[0]!, "01ab", serials[1]!]);
    assert.deepEqual(a, { status: "valid", revoked_at: null, revocation_reason: null, kind: "device" });
    assert.equal(unknown, undefined);
    assert.equal(b?.status, "valid");
    assert.deepEqual(await f.fleet.store.ops.status.lookupStatuses("services", [serials[0]!]), [undefined]);
  });

  it("outside a transaction: never another caller's uncommitted change (it waits, then reads what was committed)", async () => {
    const at = new Date().toISOString();
    let inside: () => void = () => {};
    const changed = new Promise<void>((r) => (inside = r));
    let release: () => void = () => {};
    const released = new Promise<void>((r) => (release = r));
    const rolledBack = f.fleet.store
      .transaction(async (tx) => {
        await tx.status.setCertificateStatus([serials[0]!], { status: "revoked", reason: "keyCompromise", at });
        inside();
        await released; // the change is written but not committed while the lookup below is asked
        throw new Error("roll back");
      })
      .catch((e: Error) => e.message);
    await changed;
    const looked = f.fleet.store.ops.status.lookupStatuses("devices", [serials[0]!]);
    release();
    const [row] = await looked;
    assert.equal(await rolledBack, "roll back");
    assert.equal(row?.status, "valid", "the lookup read a write that was rolled back");
  });

  it("inside a transaction: sees that transaction's own change, without waiting for itself", async () => {
    const at = new Date().toISOString();
    const seen = await f.fleet.store.transaction(async (tx) => {
      await tx.status.setCertificateStatus([serials[1]!], { status: "hold", reason: "certificateHold", at });
      return tx.status.lookupStatuses("devices", [serials[1]!]);
    });
    assert.deepEqual(seen, [{ status: "hold", revoked_at: at, revocation_reason: "certificateHold", kind: "device" }]);
    const [after] = await f.fleet.store.ops.status.lookupStatuses("devices", [serials[1]!]);
    assert.equal(after?.status, "hold");
  });
});
