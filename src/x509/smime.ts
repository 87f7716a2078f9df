// S/MIME detached signatures (RFC 8551 3.5.3, multipart/signed over a CMS SignedData, RFC 5652) as sros2
// makes them for governance.p7s and permissions.p7s: python cryptography's PKCS7SignatureBuilder with SHA-256
// and the options Text and DetachedSignature. No maintained pure-JS library signs CMS with ECDSA (node-forge's
// pkcs7 is RSA-only), so the SignedData is written here with der/writer. Pure: no I/O, no clock (the signing
// time is the caller's), randomness only for the MIME boundary.
import { KeyObject, X509Certificate, createHash, createPublicKey, randomBytes, sign, verify } from "node:crypto";
import {
  DerError,
  children,
  content,
  expectTag,
  raw,
  readOid,
  readRoot,
  readSmallInteger,
  readUnsignedInteger,
  type Element,
} from "../der/reader.js";
import { implicitConstructed, nullValue, octetString, oid, sequence, set, smallInteger, time } from "../der/writer.js";
import { OID, oidName } from "../der/oids.js";
import { Base64Error, fromBase64Body } from "./base64.js";
import { parseCertificate, type Signer } from "./certificate.js";
import { nameToString } from "./name.js";
import { InvalidTime, readX509Time } from "./time.js";

export type SmimeErrorReason =
  | "too-large" // input beyond the bounds below
  | "malformed-mime" // not a multipart/signed message with one text/plain part and one base64 PKCS#7 part
  | "malformed-cms" // the signature part is not DER SignedData of the expected shape
  | "unsupported" // more than one signer, a digest other than SHA-256, an unknown signature algorithm, ...
  | "missing-attribute" // no signed attributes, or contentType / messageDigest missing
  | "digest-mismatch" // the content is not what was signed (tampered)
  | "bad-signature" // the signed attributes' signature does not verify with the signer certificate
  | "untrusted-signer" // the signer is neither the trusted CA nor issued by it
  | "invalid-input"; // signing: content not UTF-8, key not matching the certificate, ...

export class SmimeError extends Error {
  constructor(
    readonly reason: SmimeErrorReason,
    message: string,
  ) {
    super(message);
    this.name = "SmimeError";
  }
}

/** Upper bounds for what verifySmime reads: permissions of large policies stay far below. */
export const SMIME_LIMITS = { messageBytes: 8 * 1024 * 1024, signatureBytes: 64 * 1024, certificates: 8, attributes: 16 } as const;

export interface SmimeSignOptions {
  /** The signingTime attribute (sros2/cryptography always write the time of signing); omitted when absent. */
  signingTime?: Date;
  /** MIME boundary; default: random in the form Python's email package writes ("=" * 15, 19 digits, "=="). */
  boundary?: string;
}

export interface VerifiedSmime {
  /** The signed text without its "Content-Type: text/plain" header, CRLF turned into LF (what `openssl smime -verify -text` prints). */
  content: Buffer;
  signerCertDer: Buffer;
  signingTime?: Date;
}

const TEXT_HEADER = Buffer.from("Content-Type: text/plain\r\n\r\n", "latin1");
const SHA256_ALGORITHM = sequence(oid(OID.sha256), nullValue());
const ID_DATA = oid(OID.idData);
// The subset of OpenSSL's default capabilities that cryptography writes (strong ciphers only), in its order.
const SMIME_CAPABILITIES = sequence(sequence(oid(OID.aes256Cbc)), sequence(oid(OID.aes192Cbc)), sequence(oid(OID.aes128Cbc)));

/** cryptography's smime_canonicalize: every LF not preceded by CR becomes CRLF; nothing else changes. */
export function canonicalizeText(data: Buffer): Buffer {
  const out: Buffer[] = [];
  let last = 0;
  for (let i = 0; i < data.length; i++) {
    if (data[i] === 0x0a && (i === 0 || data[i - 1] !== 0x0d)) {
      out.push(data.subarray(last, i), Buffer.from("\r\n", "latin1"));
      last = i + 1;
    }
  }
  if (last === 0) return data;
  out.push(data.subarray(last));
  return Buffer.concat(out);
}

