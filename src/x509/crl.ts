// X.509 v2 certificate revocation lists (RFC 5280 section 5): a fast encoder for the CRLs our
// CAs publish and a strict parser that refuses anything it could misread (delta CRLs, scoped or
// indirect CRLs, unknown critical extensions) rather than report a wrong revocation status.
import { createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { OID, oidName } from "../der/oids.js";
import {
  DerError,
  children,
  content,
  expectTag,
  raw,
  readBitStringBytes,
  readElement,
  readOid,
  readRoot,
  readSmallInteger,
  readUnsignedInteger,
  type Element,
} from "../der/reader.js";
import { TAG, bitString, explicit, headerLength, sequence, time, tlv, unsignedInteger, writeHeader } from "../der/writer.js";
import { CSR_SIGNATURE_ALGORITHMS } from "./algorithms.js";
import type { ParsedCertificate, ParsedExtension, Signer } from "./certificate.js";
import { DuplicateExtension, authorityKeyIdentifier, certificateKeyId, extension, readExtensionList } from "./extensions.js";
import { InvalidTime, readX509Time } from "./time.js";

/** CRLReason (RFC 5280 5.3.1); 7 is unused. */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10,
} as const;
export type RevocationReason = keyof typeof REVOCATION_REASONS;

// A Map, not `REVOCATION_REASONS[x]`, so a stray "toString" from untyped callers is not a reason.
const REASON_CODES = new Map<string, number>(Object.entries(REVOCATION_REASONS));
/** CRLReason code -> name, for readers of CRL entries and of OCSP answers. */
export const REVOCATION_REASON_NAMES: ReadonlyMap<number, RevocationReason> = new Map<number, RevocationReason>(
  Object.entries(REVOCATION_REASONS).map(([name, code]) => [code, name as RevocationReason]),
);

export interface RevokedEntry {
  /** Lower-case hex of the serial's magnitude, as stored in the database (e.g. 17 octets starting 01). */
  serialHex: string;
  revokedAt: Date;
  /** Omitted or "unspecified": no reasonCode entry extension (RFC 5280 5.3.1: SHOULD be absent). */
  reason?: RevocationReason;
}

export interface CrlOptions {
  crlNumber: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
  entries: readonly RevokedEntry[];
}

export interface CrlIssuer {
  certificate: ParsedCertificate;
  signer: Signer;
}

// ---------------------------------------------------------------------------------------------
// Encoding

// Tag bytes as plain locals: under tsx (how fleetpki runs) every read of an imported TAG.* is a
// getter call, which showed up in profiles of the 100k-entry loop.
const { SEQUENCE, INTEGER, ENUMERATED, UTC_TIME, GENERALIZED_TIME } = TAG;

const VERSION_2 = Buffer.from([INTEGER, 1, 1]);
/** CRL numbers are at most 20 octets (RFC 5280 5.2.3), i.e. below 2^159 as a positive INTEGER. */
const MAX_CRL_NUMBER = (1n << 159n) - 1n;

/**
 * crlEntryExtensions holding only a reasonCode, indexed by code: SEQUENCE { Extension {
 * cRLReason, OCTET STRING { ENUMERATED code } } }. Fourteen constant bytes copied into an entry.
 */
const REASON_EXTENSIONS: Buffer[] = [];
for (const code of REVOCATION_REASON_NAMES.keys())
  REASON_EXTENSIONS[code] = sequence(extension(OID.cRLReason, false, tlv(ENUMERATED, Buffer.from([code]))));

/** ASCII hex digit -> value, -1 for anything else. */
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX_VALUE[0x30 + i] = i;
for (let i = 0; i < 6; i++) HEX_VALUE[0x41 + i] = HEX_VALUE[0x61 + i] = 10 + i;

function hexDigit(s: string, i: number): number {
  const c = s.charCodeAt(i);
  return c < 128 ? HEX_VALUE[c]! : -1;
}

// Epoch milliseconds bounding what X.509 times can say, and RFC 5280's UTCTime window.
const MIN_TIME_MS = -62167219200000; // 0000-01-01T00:00:00Z
const MAX_TIME_MS = 253402300799999; // 9999-12-31T23:59:59.999Z
const UTC_TIME_FROM_MS = -631152000000; // 1950-01-01T00:00:00Z
const UTC_TIME_UNTIL_MS = 2524608000000; // 2050-01-01T00:00:00Z

