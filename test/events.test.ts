// The typed event feed (issue 9, section 4): audit rows decoded once into domain events, the
// change feed delivering events (not rows), and the status room's decision of which CRLs to
// re-sign after which events.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { createLocalCa } from "../src/authority/ca/cas.js";
import { addDevice } from "../src/authority/devices.js";
import { ChangeFeed } from "../src/authority/events/change-feed.js";
import { decodeAuditRow, isStatusChange, type FleetEvent } from "../src/authority/events/events.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { statusReaction } from "../src/authority/status/follow.js";
import { holdDevice, revokeCertificate, revokeDevice, revokeLocalCa, unholdDevice } from "../src/authority/status/revocation.js";
import type { AuditLogTable } from "../src/store/schema.js";
import { opensslCsr, tempDir, tempFleet } from "./helpers.js";

const AT = "2031-03-14T15:09:26.000Z";
const fingerprint = (der: Buffer): string => createHash("sha256").update(der).digest("hex");

function row(action: string, subject: string, details: unknown, seq = 7): AuditLogTable {
  return {
    seq,
    at: AT,
    actor: "test",
    action,
    subject,
    details: typeof details === "string" ? details : JSON.stringify(details),
    prev_hash: "0".repeat(64),
    hash: "1".repeat(64),
  };
}

describe("decodeAuditRow", () => {
  it("a crl.import row: CrlImported with a bigint CRL number and the CAs to re-sign", () => {
    const event = decodeAuditRow(
      row("crl.import", "ca:root", {
        crl_number: "18446744073709551617",
        entries: 2,
        next_update: "2031-04-01T00:00:00.000Z",
        cas: ["root"],
      }),
    );
    assert.deepEqual(event, {
      seq: 7,
      at: new Date(AT),
      actor: "test",
      type: "CrlImported",
      caId: "root",
      crlNumber: 18446744073709551617n,
      entries: 2,
      nextUpdate: new Date("2031-04-01T00:00:00.000Z"),
      cas: ["root"],
    });
  });

  it("policy.change (the gateway's, to come): PolicyChanged", () => {
    const event = decodeAuditRow(row("policy.change", "group:arms", {}));
    assert.equal(event.type, "PolicyChanged");
    assert.equal(event.type === "PolicyChanged" && event.subject, "group:arms");
  });

  it("actions with no domain event: Unrecognised, without a problem", () => {
    for (const action of ["token.create", "enrollment.request", "auth.failure", "something.new"]) {
      const event = decodeAuditRow(row(action, "device:x", { anything: 1 }));
      assert.deepEqual(event, { seq: 7, at: new Date(AT), actor: "test", type: "Unrecognised", action, subject: "device:x" });
    }
  });

  it("a known action whose row lacks what it must carry: Unrecognised with the problem, never a throw or a half-filled event", () => {
    const cases: Array<[AuditLogTable, RegExp]> = [
      [row("device.revoke", "device:x", "{not json"), /not JSON/],
      [row("device.revoke", "device:x", "[1,2]"), /not a JSON object/],
      [row("device.revoke", "certificate:ab", { serials: [], cas: [] }), /subject is not device:<id>/],
      [row("device.hold", "device:", { serials: [], cas: [] }), /subject is not device:<id>/],
      [row("device.revoke", "device:x", { serials: "ab", cas: [] }), /details\.serials is not a list of strings/],
      [row("device.unhold", "device:x", { serials: [], cas: [1] }), /details\.cas is not a list of strings/],
      [row("certificate.issue", "device:x", { issuer: "devices", kind: "device", not_after: AT }), /details\.serial/],
      [row("certificate.issue", "device:x", { serial: "ab", issuer: "devices", kind: "robot", not_after: AT }), /kind "robot"/],
      [row("certificate.issue", "device:x", { serial: "ab", issuer: "devices", kind: "device", not_after: "2031-13-01" }), /not a time/],
      [row("ca.create", "ca:x", { issuer: "root", not_after: AT }), /details\.serial/],
      [row("crl.import", "ca:root", { crl_number: "-1", entries: 0, next_update: AT }), /crl_number/],
      [row("crl.import", "ca:root", { crl_number: "1", entries: 1.5, next_update: AT }), /entries/],
    ];
    for (const [input, problem] of cases) {
      const event = decodeAuditRow(input);
      assert.equal(event.type, "Unrecognised", `${input.action} ${input.details}`);
      assert.match(event.type === "Unrecognised" ? (event.problem ?? "") : "", problem, `${input.action} ${input.details}`);
    }
  });
});