function randomBoundary(): string {
  // Python: "=" * 15 + "%019d" % random.randrange(sys.maxsize) + "=="
  const token = randomBytes(8).readBigUInt64BE() % 0x7fffffffffffffffn;
  return `===============${token.toString().padStart(19, "0")}==`;
}

function signerKey(signer: Signer | KeyObject): KeyObject {
  return signer instanceof KeyObject ? signer : signer.key;
}

/** CMS signatureAlgorithm for a SHA-256 signature by this key, as cryptography and OpenSSL write it. */
function cmsSignatureAlgorithm(key: KeyObject): Buffer {
  if (key.asymmetricKeyType === "ec") return sequence(oid(OID.ecdsaWithSHA256));
  // RFC 3370 3.2: PKCS#1 v1.5 is named rsaEncryption whatever the digest.
  if (key.asymmetricKeyType === "rsa") return sequence(oid(OID.rsaEncryption), nullValue());
  throw new SmimeError(
    "invalid-input",
    `S/MIME signing supports EC and RSA keys (DDS Security: P-256, RSA-2048), not ${key.asymmetricKeyType}`,
  );
}

function attribute(type: string, value: Buffer): Buffer {
  return sequence(oid(type), set(value));
}

/** DER SET OF: elements sorted by their encodings (X.690 11.6). */
function derSetOf(items: Buffer[]): Buffer {
  return set(...[...items].sort(Buffer.compare));
}

function base64Lines(der: Buffer): string {
  const b64 = der.toString("base64");
  let out = "";
  for (let i = 0; i < b64.length; i += 64) out += b64.slice(i, i + 64) + "\r\n";
  return out;
}

/**
 * The S/MIME multipart/signed message sros2 writes for `content`: the text/plain part carries the content with its
 * line ends made CRLF, the signature part a detached SignedData (SHA-256; signed attributes contentType,
 * signingTime when given, messageDigest, smimeCapabilities; the signer certificate included), CRLF line ends
 * throughout. The private key must belong to the certificate. Content must be UTF-8 text (the result is a string).
 */
