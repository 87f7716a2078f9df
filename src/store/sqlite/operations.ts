// The SQLite implementation of every area's operations, over one Kysely connection or transaction.
import type { Operations } from "../operations.js";
import type { Tx } from "../store.js";
import { SqliteAuditOperations } from "./audit.js";
import { SqliteEnrollmentOperations, type WithNative } from "./enrollment.js";

export function sqliteOperations(db: Tx, withNative: WithNative): Operations {
  return {
    audit: new SqliteAuditOperations(db),
    enrollment: new SqliteEnrollmentOperations(db, withNative),
  };
}
