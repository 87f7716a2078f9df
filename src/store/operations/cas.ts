// The CA hierarchy as the authority needs it: CA records, the certificates the fleet issues for
// itself (CAs, server, operators, the audit key), and the root CRL that an offline root signs and
// the fleet imports. Decisions (which CA, whether a CRL is newer) stay in src/authority/.
import type { CaTable, CertificateTable, CrlTable } from "../schema.js";

/** A certificate the root revoked or put on hold, as the root's CRL lists it. */
export interface RevokedEntry {
  serial: string;
  revoked_at: string | null;
  revocation_reason: string | null;
}

export interface CaOperations {
  /** One CA, or undefined when the fleet has none by that id. */
  get(id: string): Promise<CaTable | undefined>;
  /** Every CA, in no particular order. */
  list(): Promise<CaTable[]>;
  /** Records a new CA and its certificate together; inside a write transaction. */
  create(ca: CaTable, certificate: CertificateTable): Promise<void>;
  /** Changes a CA's status (revocation of a local CA). */
  setStatus(id: string, status: CaTable["status"]): Promise<void>;
  /** Records a certificate the fleet issued for itself outside device issuance (server, operator, audit key). */
  recordOwnCertificate(certificate: CertificateTable): Promise<void>;
  /** Which of `kinds` have at least one certificate recorded. */
  kindsIssued(kinds: readonly CertificateTable["kind"][]): Promise<CertificateTable["kind"][]>;
  /** Unexpired certificates issued by `caId` that are revoked or on hold at `now` (ISO 8601), by serial. */
  revokedIssuedBy(caId: string, now: string): Promise<RevokedEntry[]>;
  /** The number of the newest CRL stored for `caId`, or undefined when none is. */
  crlNumber(caId: string): Promise<number | undefined>;
  /** Stores `crl` as its CA's newest CRL, replacing the one stored before. */
  saveCrl(crl: CrlTable): Promise<void>;
}
