// OCSP (RFC 6960) requests: the strict request parser a delegated responder runs on every
// status query (RFC 8954 nonce, RFC 5019 lightweight profile in mind), CertIDs and the issuer
// hashes they are matched against. Responses are built in ocsp-response.ts. Pure: bytes in,
// bytes out, no clock; the caller (authority/status) looks certificates up.
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
import { createHash } from "node:crypto";
import { OID } from "../der/oids.js";
import {
  DerError,
  childAt,
  content,
  contentEquals,
  expectEnd,
  expectTag,
  onlyChild,
  readOid,
  readRoot,
  readUnsignedInteger,
  type Element,
} from "../der/reader.js";
import { TAG, oid } from "../der/writer.js";
import type { ParsedCertificate } from "./certificate.js";
import { DuplicateExtension, readExtensionList, type ExtensionElement } from "./extensions.js";

export type OcspHash = "sha1" | "sha256" | "sha384" | "sha512";

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

/**
 * Thrown by the pieces request and response parsing share (parseCertId, parseOcspExtensions);
 * each parser maps it to its own error at its boundary.
 */
export class OcspMalformed extends Error {
  constructor(
    readonly reason: "bad-hash-length" | "duplicate-extension",
    message: string,
  ) {
    super(message);
  }
}

const HASHES: ReadonlyArray<{ name: OcspHash; oidContent: Buffer; length: number }> = [
  { name: "sha1", oidContent: oid(OID.sha1).subarray(2), length: 20 },
  { name: "sha256", oidContent: oid(OID.sha256).subarray(2), length: 32 },
  { name: "sha384", oidContent: oid(OID.sha384).subarray(2), length: 48 },
  { name: "sha512", oidContent: oid(OID.sha512).subarray(2), length: 64 },
];
const HASH_BY_NAME = new Map(HASHES.map((h) => [h.name, h]));
const NONCE_OID_CONTENT = oid(OID.ocspNonce).subarray(2);

/** RFC 8954: a nonce has 1..32 octets, in requests and in the responses that echo it. */
export const MAX_NONCE_OCTETS = 32;

/**
 * CertID ::= SEQUENCE { hashAlgorithm, issuerNameHash, issuerKeyHash, serialNumber }. Also read in
 * responses (the test-side response parser), hence exported; throws DerError or OcspMalformed.
 */
