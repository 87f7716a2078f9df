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
import {
  decodeAuditRow,
  isStatusChange,
  isUnreadableDeviceChange,
  isUnreadableStatusChange,
  type FleetEvent,
} from "../src/authority/events/events.js";
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

describe("decodeAuditRow: what the gateway needs (device updates and removals, subjects, labels)", () => {
  it("device.update: DeviceUpdated with the complete new group and labels; device.remove: DeviceRemoved, a status change", () => {
    assert.deepEqual(decodeAuditRow(row("device.update", "device:arm-1", { group: "arms", labels: { site: "paris" }, previous: {} })), {
      seq: 7,
      at: new Date(AT),
      actor: "test",
      type: "DeviceUpdated",
      deviceId: "arm-1",
      group: "arms",
      labels: { site: "paris" },
    });
    assert.equal((decodeAuditRow(row("device.update", "device:arm-1", { group: null, labels: {} })) as { group: unknown }).group, null);
    const removed = decodeAuditRow(
      row("device.remove", "device:arm-1", { reason: "cessationOfOperation", serials: ["0a"], cas: ["devices"], previous_status: "held" }),
    );
    assert.deepEqual(removed, {
      seq: 7,
      at: new Date(AT),
      actor: "test",
      type: "DeviceRemoved",
      deviceId: "arm-1",
      reason: "cessationOfOperation",
      serials: ["0a"],
      cas: ["devices"],
    });
    assert.ok(isStatusChange(removed));
  });

  it("device.add carries its labels; certificate.issue its subject (service and operator certificates included)", () => {
    const added = decodeAuditRow(row("device.add", "device:arm-1", { group: "arms", labels: { site: "berlin" } }));
    assert.deepEqual([added.type, (added as { labels: unknown }).labels], ["DeviceAdded", { site: "berlin" }]);
    const issued = (subject: string, kind: string, extra: Record<string, unknown> = {}) =>
      decodeAuditRow(row("certificate.issue", subject, { serial: "0b", issuer: "services", kind, not_after: AT, ...extra }));
    const service = issued("service:telemetry", "service", { subject_id: "telemetry" });
    assert.deepEqual(
      [service.type, (service as { kind: string }).kind, (service as { subjectId: string }).subjectId],
      ["CertificateIssued", "service", "telemetry"],
    );
    assert.equal((service as { deviceId: unknown }).deviceId, null);
    // Rows without details.subject_id: the subject's id, as the certificates table records it.
    assert.equal((issued("service:ingest", "service") as { subjectId: string }).subjectId, "ingest");
    assert.equal((issued("operator:admin", "operator") as { subjectId: string }).subjectId, "admin");
    assert.equal((issued("audit:fleet.example", "audit") as { subjectId: string }).subjectId, "audit");
    assert.equal((issued("ocsp-responder:devices", "ocsp-responder") as { subjectId: string }).subjectId, "devices-ocsp");
  });

  it("malformed device.update / device.remove / device.add rows: Unrecognised with the problem; isUnreadableDeviceChange says so", () => {
    const cases: Array<[AuditLogTable, RegExp]> = [
      [row("device.update", "device:x", { labels: {} }), /details\.group is neither a group name nor null/],
      [row("device.update", "device:x", { group: "", labels: {} }), /details\.group/],
      [row("device.update", "device:x", { group: 5, labels: {} }), /details\.group/],
      [row("device.update", "device:x", { group: null }), /details\.labels is not an object of strings/],
      [row("device.update", "device:x", { group: null, labels: { site: 1 } }), /details\.labels/],
      [row("device.update", "device:x", { group: null, labels: ["a"] }), /details\.labels/],
      [row("device.update", "certificate:x", { group: null, labels: {} }), /subject is not device:<id>/],
      [row("device.remove", "device:x", { serials: "0a", cas: [] }), /details\.serials is not a list of strings/],
      [row("device.remove", "device:", { serials: [], cas: [] }), /subject is not device:<id>/],
      [row("device.add", "device:x", { group: null, labels: "site=berlin" }), /details\.labels/],
      [row("certificate.issue", "nocolon", { serial: "0c", issuer: "services", kind: "service", not_after: AT }), /subject is not <kind>:/],
    ];
    for (const [input, problem] of cases) {
      const event = decodeAuditRow(input);
      assert.equal(event.type, "Unrecognised", `${input.action} ${input.details}`);
      assert.match(event.type === "Unrecognised" ? (event.problem ?? "") : "", problem, `${input.action} ${input.details}`);
    }
    // What CertificateStatus must read again: an unreadable device update or removal (not an unreadable add).
    assert.ok(isUnreadableDeviceChange(decodeAuditRow(cases[0]![0])));
    assert.ok(isUnreadableDeviceChange(decodeAuditRow(cases[7]![0])));
    assert.ok(isUnreadableStatusChange(decodeAuditRow(cases[7]![0])), "a removal is a status change (every CRL re-signed)");
    assert.ok(!isUnreadableStatusChange(decodeAuditRow(cases[0]![0])), "an update changes no CRL");
    assert.ok(!isUnreadableDeviceChange(decodeAuditRow(row("device.update", "device:x", { group: null, labels: {} }))));
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
      // A removal re-signs CRLs like a revocation.
      decode("device.remove", "device:c", { reason: "cessationOfOperation", serials: ["06"], cas: ["local-z"] }, 6),
    ];
    assert.ok(events.every(isStatusChange));
    assert.deepEqual(statusReaction(events), {
      crls: ["devices", "local-x", "local-z", "operators", "root"],
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
      decode("device.update", "device:a", { group: "g", labels: {} }, 4),
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
