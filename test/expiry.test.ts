// Certificates ending soon: expiringCertificates (what counts: in force, not replaced by a newer,
// later-ending one of the same subject, every kind the fleet issues, CAs included) and
// `fleetpki cert expiring` (table, --json, exit 1 when any, 0 when none, 2 for a bad --within).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { addDevice } from "../src/authority/devices.js";
import { createLocalCa } from "../src/authority/ca/cas.js";
import { reissueServerCertificate } from "../src/authority/ca/server-certificate.js";
import { issueDeviceCertificate, type DeviceCertificate } from "../src/authority/issue/issuance.js";
import { FleetServices } from "../src/authority/services.js";
import { expiringCertificates, parseExpiryWindow, type ExpiringCertificate } from "../src/authority/status/expiry.js";
import { OcspService } from "../src/authority/status/ocsp-responder.js";
import { holdDevice, revokeDevice, revokeLocalCa } from "../src/authority/status/revocation.js";
import { InvalidArgument } from "../src/authority/errors.js";
import { cliAsync, opensslCsr, tempDir, tempFleet, writeTemp } from "./helpers.js";
import { editConfig, opensslOk } from "./server-helpers.js";

const DAY = 86_400_000;
const label = (c: ExpiringCertificate): string => `${c.kind}:${c.subject}:${c.status}`;

