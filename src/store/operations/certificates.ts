// Issued certificates as the authority records and reads them. Recording takes a batch (the group
// commit in authority/issue/recorder.ts): one write transaction checks each certificate's device,
// spends its condition, writes the row and its audit event. What refuses a certificate comes back
// as data (RecordRefusal); authority/issue/conditions.ts decides which error that is.
import type { AuditEvent } from "../../audit/log.js";
import { StoreError } from "../errors.js";
import type { CertificateTable, DeviceTable, EnrollmentTokenTable } from "../schema.js";

/**
 * What a certificate's recording spends, in the same transaction (plain data; `at` is the request
 * time, ISO 8601). The authority calls it IssueCondition (issue/conditions.ts).
 */
export type RecordCondition =
  /** A one-time enrollment token, the row the token check matched. */
  | { kind: "token"; deviceId: string; tokenId: string; at: string }
  /** Renewal of certificate `renews` (it renews once); `nonce`: the renewal-after-expiry challenge, spent with it. */
  | { kind: "renewal"; deviceId: string; renews: string; nonce?: string; at: string }
  /** An operator's approval of enrollment request `requestId`; the certificate's serial is recorded on it. */
  | { kind: "approval"; requestId: string }
  /** The device's one enrollment with a factory certificate (until it is reprovisioned). */
  | { kind: "factory"; deviceId: string; factorySerial: string; at: string };

export interface RecordItem {
  row: CertificateTable;
  audit: AuditEvent;
  condition?: RecordCondition;
}

/** Why a certificate was not recorded (nothing was written for it), with what the store found. */
export type RecordRefusal =
  | { refused: "unknown-device" }
  | { refused: "device-not-active"; status: DeviceTable["status"] }
  /** The token was not spendable: `token` is its row (undefined: no such token for the device). */
  | { refused: "token-unusable"; token: Pick<EnrollmentTokenTable, "used_at" | "expires_at"> | undefined }
  /** The certificate was renewed already, by `renewal`. */
  | { refused: "already-renewed"; renewal: string }
  /** The renewal challenge is unknown, expired, spent or another device's. */
  | { refused: "nonce-unusable" }
  /** The enrollment request is no longer approved (issued already, or decided otherwise). */
  | { refused: "approval-not-approved" }
  | { refused: "factory-already-enrolled" };

/** A certificate's serial is taken (the whole batch was rolled back); the caller signs again with a new serial. */
export class SerialInUse extends StoreError {
  constructor(cause: unknown) {
    super(`a certificate serial in this batch is already recorded: ${(cause as Error).message}`);
    this.name = "SerialInUse";
  }
}

/** A device's certificate, without its DER. */
export type CertificateSummary = Pick<
  CertificateTable,
  "serial" | "issuer_ca" | "kind" | "not_before" | "not_after" | "status" | "fingerprint_sha256"
>;

/** A certificate without its DER, with whom it identifies. */
export type SubjectCertificateSummary = CertificateSummary & Pick<CertificateTable, "subject_id" | "revoked_at" | "revocation_reason">;

/** A certificate without its DER, as the admin lists show it. */
export type CertificateListRow = Omit<CertificateTable, "der">;

/** One page of the certificate list (keyset by serial; every filter optional). */
export interface CertificatePageQuery {
  kind?: CertificateTable["kind"];
  /** Stored status; "expired" and "valid" also compare not_after with `now`. */
  status?: CertificateTable["status"] | "expired";
  /** ISO 8601; needed for status "valid" and "expired". */
  now: string;
  subject?: string;
  issuer?: string;
  afterSerial?: string;
  limit: number;
}

/** A device's newest device certificate and when its last one was issued. */
export interface DeviceCertificateFacts {
  newest: Pick<CertificateTable, "serial" | "not_after" | "status" | "created_at">;
  lastIssuedAt: string;
}

export interface CertificateOperations {
  /**
   * Records the batch in one write transaction: per item undefined (recorded) or its refusal.
   * A database error rolls back everything and is thrown (SerialInUse for a serial collision).
   * Does not wait for durability (Store.durable()).
   */
  record(batch: readonly RecordItem[]): Promise<(RecordRefusal | undefined)[]>;
  bySerial(serial: string): Promise<CertificateTable | undefined>;
  /** By SHA-256 of the DER (lower-case hex); not indexed, for rare lookups. */
  byFingerprint(fingerprintSha256: string): Promise<CertificateTable | undefined>;
  /** A device's certificates, newest first. */
  ofDevice(deviceId: string): Promise<CertificateSummary[]>;
  /** Up to `limit` certificates matching the query, by serial. */
  page(query: CertificatePageQuery): Promise<CertificateListRow[]>;
  /** For each of `deviceIds` with a device certificate: its newest (by notAfter) and the latest issuance time. */
  deviceFacts(deviceIds: readonly string[]): Promise<Map<string, DeviceCertificateFacts>>;
  /** Certificates of one kind (e.g. "service"), optionally of one subject; by subject, newest first. */
  ofKind(kind: CertificateTable["kind"], subjectId?: string): Promise<SubjectCertificateSummary[]>;
  /**
   * Unrevoked certificates (valid or on hold) whose not_after is after `after` and at most `until`
   * (ISO 8601), by not_after then serial, without those outlasted by an unrevoked certificate of
   * the same kind and subject (a renewal).
   */
  endingBetween(after: string, until: string): Promise<SubjectCertificateSummary[]>;
}
