// Checks on what the servers answer: every answer against the database's status, signatures
// against the responder certificate, and one probe answer from each server judged by openssl.
import { X509Certificate, verify, type KeyObject } from "node:crypto";
import { writeFileSync } from "node:fs";
import { Agent } from "node:http";
import { join } from "node:path";
import { OID } from "../../src/der/oids.js";
import { parseOcspResponse, type ParsedBasicOcspResponse } from "../../test/support/ocsp-response.js";
import { BenchFailure, check } from "../lib.js";
import { post } from "./clients.js";
import type { CertState } from "./fleet.js";
import { openssl } from "./openssl.js";
import { NONCE_BYTES, OCSP_PATH, OCSP_RESPONSE_TYPE, TARGET_LABEL, type Target } from "./settings.js";

/** A responder certificate and its public key, as taken from a server's first answer. */
export interface ResponderCert {
  der: Buffer;
  key: KeyObject;
}

/**
 * A successful OCSPResponse with one SingleResponse for this certificate, saying what the database
 * says (good, or revoked at that second for that reason), echoing the nonce if one was sent and
 * carrying none otherwise, signed with ECDSA-SHA256, with a nextUpdate after thisUpdate.
 */
export function checkAnswer(der: Buffer, cert: CertState, nonce: Buffer | undefined, what: string): ParsedBasicOcspResponse {
  let parsed;
  try {
    parsed = parseOcspResponse(der);
  } catch (e) {
    throw new BenchFailure(
      `${what}: unreadable OCSP response for ${cert.serialHex}: ${(e as Error).message}\n${der.toString("hex").slice(0, 400)}`,
    );
  }
  check(parsed.responseStatus === "successful", `${what}: responseStatus ${parsed.responseStatus} for ${cert.serialHex}`);
  const basic = parsed as ParsedBasicOcspResponse;
  check(basic.responses.length === 1, `${what}: ${basic.responses.length} SingleResponses, expected 1`);
  const single = basic.responses[0]!;
  check(single.certId.serialHex === cert.serialHex, `${what}: answer for ${single.certId.serialHex}, asked about ${cert.serialHex}`);
  check(single.status.status === cert.status, `${what}: ${cert.serialHex} is ${single.status.status}, the database says ${cert.status}`);
  if (single.status.status === "revoked") {
    check(
      single.status.revokedAt.getTime() === cert.revokedAtMs,
      `${what}: ${cert.serialHex} revoked at ${single.status.revokedAt.toISOString()}, ` +
        `the database says ${new Date(cert.revokedAtMs!).toISOString()}`,
    );
    const reason = single.status.reason ?? "unspecified";
    check(reason === (cert.reason ?? "unspecified"), `${what}: ${cert.serialHex} revoked for ${reason}, the database says ${cert.reason}`);
  }
  if (nonce) check(basic.nonce?.equals(nonce), `${what}: the response does not echo the request's nonce`);
  else check(basic.nonce === undefined, `${what}: a response to a request without a nonce carries one`);
  check(
    single.nextUpdate && single.nextUpdate.getTime() > single.thisUpdate.getTime(),
    `${what}: nextUpdate missing or not after thisUpdate`,
  );
  check(
    basic.signatureAlgorithm === OID.ecdsaWithSHA256,
    `${what}: signature algorithm ${basic.signatureAlgorithm}, expected ecdsa-with-SHA256`,
  );
  return basic;
}

/** The signature verifies with the public key of the one responder certificate, which must be `responder`. */
export function checkSignature(basic: ParsedBasicOcspResponse, responder: ResponderCert, what: string): void {
  check(
    basic.certs.length === 1 && basic.certs[0]!.equals(responder.der),
    `${what}: the response does not carry the expected responder certificate`,
  );
  check(
    verify("sha256", basic.tbsResponseData, { key: responder.key, dsaEncoding: "der" }, basic.signature),
    `${what}: the response's signature does not verify with the responder's key`,
  );
}

export interface Probe {
  /** A nonce request for a revoked certificate (keyCompromise), and where it is stored for openssl. */
  request: Buffer;
  file: string;
  cert: CertState;
}

/**
 * One answer from each server to the probe before any clock runs: what it says, and that openssl
 * accepts it (signature, delegated responder, nonce) and reads it as revoked, keyCompromise.
 * Returns each server's responder certificate, which every later answer must carry.
 */
export async function probeAnswers(
  probe: Probe,
  ports: Record<Target, number>,
  files: { tmp: string; chain: string; caCert: string },
): Promise<Record<Target, ResponderCert>> {
  const responders = {} as Record<Target, ResponderCert>;
  for (const target of ["fleet", "openssl"] as const) {
    const agent = new Agent({ keepAlive: true });
    try {
      const reply = await post(ports[target], OCSP_PATH[target], probe.request, agent);
      check(
        reply.status === 200 && reply.contentType === OCSP_RESPONSE_TYPE,
        `${TARGET_LABEL[target]}: HTTP ${reply.status} ${reply.contentType}: ${reply.body.toString("latin1").slice(0, 300)}`,
      );
      const basic = checkAnswer(reply.body, probe.cert, probe.request.subarray(probe.request.length - NONCE_BYTES), TARGET_LABEL[target]);
      check(
        basic.certs.length === 1,
        `${TARGET_LABEL[target]}: ${basic.certs.length} certificates in the response, expected the responder's`,
      );
      responders[target] = { der: Buffer.from(basic.certs[0]!), key: new X509Certificate(basic.certs[0]!).publicKey };
      checkSignature(basic, responders[target], TARGET_LABEL[target]);
      const respFile = join(files.tmp, `probe-response-${target}.der`);
      writeFileSync(respFile, reply.body);
      // With the request: the signature, the delegated responder's chain and the nonce.
      const judged = openssl(["ocsp", "-reqin", probe.file, "-respin", respFile, "-CAfile", files.chain]);
      check(
        judged.status === 0 && /Response verify OK/.test(judged.stderr + judged.stdout),
        `openssl ocsp -reqin -respin does not accept ${TARGET_LABEL[target]}'s answer:\n${judged.stdout}${judged.stderr}`,
      );
      // By certificate: the status openssl reads from it.
      const serial = probe.cert.serialHex;
      const status = openssl([
        "ocsp",
        "-respin",
        respFile,
        "-CAfile",
        files.chain,
        "-issuer",
        files.caCert,
        "-serial",
        `0x${serial}`,
        "-no_nonce",
      ]);
      check(
        status.status === 0 && new RegExp(`0x${serial}: revoked[\\s\\S]*Reason: keyCompromise`, "i").test(status.stdout),
        `openssl ocsp -respin -serial does not read ${TARGET_LABEL[target]}'s answer as revoked (keyCompromise):\n` +
          `${status.stdout}${status.stderr}`,
      );
    } finally {
      agent.destroy();
    }
  }
  return responders;
}
