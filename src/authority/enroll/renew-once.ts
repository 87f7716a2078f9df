// A certificate renews once: shared by renewal over mTLS and renewal after expiry.
import { AuthenticationFailed, CertificateAlreadyRenewed, ReEnrollRequired } from "../errors.js";
import type { FleetServices } from "../services.js";
import { issueForKey, type DeviceCertificate, type SubjectKey } from "../issue/issuance.js";
import type { IssueCondition } from "../issue/conditions.js";
import type { KnownCertificate } from "./presented-certificate.js";
import { redeliver } from "./redelivery.js";

/**
 * Renews `known` for `key`. Asked again (its answer was lost, or two requests raced), the same key
 * gets the renewal already issued; another key is refused: the certificate has been replaced, and
 * only its renewal can renew now. `nonce`: the renewal-after-expiry challenge, spent with a new
 * renewal; a repeated answer needs it unexpired and for this device (it may be spent).
 */
export async function renewOnce(
  fleet: FleetServices,
  known: KnownCertificate,
  key: SubjectKey,
  req: { now: Date; context: Record<string, unknown>; nonce?: string },
): Promise<DeviceCertificate> {
  const actor = `device:${known.deviceId}`;
  const ops = fleet.store.ops.enrollment;
  let renewal = await ops.renewalOf(known.row.serial);
  if (renewal === undefined) {
    const at = req.now.toISOString();
    const condition: IssueCondition = { kind: "renewal", deviceId: known.deviceId, renews: known.row.serial, nonce: req.nonce, at };
    try {
      return await issueForKey(fleet, { deviceId: known.deviceId, actor, now: req.now, context: req.context, condition }, key);
    } catch (e) {
      if (!(e instanceof CertificateAlreadyRenewed)) throw e;
      renewal = e.serial;
    }
  }
  if (req.nonce !== undefined) {
    const nonce = await ops.renewalNonce(req.nonce);
    if (!nonce || nonce.device_id !== known.deviceId || nonce.expires_at <= req.now.toISOString())
      throw new AuthenticationFailed("nonce-invalid", "the renewal challenge is unknown, expired or for another device");
  }
  const replaced = renewal;
  return redeliver(fleet, {
    serial: replaced,
    deviceId: known.deviceId,
    key,
    actor,
    context: req.context,
    now: req.now,
    refusal: () =>
      new ReEnrollRequired(
        `certificate ${known.row.serial} was already renewed (certificate ${replaced}) for another key; a certificate renews once: ` +
          "renew with that certificate, or ask again with the key of that renewal, or re-enroll",
      ),
  });
}
