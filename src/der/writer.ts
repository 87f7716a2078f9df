// DER encoding primitives. Everything returns Buffers so callers can precompute constant
// parts once and concatenate them on hot paths.

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Octets of a one-byte tag plus the minimal definite length for `length` content octets. */
export function headerLength(length: number): number {
  return length < 0x80 ? 2 : length < 0x100 ? 3 : length < 0x10000 ? 4 : length < 0x1000000 ? 5 : 6;
}

/**
 * Writes a one-byte tag and the minimal definite DER length at `pos` and returns the position
 * after them. The one header writer: tlv() uses it, and the hot encoders (CRLs, OCSP responses)
 * call it directly to write nested headers into one preallocated buffer (see headerLength).
 */
export function writeHeader(out: Buffer, pos: number, tag: number, length: number): number {
  out[pos++] = tag;
  if (length < 0x80) {
    out[pos++] = length;
  } else if (length < 0x100) {
    out[pos++] = 0x81;
    out[pos++] = length;
  } else if (length < 0x10000) {
    out[pos++] = 0x82;
    out[pos++] = length >>> 8;
    out[pos++] = length & 0xff;
  } else if (length < 0x1000000) {
    out[pos++] = 0x83;
    out[pos++] = length >>> 16;
    out[pos++] = (length >>> 8) & 0xff;
    out[pos++] = length & 0xff;
  } else {
    if (!(length <= 0xffffffff)) throw new RangeError(`DER length ${length} does not fit in four octets`);
    out[pos++] = 0x84;
    out[pos++] = length >>> 24;
    out[pos++] = (length >>> 16) & 0xff;
    out[pos++] = (length >>> 8) & 0xff;
    out[pos++] = length & 0xff;
  }
  return pos;
}

/** One TLV with the given tag byte around already-encoded content. */
export function tlv(tag: number, content: Buffer | readonly Buffer[]): Buffer {
  const body = Buffer.isBuffer(content) ? content : Buffer.concat(content as Buffer[]);
  const out = Buffer.allocUnsafe(headerLength(body.length) + body.length);
  body.copy(out, writeHeader(out, 0, tag, body.length));
  return out;
}

export const sequence = (...items: Buffer[]): Buffer => tlv(TAG.SEQUENCE, items);
export const set = (...items: Buffer[]): Buffer => tlv(TAG.SET, items);
export const octetString = (content: Buffer): Buffer => tlv(TAG.OCTET_STRING, content);
export const nullValue = (): Buffer => Buffer.from([TAG.NULL, 0]);
export const boolean = (value: boolean): Buffer => Buffer.from([TAG.BOOLEAN, 1, value ? 0xff : 0]);
export const utf8String = (s: string): Buffer => tlv(TAG.UTF8_STRING, Buffer.from(s, "utf8"));
export const ia5String = (s: string): Buffer => {
  if (!/^[\x00-\x7f]*$/.test(s)) throw new RangeError("IA5String must be ASCII");
  return tlv(TAG.IA5_STRING, Buffer.from(s, "latin1"));
};
export const printableString = (s: string): Buffer => {
  if (!/^[A-Za-z0-9 '()+,\-./:=?]*$/.test(s)) throw new RangeError("not a PrintableString");
  return tlv(TAG.PRINTABLE_STRING, Buffer.from(s, "latin1"));
};

/** BIT STRING with no unused bits. */
export const bitString = (content: Buffer): Buffer => tlv(TAG.BIT_STRING, [Buffer.from([0]), content]);

/** Context-specific tag: constructed (explicit) or primitive (implicit replacement of a primitive). */
export const explicit = (n: number, content: Buffer): Buffer => tlv(0xa0 | n, content);
export const implicitPrimitive = (n: number, content: Buffer): Buffer => tlv(0x80 | n, content);
export const implicitConstructed = (n: number, content: Buffer | readonly Buffer[]): Buffer => tlv(0xa0 | n, content);

/** INTEGER from unsigned big-endian magnitude bytes (adds the sign octet when needed). */
export function unsignedInteger(magnitude: Buffer): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  const needsPad = trimmed[0]! & 0x80;
  return tlv(TAG.INTEGER, needsPad ? [Buffer.from([0]), trimmed] : trimmed);
}

export function smallInteger(value: number): Buffer {
  if (!Number.isInteger(value) || value < 0 || value > 0x7fffffff) throw new RangeError("smallInteger out of range");
  const bytes: number[] = [];
  let n = value;
  do {
    bytes.unshift(n & 0xff);
    n = Math.floor(n / 256);
  } while (n > 0);
  return unsignedInteger(Buffer.from(bytes));
}

/** KeyUsage-style named bit string: bit 0 is the most significant bit of the first octet. */
export function namedBitString(bits: readonly number[]): Buffer {
  if (bits.length === 0) return tlv(TAG.BIT_STRING, Buffer.from([0]));
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const bit of bits) bytes[bit >> 3]! |= 0x80 >> (bit & 7);
  const unused = 7 - (highest & 7);
  return tlv(TAG.BIT_STRING, [Buffer.from([unused]), bytes]);
}

const oidCache = new Map<string, Buffer>();

/** Encoded OBJECT IDENTIFIER; memoized because the same few OIDs are written on every issuance. */
export function oid(dotted: string): Buffer {
  let encoded = oidCache.get(dotted);
  if (!encoded) {
    encoded = encodeOid(dotted);
    if (oidCache.size < 1024) oidCache.set(dotted, encoded);
  }
  return encoded;
}

function encodeOid(dotted: string): Buffer {
  const arcs = dotted.split(".").map((a) => {
    if (!/^\d+$/.test(a)) throw new RangeError(`bad OID ${dotted}`);
    return BigInt(a);
  });
  if (arcs.length < 2) throw new RangeError(`bad OID ${dotted}`);
  if (arcs[0]! > 2n || (arcs[0]! < 2n && arcs[1]! >= 40n))
    throw new RangeError(`bad OID ${dotted}: first arc must be 0-2, second < 40 under 0 and 1`);
  const out: number[] = [];
  const first = arcs[0]! * 40n + arcs[1]!;
  for (const arc of [first, ...arcs.slice(2)]) {
    const chunk: number[] = [];
    let v = arc;
    do {
      chunk.unshift(Number(v & 0x7fn));
      v >>= 7n;
    } while (v > 0n);
    for (let i = 0; i < chunk.length - 1; i++) chunk[i]! |= 0x80;
    out.push(...chunk);
  }
  return tlv(TAG.OID, Buffer.from(out));
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** "MMDDhhmmssZ" of a date in UTC: the part UTCTime and GeneralizedTime share (whole seconds). */
function monthToSecond(date: Date): string {
  return (
    pad2(date.getUTCMonth() + 1) +
    pad2(date.getUTCDate()) +
    pad2(date.getUTCHours()) +
    pad2(date.getUTCMinutes()) +
    pad2(date.getUTCSeconds()) +
    "Z"
  );
}

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, Zulu. */
export function time(date: Date): Buffer {
  const y = date.getUTCFullYear();
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(pad2(y % 100) + monthToSecond(date), "latin1"));
  return generalizedTime(date);
}

export function generalizedTime(date: Date): Buffer {
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(String(date.getUTCFullYear()).padStart(4, "0") + monthToSecond(date), "latin1"));
}
