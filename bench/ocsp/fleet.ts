// The fleets the bench measures, set up through the product's own code: devices (addDevice),
// certificates (issueForKey, the issuance recorder), revocations (revokeCertificate), and what
// the database holds read back through the status store operations (statusSnapshot).
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { initFleet } from "../../src/authority/ca/init.js";
import { addDevice } from "../../src/authority/devices.js";
import { issueForKey, subjectKeyOf } from "../../src/authority/issue/issuance.js";
import { FleetServices } from "../../src/authority/services.js";
import { revokeCertificate } from "../../src/authority/status/revocation.js";
import type { RecordItem } from "../../src/store/operations/certificates.js";
import type { SnapshotCertificateRow } from "../../src/store/operations/status.js";
import type { CertificateTable } from "../../src/store/schema.js";
import { sha256Fingerprint, type ParsedCertificate } from "../../src/x509/certificate.js";
import type { RevocationReason } from "../../src/x509/crl.js";
import { check } from "../lib.js";
import { ACTOR, DEVICE_COUNT, REVOKE_EVERY, REVOKE_REASONS } from "./settings.js";

/** What every OCSP answer about one certificate must say, as the database has it. */
export interface CertState {
  serialHex: string;
  deviceId: string;
  notAfter: Date;
  status: "good" | "revoked";
  /** Whole seconds, as OCSP and index.txt carry it. */
  revokedAtMs?: number;
  reason?: RevocationReason;
}

export interface Fixture {
  dir: string;
  certs: CertState[];
  devicesCa: ParsedCertificate;
  /** DER of one device certificate (its size is used for the CRL rows). */
  sampleDer: Buffer;
}

/** The certificates table as the status store operations read it (no DER). */
async function certificateRows(fleet: FleetServices): Promise<SnapshotCertificateRow[]> {
  return (await fleet.store.ops.status.statusSnapshot()).certificates;
}

/** A fresh fleet with DEVICE_COUNT real device certificates from the devices CA, every tenth revoked through the library. */
export async function makeFixture(dir: string): Promise<Fixture> {
  await initFleet({ dir, name: "Bench Robots", domain: "fleet.example" });
  const fleet = await FleetServices.open(dir);
  try {
    // As `serve` does: commits made meanwhile share one sync of the log instead of one fsync each,
    // and every call still returns only once its commit is durable.
    fleet.store.useGroupSync();
    const ids = Array.from({ length: DEVICE_COUNT }, (_, i) => `ocsp-robot-${String(i).padStart(6, "0")}`);
    await Promise.all(ids.map((id) => addDevice(fleet, { id, actor: ACTOR })));
    const keys = ids.map(() => subjectKeyOf(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey));
    // One call first, so that the CA key is decrypted once; concurrent calls then share the
    // recorder's group commits (up to 256 certificates per transaction).
    await fleet.leafTemplate("devices", "device");
    const issued = await Promise.all(ids.map((deviceId, i) => issueForKey(fleet, { deviceId, actor: ACTOR }, keys[i]!)));
    for (let i = 0; i < issued.length; i += REVOKE_EVERY)
      await revokeCertificate(fleet, {
        serial: issued[i]!.serial,
        reason: REVOKE_REASONS[(i / REVOKE_EVERY) % REVOKE_REASONS.length]!,
        actor: ACTOR,
      });

    // What every answer must say, as the database has it.
    const rows = (await certificateRows(fleet)).filter((r) => r.kind === "device");
    check(rows.length === DEVICE_COUNT, `the fixture holds ${rows.length} device certificates, expected ${DEVICE_COUNT}`);
    const bySerial = new Map(rows.map((r) => [r.serial, r]));
    const certs = issued.map((c): CertState => {
      const row = bySerial.get(c.serial);
      check(row, `certificate ${c.serial} is not in the database`);
      check(row.status === "valid" || row.status === "revoked", `certificate ${c.serial} has status ${row.status}`);
      const state: CertState = {
        serialHex: c.serial,
        deviceId: c.deviceId,
        notAfter: new Date(row.not_after),
        status: row.status === "valid" ? "good" : "revoked",
      };
      if (row.status === "revoked") {
        state.revokedAtMs = Math.floor(Date.parse(row.revoked_at!) / 1000) * 1000;
        state.reason = (row.revocation_reason ?? "unspecified") as RevocationReason;
      }
      return state;
    });
    const revoked = certs.filter((c) => c.status === "revoked").length;
    check(revoked === DEVICE_COUNT / REVOKE_EVERY, `${revoked} certificates are revoked, expected ${DEVICE_COUNT / REVOKE_EVERY}`);
    return { dir, certs, devicesCa: await fleet.caCertificate("devices"), sampleDer: issued[1]!.der };
  } finally {
    await fleet.close();
  }
}

export async function readCacheSetting(dir: string): Promise<string> {
  const fleet = await FleetServices.open(dir);
  try {
    return fleet.config.revocation.ocsp_cache;
  } finally {
    await fleet.close();
  }
}

