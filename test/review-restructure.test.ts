// Regression tests for what the review of the issue 9 restructure (authority/ rooms, provisioners,
// event feed, CertificateStatus, store operations) found. Each test sends the hostile input and
// failed on the code before its fix.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createLocalCa } from "../src/authority/ca/cas.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { fromPem } from "../src/x509/pem.js";
import { tempFleet } from "./helpers.js";
import { ManualClock } from "./support/clock.js";

describe("CertificateStatus: a DER is good only if it is byte for byte the one issued", { concurrency: false }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;

  before(async () => {
    f = await tempFleet();
    server = await startFleetServer({ dir: f.dir, only: [], logger: silentLogger, clock: new ManualClock() });
    await server.changes.stop();
  });
  after(async () => {
    await server?.close();
    await f?.close();
  });

  it("a forged certificate carrying the serial of a CA created while the server runs is unknown, not good", async () => {
    // Created after the service loaded: it learns of the CA from the `ca.create` event alone.
    await createLocalCa(f.fleet, { name: "late", actor: "test" });
    await server.changes.poll();
    const der = fromPem((await f.fleet.caRecord("local-late")).certificate_pem, ["CERTIFICATE"]);
    assert.equal(server.certificateStatus.certificate({ der }).status, "good", "the CA's own certificate");
    const forged = Buffer.from(der);
    forged[forged.length - 1]! ^= 0x01; // same serial and issuer, another signature: not what the fleet issued
    assert.equal(server.certificateStatus.certificate({ der: forged }).status, "unknown");
  });
});
