// Regression tests for what the review of the issue 9 restructure (authority/ rooms, provisioners,
// event feed, CertificateStatus, store operations) found. Each test sends the hostile input and
// failed on the code before its fix.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { createLocalCa } from "../src/authority/ca/cas.js";
import { addDevice } from "../src/authority/devices.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { CrlPublisher } from "../src/authority/status/crls.js";
import { revokeDevice } from "../src/authority/status/revocation.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { parseCrl } from "../src/x509/crl.js";
import { fromPem } from "../src/x509/pem.js";
import { opensslCsr, tempDir, tempFleet } from "./helpers.js";
import { ManualClock } from "./support/clock.js";
import { sqliteStore } from "./support/sqlite.js";

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

describe("the event feed: one unreadable audit row costs only itself", { concurrency: false }, () => {
  const fx = feedFixture("feed");

  it("a row whose subject is not text does not make the feed drop the revocation after it", async () => {
    const { f, server } = fx;
    const cert = await fx.issue("feed-1");
    assert.equal(server.certificateStatus.certificate({ issuerCa: "devices", serial: cert.serial }).status, "good");
    // A row written behind fleetpki's back (or by a faulty writer): its subject is a BLOB, not text.
    await sqliteStore(f.fleet).withNative((db) => {
      const head = db.prepare("select seq, hash from audit_head where id = 1").get() as { seq: number; hash: string };
      db.prepare("insert into audit_log (seq, at, actor, action, subject, details, prev_hash, hash) values (?, ?, ?, ?, ?, ?, ?, ?)").run(
        head.seq + 1,
        new Date().toISOString(),
        "intruder",
        "device.add",
        Buffer.from("device:x"),
        "{}",
        head.hash,
        head.hash,
      );
      db.prepare("update audit_head set seq = ? where id = 1").run(head.seq + 1);
    });
    await revokeDevice(f.fleet, { deviceId: "feed-1", reason: "keyCompromise", actor: "test" });
    await server.changes.poll();
    assert.equal(server.certificateStatus.certificate({ issuerCa: "devices", serial: cert.serial }).status, "revoked");
  });
});

describe("CrlPublisher.markAllChanged: a failing CA listing is reported, never a rejection", { concurrency: false }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;

  before(async () => {
    f = await tempFleet();
  });
  after(async () => {
    await f?.close();
  });

  it("markAllChanged resolves when the CAs cannot be listed (a rejection would end the server); served CRLs stay marked", async () => {
    const errors: unknown[] = [];
    const crls = new CrlPublisher(f.fleet, (_ca, e) => errors.push(e));
    await crls.start();
    try {
      const before = parseCrl((await crls.crl("devices"))!.der).crlNumber!;
      // The listing fails (a real SQLite error): the table is away for the length of one call.
      const native = (sql: string) => sqliteStore(f.fleet).withNative((db) => db.exec(sql));
      await native("alter table cas rename to cas_away");
      try {
        await assert.doesNotReject(crls.markAllChanged());
      } finally {
        await native("alter table cas_away rename to cas");
      }
      assert.ok(errors.length > 0, "the failure was reported through onError");
      // The change is not lost: the next request re-signs the CRL it had served.
      assert.ok(parseCrl((await crls.crl("devices"))!.der).crlNumber! > before, "the devices CRL was re-signed");
    } finally {
      await crls.stop();
    }
  });
});

describe("CertificateStatus after a status change it cannot read", { concurrency: false }, () => {
  const fx = feedFixture("unreadable");

  it("a certificate revoked by a device.revoke row the feed cannot decode is not answered good", async () => {
    const { f, server } = fx;
    const cert = await fx.issue("unread-1");
    const query = { issuerCa: "devices", serial: cert.serial };
    assert.equal(server.certificateStatus.certificate(query).status, "good");
    // The revocation committed with an audit row this process cannot decode (serials not a list:
    // a faulty or newer writer). CRLs and OCSP re-read the table; the in-memory status must too.
    await sqliteStore(f.fleet).withNative((db) => {
      const at = new Date().toISOString();
      db.prepare("update certificates set status = 'revoked', revoked_at = ?, revocation_reason = 'keyCompromise' where serial = ?").run(
        at,
        cert.serial,
      );
      db.prepare("update devices set status = 'revoked' where id = ?").run("unread-1");
      const head = db.prepare("select seq, hash from audit_head where id = 1").get() as { seq: number; hash: string };
      const details = JSON.stringify({ reason: "keyCompromise", serials: cert.serial, cas: ["devices"] });
      db.prepare("insert into audit_log (seq, at, actor, action, subject, details, prev_hash, hash) values (?, ?, ?, ?, ?, ?, ?, ?)").run(
        head.seq + 1,
        at,
        "writer",
        "device.revoke",
        "device:unread-1",
        details,
        head.hash,
        head.hash,
      );
      db.prepare("update audit_head set seq = ? where id = 1").run(head.seq + 1);
    });
    await server.changes.poll();
    await server.certificateStatus.settled();
    assert.equal(server.certificateStatus.certificate(query).status, "revoked");
    assert.equal(server.certificateStatus.device("unread-1").status, "revoked");
  });
});

/**
 * A fleet and a server that builds its status but follows the audit log only when a test polls
 * (its feed's timer stopped), on a ManualClock; `issue` adds a device and certificate and polls.
 */
function feedFixture(name: string) {
  const fx = {} as { f: Awaited<ReturnType<typeof tempFleet>>; work: { path: string; cleanup: () => void }; server: FleetServer };
  before(async () => {
    fx.f = await tempFleet();
    fx.work = tempDir(`fleetpki-review-${name}-`);
    fx.server = await startFleetServer({ dir: fx.f.dir, only: [], logger: silentLogger, clock: new ManualClock() });
    await fx.server.changes.stop();
  });
  after(async () => {
    await fx.server?.close();
    await fx.f?.close();
    fx.work?.cleanup();
  });
  return {
    get f() {
      return fx.f;
    },
    get server() {
      return fx.server;
    },
    async issue(id: string) {
      await addDevice(fx.f.fleet, { id, actor: "test" });
      const { csr } = opensslCsr(fx.work.path, id);
      const cert = await issueDeviceCertificate(fx.f.fleet, { deviceId: id, csr: readFileSync(csr), actor: "test" });
      await fx.server.changes.poll();
      return cert;
    },
  };
}
