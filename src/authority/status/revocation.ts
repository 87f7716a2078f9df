// Revoking, holding and releasing certificates. Every change is one transaction that updates the
// certificate rows and appends one audit event naming the CAs whose CRLs change, so that every
// running process (change-feed.ts) re-signs those CRLs and drops cached OCSP answers.
import type { OperatorRole } from "../../access/identity.js";
import type { AuditEvent } from "../../audit/log.js";
import type { StatusCertificateRow } from "../../store/operations/status.js";
import type { Operations } from "../../store/operations.js";
import type { CertificateTable, DeviceTable } from "../../store/schema.js";
import { checkpointAfter } from "../audit-checkpoints.js";
import { InvalidArgument, NotPermitted, UnknownCa, UnknownCertificate, UnknownDevice } from "../errors.js";
import type { FleetServices } from "../services.js";
import { assertDeviceId } from "../issue/issuance.js";
import {
  holdDeviceEnclaves,
  revokeDeviceEnclaves,
  unholdDeviceEnclaves,
  type DeviceEnclave,
  type DeviceEnclavesChange,
} from "../../ros2/keystore/device-enclaves.js";

/** Reasons an operator may give (RFC 5280 5.3.1); certificateHold comes from `hold`, cACompromise from `ca revoke-local`. */
export const REVOKE_REASONS = [
  "unspecified",
  "keyCompromise",
  "affiliationChanged",
  "superseded",
  "cessationOfOperation",
  "privilegeWithdrawn",
] as const;
export type RevokeReason = (typeof REVOKE_REASONS)[number];
/** What the certificates table stores in revocation_reason. */
export type StoredReason = RevokeReason | "certificateHold" | "cACompromise";

export function parseRevokeReason(text: string | undefined): RevokeReason {
  if (text === undefined) return "unspecified";
  const found = REVOKE_REASONS.find((r) => r.toLowerCase() === text.trim().toLowerCase());
  if (!found) throw new InvalidArgument(`--reason must be one of ${REVOKE_REASONS.join(", ")} (got "${text}")`);
  return found;
}

/** A serial as operators paste it (openssl's "serial=01AB...", colons, any case) -> the stored form. */
export function normalizeSerial(text: string): string {
  let hex = text
    .trim()
    .replace(/^serial=/i, "")
    .replace(/[:\s]/g, "")
    .toLowerCase();
  if (hex.startsWith("0x")) hex = hex.slice(2);
  if (!/^[0-9a-f]{1,42}$/.test(hex))
    throw new InvalidArgument(
      `invalid serial "${text}": expected hexadecimal, as printed by \`fleetpki device show\` or \`openssl x509 -serial\``,
    );
  if (hex.length % 2 === 1) hex = `0${hex}`;
  while (hex.length > 2 && hex.startsWith("00")) hex = hex.slice(2);
  return hex;
}

export interface StatusChange {
  /** Serials whose status changed. */
  serials: string[];
  /** CAs whose CRL must be re-signed. */
  cas: string[];
}

/** A device status change: also the ROS 2 enclaves of the device it revoked, held or released. */
export interface DeviceStatusChange extends StatusChange {
  enclaves: DeviceEnclave[];
}

function change(rows: readonly StatusCertificateRow[]): StatusChange {
  return { serials: rows.map((r) => r.serial), cas: [...new Set(rows.map((r) => r.issuer_ca))].sort() };
}

async function deviceRow(tx: Operations, deviceId: string) {
  assertDeviceId(deviceId);
  const device = await tx.devices.get(deviceId);
  if (!device) throw new UnknownDevice(deviceId);
  return device;
}

/** The device's certificates that still matter: not expired, in one of `statuses`. */
function liveCertificates(tx: Operations, deviceId: string, statuses: CertificateTable["status"][], now: Date) {
  return tx.status.deviceCertificates(deviceId, { statuses, unexpiredAt: now.toISOString() });
}

function setStatus(
  tx: Operations,
  rows: readonly StatusCertificateRow[],
  status: CertificateTable["status"],
  reason: StoredReason | null,
  at: string | null,
): Promise<void> {
  return tx.status.setCertificateStatus(
    rows.map((r) => r.serial),
    { status, reason, at },
  );
}

/** Hands back a committed status change's result once a checkpoint covers its event. */
async function checkpointed<T>(fleet: FleetServices, actor: string, committed: Promise<T>): Promise<T> {
  const result = await committed;
  await checkpointAfter(fleet, actor);
  return result;
}

/**
 * One device status change in one transaction: `apply` checks the device, changes its certificates
 * and its row, and says which certificates changed; the change is audited as `action` with them.
 */