export function signSmime(content: Buffer, signerCertDer: Buffer, signer: Signer | KeyObject, options: SmimeSignOptions = {}): string {
  const key = signerKey(signer);
  if (key.type !== "private") throw new SmimeError("invalid-input", "S/MIME signing needs a private key");
  let cert;
  try {
    cert = parseCertificate(signerCertDer);
  } catch (e) {
    if (e instanceof DerError) throw new SmimeError("invalid-input", `signer certificate is not DER: ${e.message}`);
    throw e;
  }
  if (!createPublicKey(key).export({ format: "der", type: "spki" }).equals(cert.spki))
    throw new SmimeError("invalid-input", `the signing key does not belong to the signer certificate ${nameToString(cert.subject)}`);
  const algorithm = cmsSignatureAlgorithm(key);
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(content);
  } catch {
    throw new SmimeError("invalid-input", "S/MIME text content must be UTF-8");
  }
  const boundary = options.boundary ?? randomBoundary();
  if (!/^[0-9A-Za-z'()+_,./:=?-]{1,70}$/.test(boundary)) throw new SmimeError("invalid-input", `bad MIME boundary "${boundary}"`);
  const canonical = canonicalizeText(content);
  if (canonical.includes(`--${boundary}`)) throw new SmimeError("invalid-input", "content contains the MIME boundary");

  const digest = createHash("sha256").update(TEXT_HEADER).update(canonical).digest();
  const attributes = [attribute(OID.contentType, ID_DATA)];
  if (options.signingTime) attributes.push(attribute(OID.signingTime, time(options.signingTime)));
  attributes.push(attribute(OID.messageDigest, octetString(digest)), attribute(OID.smimeCapabilities, SMIME_CAPABILITIES));
  const signedAttributes = derSetOf(attributes);
  const signature = sign("sha256", signedAttributes, key);
  const serialElement = children(expectTag(readRoot(cert.tbs), 0x30, "TBSCertificate")).find((e) => e.tag === 0x02)!;
  const signerInfo = sequence(
    smallInteger(1),
    sequence(cert.issuer, raw(serialElement)),
    SHA256_ALGORITHM,
    implicitConstructed(0, signedAttributes.subarray(setHeaderLength(signedAttributes))),
    algorithm,
    octetString(signature),
  );
  const signedData = sequence(
    smallInteger(1),
    set(SHA256_ALGORITHM),
    sequence(ID_DATA),
    implicitConstructed(0, signerCertDer),
    set(signerInfo),
  );
  const der = sequence(oid(OID.idSignedData), implicitConstructed(0, signedData));

  const canonicalText = canonical.toString("utf8");
  return (
    "MIME-Version: 1.0\r\n" +
    `Content-Type: multipart/signed; protocol="application/x-pkcs7-signature"; micalg="sha-256"; boundary="${boundary}"\r\n` +
    "\r\nThis is an S/MIME signed message\r\n\r\n" +
    `--${boundary}\r\nContent-Type: text/plain\r\n\r\n${canonicalText}\r\n` +
    `--${boundary}\r\n` +
    'Content-Type: application/x-pkcs7-signature; name="smime.p7s"\r\n' +
    "Content-Transfer-Encoding: base64\r\n" +
    'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n' +
    base64Lines(der) +
    `\r\n--${boundary}--\r\n`
  );
}

/** Octets of the tag and length of a DER element (to re-tag a SET's content as [0]). */
function setHeaderLength(der: Buffer): number {
  return der[1]! < 0x80 ? 2 : 2 + (der[1]! & 0x7f);
}

// ---------------------------------------------------------------------------------------------
// Verification

interface HeaderBlock {
  headers: Map<string, string>;
  /** Offset of the first byte after the empty line that ends the headers. */
  bodyStart: number;
}

/** Lines of a header block (LF or CRLF ends, folded continuation lines joined) up to the first empty line. */
function readHeaders(text: string, start: number, where: string): HeaderBlock {
  const headers = new Map<string, string>();
  let pos = start;
  let last: string | undefined;
  for (;;) {
    const eol = text.indexOf("\n", pos);
    if (eol < 0) throw new SmimeError("malformed-mime", `${where}: headers not ended by an empty line`);
    const line = text.slice(pos, text[eol - 1] === "\r" && eol - 1 >= pos ? eol - 1 : eol);
    pos = eol + 1;
    if (line === "") return { headers, bodyStart: pos };
    if (/^[ \t]/.test(line) && last) {
      headers.set(last, `${headers.get(last)} ${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0 || !/^[!-9;-~]+$/.test(line.slice(0, colon)))
      throw new SmimeError("malformed-mime", `${where}: bad header line "${line.slice(0, 60)}"`);
    last = line.slice(0, colon).toLowerCase();
    if (headers.has(last)) throw new SmimeError("malformed-mime", `${where}: header ${line.slice(0, colon)} appears twice`);
    if (headers.size >= 32) throw new SmimeError("too-large", `${where}: too many headers`);
    headers.set(last, line.slice(colon + 1).trim());
  }
}

interface MediaType {
  type: string;
  params: Map<string, string>;
}

/** "type/subtype; a=b; c="d"" with lower-case type and parameter names. */
function parseMediaType(value: string | undefined, where: string): MediaType {
  if (value === undefined) throw new SmimeError("malformed-mime", `${where}: no Content-Type header`);
  const match = /^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*/.exec(value);
  if (!match) throw new SmimeError("malformed-mime", `${where}: bad Content-Type "${value.slice(0, 80)}"`);
  const params = new Map<string, string>();
  const param = /;\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([!#$%&'*+.^_`|~0-9A-Za-z-]+))\s*/y;
  param.lastIndex = match[0].length;
  while (param.lastIndex < value.length) {
    const m = param.exec(value);
    if (!m) throw new SmimeError("malformed-mime", `${where}: bad Content-Type parameters in "${value.slice(0, 120)}"`);
    params.set(m[1]!.toLowerCase(), m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3]!);
  }
  return { type: match[1]!.toLowerCase(), params };
}

/** OpenSSL's view of signed text: every line end (LF with any CRs before it) becomes CRLF. */
function canonicalizeForDigest(part: Buffer): Buffer {
  return Buffer.from(part.toString("latin1").replace(/\r*\n/g, "\r\n"), "latin1");
}

interface MimeParts {
  signedPart: Buffer;
  signature: Buffer;
}

