// The gateway's counters, kept in one object for the metrics endpoint to come (Prometheus text:
// each field a counter or gauge, each map a label).

export interface GatewayCounters {
  connections: { current: number; total: number };
  /** CONNECTs refused, by reason (admission's refusal codes, "mqtt5", "will", ...). */
  refused: Record<string, number>;
  messages: { in: number; out: number };
  bytes: { in: number; out: number };
  /** Denied requests by reason ("publish", "subscribe", "receive", "audit-publish", ...). */
  denials: Record<string, number>;
  /** TLS handshakes that failed, by OpenSSL's reason (tlsClientError). */
  handshakeFailures: Record<string, number>;
  /** Clients a limit paused, and clients the gateway disconnected, by reason. */
  throttled: number;
  disconnected: Record<string, number>;
}

export function newCounters(): GatewayCounters {
  return {
    connections: { current: 0, total: 0 },
    refused: {},
    messages: { in: 0, out: 0 },
    bytes: { in: 0, out: 0 },
    denials: {},
    handshakeFailures: {},
    throttled: 0,
    disconnected: {},
  };
}

/** Adds one to counter[reason]. */
export function bump(counter: Record<string, number>, reason: string, by = 1): void {
  counter[reason] = (counter[reason] ?? 0) + by;
}
