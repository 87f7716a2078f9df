// Failed authentications (and refused factory re-enrollments) are security events, but a flood
// must not flood the audit log. They are tallied per source and written as one audit row per
// tally and interval. A source (an address, or the group its transport counts it in: an IPv6 /64)
// gets at most MAX_DETAILED_PER_SOURCE tallies that name a device and reason; past that, its
// failures go to one per-source tally, so a source sends at most MAX_DETAILED_PER_SOURCE + 1 rows
// per interval however many device ids it makes up. Past MAX_SOURCES sources, the rest share one
// overflow tally: the rows per interval stay bounded by a constant.
import type { FleetServices } from "../services.js";

/** Tallies naming a device and reason, per source and interval. */
export const MAX_DETAILED_PER_SOURCE = 4;
/** Sources tallied separately per interval. */
export const MAX_SOURCES = 2_000;

export interface FailureRecord {
  address: string;
  /** The bucket the source is counted in (e.g. an IPv6 /64); defaults to the address. */
  source?: string;
  deviceId?: string;
  reason: string;
  via: string;
  /** The audit action; "auth.failure" unless given (e.g. "enrollment.refuse"). */
  action?: string;
  /** Further details that tell tallies apart (e.g. the factory certificate's serial). */
  details?: Record<string, string>;
}

interface Tally {
  action: string;
  address: string;
  deviceId: string | null;
  reason: string;
  via: string;
  extra: Record<string, string>;
  count: number;
  first: string;
  last: string;
}

interface SourceTallies {
  detailed: number;
  /** The per-source tally once the detailed ones are used up. */
  rest?: Tally;
}

export class AuthFailureLog {
  private tallies = new Map<string, Tally>();
  private sources = new Map<string, SourceTallies>();
  private overflow: Tally | undefined;
  private timer: NodeJS.Timeout;

  constructor(
    private readonly fleet: FleetServices,
    intervalMs = 60_000,
    private readonly now: () => Date = () => fleet.clock.now(),
  ) {
    this.timer = setInterval(() => void this.flush().catch(() => {}), intervalMs);
    this.timer.unref();
  }

  record(failure: FailureRecord): void {
    const at = this.now().toISOString();
    const action = failure.action ?? "auth.failure";
    const extra = failure.details ?? {};
    const sourceKey = failure.source ?? failure.address;
    const key = [sourceKey, failure.address, failure.deviceId ?? "", failure.reason, action, JSON.stringify(extra)].join("\u0000");
    const tally = this.tallies.get(key);
    if (tally) return bump(tally, at);
    let source = this.sources.get(sourceKey);
    if (!source) {
      if (this.sources.size >= MAX_SOURCES) {
        if (this.overflow) bump(this.overflow, at);
        else this.overflow = newTally("auth.failure", "*", null, "many-sources", failure.via, {}, at);
        return;
      }
      this.sources.set(sourceKey, (source = { detailed: 0 }));
    }
    if (source.detailed < MAX_DETAILED_PER_SOURCE) {
      source.detailed++;
      this.tallies.set(key, newTally(action, failure.address, failure.deviceId ?? null, failure.reason, failure.via, extra, at));
    } else if (source.rest) bump(source.rest, at);
    else source.rest = newTally("auth.failure", sourceKey, null, "many-devices", failure.via, {}, at);
  }

  /** Writes one audit event per tally and starts a new interval. */
  async flush(): Promise<void> {
    const tallies = [...this.tallies.values()];
    for (const s of this.sources.values()) if (s.rest) tallies.push(s.rest);
    if (this.overflow) tallies.push(this.overflow);
    this.tallies = new Map();
    this.sources = new Map();
    this.overflow = undefined;
    if (tallies.length === 0) return;
    const at = this.now();
    await this.fleet.store.transaction((tx) =>
      tx.audit.append(
        tallies.map((t) => ({
          actor: `address:${t.address}`,
          action: t.action,
          subject: t.deviceId ? `device:${t.deviceId}` : `address:${t.address}`,
          details: {
            reason: t.reason,
            via: t.via,
            ...t.extra,
            ...(t.action === "auth.failure" ? {} : { address: t.address }),
            count: t.count,
            first: t.first,
            last: t.last,
          },
          at,
        })),
      ),
    );
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}

function newTally(
  action: string,
  address: string,
  deviceId: string | null,
  reason: string,
  via: string,
  extra: Record<string, string>,
  at: string,
): Tally {
  return { action, address, deviceId, reason, via, extra, count: 1, first: at, last: at };
}

function bump(tally: Tally, at: string): void {
  tally.count++;
  tally.last = at;
}
