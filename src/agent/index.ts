// The device agent as a library: enroll, renew, run the renewal loop, report status.
// Imports only src/agent, src/x509, src/der, src/keys and node built-ins (it runs on robots).
export { enroll, readFactoryBundle, type EnrollMode, type EnrollOptions, type EnrollResult } from "./enroll.js";
export { renew, type RenewOptions, type RenewResult } from "./renew.js";
export { runAgent, type RunOptions } from "./runner.js";
export { agentStatus, type AgentStatus } from "./status.js";
export { AgentError, ReEnrollRequired, ServerError, TransportError } from "./errors.js";
export { RegistrationClient, bootstrapRoot, parseServerUrl, type PinnedRoot } from "./client.js";
export { fingerprintOf, parseFingerprint } from "./fingerprint.js";
export { createLogger, silentLogger, type Logger } from "./log.js";
export { systemClock, type Clock } from "./clock.js";
export { backoffDelay, parseDuration, renewalTime, renewalWindow } from "./schedule.js";
export { AGENT_FILES, commitState, loadState, recoverState, type AgentState } from "./state.js";
export { AGENT_KEY_TYPES, expiredRenewalMessage, signExpiredRenewal, type AgentKeyType } from "./request.js";
export {
  connectTelemetry,
  fleetIdentityOf,
  identityFilesIn,
  MqttConnectRefused,
  MqttError,
  MqttSubscribeDenied,
  type FleetIdentity,
  type TelemetryClient,
  type TelemetryFiles,
  type TelemetryMessage,
  type TelemetryOptions,
} from "./mqtt.js";
