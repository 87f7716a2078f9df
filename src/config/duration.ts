// Durations as operators write them: 30s, 15m, 24h, 30d, 2w, 5y (a year is 365 days).
const UNIT_MS: Record<string, number> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  y: 365 * 86_400_000,
};

export function parseDuration(text: string): number {
  const m = /^\s*(\d+)\s*([smhdwy])\s*$/.exec(text);
  if (!m) throw new RangeError(`invalid duration "${text}" (use a number and a unit: s, m, h, d, w, y; e.g. 30d)`);
  const ms = Number(m[1]) * UNIT_MS[m[2]!]!;
  if (ms <= 0) throw new RangeError(`duration "${text}" must be positive`);
  return ms;
}

export function formatDuration(ms: number): string {
  for (const unit of ["y", "w", "d", "h", "m", "s"]) {
    const size = UNIT_MS[unit]!;
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${Math.round(ms / 1000)}s`;
}