/** Epoch milliseconds of a Date X.509 can express; RangeError otherwise. */
function checkedMs(d: unknown, what: string): number {
  const ms = d instanceof Date ? d.getTime() : NaN;
  if (!(ms >= MIN_TIME_MS && ms <= MAX_TIME_MS)) throw new RangeError(`${what} must be a valid Date in the years 0000-9999`);
  return ms;
}

/** Same rule as der/writer time(): UTCTime for 1950-2049, GeneralizedTime otherwise. */
const timeSize = (ms: number): number => (ms >= UTC_TIME_FROM_MS && ms < UTC_TIME_UNTIL_MS ? 15 : 17);

function writeTwoDigits(buf: Buffer, pos: number, v: number): void {
  buf[pos] = 0x30 + ((v / 10) | 0);
  buf[pos + 1] = 0x30 + (v % 10);
}

/**
 * Writes the time TLV for epoch milliseconds, whole seconds (the sub-second part is dropped, as
 * der/writer time() does). Calendar fields come from integer arithmetic (Hinnant's
 * civil_from_days) instead of six Date getters per entry, which profiling showed to be the
 * single largest cost of encoding 100,000 entries.
 */
function writeTime(buf: Buffer, pos: number, ms: number): number {
  const secs = Math.floor(ms / 1000);
  const days = Math.floor(secs / 86400);
  let sod = secs - days * 86400;
  const z = days + 719468; // days since 0000-03-01
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  if (ms >= UTC_TIME_FROM_MS && ms < UTC_TIME_UNTIL_MS) {
    buf[pos] = UTC_TIME;
    buf[pos + 1] = 13;
    writeTwoDigits(buf, pos + 2, year % 100);
    pos += 4;
  } else {
    buf[pos] = GENERALIZED_TIME;
    buf[pos + 1] = 15;
    writeTwoDigits(buf, pos + 2, (year / 100) | 0);
    writeTwoDigits(buf, pos + 4, year % 100);
    pos += 6;
  }
  writeTwoDigits(buf, pos, month);
  writeTwoDigits(buf, pos + 2, day);
  const hour = (sod / 3600) | 0;
  sod -= hour * 3600;
  const minute = (sod / 60) | 0;
  writeTwoDigits(buf, pos + 4, hour);
  writeTwoDigits(buf, pos + 6, minute);
  writeTwoDigits(buf, pos + 8, sod - minute * 60);
  buf[pos + 10] = 0x5a; // 'Z'
  return pos + 11;
}

function bigintMagnitude(n: bigint): Buffer {
  const hex = n.toString(16);
  return Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
}

/**
 * An X.509 v2 CRL in DER, signed by the issuer: issuer = the issuer certificate's subject (exact
 * bytes), AKI = the issuer's SKI, a non-critical cRLNumber, signature algorithm = the signer's
 * scheme. Entries keep their given order; an empty list omits revokedCertificates (RFC 5280).
 *
 * All entries are encoded into one preallocated buffer (lengths are computed in a first pass, no
 * per-entry Buffers): 100,000 entries (4.7 MB) take ~70-90 ms on 2 vCPUs, ~13 ms of it the
 * signature (test/crl.test.ts logs the figure). Sub-second parts of all times are dropped.
 * Invalid input (bad hex, invalid dates, removeFromCRL, unknown reasons) throws a RangeError.
 */
