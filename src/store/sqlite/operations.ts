// The SQLite implementation of every area's operations, over one Kysely connection or transaction.
import type { Operations } from "../operations.js";
import type { Tx } from "../store.js";
import { SqliteAuditOperations } from "./audit.js";
import { SqliteChangeOperations } from "./changes.js";
import { SqliteStatusOperations } from "./status.js";

export function sqliteOperations(db: Tx): Operations {
  return {
    audit: new SqliteAuditOperations(db),
    status: new SqliteStatusOperations(db),
    changes: new SqliteChangeOperations(db),
  };
}