function splitMultipartSigned(message: Buffer): MimeParts {
  const text = message.toString("latin1");
  const top = readHeaders(text, 0, "S/MIME message");
  const contentType = parseMediaType(top.headers.get("content-type"), "S/MIME message");
  if (contentType.type !== "multipart/signed")
    throw new SmimeError(
      "malformed-mime",
      `S/MIME message: Content-Type is ${contentType.type}, expected multipart/signed (a detached signature)`,
    );
  const protocol = contentType.params.get("protocol")?.toLowerCase();
  if (protocol !== "application/x-pkcs7-signature" && protocol !== "application/pkcs7-signature")
    throw new SmimeError("malformed-mime", `S/MIME message: protocol is ${protocol ?? "missing"}, expected application/pkcs7-signature`);
  const micalg = contentType.params.get("micalg")?.toLowerCase();
  if (micalg !== undefined && micalg !== "sha-256")
    throw new SmimeError("unsupported", `S/MIME message: micalg is ${micalg}; only sha-256 is accepted`);
  const boundary = contentType.params.get("boundary");
  if (!boundary || boundary.length > 70) throw new SmimeError("malformed-mime", "S/MIME message: missing or over-long MIME boundary");

  // Delimiter lines: "--boundary" (then "--" for the last one) at the start of a line; the line end before
  // a delimiter belongs to it (RFC 2046 5.1.1).
  const delimiter = `--${boundary}`;
  const parts: Array<{ start: number; end: number }> = [];
  let partStart = -1;
  let closed = -1;
  let pos = top.bodyStart;
  while (pos <= text.length) {
    const eol = text.indexOf("\n", pos);
    const lineEnd = eol < 0 ? text.length : eol;
    const line = text.slice(pos, lineEnd).replace(/\r$/, "");
    if (line.startsWith(delimiter)) {
      const rest = line.slice(delimiter.length);
      const isClose = rest.startsWith("--");
      if (rest.replace(/^--/, "").trim() === "") {
        if (partStart >= 0) {
          let end = pos;
          if (text[end - 1] === "\n") end--;
          if (text[end - 1] === "\r") end--;
          parts.push({ start: partStart, end: Math.max(end, partStart) });
        }
        if (isClose) {
          closed = eol < 0 ? text.length : eol + 1;
          break;
        }
        partStart = eol < 0 ? text.length : eol + 1;
      }
    }
    if (eol < 0) break;
    pos = eol + 1;
  }
  if (closed < 0) throw new SmimeError("malformed-mime", "S/MIME message: no closing MIME boundary (truncated?)");
  if (text.slice(closed).trim() !== "") throw new SmimeError("malformed-mime", "S/MIME message: data after the closing MIME boundary");
  if (parts.length !== 2)
    throw new SmimeError("malformed-mime", `S/MIME message: ${parts.length} MIME parts, expected 2 (the signed text and the signature)`);
  const [signed, sig] = parts as [{ start: number; end: number }, { start: number; end: number }];

  const sigHeaders = readHeaders(text.slice(0, sig.end) + "\n", sig.start, "S/MIME signature part");
  const sigType = parseMediaType(sigHeaders.headers.get("content-type"), "S/MIME signature part");
  if (sigType.type !== "application/x-pkcs7-signature" && sigType.type !== "application/pkcs7-signature")
    throw new SmimeError("malformed-mime", `S/MIME signature part: Content-Type is ${sigType.type}, expected application/pkcs7-signature`);
  const encoding = sigHeaders.headers.get("content-transfer-encoding")?.toLowerCase();
  if (encoding !== "base64")
    throw new SmimeError("malformed-mime", `S/MIME signature part: Content-Transfer-Encoding is ${encoding ?? "missing"}, expected base64`);
  const body = message.subarray(Math.min(sigHeaders.bodyStart, sig.end), sig.end);
  if (body.length > (SMIME_LIMITS.signatureBytes * 4) / 3 + 4096)
    throw new SmimeError("too-large", `S/MIME signature part is over ${SMIME_LIMITS.signatureBytes} bytes`);
  let signature: Buffer;
  try {
    signature = fromBase64Body(body);
  } catch (e) {
    if (e instanceof Base64Error) throw new SmimeError("malformed-mime", `S/MIME signature part: ${e.message}`);
    throw e;
  }
  return { signedPart: message.subarray(signed.start, signed.end), signature };
}

