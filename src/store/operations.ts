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
import type { OperatorOperations } from "./operations/operators.js";
import type { MetricOperations } from "./operations/metrics.js";
import type { Ros2Operations } from "./operations/ros2.js";

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
  operators: OperatorOperations;
  metrics: MetricOperations;
  ros2: Ros2Operations;
}

/** A fleet's database as the authority sees it, whatever the backend. */
export interface FleetStore {
  /** The named operations outside any transaction (reads, and writes that stand alone). */
  ops: Operations;
  /**
   * Runs fn inside one write transaction; commits when it resolves, rolls back when it throws.
   * Resolves once the commit is durable.
   */
  transaction<T>(fn: (tx: Operations) => Promise<T>): Promise<T>;
  /**
   * Resolves once every transaction committed so far is on disk (writes recorded outside
   * transaction(), such as the issuance batches, wait for it before answering).
   */
  durable(): Promise<void>;
  /**
   * Group sync (for servers): commits stop syncing on their own and durable() syncs once for all
   * the commits made while the previous sync ran. The event loop never waits for the disk.
   */
  useGroupSync(): void;
  close(): Promise<void>;
}
