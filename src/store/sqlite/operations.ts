// The SQLite implementation of every area's operations, over one Kysely connection or transaction.
import type { Operations } from "../operations.js";
import type { Tx } from "../store.js";
import { SqliteAuditOperations } from "./audit.js";
import { SqliteCertificateOperations, type NativeAccess } from "./certificates.js";
import { SqliteDeviceOperations } from "./devices.js";

/** `native`: synchronous access to the same connection, for hot paths (prepared statements). */
export function sqliteOperations(db: Tx, native: NativeAccess): Operations {
  return {
    audit: new SqliteAuditOperations(db),
    certificates: new SqliteCertificateOperations(db, native),
    devices: new SqliteDeviceOperations(db),
  };
}