interface SignerInfo {
  issuer: Buffer;
  serial: Buffer;
  signedAttributes: Buffer;
  messageDigest: Buffer;
  signingTime?: Date;
  signatureAlgorithm: string;
  signature: Buffer;
}

function describeOid(value: string): string {
  const name = oidName(value);
  return name === value ? value : `${name} (${value})`;
}

/** AlgorithmIdentifier that must be SHA-256 with absent or NULL parameters. */
function expectSha256(e: Element | undefined, what: string): void {
  const parts = children(expectTag(e, 0x30, what));
  const algorithm = readOid(parts[0]!);
  if (algorithm !== OID.sha256)
    throw new SmimeError("unsupported", `S/MIME: ${what} is ${describeOid(algorithm)}; only sha256 is accepted`);
  if (parts.length > 2 || (parts.length === 2 && !raw(parts[1]!).equals(nullValue())))
    throw new SmimeError("malformed-cms", `S/MIME: ${what} sha256 has parameters other than NULL`);
}

function readAttributes(signedAttrs: Element): Pick<SignerInfo, "messageDigest" | "signingTime"> {
  const seen = new Set<string>();
  let messageDigest: Buffer | undefined;
  let signingTime: Date | undefined;
  let contentType: string | undefined;
  const attributes = children(signedAttrs);
  if (attributes.length > SMIME_LIMITS.attributes) throw new SmimeError("too-large", `S/MIME: ${attributes.length} signed attributes`);
  for (const attr of attributes) {
    const [typeEl, valuesEl, extra] = children(expectTag(attr, 0x30, "Attribute"));
    if (extra) throw new DerError("Attribute has more than 2 fields", attr.start);
    const type = readOid(typeEl!);
    if (seen.has(type)) throw new SmimeError("malformed-cms", `S/MIME: signed attribute ${describeOid(type)} appears twice`);
    seen.add(type);
    const values = children(expectTag(valuesEl, 0x31, "attribute values SET"));
    if (type === OID.contentType || type === OID.messageDigest || type === OID.signingTime) {
      if (values.length !== 1)
        throw new SmimeError("malformed-cms", `S/MIME: signed attribute ${oidName(type)} has ${values.length} values`);
      const value = values[0]!;
      if (type === OID.contentType) contentType = readOid(value);
      else if (type === OID.messageDigest) messageDigest = Buffer.from(content(expectTag(value, 0x04, "messageDigest OCTET STRING")));
      else signingTime = new Date(readX509Time(value.tag, value.source, value.contentStart, value.end));
    }
  }
  if (contentType === undefined) throw new SmimeError("missing-attribute", "S/MIME: the signed attributes have no contentType");
  if (contentType !== OID.idData)
    throw new SmimeError("unsupported", `S/MIME: signed contentType is ${describeOid(contentType)}, expected data`);
  if (!messageDigest) throw new SmimeError("missing-attribute", "S/MIME: the signed attributes have no messageDigest");
  return { messageDigest, ...(signingTime ? { signingTime } : {}) };
}

