// The audit log's rows, as the authority needs them. The chain itself (hashes, verification) is
// computed in src/audit/log.ts; a backend only stores and returns rows.
import type { AuditEvent, AuditHead, AuditRecord } from "../../audit/log.js";

export interface AuditOperations {
  /** Chains `events` on after the current head and writes them with the new head; inside a write transaction. */
  append(events: readonly AuditEvent[]): Promise<AuditRecord[]>;
  /** The newest row's sequence number and hash; undefined for an empty log. */
  head(): Promise<AuditHead | undefined>;
}
