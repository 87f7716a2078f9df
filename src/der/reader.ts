// Strict DER reader: definite, minimal lengths; every element must fit inside its parent.
// Errors carry the byte offset so callers can report precisely what is malformed.

export class DerError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} at byte ${offset}`);
    this.name = "DerError";
  }
}

export interface Element {
  tag: number;
  /** Offset of the tag byte in the source buffer. */
  start: number;
  /** Offset of the first content byte. */
  contentStart: number;
  /** Offset just past the element. */
  end: number;
  source: Buffer;
}

export function readElement(source: Buffer, offset: number, limit: number = source.length): Element {
  if (offset >= limit) throw new DerError("unexpected end of data (truncated)", offset);
  const tag = source[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte tags are not supported", offset);
  if (offset + 1 >= limit) throw new DerError("unexpected end of data in length (truncated)", offset + 1);
  const first = source[offset + 1]!;
  let length: number;
  let contentStart: number;
  if (first < 0x80) {
    length = first;
    contentStart = offset + 2;
  } else if (first === 0x80) {
    throw new DerError("indefinite length is not DER", offset + 1);
  } else {
    const count = first & 0x7f;
    if (count > 4) throw new DerError("length too large", offset + 1);
    if (offset + 2 + count > limit) throw new DerError("unexpected end of data in length (truncated)", offset + 1);
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + source[offset + 2 + i]!;
    if (source[offset + 2] === 0 || length < 0x80) throw new DerError("non-minimal length encoding is not DER", offset + 1);
    contentStart = offset + 2 + count;
  }
  const end = contentStart + length;
  if (end > limit) throw new DerError(`element of length ${length} runs past the end of its container (truncated)`, offset);
  return { tag, start: offset, contentStart, end, source };
}

export const content = (e: Element): Buffer => e.source.subarray(e.contentStart, e.end);
export const raw = (e: Element): Buffer => e.source.subarray(e.start, e.end);

/** Parses exactly one element spanning the whole buffer. */
export function readRoot(source: Buffer): Element {
  const e = readElement(source, 0);
  if (e.end !== source.length) throw new DerError(`${source.length - e.end} trailing bytes after the outer element`, e.end);
  return e;
}

/** The children of a constructed element, all of which must tile its content exactly. */
export function children(parent: Element): Element[] {
  if (!(parent.tag & 0x20)) throw new DerError("expected a constructed element", parent.start);
  const out: Element[] = [];
  let offset = parent.contentStart;
  while (offset < parent.end) {
    const child = readElement(parent.source, offset, parent.end);
    out.push(child);
    offset = child.end;
  }
  return out;
}

export function expectTag(e: Element | undefined, tag: number, what: string): Element {
  if (!e) throw new DerError(`missing ${what}`, 0);
  if (e.tag !== tag) throw new DerError(`expected ${what} (tag 0x${tag.toString(16)}), found tag 0x${e.tag.toString(16)}`, e.start);
  return e;
}

export function readOid(e: Element): string {
  expectTag(e, 0x06, "OBJECT IDENTIFIER");
  const bytes = content(e);
  if (bytes.length === 0) throw new DerError("empty OBJECT IDENTIFIER", e.start);
  const arcs: bigint[] = [];
  let value = 0n;
  let fresh = true;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (fresh && b === 0x80) throw new DerError("non-minimal OID arc", e.contentStart + i);
    value = (value << 7n) | BigInt(b & 0x7f);
    fresh = false;
    if (!(b & 0x80)) {
      arcs.push(value);
      value = 0n;
      fresh = true;
    }
  }
  if (!fresh) throw new DerError("truncated OID arc", e.end);
  const first = arcs[0]!;
  const head = first < 40n ? [0n, first] : first < 80n ? [1n, first - 40n] : [2n, first - 80n];
  return [...head, ...arcs.slice(1)].join(".");
}

/** INTEGER as unsigned magnitude; rejects negative and non-minimal encodings. */
export function readUnsignedInteger(e: Element): Buffer {
  expectTag(e, 0x02, "INTEGER");
  const bytes = content(e);
  if (bytes.length === 0) throw new DerError("empty INTEGER", e.start);
  if (bytes.length > 1 && ((bytes[0] === 0 && !(bytes[1]! & 0x80)) || (bytes[0] === 0xff && bytes[1]! & 0x80)))
    throw new DerError("non-minimal INTEGER", e.start);
  if (bytes[0]! & 0x80) throw new DerError("negative INTEGER", e.start);
  return bytes[0] === 0 && bytes.length > 1 ? bytes.subarray(1) : bytes;
}

export function readSmallInteger(e: Element): number {
  const magnitude = readUnsignedInteger(e);
  if (magnitude.length > 6) throw new DerError("INTEGER too large", e.start);
  return magnitude.readUIntBE(0, magnitude.length);
}

/** BIT STRING content without the unused-bits octet (which must be 0 for keys and signatures). */
export function readBitStringBytes(e: Element): Buffer {
  expectTag(e, 0x03, "BIT STRING");
  const bytes = content(e);
  if (bytes.length === 0) throw new DerError("empty BIT STRING", e.start);
  if (bytes[0] !== 0) throw new DerError("BIT STRING with unused bits where whole octets are required", e.start);
  return bytes.subarray(1);
}

// Offset-based navigation for parsers that walk a structure field by field without building
// children() arrays (the OCSP request parser runs on every status request).

/** The element at `offset` inside `parent`, or a DerError naming what is missing. */
export function childAt(parent: Element, offset: number, what: string): Element {
  if (offset >= parent.end) throw new DerError(`missing ${what}`, offset);
  return readElement(parent.source, offset, parent.end);
}

/** The single element an EXPLICIT tag (or any one-element wrapper) holds. */
export function onlyChild(wrapper: Element, what: string): Element {
  const inner = childAt(wrapper, wrapper.contentStart, what);
  if (inner.end !== wrapper.end) throw new DerError(`trailing data after ${what}`, inner.end);
  return inner;
}

/** `offset` must be the end of `parent`: nothing may follow its last expected field. */
export function expectEnd(parent: Element, offset: number, what: string): void {
  if (offset !== parent.end) throw new DerError(`unexpected data at the end of ${what}`, offset);
}

/** Whether the element's content is exactly `expected` (e.g. an OID's content octets), without copying. */
export function contentEquals(e: Element, expected: Buffer): boolean {
  return e.end - e.contentStart === expected.length && e.source.compare(expected, 0, expected.length, e.contentStart, e.end) === 0;
}
