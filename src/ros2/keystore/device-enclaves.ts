// A robot's ROS 2 enclaves (ros2_enclaves.device_id) follow the robot's status: revoking or removing
// the device revokes them, holding it holds their certificates, releasing it releases them. Each of
// these runs inside the device's own status transaction (src/authority/status/revocation.ts), whose
// single audit event lists the enclaves' serials and the ros2-identity CA with the device's own, so
// CRLs, OCSP, metrics and audit replay treat them as one change.
import { resolve } from "node:path";
import type { FleetServices } from "../../authority/services.js";
import { crlPem, currentCrl } from "../../authority/status/crls.js";
import { revokeIdentityCertificates, type StoredReason } from "../../authority/status/revocation.js";
import type { Operations } from "../../store/operations.js";
import type { StatusCertificateRow } from "../../store/operations/status.js";
import type { CertificateTable, Ros2EnclaveTable } from "../../store/schema.js";
import { ROS2_CAS } from "../../authority/layout.js";
import { enclaveSubjectId, writeCrlEverywhere } from "./enclaves.js";
import { openKeystore } from "./keystore.js";

/** One enclave of a device touched by a device status change. */
export interface DeviceEnclave {
  keystore: string;
  path: string;
}

export interface DeviceEnclavesChange {
  enclaves: DeviceEnclave[];
  /** The certificate rows whose status changed (the caller lists them in its audit event). */
  rows: StatusCertificateRow[];
}

/** The device's active enclaves and, for each, its unexpired certificates in one of `statuses`. */
async function liveEnclaveCertificates(
  tx: Operations,
  deviceId: string,
  statuses: readonly CertificateTable["status"][],
  now: Date | null,
): Promise<{ enclave: Ros2EnclaveTable; certs: StatusCertificateRow[] }[]> {
  const out: { enclave: Ros2EnclaveTable; certs: StatusCertificateRow[] }[] = [];
  for (const enclave of await tx.ros2.deviceEnclaves(deviceId)) {
    if (enclave.status !== "active") continue;
    // Every certificate the enclave had, not only the current one: a superseded one authenticates until it expires.
    const all = await tx.certificates.ofKind("ros2-enclave", enclaveSubjectId(enclave.keystore_id, enclave.path));
    const certs = all
      .filter((c) => statuses.includes(c.status) && (now === null || c.not_after > now.toISOString()))
      .map((c) => ({ serial: c.serial, issuer_ca: c.issuer_ca, status: c.status }));
    out.push({ enclave, certs });
  }
  return out;
}

/**
 * Revokes, inside `tx`, every active enclave of the device: its unexpired certificates (held ones
 * included) with `reason`, and the enclave marked revoked so that neither the agent nor the CLI renews it.
 */
export async function revokeDeviceEnclaves(
  tx: Operations,
  deviceId: string,
  req: { reason: StoredReason; actor: string; now: Date },
): Promise<DeviceEnclavesChange> {
  const enclaves: DeviceEnclave[] = [];
  const rows: StatusCertificateRow[] = [];
  for (const { enclave, certs } of await liveEnclaveCertificates(tx, deviceId, ["valid", "hold"], req.now)) {
    const name = enclaveSubjectId(enclave.keystore_id, enclave.path);
    // Its per-certificate events are not appended: the device's event lists these serials (listing
    // them twice would count each revocation twice in the metrics).
    await revokeIdentityCertificates(tx, certs, { name, reason: req.reason, actor: req.actor, now: req.now });
    await tx.ros2.updateEnclave(enclave.keystore_id, enclave.path, { status: "revoked", revoked_at: req.now.toISOString() });
    enclaves.push({ keystore: enclave.keystore_id, path: enclave.path });
    rows.push(...certs);
  }
  return { enclaves, rows };
}

/** Puts the valid unexpired certificates of the device's active enclaves on hold (certificateHold). */
export async function holdDeviceEnclaves(tx: Operations, deviceId: string, now: Date): Promise<DeviceEnclavesChange> {
  return setEnclaveCertificates(tx, await liveEnclaveCertificates(tx, deviceId, ["valid"], now), "hold", "certificateHold", now);
}

/** Releases the held certificates of the device's active enclaves (only a device hold puts them on hold). */
export async function unholdDeviceEnclaves(tx: Operations, deviceId: string): Promise<DeviceEnclavesChange> {
  return setEnclaveCertificates(tx, await liveEnclaveCertificates(tx, deviceId, ["hold"], null), "valid", null, null);
}

async function setEnclaveCertificates(
  tx: Operations,
  found: { enclave: Ros2EnclaveTable; certs: StatusCertificateRow[] }[],
  status: CertificateTable["status"],
  reason: StoredReason | null,
  at: Date | null,
): Promise<DeviceEnclavesChange> {
  const withCerts = found.filter((f) => f.certs.length > 0);
  const rows = withCerts.flatMap((f) => f.certs);
  if (rows.length > 0)
    await tx.status.setCertificateStatus(
      rows.map((r) => r.serial),
      { status, reason, at: at?.toISOString() ?? null },
    );
  return { enclaves: withCerts.map((f) => ({ keystore: f.enclave.keystore_id, path: f.enclave.path })), rows };
}

/**
 * `ros2 keystore refresh-crl DIR`: the identity CA's current CRL (re-signed first if due) written
 * into public/ and every enclave's crl.pem, e.g. after `device revoke` revoked enclaves of this keystore.
 */
export async function refreshKeystoreCrl(
  fleet: FleetServices,
  req: { dir: string },
): Promise<{ keystoreId: string; crlNumber: bigint; entries: number; updated: string[] }> {
  const dir = resolve(req.dir);
  const keystore = await openKeystore(fleet, dir);
  const crl = await currentCrl(fleet, ROS2_CAS.identity);
  const updated = writeCrlEverywhere(dir, crlPem(crl));
  return { keystoreId: keystore.keystore, crlNumber: crl.crlNumber, entries: crl.entries, updated };
}
