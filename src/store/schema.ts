// Table shapes. Timestamps are ISO-8601 UTC text (sortable, identical on SQLite and
// PostgreSQL); binary columns are Uint8Array (blob / bytea).

export interface CaTable {
  /** "root", "devices", "services", "operators" or "local-<name>". */
  id: string;
  role: "root" | "devices" | "services" | "operators" | "local";
  subject: string;
  issuer: string;
  serial: string;
  fingerprint_sha256: string;
  not_before: string;
  not_after: string;
  key_type: string;
  certificate_pem: string;
  /** Key file relative to the fleet directory; null when the key is held offline. */
  key_file: string | null;
  status: "active" | "revoked";
  created_at: string;
}

export interface DeviceTable {
  id: string;
  group_name: string | null;
  /** JSON object of string labels. */
  labels: string;
  /** held: every certificate on hold (reversible); revoked: for good, no enrollment or renewal. */
  status: "active" | "disabled" | "held" | "revoked";
  created_at: string;
  updated_at: string;
}

export interface CertificateTable {
  /** Lower-case hex of the serial number's magnitude. */
  serial: string;
  issuer_ca: string;
  kind: "device" | "factory" | "server" | "operator" | "ca" | "ocsp-responder" | "audit";
  /** Device id, operator name, server name or CA id this certificate identifies. */
  subject_id: string;
  device_id: string | null;
  not_before: string;
  not_after: string;
  fingerprint_sha256: string;
  der: Uint8Array;
  status: "valid" | "revoked" | "hold";
  revoked_at: string | null;
  revocation_reason: string | null;
  created_at: string;
}

export interface AuditLogTable {
  seq: number;
  at: string;
  actor: string;
  action: string;
  subject: string;
  /** Canonical JSON (sorted keys). */
  details: string;
  prev_hash: string;
  hash: string;
}

/** One row (id = 1): the newest sequence number and hash, so a removed tail is noticed. */
export interface AuditHeadTable {
  id: number;
  seq: number;
  hash: string;
}

/** One-time enrollment tokens: only a SHA-256 of the token is kept. */
export interface EnrollmentTokenTable {
  id: string;
  device_id: string;
  token_hash: string;
  created_at: string;
  expires_at: string;
  used_at: string | null;
  created_by: string;
}

/** Enrollment requests waiting for an operator's approval. */
export interface EnrollmentRequestTable {
  id: string;
  device_id: string;
  csr: Uint8Array;
  status: "pending" | "approved" | "denied" | "issued";
  /** Where it came from (transport and peer address), for the operator deciding. */
  source: string;
  created_at: string;
  decided_at: string | null;
  decided_by: string | null;
  certificate_serial: string | null;
}

/** Single-use challenges for renewing an expired certificate by proof of possession. */
export interface RenewalNonceTable {
  nonce: string;
  device_id: string;
  expires_at: string;
  used_at: string | null;
}

/** The newest CRL signed (or, for an offline root, imported) for each CA. */
export interface CrlTable {
  ca_id: string;
  crl_number: number;
  this_update: string;
  next_update: string;
  entries: number;
  der: Uint8Array;
}

/** A signed checkpoint of the audit log's head (src/audit/checkpoints.ts); document is the exported file. */
export interface AuditCheckpointTable {
  seq: number;
  hash: string;
  at: string;
  document: string;
}

export interface Database {
  cas: CaTable;
  devices: DeviceTable;
  certificates: CertificateTable;
  audit_log: AuditLogTable;
  audit_head: AuditHeadTable;
  audit_checkpoints: AuditCheckpointTable;
  enrollment_tokens: EnrollmentTokenTable;
  enrollment_requests: EnrollmentRequestTable;
  renewal_nonces: RenewalNonceTable;
  crls: CrlTable;
}
