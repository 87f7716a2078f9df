// The one reader for absolute times: X.509 UTCTime / GeneralizedTime in DER (certificates, CRLs,
// OCSP) and RFC 3339 text from operators (`audit list --since`). Relative durations ("1h") stay
// in config/duration.ts. Out-of-range fields are refused, never rolled over the way Date.UTC
// and `new Date(text)` roll them (month 13, Feb 30, hour 24, second 60 all became other times).
// Pure: no clock, no I/O.

export const UTC_TIME_TAG = 0x17;
export const GENERALIZED_TIME_TAG = 0x18;

/** "form": not written the way the format requires; "value": well formed, but no such instant. */
export class InvalidTime extends RangeError {
  constructor(
    message: string,
    readonly problem: "form" | "value",
  ) {
    super(message);
    this.name = "InvalidTime";
  }
}

const GREGORIAN_CYCLE_MS = 146_097 * 86_400_000;
const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function daysIn(year: number, month: number): number {
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1]!;
}

/**
 * Epoch milliseconds of a UTC calendar time, or NaN when the fields name no instant (month 13,
 * day 32, Feb 29 of a common year, hour 24, minute or second 60). Leap seconds are refused: X.509
 * and Date cannot represent them. Years 0-9999.
 */
export function utcMs(year: number, month: number, day: number, hour: number, minute: number, second: number, ms = 0): number {
  if (
    !(year >= 0 && year <= 9999) ||
    !(month >= 1 && month <= 12) ||
    !(day >= 1 && day <= daysIn(year, month)) ||
    !(hour >= 0 && hour <= 23) ||
    !(minute >= 0 && minute <= 59) ||
    !(second >= 0 && second <= 59) ||
    !(ms >= 0 && ms <= 999)
  )
    return NaN;
  // Date.UTC maps years 0-99 to 1900-1999; 400 Gregorian years later the calendar repeats exactly.
  if (year < 100) return Date.UTC(year + 400, month - 1, day, hour, minute, second, ms) - GREGORIAN_CYCLE_MS;
  return Date.UTC(year, month - 1, day, hour, minute, second, ms);
}

function digit(src: Buffer, i: number): number {
  const v = src[i]! - 0x30;
  return v >= 0 && v <= 9 ? v : NaN;
}

const two = (src: Buffer, i: number): number => digit(src, i) * 10 + digit(src, i + 1);
const quoted = (src: Buffer, start: number, end: number): string => `"${src.toString("latin1", start, end)}"`;
const NOT_RFC_5280_FORM = 'is not in the form RFC 5280 requires (whole seconds, "Z")';

/**
 * A DER UTCTime (YYMMDDHHMMSSZ; YY >= 50 is 19YY) or GeneralizedTime (YYYYMMDDHHMMSSZ) read in
 * place from `src[start, end)`, as RFC 5280 4.1.2.5 requires: whole seconds, "Z", a real date.
 * Epoch milliseconds; InvalidTime otherwise. Reads bytes in place: CRLs carry 100k of these.
 */
export function readX509Time(tag: number, src: Buffer, start: number, end: number): number {
  const length = end - start;
  let year: number;
  let p: number;
  if (tag === UTC_TIME_TAG && length === 13) {
    const yy = two(src, start);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
    p = start + 2;
  } else if (tag === GENERALIZED_TIME_TAG && length === 15) {
    year = two(src, start) * 100 + two(src, start + 2);
    p = start + 4;
  } else if (tag === UTC_TIME_TAG || tag === GENERALIZED_TIME_TAG) {
    throw new InvalidTime(`${quoted(src, start, end)} ${NOT_RFC_5280_FORM}`, "form");
  } else {
    throw new InvalidTime(`expected a UTCTime or GeneralizedTime, found tag 0x${tag.toString(16)}`, "form");
  }
  if (src[p + 10] !== 0x5a) throw new InvalidTime(`${quoted(src, start, end)} ${NOT_RFC_5280_FORM}`, "form");
  const ms = utcMs(year, two(src, p), two(src, p + 2), two(src, p + 4), two(src, p + 6), two(src, p + 8));
  if (Number.isNaN(ms)) {
    // NaN from a non-digit is a form error; from a digit field out of range, a value error.
    if (!/^\d+Z$/.test(src.toString("latin1", start, end)))
      throw new InvalidTime(`${quoted(src, start, end)} is not a valid UTCTime or GeneralizedTime`, "form");
    throw new InvalidTime(`${quoted(src, start, end)} is not a valid time`, "value");
  }
  return ms;
}

// RFC 3339 date-time, or a full date alone. "T" and "Z" may be lower case (RFC 3339 5.6 note).
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?([Zz]|[+-]\d{2}:\d{2}))?$/;
const DATE_TIME_WITHOUT_ZONE = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?$/;

/**
 * An RFC 3339 time with its offset ("2026-05-01T12:00:00Z", "2026-05-01T14:00+02:00", fractions
 * truncated to milliseconds), or a date alone ("2026-05-01", meaning 00:00 UTC). A time of day
 * without an offset is refused: it could mean UTC or the local zone. Seconds may be omitted.
 */
export function parseRfc3339(text: string): Date {
  const m = RFC3339.exec(text);
  if (!m) {
    if (DATE_TIME_WITHOUT_ZONE.test(text))
      throw new InvalidTime(`"${text}" has no time zone: add "Z" for UTC or an offset like +02:00`, "form");
    throw new InvalidTime(`"${text}" is not an RFC 3339 time like 2026-05-01T12:00:00Z or a date like 2026-05-01`, "form");
  }
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  const millis = frac ? Number(frac.padEnd(3, "0").slice(0, 3)) : 0;
  const ms = utcMs(Number(y), Number(mo), Number(d), Number(h ?? 0), Number(mi ?? 0), Number(s ?? 0), millis);
  if (Number.isNaN(ms)) throw new InvalidTime(`"${text}" is not a valid time (no such date or time of day)`, "value");
  let offsetMs = 0;
  if (zone && zone !== "Z" && zone !== "z") {
    const oh = Number(zone.slice(1, 3));
    const om = Number(zone.slice(4, 6));
    if (oh > 23 || om > 59) throw new InvalidTime(`"${text}" has an invalid offset ${zone}`, "value");
    offsetMs = (zone[0] === "-" ? -1 : 1) * (oh * 60 + om) * 60_000;
  }
  return new Date(ms - offsetMs);
}