function readSignedData(der: Buffer): { certificates: Buffer[]; signer: SignerInfo } {
  const top = children(expectTag(readRoot(der), 0x30, "ContentInfo"));
  if (top.length !== 2) throw new DerError(`ContentInfo has ${top.length} fields, expected 2`, 0);
  const contentType = readOid(top[0]!);
  if (contentType !== OID.idSignedData)
    throw new SmimeError("malformed-cms", `S/MIME: content type is ${describeOid(contentType)}, expected signedData`);
  const wrapper = children(expectTag(top[1], 0xa0, "content [0]"));
  if (wrapper.length !== 1) throw new DerError("content [0] must hold one element", top[1]!.start);
  const fields = children(expectTag(wrapper[0], 0x30, "SignedData"));
  let i = 0;
  const version = readSmallInteger(expectTag(fields[i++], 0x02, "SignedData version"));
  if (version !== 1) throw new SmimeError("unsupported", `S/MIME: SignedData version ${version}, expected 1`);
  const digestAlgorithms = children(expectTag(fields[i++], 0x31, "digestAlgorithms"));
  if (digestAlgorithms.length !== 1)
    throw new SmimeError("unsupported", `S/MIME: ${digestAlgorithms.length} digest algorithms, expected sha256 alone`);
  expectSha256(digestAlgorithms[0], "digest algorithm");
  const encap = children(expectTag(fields[i++], 0x30, "encapContentInfo"));
  const eContentType = readOid(encap[0]!);
  if (eContentType !== OID.idData)
    throw new SmimeError("unsupported", `S/MIME: encapsulated content type ${describeOid(eContentType)}, expected data`);
  if (encap.length !== 1)
    throw new SmimeError("malformed-cms", "S/MIME: the SignedData carries its content; a detached signature carries none");
  const certificates: Buffer[] = [];
  if (fields[i]?.tag === 0xa0) {
    for (const cert of children(fields[i++]!)) {
      if (cert.tag !== 0x30) throw new SmimeError("unsupported", "S/MIME: a certificate choice other than an X.509 certificate");
      if (certificates.length >= SMIME_LIMITS.certificates) throw new SmimeError("too-large", "S/MIME: too many certificates");
      certificates.push(Buffer.from(raw(cert)));
    }
  }
  if (fields[i]?.tag === 0xa1) throw new SmimeError("unsupported", "S/MIME: SignedData carries CRLs");
  const signerInfos = children(expectTag(fields[i++], 0x31, "signerInfos"));
  if (i !== fields.length) throw new DerError("data after signerInfos", fields[i]!.start);
  if (signerInfos.length !== 1) throw new SmimeError("unsupported", `S/MIME: ${signerInfos.length} signers, expected exactly one`);

  const s = children(expectTag(signerInfos[0], 0x30, "SignerInfo"));
  const signerVersion = readSmallInteger(expectTag(s[0], 0x02, "SignerInfo version"));
  if (signerVersion !== 1)
    throw new SmimeError("unsupported", `S/MIME: SignerInfo version ${signerVersion}; only issuerAndSerialNumber (version 1) is accepted`);
  const sid = children(expectTag(s[1], 0x30, "issuerAndSerialNumber"));
  if (sid.length !== 2) throw new DerError("issuerAndSerialNumber must have 2 fields", s[1]!.start);
  expectSha256(s[2], "signer digest algorithm");
  if (s[3]?.tag !== 0xa0) throw new SmimeError("missing-attribute", "S/MIME: the signer has no signed attributes");
  const signedAttrs = s[3];
  const attributes = readAttributes(signedAttrs);
  const algorithm = readOid(children(expectTag(s[4], 0x30, "signatureAlgorithm"))[0]!);
  const signature = Buffer.from(content(expectTag(s[5], 0x04, "signature OCTET STRING")));
  if (s[6] && (s[6].tag !== 0xa1 || s.length > 7)) throw new DerError("unexpected data after the signature", s[6].start);
  // The signature covers the DER SET OF the attributes, not the [0] IMPLICIT encoding in the message (RFC 5652 5.4).
  const attrsDer = Buffer.from(raw(signedAttrs));
  attrsDer[0] = 0x31;
  return {
    certificates,
    signer: {
      issuer: Buffer.from(raw(expectTag(sid[0], 0x30, "issuer Name"))),
      serial: Buffer.from(readUnsignedInteger(sid[1]!)),
      signedAttributes: attrsDer,
      ...attributes,
      signatureAlgorithm: algorithm,
      signature,
    },
  };
}

const SIGNATURE_KEY_TYPES = new Map<string, "ec" | "rsa">([
  [OID.ecdsaWithSHA256, "ec"],
  [OID.rsaEncryption, "rsa"],
  [OID.sha256WithRSAEncryption, "rsa"],
]);

/** A certificate's subject on one line ("CN=a, O=b"), for messages. */
const subjectLine = (cert: X509Certificate): string => cert.subject.replace(/\n/g, ", ");

function x509(der: Buffer, what: string): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch {
    throw new SmimeError("malformed-cms", `S/MIME: ${what} is not a certificate`);
  }
}