async function changeDevice(
  fleet: FleetServices,
  req: { deviceId: string; actor: string },
  action: "device.revoke" | "device.remove" | "device.hold" | "device.unhold",
  apply: (
    tx: Operations,
    device: DeviceTable,
    now: Date,
  ) => Promise<{ rows: readonly StatusCertificateRow[]; enclaves: DeviceEnclavesChange; details?: Record<string, unknown> }>,
): Promise<DeviceStatusChange> {
  const now = fleet.clock.now();
  return checkpointed(
    fleet,
    req.actor,
    fleet.store.transaction(async (tx) => {
      const { rows, enclaves, details } = await apply(tx, await deviceRow(tx, req.deviceId), now);
      // One event for the device and its enclaves: its serials and CAs drive CRLs, OCSP and replay alike.
      const c = change([...rows, ...enclaves.rows]);
      const subject = `device:${req.deviceId}`;
      const enclaveDetails = enclaves.enclaves.length > 0 ? { ros2_enclaves: enclaves.enclaves } : {};
      await tx.audit.append([
        { actor: req.actor, action, subject, details: { ...details, ...enclaveDetails, serials: c.serials, cas: c.cas }, at: now },
      ]);
      return { ...c, enclaves: enclaves.enclaves };
    }),
  );
}

/** Revokes every unexpired certificate of the device and blocks its enrollment and renewal for good. */
export function revokeDevice(
  fleet: FleetServices,
  req: { deviceId: string; reason?: RevokeReason; actor: string },
): Promise<DeviceStatusChange> {
  const reason = req.reason ?? "unspecified";
  return changeDevice(fleet, req, "device.revoke", async (tx, device, now) => {
    if (device.status === "revoked") throw new InvalidArgument(`device "${req.deviceId}" is already revoked`);
    // Revoking would bring a removed device back into `device list` as merely revoked.
    if (device.status === "removed") throw new InvalidArgument(`device "${req.deviceId}" was removed; its certificates are revoked`);
    const rows = await liveCertificates(tx, req.deviceId, ["valid", "hold"], now);
    await setStatus(tx, rows, "revoked", reason, now.toISOString());
    // A stolen robot's DDS identities go with it.
    const enclaves = await revokeDeviceEnclaves(tx, req.deviceId, { reason, actor: req.actor, now });
    await tx.status.setDeviceStatus(req.deviceId, "revoked", now.toISOString());
    // Unused tokens and waiting requests must not bring it back.
    await tx.status.closeEnrollment(req.deviceId, now.toISOString(), req.actor);
    return { rows, enclaves, details: { reason } };
  });
}

/**
 * Decommissions a device: every unexpired certificate revoked (cessationOfOperation, held ones
 * included), its tokens spent and requests denied, and its row kept with status "removed" so the
 * audit log and the certificate history still name it; it never enrolls or renews again.
 */
export function removeDevice(fleet: FleetServices, req: { deviceId: string; actor: string }): Promise<DeviceStatusChange> {
  const reason: RevokeReason = "cessationOfOperation";
  return changeDevice(fleet, req, "device.remove", async (tx, device, now) => {
    if (device.status === "removed") throw new InvalidArgument(`device "${req.deviceId}" is already removed`);
    const rows = await liveCertificates(tx, req.deviceId, ["valid", "hold"], now);
    await setStatus(tx, rows, "revoked", reason, now.toISOString());
    const enclaves = await revokeDeviceEnclaves(tx, req.deviceId, { reason, actor: req.actor, now });
    await tx.status.setDeviceStatus(req.deviceId, "removed", now.toISOString());
    await tx.status.closeEnrollment(req.deviceId, now.toISOString(), req.actor);
    return { rows, enclaves, details: { reason, previous_status: device.status } };
  });
}

/** Puts every unexpired certificate of the device and of its ROS 2 enclaves on hold (certificateHold) until `unholdDevice`. */
export function holdDevice(fleet: FleetServices, req: { deviceId: string; actor: string }): Promise<DeviceStatusChange> {
  return changeDevice(fleet, req, "device.hold", async (tx, device, now) => {
    if (device.status !== "active")
      throw new InvalidArgument(`device "${req.deviceId}" is ${device.status}; only an active device can be put on hold`);
    const rows = await liveCertificates(tx, req.deviceId, ["valid"], now);
    await setStatus(tx, rows, "hold", "certificateHold", now.toISOString());
    const enclaves = await holdDeviceEnclaves(tx, req.deviceId, now);
    await tx.status.setDeviceStatus(req.deviceId, "held", now.toISOString());
    return { rows, enclaves };
  });
}

/** Releases a held device: its held certificates, and its enclaves', are valid again (they leave the CRLs). */
export function unholdDevice(fleet: FleetServices, req: { deviceId: string; actor: string }): Promise<DeviceStatusChange> {
  return changeDevice(fleet, req, "device.unhold", async (tx, device, now) => {
    if (device.status !== "held") throw new InvalidArgument(`device "${req.deviceId}" is ${device.status}, not on hold`);
    const rows = await tx.status.deviceCertificates(req.deviceId, { statuses: ["hold"] });
    await setStatus(tx, rows, "valid", null, null);
    const enclaves = await unholdDeviceEnclaves(tx, req.deviceId);
    await tx.status.setDeviceStatus(req.deviceId, "active", now.toISOString());
    return { rows, enclaves };
  });
}

