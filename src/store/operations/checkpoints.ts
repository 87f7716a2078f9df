// Signed checkpoints of the audit log's head (src/audit/checkpoints.ts) and the audit certificates
// that sign them. Checking signatures and deciding trust stay in src/audit/ and src/authority/.
import type { AuditCheckpointTable, CertificateTable } from "../schema.js";

/** What a checkpoint's verification needs to know of the certificate that signed it. */
export type SignerRecord = Pick<CertificateTable, "kind" | "status" | "revoked_at" | "revocation_reason">;

export interface CheckpointOperations {
  /** The checkpoint with the highest sequence number, or undefined when none was stored. */
  latest(): Promise<AuditCheckpointTable | undefined>;
  /** The checkpoint of sequence number `seq`, if one was stored. */
  at(seq: number): Promise<AuditCheckpointTable | undefined>;
  /** Every stored checkpoint, by sequence number. */
  list(): Promise<AuditCheckpointTable[]>;
  /** Stores a checkpoint unless one for its sequence number exists (then this does nothing). */
  store(checkpoint: AuditCheckpointTable): Promise<void>;
  /** The valid audit certificate that expires last among those current at `now` (ISO 8601). */
  currentSigner(now: string): Promise<Pick<CertificateTable, "serial" | "der"> | undefined>;
  /** The recorded certificate with this serial, as far as checkpoints care. */
  signer(serial: string): Promise<SignerRecord | undefined>;
}
