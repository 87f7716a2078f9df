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

function encodeLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One TLV with the given tag byte around already-encoded content. */
export function tlv(tag: number, content: Buffer | readonly Buffer[]): Buffer {
  const body = Buffer.isBuffer(content) ? content : Buffer.concat(content as Buffer[]);
  const len = body.length;
  // Short and one/two-byte lengths cover almost everything we build; avoid the generic path.
  if (len < 0x80) {
    const out = Buffer.allocUnsafe(2 + len);
    out[0] = tag;
    out[1] = len;
    body.copy(out, 2);
    return out;
  }
  if (len < 0x100) {
    const out = Buffer.allocUnsafe(3 + len);
    out[0] = tag;
    out[1] = 0x81;
    out[2] = len;
    body.copy(out, 3);
    return out;
  }
  if (len < 0x10000) {
    const out = Buffer.allocUnsafe(4 + len);
    out[0] = tag;
    out[1] = 0x82;
    out[2] = len >> 8;
    out[3] = len & 0xff;
    body.copy(out, 4);
    return out;
  }
  return Buffer.concat([Buffer.from([tag]), encodeLength(len), body]);
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

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, Zulu. */
export function time(date: Date): Buffer {
  const y = date.getUTCFullYear();
  const rest =
    pad2(date.getUTCMonth() + 1) +
    pad2(date.getUTCDate()) +
    pad2(date.getUTCHours()) +
    pad2(date.getUTCMinutes()) +
    pad2(date.getUTCSeconds()) +
    "Z";
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(pad2(y % 100) + rest, "latin1"));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(String(y).padStart(4, "0") + rest, "latin1"));
}

export function generalizedTime(date: Date): Buffer {
  const s =
    String(date.getUTCFullYear()).padStart(4, "0") +
    pad2(date.getUTCMonth() + 1) +
    pad2(date.getUTCDate()) +
    pad2(date.getUTCHours()) +
    pad2(date.getUTCMinutes()) +
    pad2(date.getUTCSeconds()) +
    "Z";
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(s, "latin1"));
}