/**
 * The certificate kinds an operator of `role` may revoke through the admin API: role "operator"
 * steers devices only; an operator's, a service's or a server's certificate is as much the admin's
 * as adding or removing them (revoking the last admin's certificate would otherwise lock admins out).
 */
function mayRevoke(role: OperatorRole, kind: CertificateTable["kind"]): boolean {
  if (role === "admin") return true;
  return role === "operator" && (kind === "device" || kind === "factory");
}

/** Revokes one certificate by serial (any kind this fleet issued but a CA's; with a role, the kinds it may). */
export async function revokeCertificate(
  fleet: FleetServices,
  /** role: the admin API caller's (absent: the CA machine's own CLI, which may revoke any kind). */
  req: { serial: string; reason?: RevokeReason; actor: string; role?: OperatorRole },
): Promise<StatusChange & { kind: CertificateTable["kind"]; subjectId: string }> {
  const serial = normalizeSerial(req.serial);
  const reason = req.reason ?? "unspecified";
  const now = fleet.clock.now();
  return checkpointed(
    fleet,
    req.actor,
    fleet.store.transaction(async (tx) => {
      const row = await tx.certificates.bySerial(serial);
      if (!row) throw new UnknownCertificate(serial);
      if (row.status === "revoked") throw new InvalidArgument(`certificate ${serial} is already revoked`);
      if (row.kind === "ca")
        throw new InvalidArgument(`certificate ${serial} is the ${row.subject_id} CA's; use \`fleetpki ca revoke-local\` for a local CA`);
      if (req.role !== undefined && !mayRevoke(req.role, row.kind))
        throw new NotPermitted("role-too-weak", `revoking a certificate of kind ${row.kind} needs role admin; the caller is ${req.role}`);
      await setStatus(tx, [row], "revoked", reason, now.toISOString());
      const c = change([row]);
      await tx.audit.append([
        {
          actor: req.actor,
          action: "certificate.revoke",
          subject: `certificate:${serial}`,
          details: { reason, serials: c.serials, cas: c.cas, subject: row.subject_id },
          at: now,
        },
      ]);
      return { ...c, kind: row.kind, subjectId: row.subject_id };
    }),
  );
}

/**
 * A compromised factory CA: its certificate is revoked (it appears on the root's CRL), the CA is
 * no longer trusted for enrollment, and OCSP answers `revoked` for everything it issued.
 */
export async function revokeLocalCa(fleet: FleetServices, req: { name: string; actor: string }): Promise<StatusChange & { caId: string }> {
  const caId = req.name.startsWith("local-") ? req.name : `local-${req.name}`;
  const now = fleet.clock.now();
  const result = await fleet.store.transaction(async (tx) => {
    const ca = await tx.cas.get(caId);
    if (!ca) throw new UnknownCa(caId);
    if (ca.role !== "local") throw new InvalidArgument(`only local (factory) CAs can be revoked this way; "${caId}" is the ${ca.role} CA`);
    if (ca.status === "revoked") throw new InvalidArgument(`CA "${caId}" is already revoked`);
    const row = await tx.certificates.bySerial(ca.serial);
    const rows = row ? [row] : [];
    await setStatus(tx, rows, "revoked", "cACompromise", now.toISOString());
    await tx.cas.setStatus(caId, "revoked");
    // Its own CRL changes meaning too (everything it issued is now untrusted): re-sign it as well.
    const c = { serials: rows.map((r) => r.serial), cas: [...new Set([...rows.map((r) => r.issuer_ca), caId])].sort() };
    await tx.audit.append([
      {
        actor: req.actor,
        action: "ca.revoke",
        subject: `ca:${caId}`,
        details: { reason: "cACompromise", serials: c.serials, cas: c.cas },
        at: now,
      },
    ]);
    return { ...c, caId };
  });
  fleet.forgetCa(caId);
  await checkpointAfter(fleet, req.actor);
  return result;
}

/**
 * Revokes, inside `tx`, every certificate of an identity (service, operator) that is not revoked
 * yet, with `reason`; answers what changed and one `certificate.revoke` event per certificate
 * (so CRLs, OCSP and the gateway follow as for any revocation) for the caller to append with its
 * own event.
 */
export async function revokeIdentityCertificates(
  tx: Operations,
  rows: readonly Pick<CertificateTable, "serial" | "issuer_ca" | "status">[],
  req: { name: string; reason: StoredReason; actor: string; now: Date },
): Promise<StatusChange & { events: AuditEvent[] }> {
  const revoking = rows.filter((r) => r.status !== "revoked");
  const serials = revoking.map((r) => r.serial);
  const cas = [...new Set(revoking.map((r) => r.issuer_ca))].sort();
  if (serials.length > 0)
    await tx.status.setCertificateStatus(serials, { status: "revoked", reason: req.reason, at: req.now.toISOString() });
  const events = revoking.map((r) => ({
    actor: req.actor,
    action: "certificate.revoke",
    subject: `certificate:${r.serial}`,
    details: { reason: req.reason, serials: [r.serial], cas: [r.issuer_ca], subject: req.name },
    at: req.now,
  }));
  return { serials, cas, events };
}