describe("the change feed delivers typed events for what the authority does", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let work: { path: string; cleanup: () => void };
  before(async () => {
    f = await tempFleet();
    work = tempDir("fleetpki-events-");
  });
  after(async () => {
    await f?.close();
    work?.cleanup();
  });

  it("add, issue, hold, unhold, revoke, revoke a certificate, create and revoke a local CA: one typed event each, in order", async () => {
    const feed = new ChangeFeed(f.fleet.store);
    await feed.start();
    await feed.stop(); // polled by hand below
    const seen: FleetEvent[] = [];
    feed.subscribe((events) => void seen.push(...events));
    const failing = feed.subscribe(() => {
      throw new Error("a listener that throws");
    });
    const errors: unknown[] = [];
    const errorFeed = new ChangeFeed(f.fleet.store, undefined, (e) => void errors.push(e));
    await errorFeed.start();
    await errorFeed.stop();
    errorFeed.subscribe(() => {
      throw new Error("boom");
    });
    const alsoSeen: FleetEvent[] = [];
    errorFeed.subscribe((events) => void alsoSeen.push(...events));

    const issue = async (id: string, caId?: string) => {
      const { csr } = opensslCsr(work.path, `${id}-${caId ?? "devices"}`);
      return issueDeviceCertificate(f.fleet, { deviceId: id, csr: readFileSync(csr), actor: "test", ...(caId ? { caId } : {}) });
    };
    await addDevice(f.fleet, { id: "ev-1", actor: "test", group: "arms" });
    const c1 = await issue("ev-1");
    await holdDevice(f.fleet, { deviceId: "ev-1", actor: "test" });
    await unholdDevice(f.fleet, { deviceId: "ev-1", actor: "test" });
    await revokeDevice(f.fleet, { deviceId: "ev-1", reason: "keyCompromise", actor: "test" });
    await addDevice(f.fleet, { id: "ev-2", actor: "test" });
    const c2 = await issue("ev-2");
    await revokeCertificate(f.fleet, { serial: c2.serial, reason: "superseded", actor: "test" });
    await createLocalCa(f.fleet, { name: "line9", actor: "test" });
    const factory = await issue("ev-2", "local-line9");
    await revokeLocalCa(f.fleet, { name: "line9", actor: "test" });
    const caSerial = (await f.fleet.caRecord("local-line9")).serial;

    // Either listener throwing does not keep the events from the others.
    failing();
    await feed.poll();
    await errorFeed.poll();
    assert.deepEqual(alsoSeen, seen);
    assert.ok(errors.length >= 1 && errors.every((e) => (e as Error).message === "boom"));

    // Checkpoints and other bookkeeping in between are Unrecognised; the domain events, in order:
    const domain = seen.filter((e) => e.type !== "Unrecognised");
    const strip = ({ seq: _seq, at: _at, actor: _actor, ...rest }: FleetEvent) => rest;
    assert.deepEqual(domain.map(strip), [
      { type: "DeviceAdded", deviceId: "ev-1", group: "arms", labels: {} },
      {
        type: "CertificateIssued",
        serial: c1.serial,
        issuerCa: "devices",
        kind: "device",
        deviceId: "ev-1",
        subjectId: "ev-1",
        notAfter: c1.notAfter,
        fingerprint: fingerprint(c1.der),
      },
      { type: "DeviceHeld", deviceId: "ev-1", serials: [c1.serial], cas: ["devices"] },
      { type: "DeviceUnheld", deviceId: "ev-1", serials: [c1.serial], cas: ["devices"] },
      { type: "DeviceRevoked", deviceId: "ev-1", reason: "keyCompromise", serials: [c1.serial], cas: ["devices"] },
      { type: "DeviceAdded", deviceId: "ev-2", group: null, labels: {} },
      {
        type: "CertificateIssued",
        serial: c2.serial,
        issuerCa: "devices",
        kind: "device",
        deviceId: "ev-2",
        subjectId: "ev-2",
        notAfter: c2.notAfter,
        fingerprint: fingerprint(c2.der),
      },
      { type: "CertificateRevoked", serial: c2.serial, reason: "superseded", serials: [c2.serial], cas: ["devices"] },
      {
        type: "CaCreated",
        caId: "local-line9",
        serial: caSerial,
        issuerCa: "root",
        notAfter: (domain.find((e) => e.type === "CaCreated") as { notAfter: Date }).notAfter,
        fingerprint: (await f.fleet.caRecord("local-line9")).fingerprint_sha256,
      },
      {
        type: "CertificateIssued",
        serial: factory.serial,
        issuerCa: "local-line9",
        kind: "factory",
        deviceId: "ev-2",
        subjectId: "ev-2",
        notAfter: factory.notAfter,
        fingerprint: fingerprint(factory.der),
      },
      { type: "CaRevoked", caId: "local-line9", reason: "cACompromise", serials: [caSerial], cas: ["local-line9", "root"] },
    ]);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]!.seq > seen[i - 1]!.seq, "in sequence order");
    assert.ok(seen.every((e) => e.actor === "test" || e.type === "Unrecognised"));
  });
});

