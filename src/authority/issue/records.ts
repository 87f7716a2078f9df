// Rows written when something is issued; shared by every issuing path.
import type { CertificateTable } from "../../store/schema.js";
import type { IssuedCertificate } from "../../x509/profiles.js";
import { sha256Fingerprint } from "../../x509/certificate.js";

export function issuedRecord(issued: IssuedCertificate, fields: Omit<IssuedRecord, "issued" | "fingerprintSha256">): IssuedRecord {
  return { issued, fingerprintSha256: sha256Fingerprint(issued.der), ...fields };
}

export interface IssuedRecord {
  issued: IssuedCertificate;
  /** SHA-256 of the DER, computed once for the row and the audit event. */
  fingerprintSha256: string;
  issuerCa: string;
  kind: CertificateTable["kind"];
  subjectId: string;
  deviceId: string | null;
}

export function certificateRow(r: IssuedRecord, now: Date): CertificateTable {
  return {
    serial: r.issued.serialHex,
    issuer_ca: r.issuerCa,
    kind: r.kind,
    subject_id: r.subjectId,
    device_id: r.deviceId,
    not_before: r.issued.notBefore.toISOString(),
    not_after: r.issued.notAfter.toISOString(),
    fingerprint_sha256: r.fingerprintSha256,
    der: r.issued.der,
    status: "valid",
    revoked_at: null,
    revocation_reason: null,
    created_at: now.toISOString(),
  };
}

export function issueAuditDetails(r: IssuedRecord, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    serial: r.issued.serialHex,
    issuer: r.issuerCa,
    kind: r.kind,
    not_before: r.issued.notBefore.toISOString(),
    not_after: r.issued.notAfter.toISOString(),
    fingerprint_sha256: r.fingerprintSha256,
    ...extra,
  };
}
