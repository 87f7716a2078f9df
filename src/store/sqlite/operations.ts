// The SQLite implementation of every area's operations, over one Kysely connection or transaction.
import type { Operations } from "../operations.js";
import type { Tx } from "../store.js";
import { SqliteAuditOperations } from "./audit.js";
import { SqliteCaOperations } from "./cas.js";
import { SqliteCheckpointOperations } from "./checkpoints.js";
import { SqliteChangeOperations } from "./changes.js";
import { SqliteStatusOperations, type NativeAccess } from "./status.js";

/** `native`: the connection behind `db`, for the few hot paths that skip Kysely (status lookups). */
export function sqliteOperations(db: Tx, native: NativeAccess): Operations {
  return {
    audit: new SqliteAuditOperations(db),
    cas: new SqliteCaOperations(db),
    checkpoints: new SqliteCheckpointOperations(db),
    status: new SqliteStatusOperations(db, native),
    changes: new SqliteChangeOperations(db),
  };
}
