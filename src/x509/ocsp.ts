// OCSP (RFC 6960) requests and responses for a delegated responder, with the RFC 8954 nonce
// and the RFC 5019 lightweight profile in mind. Pure: bytes in, bytes out, no clock. The
// caller (status/) looks certificates up and passes times; this module only speaks DER.
//
// Decisions (see also the comments at each check):
// - A CertID whose hash algorithm we do not implement is still returned, with
//   hashAlgorithm "unsupported", so one odd entry in a multi-certificate request gets its own
//   `unknown` answer instead of failing the whole request.
// - Anything structurally wrong (bad DER, trailing bytes, empty request list, wrong hash
//   length for a known algorithm, negative serial, duplicate extensions, a critical extension
//   we do not understand, a nonce of 0 or more than 32 octets) is a malformedRequest.
// - Request signatures are not verified; `signed` tells the caller one was present.
// - Parsed buffers (hashes, CertID DER, nonce) are views into the input, not copies: the
//   parser stays allocation-light; the caller must not modify the input while it uses the result.
import { createHash, sign } from "node:crypto";
import { OID } from "../der/oids.js";
import { DerError, readElement, readOid, readRoot, readUnsignedInteger, type Element } from "../der/reader.js";
import { TAG, bitString, explicit, generalizedTime, octetString, oid, sequence, tlv } from "../der/writer.js";
import { keyIdentifier } from "./extensions.js";
import { InvalidTime, readX509Time } from "./time.js";
import type { ParsedCertificate, ParsedExtension, Signer } from "./certificate.js";
import { REVOCATION_REASONS, type RevocationReason } from "./crl.js";

export type OcspHash = "sha1" | "sha256" | "sha384" | "sha512";

/** CRLReason names (RFC 5280 5.3.1), shared with the CRL module. */
export type RevocationReasonName = RevocationReason;

// The ENUMERATED codes are crl.ts's: one table for CRL entries and OCSP answers.
const REVOCATION_REASON_CODES = REVOCATION_REASONS;
const REASON_BY_CODE = new Map<number, RevocationReasonName>(
  Object.entries(REVOCATION_REASON_CODES).map(([name, code]) => [code, name as RevocationReasonName]),
);

export interface OcspCertId {
  /** "unsupported" for a digest we do not implement: answer `unknown` for that entry. */
  hashAlgorithm: OcspHash | "unsupported";
  issuerNameHash: Buffer;
  issuerKeyHash: Buffer;
  /** Lower-case hex of the serial's magnitude, no leading 00: the same form as ParsedCertificate.serialHex. */
  serialHex: string;
  /** The exact CertID DER as received; echoed back in the response. */
  der: Buffer;
}

export interface ParsedOcspRequest {
  certIds: OcspCertId[];
  /** Content of the nonce OCTET STRING (RFC 8954: 1..32 octets). */
  nonce?: Buffer;
  /** An optionalSignature was present (not verified here). */
  signed: boolean;
}

export type OcspRequestErrorReason =
  | "empty"
  | "too-large"
  | "malformed-der"
  | "unsupported-version"
  | "no-cert-ids"
  | "too-many-cert-ids"
  | "bad-hash-length"
  | "duplicate-extension"
  | "unsupported-critical-extension"
  | "bad-nonce";

/** Anything wrong with a request: the caller answers `malformedRequest`. */
export class OcspRequestError extends Error {
  constructor(
    readonly reason: OcspRequestErrorReason,
    message: string,
  ) {
    super(`malformed OCSP request (${reason}): ${message}`);
    this.name = "OcspRequestError";
  }
}

export type OcspResponseErrorReason =
  | "malformed-der"
  | "unknown-response-status"
  | "missing-response-bytes"
  | "unexpected-response-bytes"
  | "unsupported-response-type"
  | "unsupported-version"
  | "bad-hash-length"
  | "bad-cert-status"
  | "bad-reason"
  | "bad-time"
  | "duplicate-extension";

/** A response we cannot read (parseOcspResponse). */
export class OcspResponseError extends Error {
  constructor(
    readonly reason: OcspResponseErrorReason,
    message: string,
  ) {
    super(`malformed OCSP response (${reason}): ${message}`);
    this.name = "OcspResponseError";
  }
}

