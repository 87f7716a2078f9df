// The audit log's rows, as the authority needs them. The chain itself (hashes, verification) is
// computed in src/audit/log.ts; a backend only stores and returns rows.
import type { AuditEvent, AuditHead, AuditRecord } from "../../audit/log.js";
import type {
  CaTable,
  CertificateTable,
  DeviceTable,
  EnrollmentRequestTable,
  EnrollmentTokenTable,
  FactoryEnrollmentTable,
  RenewalTable,
} from "../schema.js";

/** One page of the audit log, newest first (keyset by seq; every filter optional). */
export interface AuditPageQuery {
  /** ISO 8601, inclusive. */
  from?: string;
  /** ISO 8601, exclusive. */
  to?: string;
  actor?: string;
  action?: string;
  subject?: string;
  /** Rows below this sequence number. */
  beforeSeq?: number;
  limit: number;
}

export interface AuditOperations {
  /** Chains `events` on after the current head and writes them with the new head; inside a write transaction. */
  append(events: readonly AuditEvent[]): Promise<AuditRecord[]>;
  /** The newest row's sequence number and hash; undefined for an empty log. */
  head(): Promise<AuditHead | undefined>;
  /** Up to `limit` rows with a sequence number above `afterSeq` (and at most `throughSeq` when given), in order. */
  rows(afterSeq: number, limit: number, throughSeq?: number): Promise<AuditRecord[]>;
  /** The row with sequence number `seq`, if there is one. */
  row(seq: number): Promise<AuditRecord | undefined>;
  /** The lowest sequence number in the log; undefined for an empty log. */
  lowestSeq(): Promise<number | undefined>;
  /** How many rows have a sequence number below `seq`. */
  countBefore(seq: number): Promise<number>;
  /** Rows of the chain (sequence numbers from 1), at or after `since` (ISO 8601) when given, in order. */
  list(query: { since?: string; limit?: number }): Promise<AuditRecord[]>;
  /** Up to `limit` rows matching the query, newest (highest seq) first. */
  page(query: AuditPageQuery): Promise<AuditRecord[]>;
  /** The newest `limit` rows whose subject is `subject`, newest first. */
  ofSubject(subject: string, limit: number): Promise<AuditRecord[]>;
  /** The state tables that `audit verify` replays from the log. */
  readonly state: AuditStateSource;
}

/** The state tables as `audit verify` compares them with the log (src/audit/replay.ts). */
export interface AuditStateSource {
  /** Up to `limit` certificates with a serial above `afterSerial`, by serial. */
  certificates(
    afterSerial: string,
    limit: number,
  ): Promise<
    Pick<CertificateTable, "serial" | "kind" | "subject_id" | "status" | "revocation_reason" | "fingerprint_sha256" | "not_after" | "der">[]
  >;
  cas(): Promise<Pick<CaTable, "id" | "status" | "serial">[]>;
  /** Up to `limit` devices with an id above `afterId`, by id. */
  devices(afterId: string, limit: number): Promise<Pick<DeviceTable, "id" | "status" | "group_name" | "labels">[]>;
  /** Every enrollment token, oldest first. */
  tokens(): Promise<Pick<EnrollmentTokenTable, "id" | "device_id" | "token_hash" | "expires_at" | "used_at">[]>;
  requests(): Promise<Pick<EnrollmentRequestTable, "id" | "device_id" | "status" | "certificate_serial" | "created_at">[]>;
  factoryEnrollments(): Promise<FactoryEnrollmentTable[]>;
  renewals(): Promise<RenewalTable[]>;
  /** When each schema migration ran (ISO 8601): an older fleet's tables were kept as replayed only since then. */
  migrationTimes(): Promise<{ name: string; timestamp: string }[]>;
}
