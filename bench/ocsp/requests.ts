// The OCSP requests both servers are asked: unsigned, one SHA-1 CertID each (what OpenSSL and most
// clients send), built with the project's DER writer and read back with its parser. The product
// only answers OCSP requests, so building them is the client's (the bench's) job.
import { randomFillSync } from "node:crypto";
import { OID } from "../../src/der/oids.js";
import { explicit, nullValue, octetString, oid, sequence, unsignedInteger } from "../../src/der/writer.js";
import { issuerHashes, parseOcspRequest } from "../../src/x509/ocsp-request.js";
import { check } from "../lib.js";
import type { CertState, Fixture } from "./fleet.js";
import { CACHED_REQUESTS, NONCE_BYTES } from "./settings.js";

/** OCSPRequest { TBSRequest { requestList { Request { reqCert } }, requestExtensions [2] { nonce }? } }, unsigned. */
function ocspRequest(certId: Buffer, nonce?: Buffer): Buffer {
  const requestList = sequence(sequence(certId));
  if (!nonce) return sequence(sequence(requestList));
  // RFC 8954: extnValue = DER of OCTET STRING (nonce). It is the last thing in the request.
  const extensions = explicit(2, sequence(sequence(oid(OID.ocspNonce), octetString(octetString(nonce)))));
  return sequence(sequence(requestList, extensions));
}

export interface Requests {
  /** Per certificate: a request whose last NONCE_BYTES bytes are the nonce, to be overwritten. */
  nonceTemplates: Buffer[];
  /** CACHED_REQUESTS no-nonce requests, for good certificates. */
  cached: Buffer[];
  cachedCerts: CertState[];
}

export function prepareRequests(fixture: Fixture): Requests {
  // CertID with SHA-1 (what OpenSSL and most clients send): H(issuer subject DER), H(issuer key bits).
  const { nameHash, keyHash } = issuerHashes(fixture.devicesCa, "sha1");
  const certId = (serialHex: string) =>
    sequence(
      sequence(oid(OID.sha1), nullValue()),
      octetString(nameHash),
      octetString(keyHash),
      unsignedInteger(Buffer.from(serialHex, "hex")),
    );
  const nonceTemplates = fixture.certs.map((c) => ocspRequest(certId(c.serialHex), Buffer.alloc(NONCE_BYTES)));
  const cachedCerts = fixture.certs.filter((c) => c.status === "good").slice(0, CACHED_REQUESTS);
  const cached = cachedCerts.map((c) => ocspRequest(certId(c.serialHex)));

  // Our own parser must read them as meant, the nonce where the load loop writes it.
  const probe = withFreshNonce(nonceTemplates[0]!);
  const parsed = parseOcspRequest(probe);
  check(
    parsed.certIds.length === 1 && parsed.certIds[0]!.serialHex === fixture.certs[0]!.serialHex,
    "parseOcspRequest reads another serial than the request carries",
  );
  check(parsed.nonce?.equals(probe.subarray(probe.length - NONCE_BYTES)), "the nonce is not the last NONCE_BYTES bytes of the request");
  check(parseOcspRequest(cached[0]!).nonce === undefined, "a cached request carries a nonce");
  return { nonceTemplates, cached, cachedCerts };
}

export function withFreshNonce(template: Buffer): Buffer {
  const request = Buffer.allocUnsafe(template.length);
  template.copy(request);
  randomFillSync(request, template.length - NONCE_BYTES, NONCE_BYTES);
  return request;
}
