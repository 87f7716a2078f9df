// Reads OCSP responses, for tests and benchmarks: fleetpki itself only writes them
// (src/x509/ocsp-response.ts), so this parser is not part of the product. Structure only: the
// signature is returned for the caller to verify. It shares the CertID and extension readers
// with the request parser, so a response is held to the same strict DER as a request.
import { OID } from "../../src/der/oids.js";
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
  type Element,
} from "../../src/der/reader.js";
import { TAG, oid } from "../../src/der/writer.js";
import type { ParsedExtension } from "../../src/x509/certificate.js";
import { REVOCATION_REASON_NAMES } from "../../src/x509/crl.js";
import { OcspMalformed, parseCertId, parseOcspExtensions, type OcspCertId } from "../../src/x509/ocsp-request.js";
import { RESPONSE_STATUS_CODES, type CertStatus, type OcspErrorStatus, type OcspResponseStatus } from "../../src/x509/ocsp-response.js";
import { InvalidTime, readX509Time } from "../../src/x509/time.js";

const NONCE_OID_CONTENT = oid(OID.ocspNonce).subarray(2);
const BASIC_OID_CONTENT = oid(OID.ocspBasic).subarray(2);
const RESPONSE_STATUS_BY_CODE = new Map<number, OcspResponseStatus>(
  Object.entries(RESPONSE_STATUS_CODES).map(([name, code]) => [code, name as OcspResponseStatus]),
);

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
    if (e instanceof OcspMalformed) throw new OcspResponseError(e.reason, e.message);
    if (e instanceof DerError) throw new OcspResponseError("malformed-der", e.message);
    throw e;
  }
}

function parseResponse(der: Buffer): ParsedOcspResponse {
  const root = expectTag(readRoot(der), TAG.SEQUENCE, "OCSPResponse");
  const statusEl = expectTag(childAt(root, root.contentStart, "responseStatus"), TAG.ENUMERATED, "responseStatus");
  const code = content(statusEl);
  const status = code.length === 1 ? RESPONSE_STATUS_BY_CODE.get(code[0]!) : undefined;
  if (!status) throw new OcspResponseError("unknown-response-status", `responseStatus ${code.toString("hex")}`);
  if (status !== "successful") {
    if (statusEl.end !== root.end) throw new OcspResponseError("unexpected-response-bytes", `${status} response with responseBytes`);
    return { responseStatus: status };
  }
  if (statusEl.end === root.end) throw new OcspResponseError("missing-response-bytes", "successful response without responseBytes");
  const wrapper = expectTag(childAt(root, statusEl.end, "responseBytes"), 0xa0, "responseBytes [0]");
  expectEnd(root, wrapper.end, "OCSPResponse");
  const responseBytes = expectTag(onlyChild(wrapper, "ResponseBytes"), TAG.SEQUENCE, "ResponseBytes");
  const type = expectTag(childAt(responseBytes, responseBytes.contentStart, "responseType"), TAG.OID, "responseType");
  const octets = expectTag(childAt(responseBytes, type.end, "response"), TAG.OCTET_STRING, "response");
  expectEnd(responseBytes, octets.end, "ResponseBytes");
  if (!contentEquals(type, BASIC_OID_CONTENT)) throw new OcspResponseError("unsupported-response-type", `response type ${readOid(type)}`);

  // BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature, certs [0] EXPLICIT OPTIONAL }
  const basic = expectTag(readRoot(content(octets)), TAG.SEQUENCE, "BasicOCSPResponse");
  const src = basic.source;
  const tbs = expectTag(childAt(basic, basic.contentStart, "tbsResponseData"), TAG.SEQUENCE, "ResponseData");
  const sigAlg = expectTag(childAt(basic, tbs.end, "signatureAlgorithm"), TAG.SEQUENCE, "signatureAlgorithm");
  const sigBits = expectTag(childAt(basic, sigAlg.end, "signature"), TAG.BIT_STRING, "signature");
  const sigContent = content(sigBits);
  if (sigContent.length === 0 || sigContent[0] !== 0) throw new DerError("signature BIT STRING with unused bits", sigBits.start);
  const certs: Buffer[] = [];
  if (sigBits.end < basic.end) {
    const certsWrapper = expectTag(childAt(basic, sigBits.end, "certs"), 0xa0, "certs [0]");
    expectEnd(basic, certsWrapper.end, "BasicOCSPResponse");
    const seq = expectTag(onlyChild(certsWrapper, "certs"), TAG.SEQUENCE, "certs");
    for (let off = seq.contentStart; off < seq.end;) {
      const cert = expectTag(childAt(seq, off, "Certificate"), TAG.SEQUENCE, "Certificate");
      certs.push(src.subarray(cert.start, cert.end));
      off = cert.end;
    }
  }

  // ResponseData ::= SEQUENCE { version [0] DEFAULT v1, responderID, producedAt, responses, responseExtensions [1] OPTIONAL }
  let e = childAt(tbs, tbs.contentStart, "responderID");
  if (e.tag === 0xa0) {
    const version = expectTag(onlyChild(e, "version"), TAG.INTEGER, "version");
    if (version.end - version.contentStart !== 1 || src[version.contentStart] !== 0)
      throw new OcspResponseError("unsupported-version", "only v1 responses are supported");
    e = childAt(tbs, e.end, "responderID");
  }
  let responderKeyHash: Buffer | undefined;
  let responderName: Buffer | undefined;
  if (e.tag === 0xa1) {
    const name = expectTag(onlyChild(e, "responderID byName"), TAG.SEQUENCE, "Name");
    responderName = src.subarray(name.start, name.end);
  } else if (e.tag === 0xa2) responderKeyHash = content(expectTag(onlyChild(e, "responderID byKey"), TAG.OCTET_STRING, "KeyHash"));
  else throw new DerError(`expected ResponderID ([1] or [2]), found tag 0x${e.tag.toString(16)}`, e.start);
  const producedAtEl = childAt(tbs, e.end, "producedAt");
  const producedAt = readGeneralizedTime(producedAtEl);
  const list = expectTag(childAt(tbs, producedAtEl.end, "responses"), TAG.SEQUENCE, "responses");
  const responseExtensions = new Map<string, ParsedExtension>();
  let nonce: Buffer | undefined;
  if (list.end < tbs.end) {
    const extWrapper = expectTag(childAt(tbs, list.end, "responseExtensions"), 0xa1, "responseExtensions [1]");
    expectEnd(tbs, extWrapper.end, "ResponseData");
    for (const ext of parseOcspExtensions(extWrapper)) {
      const value = content(ext.value);
      responseExtensions.set(readOid(ext.oid), { critical: ext.critical, value });
      if (contentEquals(ext.oid, NONCE_OID_CONTENT)) {
        let inner: Element | undefined;
        try {
          inner = onlyChild(ext.value, "nonce");
        } catch {
          inner = undefined;
        }
        nonce = inner && inner.tag === TAG.OCTET_STRING ? content(inner) : value;
      }
    }
  }

  const responses: ParsedSingleResponse[] = [];
  for (let off = list.contentStart; off < list.end;) {
    const single = expectTag(childAt(list, off, "SingleResponse"), TAG.SEQUENCE, "SingleResponse");
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
    signatureAlgorithm: readOid(
      expectTag(childAt(sigAlg, sigAlg.contentStart, "signature algorithm OID"), TAG.OID, "signature algorithm OID"),
    ),
    signature: sigContent.subarray(1),
  };
  if (nonce) result.nonce = nonce;
  if (responderKeyHash) result.responderKeyHash = responderKeyHash;
  if (responderName) result.responderName = responderName;
  return result;
}

