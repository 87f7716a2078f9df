// Base64 bodies as EST (RFC 7030 4.1.3, 4.2, 4.5) sends them: Content-Transfer-Encoding: base64,
// i.e. RFC 2045 base64 broken into lines. Pure: no I/O.

export class Base64Error extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Base64Error";
  }
}

/** Standard base64 with a line break after every 64 characters and after the last line ("" for no bytes). */
export function toBase64Body(der: Buffer): string {
  const b64 = der.toString("base64");
  let out = "";
  for (let i = 0; i < b64.length; i += 64) out += b64.slice(i, i + 64) + "\n";
  return out;
}

// 0: not base64, 1: alphabet, 2: whitespace (skipped), 3: "=" padding.
const CLASS = new Uint8Array(128);
for (const ch of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") CLASS[ch.charCodeAt(0)] = 1;
for (const code of [0x20, 0x09, 0x0a, 0x0d, 0x0b, 0x0c]) CLASS[code] = 2;
CLASS[0x3d] = 3;

function describeChar(code: number): string {
  if (code >= 0x21 && code <= 0x7e) return `"${String.fromCharCode(code)}"`;
  return `0x${code.toString(16).padStart(2, "0")}`;
}

export interface Base64Options {
  /** Whitespace is skipped (true, the default: MIME line breaks) or refused (false: base64 in a URL). */
  whitespace?: boolean;
}

/**
 * Decodes a base64 body. Whitespace anywhere (spaces, tabs, LF, CRLF) is ignored unless
 * `whitespace: false`; anything else that is not in the standard alphabet (including
 * base64url's "-" and "_"), "=" anywhere but as one or two final padding characters, a length
 * that is not a multiple of 4 (truncated or unpadded) and an empty body are refused with a
 * Base64Error naming the problem.
 * A Buffer is read as bytes, so non-ASCII input is reported rather than mis-decoded.
 */
export function fromBase64Body(text: string | Buffer, options: Base64Options = {}): Buffer {
  const skipWhitespace = options.whitespace ?? true;
  const length = text.length;
  const codeAt = typeof text === "string" ? (i: number) => text.charCodeAt(i) : (i: number) => text[i]!;
  const compact = Buffer.allocUnsafe(length);
  let n = 0;
  let padding = 0;
  let paddingAt = -1;
  for (let i = 0; i < length; i++) {
    const code = codeAt(i);
    const kind = code < 128 ? CLASS[code]! : 0;
    if (kind === 2 && skipWhitespace) continue;
    if (kind === 0 || kind === 2) throw new Base64Error(`bad base64: character ${describeChar(code)} at offset ${i} is not base64`);
    if (kind === 3) {
      if (padding === 0) paddingAt = i;
      padding++;
    } else if (padding > 0) {
      throw new Base64Error(`bad base64: data after "=" padding (padding starts at offset ${paddingAt})`);
    }
    compact[n++] = code;
  }
  if (n === 0) throw new Base64Error("bad base64: empty body");
  if (padding > 2) throw new Base64Error(`bad base64: ${padding} "=" padding characters (at most 2)`);
  if (n % 4 !== 0) throw new Base64Error(`bad base64: ${n} base64 characters is not a multiple of 4 (truncated, or missing "=" padding)`);
  return Buffer.from(compact.toString("latin1", 0, n), "base64");
}
