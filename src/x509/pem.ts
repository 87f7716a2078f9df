// PEM with OpenSSL's labels and a trailing newline.
import { toBase64Body } from "./base64.js";

export class PemError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PemError";
  }
}

/** A PEM block: the EST base64 body (64-character lines, each ending in a newline) between the armour lines. */
export function toPem(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${toBase64Body(der)}-----END ${label}-----\n`;
}

export interface PemBlock {
  label: string;
  der: Buffer;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/=\s]*$/;

/** Every PEM block in the text, in order. Text outside blocks (e.g. openssl's "Bag Attributes") is ignored. */
export function parsePemBlocks(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) {
    const [, begin, body, end] = m;
    if (begin !== end) throw new PemError(`PEM block "BEGIN ${begin}" ends with "END ${end}"`);
    if (/^[A-Za-z-]+:/m.test(body!)) throw new PemError(`PEM block "${begin}" has headers (encrypted legacy PEM is not supported)`);
    if (!BASE64_BODY.test(body!)) throw new PemError(`PEM block "${begin}" contains characters that are not base64`);
    const compact = body!.replace(/\s+/g, "");
    if (compact.length % 4 !== 0) throw new PemError(`PEM block "${begin}" has a truncated base64 body`);
    blocks.push({ label: begin!, der: Buffer.from(compact, "base64") });
  }
  return blocks;
}

/** The single block with one of the accepted labels; a clear error names what was found instead. */
export function fromPem(text: string, accepted: readonly string[]): Buffer {
  const blocks = parsePemBlocks(text);
  if (blocks.length === 0) throw new PemError(`no PEM block found (expected ${accepted.join(" or ")})`);
  const match = blocks.filter((b) => accepted.includes(b.label));
  if (match.length === 0) throw new PemError(`wrong PEM label "${blocks[0]!.label}" (expected ${accepted.join(" or ")})`);
  if (match.length > 1) throw new PemError(`more than one ${accepted[0]} PEM block`);
  return match[0]!.der;
}

/** True when a PEM block starts anywhere in the input (openssl -text output puts a dump first). */
export function looksLikePem(input: Buffer | string): boolean {
  return input.includes("-----BEGIN ");
}
