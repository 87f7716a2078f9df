// When to renew and how long to wait after a failure. Pure functions of their inputs.

/** Renewal happens at this fraction of the certificate lifetime (notBefore..notAfter). */
export const RENEW_FRACTION = 2 / 3;
/** The renewal time is spread by up to this fraction of the lifetime either way. */
export const JITTER_FRACTION = 0.05;

export interface RenewalWindow {
  /** The nominal renewal time: notBefore + 2/3 of the lifetime. */
  nominal: number;
  earliest: number;
  latest: number;
}

export function renewalWindow(notBefore: number, notAfter: number): RenewalWindow {
  const lifetime = Math.max(0, notAfter - notBefore);
  const nominal = notBefore + lifetime * RENEW_FRACTION;
  const spread = lifetime * JITTER_FRACTION;
  return { nominal, earliest: nominal - spread, latest: nominal + spread };
}

/**
 * The time (ms since epoch) to renew a certificate: 2/3 of its lifetime, moved by a jitter
 * uniform in +-5% of the lifetime so that a fleet enrolled at once does not renew at once.
 * `random` is uniform in [0, 1). The result never leaves [notBefore, notAfter). A time in the
 * past means "renew now".
 */
export function renewalTime(notBefore: number, notAfter: number, random: () => number = Math.random): number {
  const w = renewalWindow(notBefore, notAfter);
  const t = w.earliest + (w.latest - w.earliest) * clamp01(random());
  return Math.min(Math.max(t, notBefore), Math.max(notBefore, notAfter - 1));
}

export interface BackoffOptions {
  /** First delay (default 1 s); doubled per failed attempt. */
  baseMs?: number;
  /** Upper bound (default 60 s); also never more than 1/10 of the certificate lifetime. */
  maxMs?: number;
  /** Honoured Retry-After values are capped at this (default 1 h). */
  maxRetryAfterMs?: number;
}

export const DEFAULT_BACKOFF = { baseMs: 1_000, maxMs: 60_000, maxRetryAfterMs: 3_600_000 } as const;

/** The cap for one certificate: min(maxMs, lifetime / 10), and at least 1 ms. */
export function backoffCap(lifetimeMs: number, options: BackoffOptions = {}): number {
  const maxMs = options.maxMs ?? DEFAULT_BACKOFF.maxMs;
  return Math.max(1, Math.min(maxMs, lifetimeMs > 0 ? lifetimeMs / 10 : maxMs));
}

/**
 * Delay before retry number `attempt` (0 for the first retry): base * 2^attempt, capped, then
 * "equal jitter" (between half and all of it). A server's Retry-After is a lower bound,
 * itself capped at maxRetryAfterMs.
 */
export function backoffDelay(
  attempt: number,
  lifetimeMs: number,
  random: () => number = Math.random,
  retryAfterMs?: number,
  options: BackoffOptions = {},
): number {
  const cap = backoffCap(lifetimeMs, options);
  const base = Math.min(options.baseMs ?? DEFAULT_BACKOFF.baseMs, cap);
  const exp = Math.min(cap, base * 2 ** Math.min(Math.max(0, attempt), 52));
  const jittered = exp / 2 + (exp / 2) * clamp01(random());
  const floor = retryAfterMs === undefined ? 0 : Math.min(retryAfterMs, options.maxRetryAfterMs ?? DEFAULT_BACKOFF.maxRetryAfterMs);
  return Math.max(jittered, floor);
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(Math.max(x, 0), 1) : 0.5;
}

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "10m", "90s", "1h30m", "500ms", or bare seconds, to milliseconds. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t) * 1000;
  if (!/^(\d+(ms|s|m|h|d))+$/.test(t)) return undefined;
  let total = 0;
  for (const m of t.matchAll(/(\d+)(ms|s|m|h|d)/g)) total += Number(m[1]) * UNITS[m[2]!]!;
  return total;
}
