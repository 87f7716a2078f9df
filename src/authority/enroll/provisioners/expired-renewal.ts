// Renewal after expiry: a device whose certificate expired (never revoked) within the grace asks for
// a challenge, then proves possession of the expired certificate's key over it and its new CSR.
import { createHash, randomBytes, verify, type KeyObject } from "node:crypto";
import { parseDuration } from "../../../config/duration.js";
import { csrDer } from "../../../x509/csr.js";
import { fromPem } from "../../../x509/pem.js";
import { AuthenticationFailed, InvalidArgument, NotPermitted, ReEnrollRequired } from "../../errors.js";
import type { FleetServices } from "../../services.js";
import { assertDeviceId, certificateKey, keyFromCsr, type DeviceCertificate, type SubjectKey } from "../../issue/issuance.js";
import { issued, type Provisioner } from "../provisioner.js";
import { assertIssuerActive, lookupCertificate } from "../presented-certificate.js";
import { renewOnce } from "../renew-once.js";
import { sourceContext, type RequestSource } from "../request-source.js";

const NONCE_LIFETIME_MS = 5 * 60_000;
export const EXPIRED_RENEWAL_LABEL = "fleetpki-renew-expired/v1";

/** The bytes a device signs with its expired certificate's key (docs/enrollment.md). */
export function expiredRenewalMessage(deviceId: string, nonce: string, csrDer: Buffer): Buffer {
  return Buffer.from(`${EXPIRED_RENEWAL_LABEL}\n${deviceId}\n${nonce}\n${createHash("sha256").update(csrDer).digest("hex")}`, "utf8");
}

/** Unexpired challenges kept per device; a new one replaces the oldest, so junk cannot lock a device out. */
const MAX_OPEN_CHALLENGES = 20;
/** A device whose clock runs ahead asks a little before its certificate has expired here. */
const CHALLENGE_CLOCK_SKEW_MS = NONCE_LIFETIME_MS;

/**
 * A challenge for renewing an expired certificate. Only a device that can use one gets a stored
 * challenge: an active device with an unrevoked certificate that expired within the grace. Every
 * other id gets an answer of the same shape that is stored nowhere (the proof then fails as
 * "nonce-invalid", after the certificate's own checks), so this unauthenticated endpoint neither
 * tells which devices exist nor fills the table for them.
 */
export async function renewalChallenge(
  fleet: FleetServices,
  deviceId: string,
  now: Date = fleet.clock.now(),
): Promise<{ nonce: string; expiresAt: Date }> {
  assertDeviceId(deviceId);
  const nonce = randomBytes(32).toString("base64url");
  const expiresAt = new Date(now.getTime() + NONCE_LIFETIME_MS);
  const graceMs = parseDuration(fleet.config.renewal.after_expiry_grace);
  await fleet.store.ops.enrollment.storeRenewalChallenge({
    nonce,
    deviceId,
    at: now.toISOString(),
    expiresAt: expiresAt.toISOString(),
    expiredSince: new Date(now.getTime() - graceMs).toISOString(),
    expiredBy: new Date(now.getTime() + CHALLENGE_CLOCK_SKEW_MS).toISOString(),
    keep: MAX_OPEN_CHALLENGES - 1,
  });
  return { nonce, expiresAt };
}

function hashFor(key: KeyObject): string | null {
  if (key.asymmetricKeyType === "ed25519") return null;
  if (key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "secp384r1") return "sha384";
  return "sha256";
}

export interface ExpiredRenewal {
  certificate: string | Buffer;
  csr: Buffer | string;
  nonce: string;
  signature: string;
  source: RequestSource;
  now?: Date;
}

/** Not exported: reached through expiredRenewalProvisioner (enrollment.ts). */
async function expiredRenewal(fleet: FleetServices, req: ExpiredRenewal): Promise<DeviceCertificate> {
  let der: Buffer;
  try {
    der = typeof req.certificate === "string" ? fromPem(req.certificate, ["CERTIFICATE"]) : req.certificate;
  } catch (e) {
    throw new InvalidArgument(`certificate: ${(e as Error).message}`);
  }
  const known = await lookupCertificate(fleet, der);
  if (known.row.kind !== "device") throw new NotPermitted("wrong-issuer", "only operational device certificates renew");
  const now = req.now ?? fleet.clock.now();
  if (known.row.status !== "valid")
    throw new ReEnrollRequired(
      `certificate ${known.row.serial} was ${known.row.status === "hold" ? "put on hold" : "revoked"}; it ` +
        `cannot renew after expiry: re-enroll`,
    );
  const key: SubjectKey = await keyFromCsr(req.csr);
  const parsedCsrDer = csrDer(req.csr);
  const publicKey = certificateKey(known.parsed.spki, known.row.serial);
  let ok = false;
  try {
    ok = verify(
      hashFor(publicKey),
      expiredRenewalMessage(known.deviceId, req.nonce, parsedCsrDer),
      publicKey,
      Buffer.from(req.signature, "base64"),
    );
  } catch {
    ok = false;
  }
  if (!ok) throw new AuthenticationFailed("proof-invalid", "the proof of possession does not verify with the expired certificate's key");
  // The grace bounds new renewals only: a renewal already recorded (its answer was lost while the
  // robot stayed offline) is handed out again for the same key, proved by the signature above.
  const earlier = await fleet.store.ops.enrollment.renewalOf(known.row.serial);
  const graceMs = parseDuration(fleet.config.renewal.after_expiry_grace);
  if (earlier === undefined && now.getTime() > known.parsed.notAfter.getTime() + graceMs)
    throw new ReEnrollRequired(
      `certificate ${known.row.serial} expired at ${known.parsed.notAfter.toISOString()}, beyond the ` +
        `${fleet.config.renewal.after_expiry_grace} renewal grace: re-enroll`,
    );
  await assertIssuerActive(fleet, known.row.issuer_ca);
  const renewal = { now, nonce: req.nonce, context: sourceContext(req.source, { renews: known.row.serial, after_expiry: true }) };
  return renewOnce(fleet, known, key, renewal);
}

export const expiredRenewalProvisioner: Provisioner = {
  name: "expired-renewal",
  operation: "renew-expired",
  failures: "count",
  credential: true,
  asks: "the expired certificate, a renewal challenge and a proof of possession",
  presents: (r) => r.proof !== undefined,
  failureVia: (transport) => `${transport}-renew-expired`,
  async run(fleet, r, { now }) {
    return issued(await expiredRenewal(fleet, { ...r.proof!, csr: r.csr, source: r.source, now }));
  },
};
