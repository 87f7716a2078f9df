// The SQLite implementation of every area's operations, over one Kysely connection or transaction.
import type { Operations } from "../operations.js";
import type { NativeAccess, Tx } from "./connection.js";
import { SqliteAuditOperations } from "./audit.js";
import { SqliteCaOperations } from "./cas.js";
import { SqliteCheckpointOperations } from "./checkpoints.js";
import { SqliteChangeOperations } from "./changes.js";
import { SqliteStatusOperations } from "./status.js";
import { SqliteEnrollmentOperations } from "./enrollment.js";
import { SqliteCertificateOperations } from "./certificates.js";
import { SqliteDeviceOperations } from "./devices.js";
import { SqliteOperatorOperations } from "./operators.js";
import { SqliteMetricOperations } from "./metrics.js";
import { SqliteRos2Operations } from "./ros2.js";

export function sqliteOperations(db: Tx, native: NativeAccess): Operations {
  return {
    audit: new SqliteAuditOperations(db),
    cas: new SqliteCaOperations(db),
    checkpoints: new SqliteCheckpointOperations(db),
    status: new SqliteStatusOperations(db, native),
    changes: new SqliteChangeOperations(db),
    enrollment: new SqliteEnrollmentOperations(db, native),
    certificates: new SqliteCertificateOperations(db, native),
    devices: new SqliteDeviceOperations(db),
    operators: new SqliteOperatorOperations(db),
    metrics: new SqliteMetricOperations(db),
    ros2: new SqliteRos2Operations(db),
  };
}
