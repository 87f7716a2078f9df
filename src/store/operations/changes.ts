// Following the audit log (the change feed): the head's sequence number, and the rows after one.
import type { AuditLogTable } from "../schema.js";

export interface ChangeOperations {
  /** The newest sequence number; 0 for an empty log. */
  headSeq(): Promise<number>;
  /** Up to `limit` rows after `seq`, in order. */
  rowsAfter(seq: number, limit: number): Promise<AuditLogTable[]>;
}
