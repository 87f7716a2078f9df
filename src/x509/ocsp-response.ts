// OCSP (RFC 6960) responses: BasicOCSPResponses signed by a delegated responder, with the
// RFC 8954 nonce echoed, and the unsigned error responses. Requests and CertIDs are in
// ocsp-request.ts; the response parser that tests and benchmarks use lives in
// test/support/ocsp-response.ts, since nothing in fleetpki reads OCSP responses. Pure: bytes in,
// bytes out, no clock (every time is passed in).
import { sign } from "node:crypto";
import { OID } from "../der/oids.js";
import { TAG, bitString, explicit, generalizedTime, headerLength, octetString, oid, sequence, tlv, writeHeader } from "../der/writer.js";
import { keyIdentifier } from "./extensions.js";
import type { ParsedCertificate, Signer } from "./certificate.js";
import { REVOCATION_REASONS, type RevocationReason } from "./crl.js";
import { MAX_NONCE_OCTETS, type OcspCertId } from "./ocsp-request.js";

/** CRLReason names (RFC 5280 5.3.1), shared with the CRL module. */
export type RevocationReasonName = RevocationReason;

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

export const RESPONSE_STATUS_CODES: Readonly<Record<OcspResponseStatus, number>> = {
  successful: 0,
  malformedRequest: 1,
  internalError: 2,
  tryLater: 3,
  // 4 is not used
  sigRequired: 5,
  unauthorized: 6,
};

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
// The ENUMERATED codes are crl.ts's: one table for CRL entries and OCSP answers.
const REASON_ENCODINGS = new Map<RevocationReasonName, Buffer>(
  Object.entries(REVOCATION_REASONS).map(([name, code]) => [
    name as RevocationReasonName,
    explicit(0, tlv(TAG.ENUMERATED, Buffer.from([code]))),
  ]),
);

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