/**
 * Verifies an S/MIME detached signature as `openssl smime -verify -text` would (but stricter: one signer,
 * SHA-256 only, signed attributes required, bounded sizes): the signed text is the first part canonicalised
 * to CRLF, its SHA-256 must equal the messageDigest attribute, and the attributes' signature must verify with
 * the included signer certificate. With `trustedCaDer`, the signer must be that certificate or one it issued
 * (like `-CAfile CA -partial_chain`; validity periods are the caller's to check, this module has no clock).
 * Throws SmimeError with a reason and a specific message.
 */
export function verifySmime(smime: string | Buffer, trustedCaDer?: Buffer): VerifiedSmime {
  const message = typeof smime === "string" ? Buffer.from(smime, "utf8") : smime;
  if (message.length > SMIME_LIMITS.messageBytes)
    throw new SmimeError("too-large", `S/MIME message is over ${SMIME_LIMITS.messageBytes} bytes`);
  const { signedPart, signature } = splitMultipartSigned(message);
  const canonical = canonicalizeForDigest(signedPart);
  // Text mode (sros2, openssl -text) puts a "Content-Type: text/plain" header before the document.
  if (!/^[!-9;-~]+:/.test(canonical.subarray(0, 200).toString("latin1")))
    throw new SmimeError("malformed-mime", "S/MIME signed part: no Content-Type: text/plain header (signed in binary mode, not as text)");
  const partHeaders = readHeaders(canonical.toString("latin1"), 0, "S/MIME signed part");
  const partType = parseMediaType(partHeaders.headers.get("content-type"), "S/MIME signed part");
  if (partType.type !== "text/plain")
    throw new SmimeError("malformed-mime", `S/MIME signed part: Content-Type is ${partType.type}, expected text/plain`);

  let parsed;
  try {
    parsed = readSignedData(signature);
  } catch (e) {
    if (e instanceof DerError || e instanceof InvalidTime)
      throw new SmimeError("malformed-cms", `S/MIME: the signature is not DER SignedData: ${e.message}`);
    throw e;
  }
  const { certificates, signer } = parsed;
  const signerCertDer = certificates.find((der) => {
    try {
      const cert = parseCertificate(der);
      return cert.issuer.equals(signer.issuer) && Buffer.from(cert.serialHex, "hex").equals(signer.serial);
    } catch {
      return false;
    }
  });
  if (!signerCertDer) throw new SmimeError("malformed-cms", "S/MIME: the signer's certificate is not in the message");
  const signerCert = x509(signerCertDer, "the signer certificate");

  const digest = createHash("sha256").update(canonical).digest();
  if (!digest.equals(signer.messageDigest))
    throw new SmimeError(
      "digest-mismatch",
      "S/MIME: the content does not match the signed message digest (the content was changed after signing)",
    );
  const keyType = SIGNATURE_KEY_TYPES.get(signer.signatureAlgorithm);
  if (!keyType)
    throw new SmimeError("unsupported", `S/MIME: signature algorithm ${describeOid(signer.signatureAlgorithm)} is not accepted`);
  if (signerCert.publicKey.asymmetricKeyType !== keyType)
    throw new SmimeError(
      "bad-signature",
      `S/MIME: signature algorithm ${oidName(signer.signatureAlgorithm)} does not fit the signer's key`,
    );
  let ok = false;
  try {
    ok = verify("sha256", signer.signedAttributes, signerCert.publicKey, signer.signature);
  } catch {
    ok = false;
  }
  if (!ok)
    throw new SmimeError("bad-signature", `S/MIME: the signature does not verify with the signer certificate ${subjectLine(signerCert)}`);

  if (trustedCaDer) {
    const ca = x509(trustedCaDer, "the trusted CA");
    const trusted = signerCertDer.equals(trustedCaDer) || (signerCert.checkIssued(ca) && signerCert.verify(ca.publicKey));
    if (!trusted)
      throw new SmimeError(
        "untrusted-signer",
        `S/MIME: the signer ${subjectLine(signerCert)} is neither the trusted CA ${subjectLine(ca)} nor issued by it`,
      );
  }
  const text = canonical.subarray(partHeaders.bodyStart).toString("latin1").replace(/\r\n/g, "\n");
  return {
    content: Buffer.from(text, "latin1"),
    signerCertDer: Buffer.from(signerCertDer),
    ...(signer.signingTime ? { signingTime: signer.signingTime } : {}),
  };
}