describe("statusReaction: which CRLs to re-sign and which CAs to forget", () => {
  const decode = (action: string, subject: string, details: unknown, seq: number) => decodeAuditRow(row(action, subject, details, seq));

  it("collects the CAs of every status change in a batch, once each, sorted; revoked CAs are named", () => {
    const events = [
      decode("device.revoke", "device:a", { reason: "keyCompromise", serials: ["01"], cas: ["devices"] }, 1),
      decode("device.hold", "device:b", { serials: ["02"], cas: ["devices"] }, 2),
      decode("ca.revoke", "ca:local-x", { reason: "cACompromise", serials: ["03"], cas: ["local-x", "root"] }, 3),
      decode("crl.import", "ca:root", { crl_number: "4", entries: 1, next_update: AT, cas: ["root"] }, 4),
      decode("certificate.revoke", "certificate:05", { reason: "superseded", serials: ["05"], cas: ["operators"] }, 5),
    ];
    assert.ok(events.every(isStatusChange));
    assert.deepEqual(statusReaction(events), {
      crls: ["devices", "local-x", "operators", "root"],
      revokedCas: ["local-x"],
      unreadable: [],
    });
  });

  it("events that change no certificate's status re-sign nothing; an unreadable status change is reported as one", () => {
    const events = [
      decode("device.add", "device:a", { group: null }, 1),
      decode("certificate.issue", "device:a", { serial: "01", issuer: "devices", kind: "device", not_after: AT }, 2),
      decode("ca.create", "ca:local-y", { serial: "02", issuer: "root", not_after: AT }, 3),
      decode("token.create", "device:a", { token_id: "t" }, 4),
      // A status action whose details cannot be read names no CAs it could be trusted for: it is
      // reported as unreadable (followStatusChanges then re-signs every CRL), never as these CAs.
      decode("device.revoke", "device:a", "{broken", 5),
      decode("certificate.revoke", "certificate:06", { reason: "superseded", serials: "06", cas: ["operators"] }, 6),
    ];
    assert.ok(!events.some(isStatusChange));
    assert.deepEqual(statusReaction(events), {
      crls: [],
      revokedCas: [],
      unreadable: [
        { seq: 5, action: "device.revoke", problem: "details are not JSON" },
        { seq: 6, action: "certificate.revoke", problem: "certificate.revoke certificate:06: details.serials is not a list of strings" },
      ],
    });
  });

  it("a device revoked with no unexpired certificates changes no CRL (an empty cas list)", () => {
    assert.deepEqual(statusReaction([decode("device.revoke", "device:a", { reason: "unspecified", serials: [], cas: [] }, 1)]), {
      crls: [],
      revokedCas: [],
      unreadable: [],
    });
  });
});
