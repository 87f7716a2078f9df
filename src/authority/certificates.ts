// One certificate by serial, as operators look it up (the admin API's certificate page): what it
// identifies, its validity and status, and its PEM. Lists and expiry live elsewhere.
import { X509Certificate } from "node:crypto";
import type { CertificateTable } from "../store/schema.js";
import { toPem } from "../x509/pem.js";
import { UnknownCertificate } from "./errors.js";
import type { FleetServices } from "./services.js";
import { normalizeSerial } from "./status/revocation.js";

export interface CertificateDetails {
  serial: string;
  issuer: string;
  kind: CertificateTable["kind"];
  subjectId: string;
  deviceId: string | null;
  /** The certificate's subject and issuer names as OpenSSL prints them. */
  subject: string;
  issuerName: string;
  notBefore: string;
  notAfter: string;
  /** valid | revoked | hold | expired */
  status: string;
  revokedAt: string | null;
  revocationReason: string | null;
  fingerprintSha256: string;
  pem: string;
}

export async function showCertificate(fleet: FleetServices, serialText: string): Promise<CertificateDetails> {
  const serial = normalizeSerial(serialText);
  const row = await fleet.store.ops.certificates.bySerial(serial);
  if (!row) throw new UnknownCertificate(serial);
  const now = fleet.clock.now().toISOString();
  const der = Buffer.from(row.der);
  const x = new X509Certificate(der);
  return {
    serial: row.serial,
    issuer: row.issuer_ca,
    kind: row.kind,
    subjectId: row.subject_id,
    deviceId: row.device_id,
    subject: x.subject.replace(/\n/g, ", "),
    issuerName: x.issuer.replace(/\n/g, ", "),
    notBefore: row.not_before,
    notAfter: row.not_after,
    status: row.status === "valid" && row.not_after < now ? "expired" : row.status,
    revokedAt: row.revoked_at,
    revocationReason: row.revocation_reason,
    fingerprintSha256: row.fingerprint_sha256,
    pem: toPem("CERTIFICATE", der),
  };
}
