// What the authority asks of its database: named operations grouped by area. The interfaces are
// backend-neutral (nothing synchronous, no SQLite-only SQL); src/store/sqlite/ implements them
// today, and a PostgreSQL implementation can follow without touching src/authority/.
import type { AuditOperations } from "./operations/audit.js";
import type { CaOperations } from "./operations/cas.js";
import type { CheckpointOperations } from "./operations/checkpoints.js";
import type { ChangeOperations } from "./operations/changes.js";
import type { StatusOperations } from "./operations/status.js";
import type { EnrollmentOperations } from "./operations/enrollment.js";
import type { CertificateOperations } from "./operations/certificates.js";
import type { DeviceOperations } from "./operations/devices.js";

/** Every area's operations, bound to one connection or to one open transaction. */
export interface Operations {
  audit: AuditOperations;
  cas: CaOperations;
  checkpoints: CheckpointOperations;
  status: StatusOperations;
  changes: ChangeOperations;
  enrollment: EnrollmentOperations;
  certificates: CertificateOperations;
  devices: DeviceOperations;
}
