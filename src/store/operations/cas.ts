// The CA hierarchy as the authority needs it: CA records, the certificates the fleet issues for
// itself (CAs, server, operators, the audit key). CRLs, the root's included, are the status area's
// (operations/status.ts). Decisions (which CA, whether a CRL is newer) stay in src/authority/.
import type { CaTable, CertificateTable } from "../schema.js";

export interface CaOperations {
  /** One CA, or undefined when the fleet has none by that id. */
  get(id: string): Promise<CaTable | undefined>;
  /** Every CA, in no particular order (a handful of rows). */
  list(): Promise<CaTable[]>;
  /** Records a new CA and its certificate together; inside a write transaction. */
  create(ca: CaTable, certificate: CertificateTable): Promise<void>;
  /** Changes a CA's status (revocation of a local CA). */
  setStatus(id: string, status: CaTable["status"]): Promise<void>;
  /** Records a certificate the fleet issued for itself outside device issuance (server, operator, audit key). */
  recordOwnCertificate(certificate: CertificateTable): Promise<void>;
  /** Which of `kinds` have at least one certificate recorded. */
  kindsIssued(kinds: readonly CertificateTable["kind"][]): Promise<CertificateTable["kind"][]>;
}
