// `fleetpki agent status`: what the agent directory holds, read-only.
import { describeKey } from "../x509/algorithms.js";
import { renewalWindow } from "./schedule.js";
import { loadState } from "./state.js";

export interface AgentStatus {
  dir: string;
  device_id: string;
  identity: string | null;
  server: string;
  root_fingerprint: string;
  serial: string;
  key_type: string;
  not_before: string;
  not_after: string;
  expired: boolean;
  /** The nominal renewal time (2/3 of the lifetime); the agent picks a time within renew_window. */
  renew_at: string;
  renew_window: { from: string; to: string };
  renewal_due: boolean;
  /** An interrupted certificate update waits to be finished by the next `agent run`. */
  update_pending: boolean;
}

export function agentStatus(dir: string, now = Date.now()): AgentStatus {
  const s = loadState(dir, { pending: true });
  const w = renewalWindow(s.notBefore.getTime(), s.notAfter.getTime());
  return {
    dir: s.dir,
    device_id: s.deviceId,
    identity: s.spiffeId ?? null,
    server: s.config.server,
    root_fingerprint: s.config.root_fingerprint,
    serial: s.serial,
    key_type: describeKey(s.key),
    not_before: s.notBefore.toISOString(),
    not_after: s.notAfter.toISOString(),
    expired: now >= s.notAfter.getTime(),
    renew_at: new Date(w.nominal).toISOString(),
    renew_window: { from: new Date(w.earliest).toISOString(), to: new Date(w.latest).toISOString() },
    renewal_due: now >= w.earliest,
    update_pending: s.commitPending,
  };
}