function parseSingleResponse(single: Element): ParsedSingleResponse {
  // SingleResponse ::= SEQUENCE { certID, certStatus, thisUpdate, nextUpdate [0] OPTIONAL, singleExtensions [1] OPTIONAL }
  const certIdEl = childAt(single, single.contentStart, "certID");
  const certId = parseCertId(certIdEl);
  const statusEl = childAt(single, certIdEl.end, "certStatus");
  let status: CertStatus;
  if (statusEl.tag === 0x80 && statusEl.end === statusEl.contentStart) status = { status: "good" };
  else if (statusEl.tag === 0x82 && statusEl.end === statusEl.contentStart) status = { status: "unknown" };
  else if (statusEl.tag === 0xa1) {
    const timeEl = childAt(statusEl, statusEl.contentStart, "revocationTime");
    const revokedAt = readGeneralizedTime(timeEl);
    if (timeEl.end < statusEl.end) {
      const reasonWrapper = expectTag(childAt(statusEl, timeEl.end, "revocationReason"), 0xa0, "revocationReason [0]");
      expectEnd(statusEl, reasonWrapper.end, "RevokedInfo");
      const reasonEl = expectTag(onlyChild(reasonWrapper, "CRLReason"), TAG.ENUMERATED, "CRLReason");
      const code = content(reasonEl);
      const reason = code.length === 1 ? REVOCATION_REASON_NAMES.get(code[0]!) : undefined;
      if (!reason) throw new OcspResponseError("bad-reason", `CRLReason ${code.toString("hex")}`);
      status = { status: "revoked", revokedAt, reason };
    } else status = { status: "revoked", revokedAt };
  } else throw new OcspResponseError("bad-cert-status", `certStatus with tag 0x${statusEl.tag.toString(16)}`);
  const thisUpdateEl = childAt(single, statusEl.end, "thisUpdate");
  const out: ParsedSingleResponse = { certId, status, thisUpdate: readGeneralizedTime(thisUpdateEl) };
  let off = thisUpdateEl.end;
  if (off < single.end) {
    const next = childAt(single, off, "nextUpdate");
    if (next.tag === 0xa0) {
      out.nextUpdate = readGeneralizedTime(onlyChild(next, "nextUpdate"));
      off = next.end;
    }
  }
  if (off < single.end) {
    const extWrapper = expectTag(childAt(single, off, "singleExtensions"), 0xa1, "singleExtensions [1]");
    parseOcspExtensions(extWrapper); // checked for shape and duplicates; contents are not used
    off = extWrapper.end;
  }
  expectEnd(single, off, "SingleResponse");
  return out;
}

/** GeneralizedTime "YYYYMMDDHHMMSSZ" only (RFC 5280 4.1.2.5.2), read by the one strict time reader. */
function readGeneralizedTime(e: Element): Date {
  expectTag(e, TAG.GENERALIZED_TIME, "GeneralizedTime");
  try {
    return new Date(readX509Time(e.tag, e.source, e.contentStart, e.end));
  } catch (err) {
    if (err instanceof InvalidTime) throw new OcspResponseError("bad-time", `invalid GeneralizedTime: ${err.message}`);
    throw err;
  }
}
