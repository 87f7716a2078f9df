// Fixed-window counters per key (a source address, see sourceKey): failed authentications, and
// requests to unauthenticated endpoints that cost the server a write (renewal challenges).
// `now` is in milliseconds, from the fleet's clock.
//
// Bounded: at most `maxKeys` windows. When full (after dropping ended windows), a source not yet
// tracked is treated as over its limit until windows end: the alternative, not counting it, would
// make a source unlimited exactly when someone floods the table. Being over the limit refuses only
// failures (a valid credential still succeeds), so a real robot is not locked out by this.
//
// IPv6: sourceKey counts a /64. Someone holding a /48 has 65,536 of them; once `widenAfter` /64s
// of one /48 have failed within a window, that whole /48 is counted as one source for the window.
export class FailureLimiter {
  private windows = new Map<string, { start: number; count: number }>();
  /** The /64s of each /48 seen failing in the current window (at most widenAfter each). */
  private subnets = new Map<string, { start: number; seen: Set<string> }>();
  private prunedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly limit: number,
    private readonly windowMs = 60_000,
    private readonly maxKeys = 100_000,
    private readonly widenAfter = 16,
  ) {}

  /** Seconds until the key may try again, or 0 when it may try now. */
  blockedFor(key: string, now: number): number {
    const k = this.counted(key, now);
    const w = this.windows.get(k);
    if (!w && this.isFull(now)) return Math.max(1, Math.ceil(this.windowMs / 1000));
    if (!w || now - w.start >= this.windowMs || w.count < this.limit) return 0;
    return Math.max(1, Math.ceil((w.start + this.windowMs - now) / 1000));
  }

  fail(key: string, now: number): void {
    this.noteSubnet(key, now);
    const k = this.counted(key, now);
    const w = this.windows.get(k);
    if (w && now - w.start < this.windowMs) {
      w.count++;
      return;
    }
    if (w || !this.isFull(now)) this.windows.set(k, { start: now, count: 1 });
  }

  /** Counts one request unless the key is over its limit; returns the seconds to wait then, else 0. */
  take(key: string, now: number): number {
    const wait = this.blockedFor(key, now);
    if (wait === 0) this.fail(key, now);
    return wait;
  }

  /** The key a source is counted under: its own, or its /48 once that /48 is widened. */
  private counted(key: string, now: number): string {
    const wide = slash48(key);
    if (!wide) return key;
    const s = this.subnets.get(wide);
    return s && now - s.start < this.windowMs && s.seen.size >= this.widenAfter ? wide : key;
  }

  private noteSubnet(key: string, now: number): void {
    const wide = slash48(key);
    if (!wide) return;
    let s = this.subnets.get(wide);
    if (!s || now - s.start >= this.windowMs) {
      if (this.subnets.size >= this.maxKeys && now - this.prunedAt >= 1000) this.prune(now);
      if (this.subnets.size >= this.maxKeys) return;
      this.subnets.set(wide, (s = { start: now, seen: new Set() }));
    }
    if (s.seen.size < this.widenAfter) s.seen.add(key);
  }

  private isFull(now: number): boolean {
    if (this.windows.size < this.maxKeys) return false;
    // A full table is scanned at most once a second, not on every request from a new source.
    if (now - this.prunedAt >= 1000) this.prune(now);
    return this.windows.size >= this.maxKeys;
  }

  private prune(now: number): void {
    this.prunedAt = now;
    for (const [k, w] of this.windows) if (now - w.start >= this.windowMs) this.windows.delete(k);
    for (const [k, s] of this.subnets) if (now - s.start >= this.windowMs) this.subnets.delete(k);
  }
}

/** "2001:db8:1::/48" for a "2001:db8:1:2::/64" key, else undefined. */
function slash48(key: string): string | undefined {
  const m = /^([0-9a-f]{1,4}:[0-9a-f]{1,4}:[0-9a-f]{1,4}):[0-9a-f]{1,4}::\/64$/.exec(key);
  return m ? `${m[1]}::/48` : undefined;
}
