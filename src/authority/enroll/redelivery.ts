// Retries after a lost answer: a credential asking again for the same key gets the certificate it
// already obtained (issue 9, 1.10), checked as a new issuance would be, and audited once per window.
import { createHash } from "node:crypto";
import { parseCertificate } from "../../x509/certificate.js";
import { DeviceNotActive, NotPermitted, UnknownDevice } from "../errors.js";
import type { FleetServices } from "../services.js";
import { recordedDeviceCertificate, type DeviceCertificate, type SubjectKey } from "../issue/issuance.js";
import { assertIssuerActive } from "./presented-certificate.js";

export interface Redelivery {
  serial: string;
  deviceId: string;
  key: SubjectKey;
  actor: string;
  context: Record<string, unknown>;
  /** The refusal when the certificate is not for this key (or not the device's). */
  refusal: () => Error;
  now: Date;
}

/**
 * Answers a retry with the certificate its credential already obtained, when the retry is for the
 * same key (the first answer was lost). Any other key gets `refusal`; a certificate revoked or held
 * since, or a device no longer active, is refused as a new issuance would be. Audited.
 */
export async function redeliver(fleet: FleetServices, req: Redelivery): Promise<DeviceCertificate> {
  const row = await fleet.store.ops.certificates.bySerial(req.serial);
  if (!row || row.device_id !== req.deviceId || !parseCertificate(Buffer.from(row.der)).spki.equals(req.key.spki)) throw req.refusal();
  if (row.status !== "valid")
    throw new NotPermitted("certificate-revoked", `certificate ${row.serial} is ${row.status === "hold" ? "on hold" : "revoked"}`);
  await assertIssuerActive(fleet, row.issuer_ca);
  assertActive(req.deviceId, (await fleet.store.ops.devices.get(req.deviceId))?.status);
  const now = req.now.getTime();
  const seen = redeliveriesAudited(fleet);
  const key = `${row.serial}\u0000${createHash("sha256").update(req.key.spki).digest("hex")}`;
  const last = seen.get(key);
  // |now - last|: concurrent retries carry request times a little out of order, which is no reason to audit
  // again; a clock set back by a whole window is.
  if (last === undefined || Math.abs(now - last) >= REDELIVERY_AUDIT_WINDOW_MS) {
    if (seen.size >= MAX_REDELIVERIES_REMEMBERED) {
      for (const [k, at] of seen) if (now - at >= REDELIVERY_AUDIT_WINDOW_MS) seen.delete(k);
      if (seen.size >= MAX_REDELIVERIES_REMEMBERED) seen.clear();
    }
    // Marked before the write, so concurrent retries do not each write a row; unmarked if it fails.
    seen.set(key, now);
    await fleet.store
      .transaction(async (tx) => {
        // Checked again under the write lock: a revocation or hold may have committed meanwhile.
        assertActive(req.deviceId, (await tx.devices.get(req.deviceId))?.status);
        const details = { serial: row.serial, ...req.context };
        await tx.audit.append([
          { actor: req.actor, action: "certificate.redeliver", subject: `device:${req.deviceId}`, details, at: req.now },
        ]);
      })
      .catch((e: unknown) => {
        if (seen.get(key) === now) seen.delete(key);
        throw e;
      });
  }
  return recordedDeviceCertificate(fleet, row, req.key.keyType);
}

function assertActive(deviceId: string, status: string | undefined): void {
  if (status === undefined) throw new UnknownDevice(deviceId);
  if (status !== "active") throw new DeviceNotActive(deviceId, status);
}

/**
 * A re-delivery hands out nothing new (the issuance is audited), so a robot retrying in a loop
 * is audited once per certificate, key and window rather than once per request. Kept in memory:
 * after a restart the next re-delivery is audited again.
 */
const REDELIVERY_AUDIT_WINDOW_MS = 3_600_000;
/** Entries need a certificate whose key the requester holds, so this bound is rarely reached. */
const MAX_REDELIVERIES_REMEMBERED = 10_000;
const redeliveries = new WeakMap<FleetServices, Map<string, number>>();

function redeliveriesAudited(fleet: FleetServices): Map<string, number> {
  let seen = redeliveries.get(fleet);
  if (!seen) redeliveries.set(fleet, (seen = new Map()));
  return seen;
}
