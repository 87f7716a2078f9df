// Failed authentications are security events, but a flood must not flood the audit log: they
// are counted per (source, device, reason) and written as one audit row per key and interval.
import { appendAudit } from "../audit/log.js";
import type { Fleet } from "./fleet.js";

interface Tally {
  address: string;
  deviceId: string | null;
  reason: string;
  via: string;
  count: number;
  first: string;
  last: string;
}

export class AuthFailureLog {
  private tallies = new Map<string, Tally>();
  private timer: NodeJS.Timeout;

  constructor(
    private readonly fleet: Fleet,
    intervalMs = 60_000,
  ) {
    this.timer = setInterval(() => void this.flush().catch(() => {}), intervalMs);
    this.timer.unref();
  }

  record(failure: { address: string; deviceId?: string; reason: string; via: string }): void {
    const key = `${failure.address}\u0000${failure.deviceId ?? ""}\u0000${failure.reason}`;
    const now = new Date().toISOString();
    const tally = this.tallies.get(key);
    if (tally) {
      tally.count++;
      tally.last = now;
    } else if (this.tallies.size < 10_000) {
      this.tallies.set(key, {
        address: failure.address,
        deviceId: failure.deviceId ?? null,
        reason: failure.reason,
        via: failure.via,
        count: 1,
        first: now,
        last: now,
      });
    }
  }

  /** Writes one audit event per tally and starts a new interval. */
  async flush(): Promise<void> {
    if (this.tallies.size === 0) return;
    const tallies = [...this.tallies.values()];
    this.tallies = new Map();
    await this.fleet.store.transaction((tx) =>
      appendAudit(
        tx,
        tallies.map((t) => ({
          actor: `address:${t.address}`,
          action: "auth.failure",
          subject: t.deviceId ? `device:${t.deviceId}` : `address:${t.address}`,
          details: { reason: t.reason, via: t.via, count: t.count, first: t.first, last: t.last },
        })),
      ),
    );
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