export function buildCrl(issuer: CrlIssuer, options: CrlOptions): Buffer {
  const { crlNumber, entries } = options;
  const thisUpdateMs = checkedMs(options.thisUpdate, "thisUpdate");
  const nextUpdateMs = checkedMs(options.nextUpdate, "nextUpdate");
  if (Math.floor(nextUpdateMs / 1000) <= Math.floor(thisUpdateMs / 1000)) throw new RangeError("nextUpdate must be later than thisUpdate");
  if (typeof crlNumber !== "bigint" || crlNumber < 0n || crlNumber > MAX_CRL_NUMBER)
    throw new RangeError("crlNumber must be a non-negative bigint of at most 20 octets");

  // Pass 1: validate every entry and compute its encoded size.
  const n = entries.length;
  const serialStart = new Int32Array(n); // first significant hex digit (leading 00 octets skipped)
  const serialLen = new Int32Array(n); // INTEGER content length, including a sign octet if needed
  const revokedMs = new Float64Array(n);
  const reasonCode = new Int8Array(n); // -1: no reasonCode extension
  const entryLen = new Int32Array(n); // content length of the entry SEQUENCE
  let entriesLen = 0;
  for (let i = 0; i < n; i++) {
    const entry = entries[i]!;
    const hex = entry.serialHex;
    if (typeof hex !== "string" || hex.length === 0 || hex.length % 2 !== 0)
      throw new RangeError(`entry ${i}: serialHex must be a non-empty, even-length hex string`);
    let start = 0;
    while (start < hex.length - 2 && hex.charCodeAt(start) === 0x30 && hex.charCodeAt(start + 1) === 0x30) start += 2;
    const intLen = (hex.length - start) / 2 + (hexDigit(hex, start) >= 8 ? 1 : 0);
    serialStart[i] = start;
    serialLen[i] = intLen;

    const ms = checkedMs(entry.revokedAt, `entry ${i}: revokedAt`);
    revokedMs[i] = ms;
    let code = -1;
    const reason = entry.reason;
    if (reason !== undefined && reason !== "unspecified") {
      const c = REASON_CODES.get(reason);
      if (c === undefined) throw new RangeError(`entry ${i}: unknown revocation reason "${String(reason)}"`);
      // RFC 5280 5.3.1: removeFromCRL is only for delta CRLs; we publish complete CRLs.
      if (c === REVOCATION_REASONS.removeFromCRL)
        throw new RangeError(`entry ${i}: removeFromCRL belongs in delta CRLs; drop the entry instead`);
      code = c;
    }
    reasonCode[i] = code;
    const len = headerLength(intLen) + intLen + timeSize(ms) + (code >= 0 ? REASON_EXTENSIONS[code]!.length : 0);
    entryLen[i] = len;
    entriesLen += headerLength(len) + len;
  }

  const keyId = certificateKeyId(issuer.certificate);
  const prefix = Buffer.concat([
    VERSION_2,
    issuer.signer.scheme.algorithmIdentifier,
    issuer.certificate.subject,
    time(options.thisUpdate),
    time(options.nextUpdate),
  ]);
  const crlNumberExt = extension(OID.cRLNumber, false, unsignedInteger(bigintMagnitude(crlNumber)));
  const suffix = explicit(0, sequence(authorityKeyIdentifier(keyId), crlNumberExt));
  const revokedLen = n === 0 ? 0 : headerLength(entriesLen) + entriesLen;
  const tbsLen = prefix.length + revokedLen + suffix.length;

  // Pass 2: write the TBSCertList into one buffer of exactly the computed size.
  const tbs = Buffer.allocUnsafe(headerLength(tbsLen) + tbsLen);
  let pos = writeHeader(tbs, 0, SEQUENCE, tbsLen);
  pos += prefix.copy(tbs, pos);
  if (n > 0) {
    pos = writeHeader(tbs, pos, SEQUENCE, entriesLen);
    for (let i = 0; i < n; i++) {
      pos = writeHeader(tbs, pos, SEQUENCE, entryLen[i]!);
      pos = writeHeader(tbs, pos, INTEGER, serialLen[i]!);
      const hex = entries[i]!.serialHex;
      let k = serialStart[i]!;
      if (hexDigit(hex, k) >= 8) tbs[pos++] = 0; // sign octet keeps the INTEGER positive
      // Validated while decoding (one pass over the characters): any -1 makes `bad` negative.
      let bad = 0;
      for (; k < hex.length; k += 2) {
        const hi = hexDigit(hex, k);
        const lo = hexDigit(hex, k + 1);
        bad |= hi | lo;
        tbs[pos++] = (hi << 4) | lo;
      }
      if (bad < 0) throw new RangeError(`entry ${i}: serialHex "${hex}" is not hex`);
      pos = writeTime(tbs, pos, revokedMs[i]!);
      const code = reasonCode[i]!;
      if (code >= 0) {
        const ext = REASON_EXTENSIONS[code]!;
        tbs.set(ext, pos);
        pos += ext.length;
      }
    }
  }
  pos += suffix.copy(tbs, pos);
  // allocUnsafe: every byte must have been written, or stale memory would be signed and published.
  if (pos !== tbs.length) throw new Error(`internal error: CRL encoder wrote ${pos} of ${tbs.length} bytes`);

  // signTbs-style outer SEQUENCE, assembled with a single copy of the (possibly large) TBS.
  const { scheme, key } = issuer.signer;
  const signatureBits = bitString(sign(scheme.hash, tbs, key));
  const bodyLen = tbs.length + scheme.algorithmIdentifier.length + signatureBits.length;
  const out = Buffer.allocUnsafe(headerLength(bodyLen) + bodyLen);
  pos = writeHeader(out, 0, SEQUENCE, bodyLen);
  pos += tbs.copy(out, pos);
  pos += scheme.algorithmIdentifier.copy(out, pos);
  pos += signatureBits.copy(out, pos);
  if (pos !== out.length) throw new Error(`internal error: CRL wrapper wrote ${pos} of ${out.length} bytes`);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Parsing

export type CrlErrorReason =
  | "malformed" // not DER, or not the CertificateList structure
  | "unsupported-version" // version present and not v2
  | "invalid-time" // thisUpdate / nextUpdate / revocationDate not a valid UTCTime or GeneralizedTime
  | "algorithm-mismatch" // TBS signature algorithm differs from the outer one (RFC 5280 5.1.1.2)
  | "duplicate-extension"
  | "invalid-extension" // a known extension whose value does not decode
  | "unsupported-critical-extension" // e.g. delta CRL indicator, issuing distribution point
  | "invalid-reason" // reasonCode outside CRLReason
  | "indirect-crl"; // an entry names another certificate issuer

export class CrlError extends Error {
  constructor(
    readonly reason: CrlErrorReason,
    message: string,
  ) {
    super(message);
    this.name = "CrlError";
  }
}

export interface ParsedCrlEntry {
  /** Lower-case hex of the serial's magnitude (same form as ParsedCertificate.serialHex). */
  serialHex: string;
  revokedAt: Date;
  /** Present when the entry carries a reasonCode (including an explicit "unspecified"). */
  reason?: RevocationReason;
}

export interface ParsedCrl {
  der: Buffer;
  /** The signed TBSCertList bytes. */
  tbs: Buffer;
  /** DER Name of the issuer. */
  issuer: Buffer;
  thisUpdate: Date;
  nextUpdate?: Date;
  crlNumber?: bigint;
  /** keyIdentifier of the AKI extension, when present. */
  authorityKeyId?: Buffer;
  entries: ParsedCrlEntry[];
  /** Dotted OID of the signature algorithm. */
  signatureAlgorithm: string;
  signatureValue: Buffer;
  /** Every CRL extension by OID (critical ones are only ever those this parser understands). */
  extensions: Map<string, ParsedExtension>;
}

/** CRL extensions whose meaning we fully implement, so a critical flag on them is harmless. */
const UNDERSTOOD_CRL_EXTENSIONS: ReadonlySet<string> = new Set([OID.cRLNumber, OID.authorityKeyIdentifier]);
/** Entry extensions that do not change which certificate an entry revokes. */
const UNDERSTOOD_ENTRY_EXTENSIONS: ReadonlySet<string> = new Set([OID.cRLReason, OID.invalidityDate, OID.certificateIssuer]);

/** thisUpdate / nextUpdate / revocationDate through the one strict time reader (x509/time.ts). */
function readTime(e: Element | undefined, what: string): Date {
  if (!e) throw new CrlError("malformed", `CRL: missing ${what}`);
  if (e.tag !== UTC_TIME && e.tag !== GENERALIZED_TIME)
    throw new CrlError(
      "invalid-time",
      `CRL: expected ${what} as UTCTime or GeneralizedTime, found tag 0x${e.tag.toString(16)} at byte ${e.start}`,
    );
  try {
    return new Date(readX509Time(e.tag, e.source, e.contentStart, e.end));
  } catch (err) {
    if (err instanceof InvalidTime) throw new CrlError("invalid-time", `CRL: ${what} ${err.message}`);
    throw err;
  }
}

function readExtensions(list: Element, where: string): Map<string, ParsedExtension> {
  const out = new Map<string, ParsedExtension>();
  try {
    for (const ext of readExtensionList(list)) out.set(ext.id, { critical: ext.critical, value: content(ext.value) });
  } catch (e) {
    if (e instanceof DuplicateExtension) throw new CrlError("duplicate-extension", `CRL: ${where} ${e.message}`);
    if (e instanceof DerError) throw new CrlError("malformed", `CRL: ${where} extensions: ${e.message}`);
    throw e;
  }
  return out;
}

/** Decodes one known extension's value; DER errors inside it become "invalid-extension". */
function decodeExtension<T>(id: string, value: Buffer, decode: (root: Element) => T): T {
  try {
    return decode(readRoot(value));
  } catch (e) {
    if (e instanceof DerError) throw new CrlError("invalid-extension", `CRL: ${oidName(id)} extension: ${e.message}`);
    throw e;
  }
}

function rejectUnknownCritical(exts: Map<string, ParsedExtension>, understood: ReadonlySet<string>, where: string): void {
  for (const [id, ext] of exts)
    if (ext.critical && !understood.has(id))
      throw new CrlError(
        "unsupported-critical-extension",
        `CRL: unsupported critical ${where} extension ${oidName(id)}; the CRL cannot be used`,
      );
}

/** The 13 bytes before the code in a reasonCode-only crlEntryExtensions, as buildCrl writes it. */
const REASON_ONLY_PREFIX = REASON_EXTENSIONS[0]!.subarray(0, 13);

function readEntry(el: Element, issuer: Buffer): ParsedCrlEntry {
  expectTag(el, SEQUENCE, "revoked certificate");
  const src = el.source;
  const serialEl = readElement(src, el.contentStart, el.end);
  const serialHex = readUnsignedInteger(serialEl).toString("hex");
  if (serialEl.end === el.end) throw new CrlError("malformed", `CRL: revoked certificate entry at byte ${el.start} has no revocationDate`);
  const timeEl = readElement(src, serialEl.end, el.end);
  const revokedAt = readTime(timeEl, "revocationDate");
  const p = timeEl.end;
  if (p === el.end) return { serialHex, revokedAt };

  // Fast path for the common case (and everything we write): a lone non-critical reasonCode.
  if (el.end - p === 14) {
    let k = 0;
    while (k < 13 && src[p + k] === REASON_ONLY_PREFIX[k]) k++;
    if (k === 13) return { serialHex, revokedAt, reason: reasonName(src[p + 13]!, serialHex) };
  }

  const extEl = readElement(src, p, el.end);
  if (extEl.end !== el.end) throw new CrlError("malformed", `CRL: revoked certificate entry at byte ${el.start} has more than 3 elements`);
  const exts = readExtensions(extEl, "entry");
  rejectUnknownCritical(exts, UNDERSTOOD_ENTRY_EXTENSIONS, "entry");
  const issuerExt = exts.get(OID.certificateIssuer);
  if (issuerExt) {
    // Indirect CRLs list other issuers' certificates. Accept the extension only when it names
    // this CRL's own issuer, which changes nothing; anything else would be misread.
    const same = decodeExtension(OID.certificateIssuer, issuerExt.value, (root) => {
      const names = children(expectTag(root, SEQUENCE, "GeneralNames"));
      if (names.length !== 1 || names[0]!.tag !== 0xa4) return false;
      const inner = children(names[0]!);
      return inner.length === 1 && raw(inner[0]!).equals(issuer);
    });
    if (!same)
      throw new CrlError("indirect-crl", `CRL: entry ${serialHex} names a different certificate issuer (indirect CRLs are not supported)`);
  }
  const reasonExt = exts.get(OID.cRLReason);
  if (!reasonExt) return { serialHex, revokedAt };
  const code = decodeExtension(OID.cRLReason, reasonExt.value, (root) => {
    const c = content(expectTag(root, ENUMERATED, "CRLReason"));
    if (c.length !== 1) throw new DerError("CRLReason must be one octet", root.start);
    return c[0]!;
  });
  return { serialHex, revokedAt, reason: reasonName(code, serialHex) };
}

function reasonName(code: number, serialHex: string): RevocationReason {
  const reason = REVOCATION_REASON_NAMES.get(code);
  if (reason === undefined)
    throw new CrlError("invalid-reason", `CRL: entry ${serialHex} has reason code ${code}, which is not a CRLReason`);
  return reason;
}

function decodeCrl(der: Buffer): ParsedCrl {
  const top = children(expectTag(readRoot(der), SEQUENCE, "CertificateList"));
  if (top.length !== 3) throw new CrlError("malformed", `CRL: CertificateList has ${top.length} elements, expected 3`);
  const [tbsEl, sigAlgEl, sigEl] = top as [Element, Element, Element];
  const fields = children(expectTag(tbsEl, SEQUENCE, "TBSCertList"));
  let i = 0;
  if (fields[0]?.tag === INTEGER) {
    const version = readSmallInteger(fields[0]);
    // DEFAULT v1 must be omitted, so a present version can only be v2 (encoded 1).
    if (version !== 1) throw new CrlError("unsupported-version", `CRL: version ${version + 1} is not supported (only v1 and v2 exist)`);
    i++;
  }
  const innerAlg = expectTag(fields[i++], SEQUENCE, "signature AlgorithmIdentifier");
  expectTag(sigAlgEl, SEQUENCE, "signatureAlgorithm");
  if (!raw(innerAlg).equals(raw(sigAlgEl)))
    throw new CrlError("algorithm-mismatch", "CRL: the signature algorithm inside the TBSCertList differs from the outer one");
  const signatureAlgorithm = readOid(expectTag(children(sigAlgEl)[0], 0x06, "algorithm"));
  const signatureValue = readBitStringBytes(sigEl);
  const issuer = raw(expectTag(fields[i++], SEQUENCE, "issuer"));
  const thisUpdate = readTime(fields[i++], "thisUpdate");
  let nextUpdate: Date | undefined;
  if (fields[i]?.tag === UTC_TIME || fields[i]?.tag === GENERALIZED_TIME) nextUpdate = readTime(fields[i++], "nextUpdate");
  const entries: ParsedCrlEntry[] = [];
  if (fields[i]?.tag === SEQUENCE) for (const el of children(fields[i++]!)) entries.push(readEntry(el, issuer));
  let extensions = new Map<string, ParsedExtension>();
  if (fields[i]?.tag === 0xa0) {
    const wrapped = children(fields[i++]!);
    if (wrapped.length !== 1) throw new CrlError("malformed", "CRL: [0] crlExtensions must hold exactly one SEQUENCE");
    extensions = readExtensions(wrapped[0]!, "CRL");
  }
  if (i !== fields.length)
    throw new CrlError("malformed", `CRL: unexpected element with tag 0x${fields[i]!.tag.toString(16)} at byte ${fields[i]!.start}`);
  rejectUnknownCritical(extensions, UNDERSTOOD_CRL_EXTENSIONS, "CRL");

  let crlNumber: bigint | undefined;
  const number = extensions.get(OID.cRLNumber);
  if (number)
    crlNumber = decodeExtension(OID.cRLNumber, number.value, (root) => {
      const magnitude = readUnsignedInteger(root);
      if (magnitude.length > 20) throw new DerError("CRL number longer than 20 octets", root.start);
      return BigInt(`0x${magnitude.toString("hex")}`);
    });
  let authorityKeyId: Buffer | undefined;
  const aki = extensions.get(OID.authorityKeyIdentifier);
  if (aki)
    authorityKeyId = decodeExtension(OID.authorityKeyIdentifier, aki.value, (root) => {
      const keyIdEl = children(expectTag(root, SEQUENCE, "AuthorityKeyIdentifier")).find((e) => e.tag === 0x80);
      return keyIdEl ? content(keyIdEl) : undefined;
    });

  const crl: ParsedCrl = { der, tbs: raw(tbsEl), issuer, thisUpdate, entries, signatureAlgorithm, signatureValue, extensions };
  if (nextUpdate) crl.nextUpdate = nextUpdate;
  if (crlNumber !== undefined) crl.crlNumber = crlNumber;
  if (authorityKeyId) crl.authorityKeyId = authorityKeyId;
  return crl;
}

/**
 * Strictly parses a DER CRL (use pem.ts fromPem(text, ["X509 CRL"]) for PEM). Every rejection is
 * a CrlError with a specific reason; the signature is not checked (see verifyCrlSignature).
 */
export function parseCrl(der: Buffer): ParsedCrl {
  try {
    return decodeCrl(der);
  } catch (e) {
    if (e instanceof DerError) throw new CrlError("malformed", `CRL: ${e.message}`);
    throw e;
  }
}

/**
 * Whether the CRL's signature verifies with the issuer's public key (a KeyObject or DER
 * SubjectPublicKeyInfo). Only the algorithms we accept on CSRs count (no SHA-1, no MD5); an
 * unsupported algorithm or a key of the wrong type is simply "false". SPKI bytes that are not a
 * public key at all are a caller error and throw (from createPublicKey).
 */
export function verifyCrlSignature(crl: ParsedCrl, issuerKey: KeyObject | Buffer): boolean {
  const alg = CSR_SIGNATURE_ALGORITHMS.get(crl.signatureAlgorithm);
  if (!alg) return false;
  const key = Buffer.isBuffer(issuerKey) ? createPublicKey({ key: issuerKey, format: "der", type: "spki" }) : issuerKey;
  if (key.asymmetricKeyType !== alg.keyType) return false;
  try {
    return verify(alg.hash, crl.tbs, key, crl.signatureValue);
  } catch {
    return false;
  }
}