export function parseCertId(e: Element): OcspCertId {
  expectTag(e, TAG.SEQUENCE, "CertID");
  const alg = expectTag(childAt(e, e.contentStart, "hashAlgorithm"), TAG.SEQUENCE, "hashAlgorithm");
  const algOid = expectTag(childAt(alg, alg.contentStart, "hash algorithm OID"), TAG.OID, "hash algorithm OID");
  // Parameters: absent (RFC 5754) or NULL (what OpenSSL and most clients send); both accepted.
  // Anything else means an algorithm variant we do not implement, answered `unknown`.
  let paramsOk = true;
  if (algOid.end < alg.end) {
    const params = childAt(alg, algOid.end, "hash parameters");
    expectEnd(alg, params.end, "hashAlgorithm");
    paramsOk = params.tag === TAG.NULL && params.end === params.contentStart;
  }
  const nameHash = expectTag(childAt(e, alg.end, "issuerNameHash"), TAG.OCTET_STRING, "issuerNameHash");
  const keyHash = expectTag(childAt(e, nameHash.end, "issuerKeyHash"), TAG.OCTET_STRING, "issuerKeyHash");
  const serial = childAt(e, keyHash.end, "serialNumber");
  expectEnd(e, serial.end, "CertID");
  // Negative or non-minimal serials are rejected by readUnsignedInteger (RFC 5280: serials are positive).
  const serialHex = readUnsignedInteger(serial).toString("hex");
  let hash: OcspHash | "unsupported" = "unsupported";
  if (paramsOk) {
    for (const h of HASHES) {
      if (!contentEquals(algOid, h.oidContent)) continue;
      // A known digest of the wrong size cannot be a CertID at all.
      if (nameHash.end - nameHash.contentStart !== h.length || keyHash.end - keyHash.contentStart !== h.length)
        throw new OcspMalformed(
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
    issuerNameHash: content(nameHash),
    issuerKeyHash: content(keyHash),
    serialHex,
    der: e.source.subarray(e.start, e.end),
  };
}

/** Extensions inside an EXPLICIT tag (requests and responses); a repeated extension is malformed. */
export function parseOcspExtensions(wrapper: Element): ExtensionElement[] {
  try {
    return readExtensionList(onlyChild(wrapper, "Extensions"));
  } catch (e) {
    if (e instanceof DuplicateExtension) throw new OcspMalformed("duplicate-extension", e.message);
    throw e;
  }
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
    if (e instanceof OcspMalformed) throw new OcspRequestError(e.reason, e.message);
    if (e instanceof DerError) throw new OcspRequestError("malformed-der", e.message);
    throw e;
  }
}

function parseRequest(der: Buffer, maxCertIds: number): ParsedOcspRequest {
  // OCSPRequest ::= SEQUENCE { tbsRequest TBSRequest, optionalSignature [0] EXPLICIT Signature OPTIONAL }
  const root = expectTag(readRoot(der), TAG.SEQUENCE, "OCSPRequest");
  const tbs = expectTag(childAt(root, root.contentStart, "tbsRequest"), TAG.SEQUENCE, "TBSRequest");
  let signed = false;
  if (tbs.end < root.end) {
    const wrapper = expectTag(childAt(root, tbs.end, "optionalSignature"), 0xa0, "optionalSignature [0]");
    expectEnd(root, wrapper.end, "OCSPRequest");
    // Signature ::= SEQUENCE { signatureAlgorithm, signature BIT STRING, certs [0] OPTIONAL }:
    // only its shape is checked; verifying it is the caller's policy (RFC 5019 responders may ignore it).
    const signature = expectTag(onlyChild(wrapper, "Signature"), TAG.SEQUENCE, "Signature");
    const alg = expectTag(childAt(signature, signature.contentStart, "signatureAlgorithm"), TAG.SEQUENCE, "signatureAlgorithm");
    expectTag(childAt(signature, alg.end, "signature"), TAG.BIT_STRING, "signature");
    signed = true;
  }

  // TBSRequest ::= SEQUENCE { version [0] DEFAULT v1, requestorName [1] OPTIONAL, requestList, requestExtensions [2] OPTIONAL }
  let e = childAt(tbs, tbs.contentStart, "requestList");
  if (e.tag === 0xa0) {
    // DER omits the default v1, but an explicit v1 is harmless and accepted; any other version is not ours.
    const version = expectTag(onlyChild(e, "version"), TAG.INTEGER, "version");
    if (version.end - version.contentStart !== 1 || der[version.contentStart] !== 0)
      throw new OcspRequestError("unsupported-version", "only OCSP v1 requests are supported");
    e = childAt(tbs, e.end, "requestList");
  }
  if (e.tag === 0xa1) {
    onlyChild(e, "requestorName"); // a GeneralName we have no use for
    e = childAt(tbs, e.end, "requestList");
  }
  const list = expectTag(e, TAG.SEQUENCE, "requestList");
  let nonce: Buffer | undefined;
  if (list.end < tbs.end) {
    const wrapper = expectTag(childAt(tbs, list.end, "requestExtensions"), 0xa2, "requestExtensions [2]");
    expectEnd(tbs, wrapper.end, "TBSRequest");
    for (const ext of parseOcspExtensions(wrapper)) {
      if (contentEquals(ext.oid, NONCE_OID_CONTENT)) nonce = parseNonce(ext.value);
      else if (ext.critical) throw new OcspRequestError("unsupported-critical-extension", `critical request extension ${ext.id}`);
      // Other non-critical extensions (acceptable responses, preferred algorithms, ...) are ignored (RFC 6960 4.4).
    }
  }

  const certIds: OcspCertId[] = [];
  for (let off = list.contentStart; off < list.end;) {
    if (certIds.length >= maxCertIds) throw new OcspRequestError("too-many-cert-ids", `more than ${maxCertIds} CertIDs in one request`);
    // Request ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
    const request = expectTag(childAt(list, off, "Request"), TAG.SEQUENCE, "Request");
    off = request.end;
    const certId = childAt(request, request.contentStart, "reqCert");
    certIds.push(parseCertId(certId));
    if (certId.end < request.end) {
      const wrapper = expectTag(childAt(request, certId.end, "singleRequestExtensions"), 0xa0, "singleRequestExtensions [0]");
      expectEnd(request, wrapper.end, "Request");
      for (const ext of parseOcspExtensions(wrapper))
        if (ext.critical) throw new OcspRequestError("unsupported-critical-extension", `critical single request extension ${ext.id}`);
    }
  }
  if (certIds.length === 0) throw new OcspRequestError("no-cert-ids", "the request list is empty");
  return nonce ? { certIds, nonce, signed } : { certIds, signed };
}

/** RFC 8954 2.1: extnValue holds `Nonce ::= OCTET STRING (SIZE(1..32))`. */
function parseNonce(value: Element): Buffer {
  let inner: Element;
  try {
    inner = onlyChild(value, "nonce");
  } catch {
    throw new OcspRequestError("bad-nonce", "the nonce extension does not hold one DER OCTET STRING");
  }
  if (inner.tag !== TAG.OCTET_STRING) throw new OcspRequestError("bad-nonce", "the nonce extension does not hold an OCTET STRING");
  const length = inner.end - inner.contentStart;
  // RFC 8954: a responder MUST reject nonces of 0 or more than 32 octets with malformedRequest.
  if (length < 1 || length > MAX_NONCE_OCTETS)
    throw new OcspRequestError("bad-nonce", `nonce of ${length} octets (1..${MAX_NONCE_OCTETS} allowed)`);
  return content(inner);
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
