// The CertificateStatus service (issue 9, section 4): "is this certificate / device good?" answered
// from memory, kept current by the change feed. Changes are made by another process (the CLI) or
// another connection, and are reflected once the server's feed has polled, not before: the
// answers never read the database.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { createLocalCa } from "../src/authority/ca/cas.js";
import { addDevice } from "../src/authority/devices.js";
import { InvalidArgument } from "../src/authority/errors.js";
import { issueDeviceCertificate, type DeviceCertificate } from "../src/authority/issue/issuance.js";
import { CertificateStatus, type CertificateAnswer } from "../src/authority/status/certificate-status.js";
import { revokeCertificate, revokeDevice } from "../src/authority/status/revocation.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { fromPem } from "../src/x509/pem.js";
import { assertOk, cliAsync, opensslCsr, tempDir, tempFleet } from "./helpers.js";
import { ManualClock } from "./support/clock.js";

const DAY = 86_400_000;

describe("CertificateStatus: answers from memory, kept current by the change feed", { concurrency: false }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let work: { path: string; cleanup: () => void };
  let server: FleetServer;
  const clock = new ManualClock();
  const certs: Record<string, DeviceCertificate> = {};

  const issue = async (id: string, caId?: string): Promise<DeviceCertificate> => {
    const { csr } = opensslCsr(work.path, `${id}-${caId ?? "devices"}`);
    return issueDeviceCertificate(f.fleet, { deviceId: id, csr: readFileSync(csr), actor: "test", ...(caId ? { caId } : {}) });
  };
  const status = () => server.certificateStatus;
  const bySerial = (c: DeviceCertificate, issuerCa = "devices"): CertificateAnswer => status().certificate({ issuerCa, serial: c.serial });

  before(async () => {
    f = await tempFleet();
    work = tempDir("fleetpki-certificate-status-");
    for (const id of ["st-a", "st-b", "st-c", "st-d"]) {
      await addDevice(f.fleet, { id, actor: "test" });
      certs[id] = await issue(id);
    }
    await createLocalCa(f.fleet, { name: "line1", actor: "test" });
    certs["fab-1"] = await issue("st-d", "local-line1");
    // No listener: the service is the server's whatever it serves.
    server = await startFleetServer({ dir: f.dir, only: [], logger: silentLogger, clock });
    // The feed reads only when a test polls: what the service says in between shows it does not read the database.
    await server.changes.stop();
  });
  after(async () => {
    await server?.close();
    await f?.close();
    work?.cleanup();
  });

  it("good for every certificate issued, by issuer + serial (any form openssl prints) and by DER; answers are synchronous", () => {
    const a = bySerial(certs["st-a"]!);
    assert.ok(!((a as unknown) instanceof Promise), "answered without waiting for anything");
    assert.equal(a.status, "good");
    assert.equal(a.kind, "device");
    assert.equal(a.deviceId, "st-a");
    assert.equal(a.notAfter?.getTime(), certs["st-a"]!.notAfter.getTime());
    const colons = certs["st-a"]!.serial.toUpperCase().match(/../g)!.join(":");
    assert.equal(status().certificate({ issuerCa: "devices", serial: `serial=${colons}` }).status, "good");
    assert.equal(status().certificate({ der: certs["st-b"]!.der }).status, "good");
    const factory = bySerial(certs["fab-1"]!, "local-line1");
    assert.deepEqual([factory.status, factory.kind, factory.deviceId], ["good", "factory", "st-d"]);
    assert.equal(status().caActive("local-line1"), true);
  });

  it("unknown for a serial never issued, under the wrong CA, or a DER that is not byte for byte the one issued", () => {
    assert.deepEqual(status().certificate({ issuerCa: "devices", serial: "0123456789abcdef" }), {
      status: "unknown",
      serial: "0123456789abcdef",
    });
    assert.equal(bySerial(certs["st-a"]!, "services").status, "unknown");
    assert.equal(bySerial(certs["st-a"]!, "nope").status, "unknown");
    const forged = Buffer.from(certs["st-a"]!.der);
    forged[forged.length - 1]! ^= 0x01; // same serial, another signature
    assert.equal(status().certificate({ der: forged }).status, "unknown");
    assert.throws(() => status().certificate({ der: Buffer.from("not a certificate") }), InvalidArgument);
    assert.throws(() => status().certificate({ issuerCa: "devices", serial: "xyz" }), InvalidArgument);
    assert.deepEqual(status().device("never-added"), {
      deviceId: "never-added",
      status: "unknown",
      group: null,
      labels: {},
      certificates: [],
    });
  });

  it("a certificate issued by another connection: unknown until the feed delivers its event, then good", async () => {
    await addDevice(f.fleet, { id: "st-late", actor: "test" });
    const late = await issue("st-late");
    assert.equal(bySerial(late).status, "unknown", "the answer comes from memory, not from the database");
    assert.equal(status().device("st-late").status, "unknown");
    await server.changes.poll();
    assert.equal(bySerial(late).status, "good");
    assert.equal(status().device("st-late").status, "active");
    assert.deepEqual(
      status()
        .device("st-late")
        .certificates.map((c) => c.serial),
      [late.serial],
    );
  });

  it("`fleetpki device revoke` (another process): revoked with reason and time after changes.poll(), not before", async () => {
    const before = Date.now();
    assertOk(await cliAsync(["device", "revoke", "st-a", "--reason", "keyCompromise", "--dir", f.dir]), "device revoke");
    assert.equal(bySerial(certs["st-a"]!).status, "good", "not yet delivered");
    await server.changes.poll();
    const a = bySerial(certs["st-a"]!);
    assert.equal(a.status, "revoked");
    assert.equal(a.reason, "keyCompromise");
    // The CLI's clock is the system's: the time lies within the command's run.
    assert.ok(a.since && a.since.getTime() >= before - 1000 && a.since.getTime() <= Date.now(), `revoked at ${a.since?.toISOString()}`);
    const device = status().device("st-a");
    assert.equal(device.status, "revoked");
    assert.deepEqual(
      device.certificates.map((c) => [c.serial, c.status]),
      [[certs["st-a"]!.serial, "revoked"]],
    );
    assert.equal(status().certificate({ der: certs["st-a"]!.der }).status, "revoked");
    assert.equal(bySerial(certs["st-b"]!).status, "good", "other devices untouched");
  });

  it("`fleetpki device hold` then `unhold`: held (certificateHold), then good again; the device follows", async () => {
    assertOk(await cliAsync(["device", "hold", "st-b", "--dir", f.dir]), "device hold");
    await server.changes.poll();
    const held = bySerial(certs["st-b"]!);
    assert.deepEqual([held.status, held.reason], ["held", "certificateHold"]);
    assert.ok(held.since instanceof Date);
    assert.equal(status().device("st-b").status, "held");
    assertOk(await cliAsync(["device", "unhold", "st-b", "--dir", f.dir]), "device unhold");
    await server.changes.poll();
    const released = bySerial(certs["st-b"]!);
    assert.equal(released.status, "good");
    assert.equal(released.reason, undefined);
    assert.equal(status().device("st-b").status, "active");
  });

  it("a certificate revoked by another connection: that certificate only", async () => {
    await revokeCertificate(f.fleet, { serial: certs["st-c"]!.serial, reason: "superseded", actor: "test" });
    assert.equal(bySerial(certs["st-c"]!).status, "good", "not yet delivered");
    await server.changes.poll();
    assert.deepEqual([bySerial(certs["st-c"]!).status, bySerial(certs["st-c"]!).reason], ["revoked", "superseded"]);
    assert.equal(status().device("st-c").status, "active", "the device itself stays active");
  });

  it("`fleetpki ca revoke-local`: the CA's certificate and everything it issued are revoked (cACompromise)", async () => {
    assertOk(await cliAsync(["ca", "revoke-local", "line1", "--dir", f.dir]), "ca revoke-local");
    assert.equal(bySerial(certs["fab-1"]!, "local-line1").status, "good", "not yet delivered");
    await server.changes.poll();
    const factory = bySerial(certs["fab-1"]!, "local-line1");
    assert.deepEqual([factory.status, factory.reason], ["revoked", "cACompromise"]);
    assert.ok(factory.since instanceof Date, "since the CA's revocation");
    assert.equal(status().caActive("local-line1"), false);
    assert.equal(status().caActive("devices"), true);
    const caSerial = (await f.fleet.caRecord("local-line1")).serial;
    const caCert = status().certificate({ issuerCa: "root", serial: caSerial });
    assert.deepEqual([caCert.status, caCert.kind, caCert.reason], ["revoked", "ca", "cACompromise"]);
    // The device's operational certificate (devices CA) is not affected.
    assert.equal(bySerial(certs["st-d"]!).status, "good");
  });

  it("a device lists only its unexpired certificates, at the injected clock's now", () => {
    assert.equal(status().device("st-d").certificates.length, 2, "operational + factory");
    clock.advance(400 * DAY); // past the 30-day leaf and the one-year factory certificate
    try {
      assert.deepEqual(status().device("st-d").certificates, []);
      assert.equal(status().device("st-d").status, "active");
    } finally {
      clock.advance(-400 * DAY);
    }
  });

  it("an expired certificate is expired at the injected clock's now, never good, a revoked device's included", async () => {
    await addDevice(f.fleet, { id: "st-exp", actor: "test" });
    const cert = await issue("st-exp");
    await server.changes.poll();
    const der = fromPem(cert.certificatePem, ["CERTIFICATE"]);
    assert.equal(bySerial(cert).status, "good");
    clock.advance(31 * DAY); // past the 30-day leaf
    try {
      assert.equal(bySerial(cert).status, "expired");
      assert.equal(status().certificate({ der }).status, "expired");
      // Revocation leaves an expired certificate's row alone: it must not read as good through the device's revocation.
      await revokeDevice(server.fleet, { deviceId: "st-exp", reason: "keyCompromise", actor: "test" });
      await server.changes.poll();
      assert.equal(status().device("st-exp").status, "revoked");
      assert.equal(bySerial(cert).status, "expired");
      assert.equal(status().certificate({ der }).status, "expired");
    } finally {
      clock.advance(-31 * DAY);
    }
  });

  it("loaded afresh from the database, the service gives the same answers the events built up", async () => {
    const fresh = await CertificateStatus.load(server.fleet);
    const serials = [...Object.entries(certs)];
    for (const [name, c] of serials) {
      const issuerCa = name === "fab-1" ? "local-line1" : "devices";
      assert.deepEqual(fresh.certificate({ issuerCa, serial: c.serial }), status().certificate({ issuerCa, serial: c.serial }), name);
    }
    for (const id of ["st-a", "st-b", "st-c", "st-d", "st-late", "never-added"])
      assert.deepEqual(fresh.device(id), status().device(id), id);
    assert.equal(fresh.caActive("local-line1"), false);
  });
});
