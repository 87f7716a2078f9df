// What the admin listener's routes may use: the domain services of the running fleet, nothing of HTTP.
import type { OperatorRole } from "../access/identity.js";
import type { ChangeFeed } from "../authority/events/change-feed.js";
import type { FleetServices } from "../authority/services.js";
import type { CertificateStatus } from "../authority/status/certificate-status.js";
import type { RunningGateway } from "../gateway/server.js";
import type { Logger } from "../log.js";
import type { FleetMetrics } from "../metrics/metrics.js";

/** An operator's role as the fleet stores it now (null: no such active operator). */
export interface OperatorRoles {
  role(name: string): OperatorRole | null;
}

/** A browser session, looked up by its secret (the cookie's value). */
export interface BrowserSession {
  operator: string;
  role: OperatorRole;
  /** The token unsafe requests must echo in `x-csrf-token`. */
  csrf: string;
  expiresAt: Date;
}

export interface BrowserSessions {
  lookup(secret: string): Promise<BrowserSession | undefined>;
}

export interface AdminContext {
  fleet: FleetServices;
  logger: Logger;
  /** Certificate and device status in memory, kept current by `changes`. */
  certificateStatus: CertificateStatus;
  changes: ChangeFeed;
  operators: OperatorRoles;
  /** Absent: browser sessions are not available (only operator certificates authenticate). */
  sessions?: BrowserSessions;
  /** The gateway of this process, when it runs one (its live sessions; kicking them). */
  gateway?: RunningGateway;
  /** The process's Prometheus registry (GET /metrics); absent: /metrics answers 404. */
  metrics?: FleetMetrics;
}
