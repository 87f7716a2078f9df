// What a running process does with a status change it cannot read (issue 9, section 4): an audit
// row of a revocation whose details are broken still means "something changed". Every CRL is
// re-signed, cached OCSP answers are dropped, and a warning names the row's seq. The row is written
// behind fleetpki's back, as a faulty writer or an intruder with the database would.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { addDevice } from "../src/authority/devices.js";
import { ChangeFeed } from "../src/authority/events/change-feed.js";
import { issueDeviceCertificate, type DeviceCertificate } from "../src/authority/issue/issuance.js";
import { CrlPublisher } from "../src/authority/status/crls.js";
import { followStatusChanges, type UnreadableChange } from "../src/authority/status/follow.js";
import { OcspService } from "../src/authority/status/ocsp-responder.js";
import { parseCrl } from "../src/x509/crl.js";
import { assertOk, openssl, opensslCsr, tempDir, tempFleet } from "./helpers.js";
import { devicesCaPemPath } from "./server-helpers.js";
import { parseOcspResponse } from "./support/ocsp-response.js";
import { sqliteStore } from "./support/sqlite.js";

describe("an unreadable status change in the audit log is treated as a change to everything", { concurrency: false }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let work: { path: string; cleanup: () => void };
  let cert: DeviceCertificate;
  let certPath: string;

  before(async () => {
    f = await tempFleet();
    work = tempDir("fleetpki-status-follow-");
    await addDevice(f.fleet, { id: "broken-1", actor: "test" });
    const { csr } = opensslCsr(work.path, "broken-1");
    cert = await issueDeviceCertificate(f.fleet, { deviceId: "broken-1", csr: readFileSync(csr), actor: "test" });
    certPath = join(work.path, "broken-1.pem");
    writeFileSync(certPath, cert.certificatePem);
  });
  after(async () => {
    await f?.close();
    work?.cleanup();
  });

  const ocspStatus = (der: Buffer): string => {
    const parsed = parseOcspResponse(der);
    assert.ok("responses" in parsed, "a successful OCSP response");
    return parsed.responses[0]!.status.status;
  };

  it("a device.revoke row whose serials are not a list: CRLs re-signed, OCSP cache dropped, a warning with its seq", async () => {
    const reqOut = join(work.path, "broken-1.req");
    assertOk(openssl(["ocsp", "-issuer", devicesCaPemPath(f.dir), "-cert", certPath, "-no_nonce", "-reqout", reqOut]), "openssl ocsp");
    const request = readFileSync(reqOut);
    const crls = new CrlPublisher(f.fleet);
    const ocsp = new OcspService(f.fleet);
    const feed = new ChangeFeed(f.fleet.store, 3_600_000); // polled by hand below
    const warnings: UnreadableChange[] = [];
    await feed.start();
    await crls.start();
    followStatusChanges(f.fleet, feed, { crls, ocsp, onUnreadableChange: (u) => warnings.push(u) });
    try {
      const before = parseCrl((await crls.crl("devices"))!.der);
      assert.ok(!before.entries.some((e) => e.serialHex === cert.serial));
      assert.equal(ocspStatus((await ocsp.respond(request)).der), "good");
      assert.equal((await ocsp.respond(request)).cached, true, "the good answer is cached");

      // Behind fleetpki's back: the certificate revoked, and an audit row saying so whose serials
      // are a string instead of a list (the event feed cannot decode it).
      const seq = await sqliteStore(f.fleet).withNative((db) => {
        const at = new Date().toISOString();
        db.prepare("update certificates set status = 'revoked', revoked_at = ?, revocation_reason = 'keyCompromise' where serial = ?").run(
          at,
          cert.serial,
        );
        const head = db.prepare("select seq, hash from audit_head where id = 1").get() as { seq: number; hash: string };
        const details = JSON.stringify({ reason: "keyCompromise", serials: cert.serial, cas: ["devices"] });
        db.prepare("insert into audit_log (seq, at, actor, action, subject, details, prev_hash, hash) values (?, ?, ?, ?, ?, ?, ?, ?)").run(
          head.seq + 1,
          at,
          "intruder",
          "device.revoke",
          "device:broken-1",
          details,
          head.hash,
          head.hash,
        );
        db.prepare("update audit_head set seq = ? where id = 1").run(head.seq + 1);
        return head.seq + 1;
      });
      await feed.poll();

      assert.equal(warnings.length, 1, "one warning");
      assert.equal(warnings[0]!.seq, seq);
      assert.equal(warnings[0]!.action, "device.revoke");
      assert.match(warnings[0]!.problem, /serials/);
      const answer = await ocsp.respond(request);
      assert.equal(answer.cached, false, "the cached good answer was dropped");
      assert.equal(ocspStatus(answer.der), "revoked");
      const resigned = parseCrl((await crls.crl("devices"))!.der);
      assert.ok(resigned.crlNumber! > before.crlNumber!, "the devices CRL was re-signed");
      assert.ok(
        resigned.entries.some((e) => e.serialHex === cert.serial),
        "and lists the certificate",
      );
    } finally {
      await feed.stop();
      await crls.stop();
    }
  });
});
