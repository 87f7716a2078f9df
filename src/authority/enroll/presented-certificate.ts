// A certificate a device presents (over TLS, or in the body of a renewal after expiry): which of
// ours it is, and whether it may still prove anything.
import type { CertificateTable } from "../../store/schema.js";
import { parseCertificate, subjectAltNameUris, type ParsedCertificate } from "../../x509/certificate.js";
import { deviceSpiffeId } from "../../x509/profiles.js";
import { AuthenticationFailed, NotPermitted } from "../errors.js";
import { certificateKey } from "../issue/issuance.js";
import type { FleetServices } from "../services.js";
import type { RequestSource } from "./request-source.js";

/** What the TLS layer saw: the client's leaf certificate and whether its chain verified to the root. */
export interface ClientCertificate {
  der: Buffer;
  /** OpenSSL's verdict, e.g. undefined (verified), "CERT_HAS_EXPIRED", "UNABLE_TO_GET_ISSUER_CERT". */
  verificationError?: string;
}

/** A request that presents a certificate over TLS (factory enrollment, renewal), with the CSR for the new one. */
export interface PresentedCertificateRequest {
  clientCertificate: ClientCertificate;
  csr: Buffer | string;
  source: RequestSource;
  now?: Date;
}

export interface KnownCertificate {
  parsed: ParsedCertificate;
  row: CertificateTable;
  deviceId: string;
}

/** A certificate is ours only if its exact bytes were recorded at issuance. */
export async function lookupCertificate(fleet: FleetServices, der: Buffer): Promise<KnownCertificate> {
  let parsed: ParsedCertificate;
  try {
    parsed = parseCertificate(der);
  } catch {
    throw new AuthenticationFailed("certificate-unknown", "the client certificate cannot be parsed");
  }
  const row = await fleet.store.ops.certificates.bySerial(parsed.serialHex);
  if (!row || !Buffer.from(row.der).equals(der) || !row.device_id)
    throw new AuthenticationFailed("certificate-unknown", "the client certificate was not issued to a device of this fleet");
  const expected = deviceSpiffeId(fleet.domain, row.device_id);
  if (!subjectAltNameUris(parsed).includes(expected))
    throw new AuthenticationFailed("certificate-unknown", "the client certificate does not carry its device identity");
  return { parsed, row, deviceId: row.device_id };
}

/**
 * The certificate presented over TLS, if it still proves its device: verified to the root, ours
 * byte for byte, of `kind` (else `wrongKind` refuses it), not revoked, its key acceptable to the
 * key policy (a key issued before the policy may be one whose TLS signature anyone can forge), and
 * its CA active. `what` names it in errors.
 */
export async function usablePresentedCertificate(
  fleet: FleetServices,
  presented: ClientCertificate,
  what: string,
  kind: "device" | "factory",
  wrongKind: string,
  now: Date,
): Promise<KnownCertificate> {
  assertVerified(presented, what);
  const known = await lookupCertificate(fleet, presented.der);
  if (known.row.kind !== kind) throw new NotPermitted("wrong-issuer", wrongKind);
  assertCurrent(known, now, what);
  assertNotRevoked(known);
  certificateKey(known.parsed.spki, known.row.serial);
  await assertIssuerActive(fleet, known.row.issuer_ca);
  return known;
}

export function assertNotRevoked(known: KnownCertificate): void {
  if (known.row.status !== "valid")
    throw new NotPermitted(
      "certificate-revoked",
      `certificate ${known.row.serial} of device "${known.deviceId}" is ${known.row.status === "hold" ? "on hold" : "revoked"}`,
    );
}

export async function assertIssuerActive(fleet: FleetServices, caId: string): Promise<void> {
  const ca = await fleet.caRecord(caId);
  if (ca.status !== "active") throw new NotPermitted("certificate-revoked", `the issuing CA ${caId} is ${ca.status}`);
}

export function assertVerified(cert: ClientCertificate, what: string): void {
  if (cert.verificationError === "CERT_HAS_EXPIRED") throw expired(what);
  if (cert.verificationError)
    throw new AuthenticationFailed("certificate-unknown", `${what} does not verify against the fleet root (${cert.verificationError})`);
}

/**
 * The validity period by the fleet's clock. TLS checks it too, on the machine's time; the domain
 * decides by its own clock, so both agree when the clock is the machine's and tests can move it.
 */
export function assertCurrent(known: KnownCertificate, now: Date, what: string): void {
  if (now.getTime() > known.parsed.notAfter.getTime()) throw expired(what);
  if (now.getTime() < known.parsed.notBefore.getTime())
    throw new AuthenticationFailed("certificate-unknown", `${what} is not valid yet (from ${known.parsed.notBefore.toISOString()})`);
}

function expired(what: string): NotPermitted {
  return new NotPermitted(
    "certificate-expired",
    `${what} has expired; renew with /api/v1/renew/expired within the grace period, or re-enroll`,
  );
}