// Thrown by the helpers shared by request and response parsing; mapped to the right error at the boundary.
class Malformed extends Error {
  constructor(
    readonly reason: "bad-hash-length" | "duplicate-extension",
    message: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Shared DER helpers

const HASHES: ReadonlyArray<{ name: OcspHash; oidContent: Buffer; length: number }> = [
  { name: "sha1", oidContent: oid(OID.sha1).subarray(2), length: 20 },
  { name: "sha256", oidContent: oid(OID.sha256).subarray(2), length: 32 },
  { name: "sha384", oidContent: oid(OID.sha384).subarray(2), length: 48 },
  { name: "sha512", oidContent: oid(OID.sha512).subarray(2), length: 64 },
];
const HASH_BY_NAME = new Map(HASHES.map((h) => [h.name, h]));
const NONCE_OID_CONTENT = oid(OID.ocspNonce).subarray(2);
const BASIC_OID_CONTENT = oid(OID.ocspBasic).subarray(2);

function expect(e: Element, tag: number, what: string): Element {
  if (e.tag !== tag) throw new DerError(`expected ${what} (tag 0x${tag.toString(16)}), found tag 0x${e.tag.toString(16)}`, e.start);
  return e;
}

/** The element at `offset` inside `parent`, or a DerError naming what is missing. */
function at(parent: Element, offset: number, what: string): Element {
  if (offset >= parent.end) throw new DerError(`missing ${what}`, offset);
  return readElement(parent.source, offset, parent.end);
}

/** The single element an EXPLICIT tag wraps. */
function unwrap(wrapper: Element, what: string): Element {
  const inner = at(wrapper, wrapper.contentStart, what);
  if (inner.end !== wrapper.end) throw new DerError(`trailing data after ${what}`, inner.end);
  return inner;
}

function noMore(parent: Element, offset: number, what: string): void {
  if (offset !== parent.end) throw new DerError(`unexpected data at the end of ${what}`, offset);
}

function contentOf(e: Element): Buffer {
  return e.source.subarray(e.contentStart, e.end);
}

function sameContent(e: Element, expected: Buffer): boolean {
  return e.end - e.contentStart === expected.length && e.source.compare(expected, 0, expected.length, e.contentStart, e.end) === 0;
}

/** CertID ::= SEQUENCE { hashAlgorithm, issuerNameHash, issuerKeyHash, serialNumber }. */
function parseCertId(e: Element): OcspCertId {
  expect(e, TAG.SEQUENCE, "CertID");
  const alg = expect(at(e, e.contentStart, "hashAlgorithm"), TAG.SEQUENCE, "hashAlgorithm");
  const algOid = expect(at(alg, alg.contentStart, "hash algorithm OID"), TAG.OID, "hash algorithm OID");
  // Parameters: absent (RFC 5754) or NULL (what OpenSSL and most clients send); both accepted.
  // Anything else means an algorithm variant we do not implement, answered `unknown`.
  let paramsOk = true;
  if (algOid.end < alg.end) {
    const params = at(alg, algOid.end, "hash parameters");
    noMore(alg, params.end, "hashAlgorithm");
    paramsOk = params.tag === TAG.NULL && params.end === params.contentStart;
  }
  const nameHash = expect(at(e, alg.end, "issuerNameHash"), TAG.OCTET_STRING, "issuerNameHash");
  const keyHash = expect(at(e, nameHash.end, "issuerKeyHash"), TAG.OCTET_STRING, "issuerKeyHash");
  const serial = at(e, keyHash.end, "serialNumber");
  noMore(e, serial.end, "CertID");
  // Negative or non-minimal serials are rejected by readUnsignedInteger (RFC 5280: serials are positive).
  const serialHex = readUnsignedInteger(serial).toString("hex");
  let hash: OcspHash | "unsupported" = "unsupported";
  if (paramsOk) {
    for (const h of HASHES) {
      if (!sameContent(algOid, h.oidContent)) continue;
      // A known digest of the wrong size cannot be a CertID at all.
      if (nameHash.end - nameHash.contentStart !== h.length || keyHash.end - keyHash.contentStart !== h.length)
        throw new Malformed(
          "bad-hash-length",
          `${h.name} CertID with ${nameHash.end - nameHash.contentStart}/${keyHash.end - keyHash.contentStart}-octet hashes`,
        );
      hash = h.name;
      break;
    }
  }
  if (hash === "unsupported") readOid(algOid); // still has to be a well-formed OID
  return {
    hashAlgorithm: hash,
    issuerNameHash: contentOf(nameHash),
    issuerKeyHash: contentOf(keyHash),
    serialHex,
    der: e.source.subarray(e.start, e.end),
  };
}

interface RawExtension {
  oid: Element;
  critical: boolean;
  value: Element;
}

/** Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension, inside an EXPLICIT tag; duplicates are malformed. */
function parseExtensions(wrapper: Element): RawExtension[] {
  const list = expect(unwrap(wrapper, "Extensions"), TAG.SEQUENCE, "Extensions");
  if (list.end === list.contentStart) throw new DerError("empty Extensions (SIZE 1..MAX)", list.start);
  const out: RawExtension[] = [];
  const seen = new Set<string>();
  for (let off = list.contentStart; off < list.end;) {
    const ext = expect(at(list, off, "Extension"), TAG.SEQUENCE, "Extension");
    off = ext.end;
    const extOid = expect(at(ext, ext.contentStart, "extnID"), TAG.OID, "extnID");
    let next = at(ext, extOid.end, "extnValue");
    let critical = false;
    if (next.tag === TAG.BOOLEAN) {
      // DER omits a FALSE default; explicit FALSE is a common BER habit and harmless, so accepted.
      const b = contentOf(next);
      if (b.length !== 1 || (b[0] !== 0 && b[0] !== 0xff)) throw new DerError("invalid BOOLEAN", next.start);
      critical = b[0] === 0xff;
      next = at(ext, next.end, "extnValue");
    }
    const value = expect(next, TAG.OCTET_STRING, "extnValue");
    noMore(ext, value.end, "Extension");
    const key = contentOf(extOid).toString("latin1");
    if (seen.has(key)) throw new Malformed("duplicate-extension", `extension ${readOid(extOid)} appears twice`);
    seen.add(key);
    readOid(extOid);
    out.push({ oid: extOid, critical, value });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Requests

export interface OcspRequestLimits {
  /** Most CertIDs accepted in one request (RFC 5019 clients send one). Default 16. */
  maxCertIds?: number;
  /** Largest request accepted, in bytes. Default 16 KiB (room for a signed request with a chain). */
  maxBytes?: number;
}

export const DEFAULT_MAX_CERT_IDS = 16;
export const DEFAULT_MAX_REQUEST_BYTES = 16 * 1024;
const MAX_NONCE_OCTETS = 32;

/**
 * Parses an OCSPRequest strictly. Throws OcspRequestError (answer `malformedRequest`) and
 * nothing else for bad input.
 */
export function parseOcspRequest(der: Buffer, limits: OcspRequestLimits = {}): ParsedOcspRequest {
  const maxBytes = limits.maxBytes ?? DEFAULT_MAX_REQUEST_BYTES;
  if (der.length === 0) throw new OcspRequestError("empty", "no bytes");
  if (der.length > maxBytes) throw new OcspRequestError("too-large", `${der.length} bytes, at most ${maxBytes} accepted`);
  try {
    return parseRequest(der, limits.maxCertIds ?? DEFAULT_MAX_CERT_IDS);
  } catch (e) {
    if (e instanceof Malformed) throw new OcspRequestError(e.reason, e.message);
    if (e instanceof DerError) throw new OcspRequestError("malformed-der", e.message);
    throw e;
  }
}

function parseRequest(der: Buffer, maxCertIds: number): ParsedOcspRequest {
  // OCSPRequest ::= SEQUENCE { tbsRequest TBSRequest, optionalSignature [0] EXPLICIT Signature OPTIONAL }
  const root = expect(readRoot(der), TAG.SEQUENCE, "OCSPRequest");
  const tbs = expect(at(root, root.contentStart, "tbsRequest"), TAG.SEQUENCE, "TBSRequest");
  let signed = false;
  if (tbs.end < root.end) {
    const wrapper = expect(at(root, tbs.end, "optionalSignature"), 0xa0, "optionalSignature [0]");
    noMore(root, wrapper.end, "OCSPRequest");
    // Signature ::= SEQUENCE { signatureAlgorithm, signature BIT STRING, certs [0] OPTIONAL }:
    // only its shape is checked; verifying it is the caller's policy (RFC 5019 responders may ignore it).
    const signature = expect(unwrap(wrapper, "Signature"), TAG.SEQUENCE, "Signature");
    const alg = expect(at(signature, signature.contentStart, "signatureAlgorithm"), TAG.SEQUENCE, "signatureAlgorithm");
    expect(at(signature, alg.end, "signature"), TAG.BIT_STRING, "signature");
    signed = true;
  }

  // TBSRequest ::= SEQUENCE { version [0] DEFAULT v1, requestorName [1] OPTIONAL, requestList, requestExtensions [2] OPTIONAL }
  let e = at(tbs, tbs.contentStart, "requestList");
  if (e.tag === 0xa0) {
    // DER omits the default v1, but an explicit v1 is harmless and accepted; any other version is not ours.
    const version = expect(unwrap(e, "version"), TAG.INTEGER, "version");
    if (version.end - version.contentStart !== 1 || der[version.contentStart] !== 0)
      throw new OcspRequestError("unsupported-version", "only OCSP v1 requests are supported");
    e = at(tbs, e.end, "requestList");
  }
  if (e.tag === 0xa1) {
    unwrap(e, "requestorName"); // a GeneralName we have no use for
    e = at(tbs, e.end, "requestList");
  }
  const list = expect(e, TAG.SEQUENCE, "requestList");
  let nonce: Buffer | undefined;
  if (list.end < tbs.end) {
    const wrapper = expect(at(tbs, list.end, "requestExtensions"), 0xa2, "requestExtensions [2]");
    noMore(tbs, wrapper.end, "TBSRequest");
    for (const ext of parseExtensions(wrapper)) {
      if (sameContent(ext.oid, NONCE_OID_CONTENT)) nonce = parseNonce(ext.value);
      else if (ext.critical) throw new OcspRequestError("unsupported-critical-extension", `critical request extension ${readOid(ext.oid)}`);
      // Other non-critical extensions (acceptable responses, preferred algorithms, ...) are ignored (RFC 6960 4.4).
    }
  }

  const certIds: OcspCertId[] = [];
  for (let off = list.contentStart; off < list.end;) {
    if (certIds.length >= maxCertIds) throw new OcspRequestError("too-many-cert-ids", `more than ${maxCertIds} CertIDs in one request`);
    // Request ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
    const request = expect(at(list, off, "Request"), TAG.SEQUENCE, "Request");
    off = request.end;
    const certId = at(request, request.contentStart, "reqCert");
    certIds.push(parseCertId(certId));
    if (certId.end < request.end) {
      const wrapper = expect(at(request, certId.end, "singleRequestExtensions"), 0xa0, "singleRequestExtensions [0]");
      noMore(request, wrapper.end, "Request");
      for (const ext of parseExtensions(wrapper))
        if (ext.critical)
          throw new OcspRequestError("unsupported-critical-extension", `critical single request extension ${readOid(ext.oid)}`);
    }
  }
  if (certIds.length === 0) throw new OcspRequestError("no-cert-ids", "the request list is empty");
  return nonce ? { certIds, nonce, signed } : { certIds, signed };
}

/** RFC 8954 2.1: extnValue holds `Nonce ::= OCTET STRING (SIZE(1..32))`. */
function parseNonce(value: Element): Buffer {
  let inner: Element;
  try {
    inner = unwrap(value, "nonce");
  } catch {
    throw new OcspRequestError("bad-nonce", "the nonce extension does not hold one DER OCTET STRING");
  }
  if (inner.tag !== TAG.OCTET_STRING) throw new OcspRequestError("bad-nonce", "the nonce extension does not hold an OCTET STRING");
  const length = inner.end - inner.contentStart;
  // RFC 8954: a responder MUST reject nonces of 0 or more than 32 octets with malformedRequest.
  if (length < 1 || length > MAX_NONCE_OCTETS)
    throw new OcspRequestError("bad-nonce", `nonce of ${length} octets (1..${MAX_NONCE_OCTETS} allowed)`);
  return contentOf(inner);
}

// ---------------------------------------------------------------------------------------------
// Issuer hashes

/** CertID hashes for an issuer: H(its subject Name DER) and H(its subjectPublicKey bits). Precompute per issuer. */
export function issuerHashes(issuerCertificate: ParsedCertificate, alg: OcspHash): { nameHash: Buffer; keyHash: Buffer } {
  if (!HASH_BY_NAME.has(alg)) throw new RangeError(`unsupported OCSP hash ${alg}`);
  return {
    nameHash: createHash(alg).update(issuerCertificate.subject).digest(),
    keyHash: createHash(alg).update(issuerCertificate.subjectPublicKey).digest(),
  };
}

// ---------------------------------------------------------------------------------------------
// Responses

export type CertStatus = { status: "good" } | { status: "revoked"; revokedAt: Date; reason?: RevocationReasonName } | { status: "unknown" };

export interface SingleResponseInput {
  certId: OcspCertId;
  status: CertStatus;
  thisUpdate: Date;
  nextUpdate?: Date;
}

export interface OcspResponder {
  /** The delegated responder certificate (buildOcspResponderCertificate). */
  certificate: ParsedCertificate;
  signer: Signer;
  /** SHA-1 of the responder's subjectPublicKey BIT STRING content (ResponderID byKey). */
  keyHash: Buffer;
}

/** An OcspResponder with its key hash computed from the certificate. */
export function ocspResponder(certificate: ParsedCertificate, signer: Signer): OcspResponder {
  return { certificate, signer, keyHash: keyIdentifier(certificate.subjectPublicKey) };
}

export interface OcspResponseInput {
  producedAt: Date;
  responses: readonly SingleResponseInput[];
  /** Echoed in responseExtensions (RFC 8954); pass the request's nonce. */
  nonce?: Buffer;
  /** Include the responder certificate in certs [0] (default true; clients need it to verify a delegated signer). */
  includeCertificate?: boolean;
}

export type OcspErrorStatus = "malformedRequest" | "internalError" | "tryLater" | "sigRequired" | "unauthorized";
export type OcspResponseStatus = "successful" | OcspErrorStatus;

const RESPONSE_STATUS_CODES: Readonly<Record<OcspResponseStatus, number>> = {
  successful: 0,
  malformedRequest: 1,
  internalError: 2,
  tryLater: 3,
  // 4 is not used
  sigRequired: 5,
  unauthorized: 6,
};
const RESPONSE_STATUS_BY_CODE = new Map<number, OcspResponseStatus>(
  Object.entries(RESPONSE_STATUS_CODES).map(([name, code]) => [code, name as OcspResponseStatus]),
);

const ERROR_RESPONSES = new Map<OcspErrorStatus, Buffer>(
  (["malformedRequest", "internalError", "tryLater", "sigRequired", "unauthorized"] as const).map((s) => [
    s,
    sequence(tlv(TAG.ENUMERATED, Buffer.from([RESPONSE_STATUS_CODES[s]]))),
  ]),
);

/** An unsuccessful OCSPResponse: just the status, e.g. 30 03 0a 01 01 for malformedRequest. */
export function ocspErrorResponse(status: OcspErrorStatus): Buffer {
  const der = ERROR_RESPONSES.get(status);
  if (!der) throw new RangeError(`not an OCSP error status: ${String(status)}`);
  return Buffer.from(der); // a copy: callers may not mutate the shared constant
}

const SUCCESSFUL = tlv(TAG.ENUMERATED, Buffer.from([0]));
const EMPTY = Buffer.alloc(0);
const BASIC_OID = oid(OID.ocspBasic);
const NONCE_OID = oid(OID.ocspNonce);
const GOOD = Buffer.from([0x80, 0x00]); // good [0] IMPLICIT NULL
const UNKNOWN = Buffer.from([0x82, 0x00]); // unknown [2] IMPLICIT UnknownInfo (NULL)
const REASON_ENCODINGS = new Map<RevocationReasonName, Buffer>(
  Object.entries(REVOCATION_REASON_CODES).map(([name, code]) => [
    name as RevocationReasonName,
    explicit(0, tlv(TAG.ENUMERATED, Buffer.from([code]))),
  ]),
);

/** Size of a DER tag + length header for content of `length` octets. */
function headerLength(length: number): number {
  return length < 0x80 ? 2 : length < 0x100 ? 3 : length < 0x10000 ? 4 : 5;
}

function writeHeader(out: Buffer, pos: number, tag: number, length: number): number {
  out[pos++] = tag;
  if (length < 0x80) out[pos++] = length;
  else if (length < 0x100) {
    out[pos++] = 0x81;
    out[pos++] = length;
  } else if (length < 0x10000) {
    out[pos++] = 0x82;
    out[pos++] = length >> 8;
    out[pos++] = length & 0xff;
  } else {
    out[pos++] = 0x83;
    out[pos++] = length >> 16;
    out[pos++] = (length >> 8) & 0xff;
    out[pos++] = length & 0xff;
  }
  return pos;
}

/**
 * Signs BasicOCSPResponses for one delegated responder. Everything constant per responder
 * (ResponderID, signature AlgorithmIdentifier, encoded certs [0]) is encoded once here, so a
 * response costs the per-request encoding plus one signature. Build one per responder key and
 * keep it.
 */
export class OcspResponseSigner {
  private readonly responderId: Buffer;
  private readonly algorithmIdentifier: Buffer;
  private readonly certs: Buffer;
  // producedAt, thisUpdate and nextUpdate repeat across responses within a second: a tiny
  // cache of encoded GeneralizedTimes, keyed by the second.
  private readonly timeSeconds: number[] = [Number.NaN, Number.NaN, Number.NaN, Number.NaN];
  private readonly timeValues: Buffer[] = [EMPTY, EMPTY, EMPTY, EMPTY];
  private timeNext = 0;

  constructor(private readonly responder: OcspResponder) {
    if (responder.keyHash.length !== 20) throw new RangeError("the responder key hash must be a 20-octet SHA-1");
    // ResponderID ::= CHOICE { byName [1] Name, byKey [2] KeyHash } (explicitly tagged); byKey keeps responses small.
    this.responderId = explicit(2, octetString(responder.keyHash));
    this.algorithmIdentifier = responder.signer.scheme.algorithmIdentifier;
    this.certs = explicit(0, sequence(responder.certificate.der));
  }

  sign(input: OcspResponseInput): Buffer {
    const tbs = this.tbs(input);
    const { scheme, key } = this.responder.signer;
    return this.assemble(tbs, sign(scheme.hash, tbs, key), input);
  }

  /** As sign, with the signature computed on libuv's thread pool, off the event loop. */
  async signAsync(input: OcspResponseInput): Promise<Buffer> {
    const tbs = this.tbs(input);
    const { scheme, key } = this.responder.signer;
    const signature = await new Promise<Buffer>((resolve, reject) =>
      sign(scheme.hash, tbs, key, (err, sig) => (err ? reject(err) : resolve(sig))),
    );
    return this.assemble(tbs, signature, input);
  }

  private tbs(input: OcspResponseInput): Buffer {
    if (input.responses.length === 0) throw new RangeError("an OCSP response needs at least one SingleResponse");
    const singles = input.responses.map((r) => this.single(r));
    const parts = [this.responderId, this.time(input.producedAt), tlv(TAG.SEQUENCE, singles)];
    if (input.nonce !== undefined) {
      if (input.nonce.length < 1 || input.nonce.length > MAX_NONCE_OCTETS)
        throw new RangeError(`nonce of ${input.nonce.length} octets (1..32 allowed)`);
      // responseExtensions [1] EXPLICIT Extensions { nonce, extnValue = DER of OCTET STRING(nonce) }
      parts.push(explicit(1, sequence(sequence(NONCE_OID, octetString(octetString(input.nonce))))));
    }
    return tlv(TAG.SEQUENCE, parts); // version v1 is the DEFAULT and therefore omitted
  }

  private assemble(tbs: Buffer, rawSignature: Buffer, input: OcspResponseInput): Buffer {
    const signature = bitString(rawSignature);
    const certs = input.includeCertificate === false ? EMPTY : this.certs;
    // OCSPResponse ::= SEQUENCE { responseStatus, responseBytes [0] EXPLICIT SEQUENCE { responseType,
    //   response OCTET STRING (BasicOCSPResponse ::= SEQUENCE { tbs, signatureAlgorithm, signature, certs [0] }) } }
    // Written into one buffer, sizes first, instead of re-copying the body at every nesting level.
    const basicLen = tbs.length + this.algorithmIdentifier.length + signature.length + certs.length;
    const basicTotal = headerLength(basicLen) + basicLen;
    const octetsTotal = headerLength(basicTotal) + basicTotal;
    const bytesLen = BASIC_OID.length + octetsTotal;
    const bytesTotal = headerLength(bytesLen) + bytesLen;
    const rootLen = SUCCESSFUL.length + headerLength(bytesTotal) + bytesTotal;
    const out = Buffer.allocUnsafe(headerLength(rootLen) + rootLen);
    let pos = writeHeader(out, 0, TAG.SEQUENCE, rootLen);
    pos += SUCCESSFUL.copy(out, pos);
    pos = writeHeader(out, pos, 0xa0, bytesTotal);
    pos = writeHeader(out, pos, TAG.SEQUENCE, bytesLen);
    pos += BASIC_OID.copy(out, pos);
    pos = writeHeader(out, pos, TAG.OCTET_STRING, basicTotal);
    pos = writeHeader(out, pos, TAG.SEQUENCE, basicLen);
    pos += tbs.copy(out, pos);
    pos += this.algorithmIdentifier.copy(out, pos);
    pos += signature.copy(out, pos);
    pos += certs.copy(out, pos);
    if (pos !== out.length) throw new Error("OCSP response length mismatch"); // cannot happen; guards the arithmetic
    return out;
  }

  private single(r: SingleResponseInput): Buffer {
    let status: Buffer;
    const s = r.status;
    if (s.status === "good") status = GOOD;
    else if (s.status === "unknown") status = UNKNOWN;
    else {
      // RevokedInfo ::= SEQUENCE { revocationTime GeneralizedTime, revocationReason [0] EXPLICIT CRLReason OPTIONAL },
      // as revoked [1] IMPLICIT. As for CRL entries (RFC 5280 5.3.1), "unspecified" is written by omitting the reason.
      if (s.reason === "removeFromCRL")
        throw new RangeError("removeFromCRL is not a revocation reason for OCSP; a released hold is `good`");
      if (s.reason !== undefined && !REASON_ENCODINGS.has(s.reason)) throw new RangeError(`unknown revocation reason ${String(s.reason)}`);
      const reason = s.reason && s.reason !== "unspecified" ? REASON_ENCODINGS.get(s.reason) : undefined;
      const time = this.time(s.revokedAt);
      status = reason ? tlv(0xa1, [time, reason]) : tlv(0xa1, time);
    }
    const thisUpdate = this.time(r.thisUpdate);
    if (r.nextUpdate === undefined) return sequence(r.certId.der, status, thisUpdate);
    if (r.nextUpdate.getTime() < r.thisUpdate.getTime()) throw new RangeError("nextUpdate is before thisUpdate");
    return sequence(r.certId.der, status, thisUpdate, explicit(0, this.time(r.nextUpdate)));
  }

  /** GeneralizedTime in whole seconds (RFC 6960 / RFC 5280: no fractional seconds). */
  private time(date: Date): Buffer {
    const ms = date.getTime();
    if (!Number.isFinite(ms)) throw new RangeError("invalid date");
    const second = Math.floor(ms / 1000);
    const cached = this.timeSeconds.indexOf(second);
    if (cached >= 0) return this.timeValues[cached]!;
    const encoded = generalizedTime(new Date(second * 1000));
    this.timeSeconds[this.timeNext] = second;
    this.timeValues[this.timeNext] = encoded;
    this.timeNext = (this.timeNext + 1) % this.timeSeconds.length;
    return encoded;
  }
}

const signers = new WeakMap<OcspResponder, OcspResponseSigner>();

/**
 * A successful OCSPResponse with a BasicOCSPResponse signed by `responder`. The per-responder
 * constants are cached on the responder object, so keep passing the same object.
 */
export function buildOcspResponse(responder: OcspResponder, input: OcspResponseInput): Buffer {
  let signer = signers.get(responder);
  if (!signer) {
    signer = new OcspResponseSigner(responder);
    signers.set(responder, signer);
  }
  return signer.sign(input);
}

// ---------------------------------------------------------------------------------------------
// Response parsing (tests, agent-side checks): structure only; the signature is returned for the caller to verify.

export interface ParsedSingleResponse {
  certId: OcspCertId;
  status: CertStatus;
  thisUpdate: Date;
  nextUpdate?: Date;
}

export interface ParsedBasicOcspResponse {
  responseStatus: "successful";
  producedAt: Date;
  responses: ParsedSingleResponse[];
  /** The response nonce: the inner OCTET STRING's content, or the raw extnValue if it is not one. */
  nonce?: Buffer;
  /** ResponderID byKey. */
  responderKeyHash?: Buffer;
  /** ResponderID byName (DER Name). */
  responderName?: Buffer;
  /** certs [0], each a DER Certificate. */
  certs: Buffer[];
  responseExtensions: Map<string, ParsedExtension>;
  /** The signed bytes (DER ResponseData). */
  tbsResponseData: Buffer;
  signatureAlgorithm: string;
  signature: Buffer;
}

export type ParsedOcspResponse = { responseStatus: OcspErrorStatus } | ParsedBasicOcspResponse;

/** Parses an OCSPResponse; throws OcspResponseError (and nothing else) for input it cannot read. */
export function parseOcspResponse(der: Buffer): ParsedOcspResponse {
  try {
    return parseResponse(der);
  } catch (e) {
    if (e instanceof Malformed) throw new OcspResponseError(e.reason, e.message);
    if (e instanceof DerError) throw new OcspResponseError("malformed-der", e.message);
    throw e;
  }
}

function parseResponse(der: Buffer): ParsedOcspResponse {
  const root = expect(readRoot(der), TAG.SEQUENCE, "OCSPResponse");
  const statusEl = expect(at(root, root.contentStart, "responseStatus"), TAG.ENUMERATED, "responseStatus");
  const code = contentOf(statusEl);
  const status = code.length === 1 ? RESPONSE_STATUS_BY_CODE.get(code[0]!) : undefined;
  if (!status) throw new OcspResponseError("unknown-response-status", `responseStatus ${code.toString("hex")}`);
  if (status !== "successful") {
    if (statusEl.end !== root.end) throw new OcspResponseError("unexpected-response-bytes", `${status} response with responseBytes`);
    return { responseStatus: status };
  }
  if (statusEl.end === root.end) throw new OcspResponseError("missing-response-bytes", "successful response without responseBytes");
  const wrapper = expect(at(root, statusEl.end, "responseBytes"), 0xa0, "responseBytes [0]");
  noMore(root, wrapper.end, "OCSPResponse");
  const responseBytes = expect(unwrap(wrapper, "ResponseBytes"), TAG.SEQUENCE, "ResponseBytes");
  const type = expect(at(responseBytes, responseBytes.contentStart, "responseType"), TAG.OID, "responseType");
  const octets = expect(at(responseBytes, type.end, "response"), TAG.OCTET_STRING, "response");
  noMore(responseBytes, octets.end, "ResponseBytes");
  if (!sameContent(type, BASIC_OID_CONTENT)) throw new OcspResponseError("unsupported-response-type", `response type ${readOid(type)}`);

  // BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature, certs [0] EXPLICIT OPTIONAL }
  const basic = expect(readRoot(contentOf(octets)), TAG.SEQUENCE, "BasicOCSPResponse");
  const src = basic.source;
  const tbs = expect(at(basic, basic.contentStart, "tbsResponseData"), TAG.SEQUENCE, "ResponseData");
  const sigAlg = expect(at(basic, tbs.end, "signatureAlgorithm"), TAG.SEQUENCE, "signatureAlgorithm");
  const sigBits = expect(at(basic, sigAlg.end, "signature"), TAG.BIT_STRING, "signature");
  const sigContent = contentOf(sigBits);
  if (sigContent.length === 0 || sigContent[0] !== 0) throw new DerError("signature BIT STRING with unused bits", sigBits.start);
  const certs: Buffer[] = [];
  if (sigBits.end < basic.end) {
    const certsWrapper = expect(at(basic, sigBits.end, "certs"), 0xa0, "certs [0]");
    noMore(basic, certsWrapper.end, "BasicOCSPResponse");
    const seq = expect(unwrap(certsWrapper, "certs"), TAG.SEQUENCE, "certs");
    for (let off = seq.contentStart; off < seq.end;) {
      const cert = expect(at(seq, off, "Certificate"), TAG.SEQUENCE, "Certificate");
      certs.push(src.subarray(cert.start, cert.end));
      off = cert.end;
    }
  }

  // ResponseData ::= SEQUENCE { version [0] DEFAULT v1, responderID, producedAt, responses, responseExtensions [1] OPTIONAL }
  let e = at(tbs, tbs.contentStart, "responderID");
  if (e.tag === 0xa0) {
    const version = expect(unwrap(e, "version"), TAG.INTEGER, "version");
    if (version.end - version.contentStart !== 1 || src[version.contentStart] !== 0)
      throw new OcspResponseError("unsupported-version", "only v1 responses are supported");
    e = at(tbs, e.end, "responderID");
  }
  let responderKeyHash: Buffer | undefined;
  let responderName: Buffer | undefined;
  if (e.tag === 0xa1) {
    const name = expect(unwrap(e, "responderID byName"), TAG.SEQUENCE, "Name");
    responderName = src.subarray(name.start, name.end);
  } else if (e.tag === 0xa2) responderKeyHash = contentOf(expect(unwrap(e, "responderID byKey"), TAG.OCTET_STRING, "KeyHash"));
  else throw new DerError(`expected ResponderID ([1] or [2]), found tag 0x${e.tag.toString(16)}`, e.start);
  const producedAtEl = at(tbs, e.end, "producedAt");
  const producedAt = readGeneralizedTime(producedAtEl);
  const list = expect(at(tbs, producedAtEl.end, "responses"), TAG.SEQUENCE, "responses");
  const responseExtensions = new Map<string, ParsedExtension>();
  let nonce: Buffer | undefined;
  if (list.end < tbs.end) {
    const extWrapper = expect(at(tbs, list.end, "responseExtensions"), 0xa1, "responseExtensions [1]");
    noMore(tbs, extWrapper.end, "ResponseData");
    for (const ext of parseExtensions(extWrapper)) {
      const value = contentOf(ext.value);
      responseExtensions.set(readOid(ext.oid), { critical: ext.critical, value });
      if (sameContent(ext.oid, NONCE_OID_CONTENT)) {
        let inner: Element | undefined;
        try {
          inner = unwrap(ext.value, "nonce");
        } catch {
          inner = undefined;
        }
        nonce = inner && inner.tag === TAG.OCTET_STRING ? contentOf(inner) : value;
      }
    }
  }

  const responses: ParsedSingleResponse[] = [];
  for (let off = list.contentStart; off < list.end;) {
    const single = expect(at(list, off, "SingleResponse"), TAG.SEQUENCE, "SingleResponse");
    off = single.end;
    responses.push(parseSingleResponse(single));
  }
  const result: ParsedBasicOcspResponse = {
    responseStatus: "successful",
    producedAt,
    responses,
    certs,
    responseExtensions,
    tbsResponseData: src.subarray(tbs.start, tbs.end),
    signatureAlgorithm: readOid(expect(at(sigAlg, sigAlg.contentStart, "signature algorithm OID"), TAG.OID, "signature algorithm OID")),
    signature: sigContent.subarray(1),
  };
  if (nonce) result.nonce = nonce;
  if (responderKeyHash) result.responderKeyHash = responderKeyHash;
  if (responderName) result.responderName = responderName;
  return result;
}

function parseSingleResponse(single: Element): ParsedSingleResponse {
  // SingleResponse ::= SEQUENCE { certID, certStatus, thisUpdate, nextUpdate [0] OPTIONAL, singleExtensions [1] OPTIONAL }
  const certIdEl = at(single, single.contentStart, "certID");
  const certId = parseCertId(certIdEl);
  const statusEl = at(single, certIdEl.end, "certStatus");
  let status: CertStatus;
  if (statusEl.tag === 0x80 && statusEl.end === statusEl.contentStart) status = { status: "good" };
  else if (statusEl.tag === 0x82 && statusEl.end === statusEl.contentStart) status = { status: "unknown" };
  else if (statusEl.tag === 0xa1) {
    const timeEl = at(statusEl, statusEl.contentStart, "revocationTime");
    const revokedAt = readGeneralizedTime(timeEl);
    if (timeEl.end < statusEl.end) {
      const reasonWrapper = expect(at(statusEl, timeEl.end, "revocationReason"), 0xa0, "revocationReason [0]");
      noMore(statusEl, reasonWrapper.end, "RevokedInfo");
      const reasonEl = expect(unwrap(reasonWrapper, "CRLReason"), TAG.ENUMERATED, "CRLReason");
      const code = contentOf(reasonEl);
      const reason = code.length === 1 ? REASON_BY_CODE.get(code[0]!) : undefined;
      if (!reason) throw new OcspResponseError("bad-reason", `CRLReason ${code.toString("hex")}`);
      status = { status: "revoked", revokedAt, reason };
    } else status = { status: "revoked", revokedAt };
  } else throw new OcspResponseError("bad-cert-status", `certStatus with tag 0x${statusEl.tag.toString(16)}`);
  const thisUpdateEl = at(single, statusEl.end, "thisUpdate");
  const out: ParsedSingleResponse = { certId, status, thisUpdate: readGeneralizedTime(thisUpdateEl) };
  let off = thisUpdateEl.end;
  if (off < single.end) {
    const next = at(single, off, "nextUpdate");
    if (next.tag === 0xa0) {
      out.nextUpdate = readGeneralizedTime(unwrap(next, "nextUpdate"));
      off = next.end;
    }
  }
  if (off < single.end) {
    const extWrapper = expect(at(single, off, "singleExtensions"), 0xa1, "singleExtensions [1]");
    parseExtensions(extWrapper); // checked for shape and duplicates; contents are not used
    off = extWrapper.end;
  }
  noMore(single, off, "SingleResponse");
  return out;
}

/** GeneralizedTime "YYYYMMDDHHMMSSZ" only (RFC 5280 4.1.2.5.2), read by the one strict time reader. */
function readGeneralizedTime(e: Element): Date {
  expect(e, TAG.GENERALIZED_TIME, "GeneralizedTime");
  try {
    return new Date(readX509Time(e.tag, e.source, e.contentStart, e.end));
  } catch (err) {
    if (err instanceof InvalidTime) throw new OcspResponseError("bad-time", `invalid GeneralizedTime: ${err.message}`);
    throw err;
  }
}