/** The status listener wrote nothing but its own responder certificate, recorded, and changed no status. */
export async function checkFleetAfter(fixture: Fixture, responderDer: Buffer): Promise<string> {
  const fleet = await FleetServices.open(fixture.dir);
  try {
    const rows = await certificateRows(fleet);
    const responders = rows.filter((r) => r.kind === "ocsp-responder");
    check(
      responders.length === 1 && responders[0]!.issuer_ca === "devices",
      `fleetpki recorded ${responders.length} responder certificates, expected 1 for the devices CA`,
    );
    check(
      responders[0]!.fingerprint_sha256 === sha256Fingerprint(responderDer),
      "the responder certificate in fleetpki's answers is not the one it recorded",
    );
    const revoked = rows.filter((r) => r.kind === "device" && r.status === "revoked").length;
    check(
      revoked === DEVICE_COUNT / REVOKE_EVERY,
      `${revoked} device certificates are revoked after the run, expected ${DEVICE_COUNT / REVOKE_EVERY}`,
    );
    return (
      "fleetpki recorded exactly one delegated responder certificate (devices CA), the one its answers carry; " +
      "no certificate changed status"
    );
  } finally {
    await fleet.close();
  }
}

/** The mix of reasons among the CRL fleet's entries (by i % 10). */
export function crlReason(i: number): RevocationReason {
  const k = i % 10;
  return k < 5 ? "unspecified" : k < 7 ? "keyCompromise" : k < 9 ? "superseded" : "cessationOfOperation";
}

export interface CrlFleet {
  fleet: FleetServices;
  serials: string[];
  /** Stored revocation times (ISO 8601, milliseconds), by entry. */
  revokedAt: string[];
  notAfter: Date;
  insertSeconds: number;
}

/** Rows per transaction: bounds the bench's own heap while it records. */
const RECORD_CHUNK = 10_000;

/**
 * Bench-only bulk set-up: a second fleet whose devices CA has `count` revoked certificates. The
 * rows are written by the product's issuance recorder code (the certificates store operation `record`, the transaction
 * GroupCommitRecorder runs: the same certificate INSERT and chained audit event every issued
 * certificate gets), RECORD_CHUNK per transaction instead of the recorder's 256 with a durable
 * commit each: through fleet.recorder the rows took 29 s in one run on this shared VM, this way
 * ~5 s. The rows are
 * recorded already revoked, with their time and reason: revoking them one by one
 * (revokeCertificate: a transaction and an audit event each) would take minutes, and signing the
 * CRL reads only the certificate rows. Each row stores a real device certificate's DER (the same
 * bytes each time), so rows are as large as real ones. The caller closes the fleet.
 */
export async function makeCrlFleet(dir: string, sampleDer: Buffer, count: number): Promise<CrlFleet> {
  await initFleet({ dir, name: "Bench Robots CRL", domain: "fleet.example" });
  const fleet = await FleetServices.open(dir);
  try {
    const now = Date.now();
    const day = 86_400_000;
    const notBefore = new Date(now - 30 * day).toISOString();
    const notAfter = new Date(now + 335 * day);
    const serials: string[] = [];
    const revokedAt: string[] = [];
    const t0 = performance.now();
    for (let start = 0; start < count; start += RECORD_CHUNK) {
      const end = Math.min(count, start + RECORD_CHUNK);
      // Serials as randomSerial() makes them (17 random octets, the first set to 01), from one draw.
      const random = randomBytes((end - start) * 17);
      const items: RecordItem[] = [];
      for (let i = start; i < end; i++) {
        const o = (i - start) * 17;
        random[o] = 0x01;
        const serial = random.toString("hex", o, o + 17);
        serials.push(serial);
        revokedAt.push(new Date(now - Math.floor(Math.random() * 29 * day)).toISOString());
        const row: CertificateTable = {
          serial,
          issuer_ca: "devices",
          kind: "device",
          subject_id: `crl-robot-${i}`,
          device_id: null,
          not_before: notBefore,
          not_after: notAfter.toISOString(),
          // Unique like a real one; the DER is shared, so it is not the DER's hash.
          fingerprint_sha256: sha256Fingerprint(Buffer.from(serial, "hex")),
          der: sampleDer,
          status: "revoked",
          revoked_at: revokedAt[i]!,
          revocation_reason: crlReason(i),
          created_at: notBefore,
        };
        const details = { serial, issuer: "devices", kind: "device", not_before: notBefore, not_after: row.not_after };
        items.push({
          row,
          audit: { actor: ACTOR, action: "certificate.issue", subject: `device:${row.subject_id}`, details, at: new Date(notBefore) },
        });
      }
      const refused = (await fleet.store.ops.certificates.record(items)).filter((r) => r !== undefined);
      check(refused.length === 0, `the recorder refused ${refused.length} CRL rows: ${refused[0]?.refused}`);
    }
    await fleet.store.durable();
    return { fleet, serials, revokedAt, notAfter, insertSeconds: (performance.now() - t0) / 1000 };
  } catch (e) {
    await fleet.close();
    throw e;
  }
}