describe("certificates ending soon", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let fleet: FleetServices;
  let work: ReturnType<typeof tempDir>;
  /** "Now" for the domain queries: the real time at the start (the CLI reads the real clock). */
  const R = Date.now();
  const issued: Record<string, DeviceCertificate> = {};
  let renewedOld: DeviceCertificate;
  let serverSerial: string;
  let responderSerials: string[] = [];

  /** A device with a certificate issued `daysAgo` days before R (30-day lifetime), from the devices CA or `caId`. */
  async function device(id: string, daysAgo: number, caId?: string): Promise<DeviceCertificate> {
    if (!(await fleet.store.ops.devices.get(id))) await addDevice(fleet, { id, actor: "test" });
    const { csr } = opensslCsr(work.path, `${id}-${daysAgo}`);
    return issueDeviceCertificate(fleet, { deviceId: id, actor: "test", csr: readFileSync(csr), now: new Date(R - daysAgo * DAY), caId });
  }

  before(async () => {
    f = await tempFleet();
    await f.fleet.close();
    editConfig(f.dir, (doc) => (doc.validity.server = "7d"));
    fleet = await FleetServices.open(f.dir);
    work = tempDir();
    issued.soon = await device("soon", 28); // ends R + 2d
    renewedOld = await device("renewed", 28);
    issued.renewed = await device("renewed", 1); // ends R + 29d: the renewal replaces the first
    issued.held = await device("held", 27); // R + 3d, then on hold
    await holdDevice(fleet, { deviceId: "held", actor: "test" });
    issued.revoked = await device("revoked", 28);
    await revokeDevice(fleet, { deviceId: "revoked", actor: "test" });
    issued.expired = await device("expired", 31); // ended R - 1d
    issued.fresh = await device("fresh", 0); // R + 30d
    // Local CAs for 10 days, each with a factory certificate (clamped to the CA's end); line-2 revoked.
    await createLocalCa(fleet, { name: "line-1", validity: "10d", actor: "test" });
    await createLocalCa(fleet, { name: "line-2", validity: "10d", actor: "test" });
    issued.factory1 = await device("robot-f1", 0, "local-line-1");
    issued.factory2 = await device("robot-f2", 0, "local-line-2");
    await revokeLocalCa(fleet, { name: "line-2", actor: "test" });
    // The server certificate reissued for 7 days (newer than init's one-year one, which ends later).
    serverSerial = (await reissueServerCertificate(fleet, { actor: "test", reasons: ["test"] })).serial;
    // OCSP signers (24 h, made on first use): one per process; the second process's is newer and ends later.
    const certFile = writeTemp(work.path, "fresh.pem", issued.fresh.certificatePem);
    const req = join(work.path, "req.der");
    await opensslOk(["ocsp", "-issuer", join(f.dir, "ca", "devices", "cert.pem"), "-cert", certFile, "-no_nonce", "-reqout", req]);
    for (const at of [R, R + 3_600_000]) {
      const outcome = await new OcspService(fleet, undefined, { now: () => at }).respond(readFileSync(req));
      assert.ok(outcome);
      const responders = await fleet.store.ops.certificates.ofKind("ocsp-responder", "devices-ocsp");
      responderSerials = responders.map((r) => r.serial);
    }
    assert.equal(responderSerials.length, 2);
  });

  after(async () => {
    await fleet?.close();
    await f?.close();
    work?.cleanup();
  });

  it("lists what is in force and ends within the window, soonest first; renewed, revoked, expired and untrusted left out", async () => {
    const list = await expiringCertificates(fleet, { within: 14 * DAY, now: new Date(R) });
    assert.deepEqual(
      list.map(label).sort(),
      [
        "ca:local-line-1:valid",
        "device:held:hold",
        "device:soon:valid",
        "factory:robot-f1:valid",
        "ocsp-responder:devices-ocsp:valid",
        "server:" + fleet.config.server.names[0] + ":valid",
      ].sort(),
    );
    for (let i = 1; i < list.length; i++) assert.ok(list[i - 1]!.notAfter <= list[i]!.notAfter, "sorted by notAfter");
    const soon = list.find((c) => c.subject === "soon")!;
    assert.equal(soon.serial, issued.soon!.serial);
    assert.equal(soon.issuer, "devices");
    assert.equal(soon.notAfter, issued.soon!.notAfter.toISOString());
    assert.equal(soon.secondsLeft, Math.floor((issued.soon!.notAfter.getTime() - R) / 1000));
    assert.ok(soon.secondsLeft > 2 * 86_400 - 120 && soon.secondsLeft <= 2 * 86_400);
    assert.equal(list.find((c) => c.kind === "server")!.serial, serverSerial);
    // Of the two OCSP signers only the newer one, which ends later.
    const signer = list.find((c) => c.kind === "ocsp-responder")!;
    assert.equal(signer.issuer, "devices");
    assert.ok(responderSerials.includes(signer.serial));
    const older = (await fleet.store.ops.certificates.bySerial(responderSerials.find((s) => s !== signer.serial)!))!;
    assert.ok(older.not_after < signer.notAfter, "the one left out ends earlier");
    const serials = new Set(list.map((c) => c.serial));
    for (const left of [renewedOld, issued.renewed!, issued.revoked!, issued.expired!, issued.fresh!, issued.factory2!])
      assert.ok(!serials.has(left.serial), `${left.deviceId} ${left.serial} is not listed`);
  });

  it("a wider window takes in the fresh and the renewed certificates, still not the replaced one", async () => {
    const list = await expiringCertificates(fleet, { within: 31 * DAY, now: new Date(R) });
    const serials = new Set(list.map((c) => c.serial));
    assert.ok(serials.has(issued.fresh!.serial) && serials.has(issued.renewed!.serial));
    assert.ok(!serials.has(renewedOld.serial));
    // The window is counted from `now`: a day later, "soon" has one day left.
    const later = await expiringCertificates(fleet, { within: 1 * DAY + 60_000, now: new Date(R + DAY) });
    assert.deepEqual(
      later.filter((c) => c.kind === "device").map((c) => c.subject),
      ["soon"],
    );
    // Once it has ended it is no longer "expiring".
    const ended = await expiringCertificates(fleet, { within: 14 * DAY, now: new Date(issued.soon!.notAfter.getTime()) });
    assert.ok(!ended.some((c) => c.subject === "soon"));
  });

  it("a window that is not a duration is refused with what to write", () => {
    assert.equal(parseExpiryWindow("14d"), 14 * DAY);
    assert.equal(parseExpiryWindow("2w"), 14 * DAY);
    for (const bad of ["14", "2x", "0d", "-1d", "", "1e3d", "99999999y"])
      assert.throws(
        () => parseExpiryWindow(bad),
        (e: unknown) => e instanceof InvalidArgument && /--within/.test((e as Error).message),
        bad,
      );
  });

  it("fleetpki cert expiring: a table and exit 1 when certificates end within the window; --json the same list", async () => {
    const table = await cliAsync(["cert", "expiring", "--within", "14d", "--dir", f.dir]);
    assert.equal(table.status, 1, table.stderr);
    assert.equal(table.stderr, "");
    const lines = table.stdout.trimEnd().split("\n");
    assert.match(lines[0]!, /^KIND\s+SUBJECT\s+SERIAL\s+ISSUER\s+NOT AFTER\s+LEFT\s+STATUS$/);
    // Two days from issuance minus the seconds since: "1d 23h" (or "2d 0h" within the same second).
    const soonRow = new RegExp(`^device\\s+soon\\s+${issued.soon!.serial}\\s+devices\\s+\\S+\\s+(1d 23h|2d 0h)\\s+valid$`, "m");
    assert.match(table.stdout, soonRow);
    assert.match(table.stdout, /device\s+held\s+.*\shold$/m);
    assert.doesNotMatch(table.stdout, /\bfresh\b|\brevoked\b|\bexpired\b|local-line-2/);

    const json = await cliAsync(["cert", "expiring", "--within", "14d", "--json", "--dir", f.dir]);
    assert.equal(json.status, 1, json.stderr);
    const rows = JSON.parse(json.stdout) as ExpiringCertificate[];
    assert.ok(Array.isArray(rows));
    assert.deepEqual(rows.map(label).sort(), (await expiringCertificates(fleet, { within: 14 * DAY })).map(label).sort());
    const soon = rows.find((r) => r.subject === "soon")!;
    assert.deepEqual(Object.keys(soon).sort(), ["issuer", "kind", "notAfter", "secondsLeft", "serial", "status", "subject"]);

    // A window too short for any of them: nothing, exit 0.
    const none = await cliAsync(["cert", "expiring", "--within", "1h", "--json", "--dir", f.dir]);
    assert.equal(none.status, 0, none.stderr);
    assert.deepEqual(JSON.parse(none.stdout), []);
  });

  it("fleetpki cert expiring: exit 0 on a fresh fleet (default window 14 days)", async () => {
    const fresh = await tempFleet();
    try {
      const r = await cliAsync(["cert", "expiring", "--dir", fresh.dir]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /no certificate in force ends within the window/);
      const j = await cliAsync(["cert", "expiring", "--json", "--dir", fresh.dir]);
      assert.equal(j.status, 0, j.stderr);
      assert.deepEqual(JSON.parse(j.stdout), []);
      // ...and 1 once the window reaches its one-year certificates (server, admin operator, audit key).
      const year = await cliAsync(["cert", "expiring", "--within", "366d", "--json", "--dir", fresh.dir]);
      assert.equal(year.status, 1, year.stderr);
      assert.deepEqual((JSON.parse(year.stdout) as ExpiringCertificate[]).map((c) => c.kind).sort(), ["audit", "operator", "server"]);
    } finally {
      await fresh.close();
    }
  });

  it("fleetpki cert expiring: a bad --within exits 2 with a clear message", async () => {
    for (const bad of ["14", "2x", "0d", "fortnight"]) {
      const r = await cliAsync(["cert", "expiring", "--within", bad, "--dir", f.dir]);
      assert.equal(r.status, 2, `--within ${bad}: ${r.stderr}`);
      assert.match(
        r.stderr,
        new RegExp(`--within <duration>' argument '${bad}' is invalid\\. (invalid duration|duration .* must be positive)`),
      );
      assert.equal(r.stdout, "");
      assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
    }
  });
});
