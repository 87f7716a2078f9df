// Table shapes. Timestamps are ISO-8601 UTC text (sortable, identical on SQLite and
// PostgreSQL); binary columns are Uint8Array (blob / bytea).

export interface CaTable {
  /** "root", "devices", "services", "operators", "local-<name>", "ros2-identity" or "ros2-permissions". */
  id: string;
  role: "root" | "devices" | "services" | "operators" | "local" | "ros2-identity" | "ros2-permissions";
  subject: string;
  issuer: string;
  serial: string;
  fingerprint_sha256: string;
  not_before: string;
  not_after: string;
  key_type: string;
  certificate_pem: string;
  /**
   * ROS 2 CAs only: the self-signed twin of certificate_pem (same subject and key) that SROS2
   * keystores ship as DDS trust anchor; null/absent for every other CA.
   */
  anchor_pem?: string | null;
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
  /**
   * held: every certificate on hold (reversible); revoked: for good, no enrollment or renewal;
   * removed: decommissioned (its certificates revoked, cessationOfOperation), kept for the audit
   * log and certificate history, never enrolls again and left out of `device list`.
   */
  status: "active" | "disabled" | "held" | "revoked" | "removed";
  created_at: string;
  updated_at: string;
  /**
   * When the gateway last admitted it (ISO 8601; written at most once a minute per device, not
   * audited: it is an observation, not a state change). Null or absent: never since it was added.
   */
  last_seen_at?: string | null;
}

export interface CertificateTable {
  /** Lower-case hex of the serial number's magnitude. */
  serial: string;
  issuer_ca: string;
  /** service: a backend's TLS client identity (services CA, `fleetpki service add`), subject_id its name. */
  /** ros2-enclave: an SROS2 enclave's DDS identity (ros2-identity CA), subject_id its enclave path. */
  kind: "device" | "factory" | "server" | "operator" | "ca" | "ocsp-responder" | "audit" | "service" | "ros2-enclave";
  /** Device id, operator name, service name, server name or CA id this certificate identifies. */
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
  /** The certificate the token paid for, so a retry after a lost answer gets it again. */
  certificate_serial: string | null;
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
  /** "sha256:<hex>" of the CSR's SubjectPublicKeyInfo: what the operator compares with the robot. */
  key_fingerprint: string | null;
  /** The peer address, IPv4-mapped IPv6 written as IPv4. */
  source_address: string | null;
  /** What per-source bounds count: the IPv4 address, or the IPv6 /64. */
  source_group: string | null;
}

/** Devices that enrolled with a factory certificate; one more is allowed only after `device reprovision`. */
export interface FactoryEnrollmentTable {
  device_id: string;
  /** The factory certificate presented. */
  factory_serial: string;
  /** The operational certificate it obtained. */
  certificate_serial: string;
  enrolled_at: string;
}

/** Single-use challenges for renewing an expired certificate by proof of possession. */
export interface RenewalNonceTable {
  nonce: string;
  device_id: string;
  expires_at: string;
  used_at: string | null;
}

/**
 * Which certificate renewed which: a certificate renews once. A second renewal with the same key
 * is answered with the certificate already issued (a retry after a lost answer); with another
 * key it is refused.
 */
export interface RenewalTable {
  renewed_serial: string;
  serial: string;
  device_id: string;
  created_at: string;
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

/** Operators (people): their role; their certificates are the certificates of kind "operator" with their name. */
export interface OperatorTable {
  name: string;
  role: "viewer" | "operator" | "admin";
  /** removed: every certificate revoked, sessions ended; the name may be added again. */
  status: "active" | "removed";
  created_at: string;
  updated_at: string;
}

/** One-time login links (`fleetpki operator login`): only a SHA-256 of the token is kept. */
export interface OperatorLoginTable {
  token_hash: string;
  operator: string;
  expires_at: string;
  used_at: string | null;
  created_at: string;
}

/** Browser sessions started from a login link: only a SHA-256 of the session secret is kept. */
export interface OperatorSessionTable {
  secret_hash: string;
  operator: string;
  created_at: string;
  expires_at: string;
  ended_at: string | null;
}

/** SROS2 keystores made by `fleetpki ros2 keystore init`: what renewing an enclave needs without the directory. */
export interface Ros2KeystoreTable {
  /** The uuid in the keystore's .fleetpki-keystore.json. */
  id: string;
  /** Absolute path where it was made (informational: keystores are copied to robots). */
  dir: string;
  domain_id: number;
  /** enclaves/governance.p7s as written (every enclave carries a copy). */
  governance_p7s: string;
  created_at: string;
}

/**
 * SROS2 enclaves made by `fleetpki ros2 enclave create` (src/ros2/keystore/): one row per keystore
 * and enclave path. The certificate itself is a row of `certificates` (kind "ros2-enclave").
 */
export interface Ros2EnclaveTable {
  /** The keystore's uuid (its .fleetpki-keystore.json). */
  keystore_id: string;
  /** The enclave path, e.g. "/talker_listener/talker". */
  path: string;
  /** The robot that runs it (the agent renews it), or null. */
  device_id: string | null;
  /** Serial of the current identity certificate. */
  serial: string;
  /** "policy" (permissions_policy holds the enclave's part of an SROS2 policy as JSON), "fleet-policy" or "allow-all". */
  permissions_source: "policy" | "fleet-policy" | "allow-all";
  /** JSON of the src/ros2/policy-model.ts Sros2Policy for source "policy"; null otherwise. */
  permissions_policy: string | null;
  status: "active" | "revoked";
  created_at: string;
  renewed_at: string | null;
  revoked_at: string | null;
  /** The `--validity` given at creation (a duration, e.g. "7d"), which its renewals keep; null: validity.ros2_enclave. */
  validity: string | null;
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
  factory_enrollments: FactoryEnrollmentTable;
  renewal_nonces: RenewalNonceTable;
  renewals: RenewalTable;
  crls: CrlTable;
  operators: OperatorTable;
  operator_logins: OperatorLoginTable;
  operator_sessions: OperatorSessionTable;
  ros2_keystores: Ros2KeystoreTable;
  ros2_enclaves: Ros2EnclaveTable;
}
