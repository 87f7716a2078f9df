// OCSP: requests parsed from pyca's vectors and from the openssl CLI (cross-checked against
// openssl's own reading), hostile input, and responses judged by `openssl ocsp` (signature,
// delegated responder, nonce, status/reason/time). Plus the responder certificate profile.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OID } from "../src/der/oids.js";
import {
  TAG,
  explicit,
  bitString,
  boolean,
  nullValue,
  octetString,
  oid,
  sequence,
  smallInteger,
  tlv,
  unsignedInteger,
} from "../src/der/writer.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { parseCertificate, subjectPublicKeyOf, type ParsedCertificate, type Signer } from "../src/x509/certificate.js";
import { keyIdentifier } from "../src/x509/extensions.js";
import { toPem } from "../src/x509/pem.js";
import { LeafTemplate, buildOcspResponderCertificate, buildRootCertificate, type IssuingCa } from "../src/x509/profiles.js";
import { OcspRequestError, issuerHashes, parseOcspRequest, type OcspCertId, type ParsedOcspRequest } from "../src/x509/ocsp-request.js";
import {
  OcspResponseSigner,
  buildOcspResponse,
  ocspErrorResponse,
  ocspResponder,
  type CertStatus,
  type OcspErrorStatus,
  type OcspResponder,
} from "../src/x509/ocsp-response.js";
import { OcspResponseError, parseOcspResponse, type ParsedBasicOcspResponse } from "./support/ocsp-response.js";
import { vectorPath, openssl, tempDir, type RunResult } from "./helpers.js";

const VECTORS = vectorPath("pyca", "x509", "ocsp");
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const tmp = tempDir("fleetpki-ocsp-test-");
const file = (name: string, data?: string | Buffer): string => {
  const p = join(tmp.path, name);
  if (data !== undefined) writeFileSync(p, data);
  return p;
};

function ok(r: RunResult, what: string): RunResult {
  assert.equal(r.status, 0, `${what} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** What openssl sees in a request: hash algorithm and serial of each CertID, and the nonce if any. */
function opensslRequestView(path: string): { certIds: Array<{ hash: string; serial: string }>; nonceHex?: string } {
  const text = ok(openssl(["ocsp", "-reqin", path, "-req_text"]), `openssl ocsp -reqin ${path}`).stdout;
  const hashes = [...text.matchAll(/Hash Algorithm: (\S+)/g)].map((m) => m[1]!);
  const serials = [...text.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => m[1]!.toLowerCase());
  assert.equal(hashes.length, serials.length);
  // "OCSP Nonce:" then the extnValue in hex: 04 <len> <nonce>
  const nonce = /OCSP Nonce: *\n\s+04[0-9A-F]{2}([0-9A-F]+)/.exec(text);
  return { certIds: hashes.map((hash, i) => ({ hash, serial: serials[i]! })), ...(nonce ? { nonceHex: nonce[1]!.toLowerCase() } : {}) };
}

function assertRequestError(fn: () => unknown, reason: string): OcspRequestError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(
    caught instanceof OcspRequestError,
    `expected OcspRequestError(${reason}), got ${caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught)}`,
  );
  assert.equal(caught.reason, reason, caught.message);
  return caught;
}

/** Parses or throws OcspRequestError; anything else fails the test. */
function parseOrReject(der: Buffer): ParsedOcspRequest | OcspRequestError {
  try {
    return parseOcspRequest(der);
  } catch (e) {
    if (e instanceof OcspRequestError) return e;
    throw new Error(`parseOcspRequest threw ${e instanceof Error ? e.name : typeof e} for ${der.toString("hex")}: ${String(e)}`);
  }
}

function parseResponseOrReject(der: Buffer): ReturnType<typeof parseOcspResponse> | OcspResponseError {
  try {
    return parseOcspResponse(der);
  } catch (e) {
    if (e instanceof OcspResponseError) return e;
    throw new Error(`parseOcspResponse threw ${e instanceof Error ? e.name : typeof e} for ${der.toString("hex")}: ${String(e)}`);
  }
}

function successful(der: Buffer): ParsedBasicOcspResponse {
  const parsed = parseOcspResponse(der);
  assert.equal(parsed.responseStatus, "successful");
  return parsed as ParsedBasicOcspResponse;
}

// ---- hand-built requests for the hostile-input tests -------------------------------------------

const SHA1_ALG = sequence(oid(OID.sha1), nullValue());
const H20 = Buffer.alloc(20, 0xab);

function certIdDer(opts: { alg?: Buffer; nameHash?: Buffer; keyHash?: Buffer; serial?: Buffer } = {}): Buffer {
  return sequence(
    opts.alg ?? SHA1_ALG,
    octetString(opts.nameHash ?? H20),
    octetString(opts.keyHash ?? H20),
    opts.serial ?? unsignedInteger(Buffer.from([0x01, 0x23])),
  );
}

function ext(extnId: string, value: Buffer, critical?: boolean): Buffer {
  return critical === undefined ? sequence(oid(extnId), octetString(value)) : sequence(oid(extnId), boolean(critical), octetString(value));
}

const nonceExt = (nonce: Buffer): Buffer => ext(OID.ocspNonce, octetString(nonce));

function requestDer(
  opts: {
    requests?: Buffer[];
    extensions?: Buffer[];
    version?: number;
    requestorName?: boolean;
    signature?: Buffer;
  } = {},
): Buffer {
  const tbs: Buffer[] = [];
  if (opts.version !== undefined) tbs.push(explicit(0, smallInteger(opts.version)));
  if (opts.requestorName) tbs.push(explicit(1, tlv(0x82, Buffer.from("requestor.example"))));
  tbs.push(sequence(...(opts.requests ?? [sequence(certIdDer())])));
  if (opts.extensions) tbs.push(explicit(2, sequence(...opts.extensions)));
  const parts = [sequence(...tbs)];
  if (opts.signature) parts.push(explicit(0, opts.signature));
  return sequence(...parts);
}

// ---- a throwaway CA, a delegated responder and two leaves ---------------------------------------

interface Pki {
  ca: IssuingCa;
  caKey: KeyObject;
  responder: OcspResponder;
  responderCert: ParsedCertificate;
  leaves: Array<{ der: Buffer; serialHex: string; path: string }>;
  caPath: string;
  responderPath: string;
}

function p256(): { signer: Signer; spki: Buffer; publicKey: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return {
    signer: { key: privateKey, scheme: signatureSchemeFor(privateKey) },
    spki: publicKey.export({ type: "spki", format: "der" }),
    publicKey,
  };
}

function makeCa(commonName: string, now: Date): { ca: IssuingCa; caKey: KeyObject } {
  const key = p256();
  const root = buildRootCertificate({
    subject: { commonName, organization: "OCSP Test Robots" },
    spki: key.spki,
    subjectPublicKey: subjectPublicKeyOf(key.spki),
    signer: key.signer,
    notBefore: new Date(now.getTime() - DAY),
    notAfter: new Date(now.getTime() + 30 * DAY),
  });
  return {
    ca: {
      certificate: parseCertificate(root.der),
      signer: key.signer,
      status: { crl: "http://status.fleet.example/devices.crl", ocsp: "http://status.fleet.example/ocsp" },
    },
    caKey: key.signer.key,
  };
}

function makeResponder(ca: IssuingCa, now: Date, lifetimeMs = DAY): { responder: OcspResponder; cert: ParsedCertificate } {
  const key = p256();
  const issued = buildOcspResponderCertificate(ca, { spki: key.spki, subjectPublicKey: subjectPublicKeyOf(key.spki), now, lifetimeMs });
  const cert = parseCertificate(issued.der);
  return { responder: ocspResponder(cert, key.signer), cert };
}

const NOW = new Date();
let pki: Pki;

before(() => {
  const { ca, caKey } = makeCa("OCSP Test Devices CA", NOW);
  const { responder, cert } = makeResponder(ca, NOW);
  const template = new LeafTemplate(ca, "device");
  const leaves = [0, 1].map((i) => {
    const key = p256();
    const issued = template.issue(`robot-${i}`, [{ uri: `spiffe://fleet.example/device/robot-${i}` }], {
      spki: key.spki,
      subjectPublicKey: subjectPublicKeyOf(key.spki),
      now: NOW,
      lifetimeMs: DAY,
    });
    return { der: issued.der, serialHex: issued.serialHex, path: file(`leaf${i}.pem`, toPem("CERTIFICATE", issued.der)) };
  });
  pki = {
    ca,
    caKey,
    responder,
    responderCert: cert,
    leaves,
    caPath: file("ca.pem", toPem("CERTIFICATE", ca.certificate.der)),
    responderPath: file("responder.pem", toPem("CERTIFICATE", cert.der)),
  };
});

after(() => tmp.cleanup());

// ---------------------------------------------------------------------------------------------

describe("parseOcspRequest on pyca's request vectors, cross-checked with openssl -req_text", () => {
  const files = readdirSync(VECTORS).filter((f) => f.startsWith("req-") || f.endsWith("-req.der"));

  it("finds the request vectors", () => assert.ok(files.length >= 9, files.join(", ")));

  /** What we expect beyond openssl's view: undefined = parses, a string = that OcspRequestError reason. */
  const expectations: Record<string, { reject?: string; certIds?: number; nonceHex?: string; hashes?: string[] }> = {
    "req-sha1.der": { certIds: 1, hashes: ["sha1"] },
    "req-multi-sha1.der": { certIds: 2, hashes: ["sha1", "sha1"] },
    "req-ext-nonce.der": { certIds: 1, nonceHex: "7b805a1d3726b8b84f48d2f8bfd72dfd" },
    // an unknown non-critical extension is ignored (RFC 6960 4.4)
    "req-ext-unknown-oid.der": { certIds: 1 },
    // an unknown digest: still returned, marked unsupported, so the responder answers `unknown` for it
    "req-invalid-hash-alg.der": { certIds: 1, hashes: ["unsupported"] },
    // two nonce extensions: ambiguous, so malformed (openssl itself accepts it)
    "req-duplicate-ext.der": { reject: "duplicate-extension" },
  };

  for (const f of files) {
    it(f, () => {
      const path = join(VECTORS, f);
      const result = parseOrReject(readFileSync(path));
      const want = expectations[f] ?? {};
      if (want.reject) {
        assert.ok(result instanceof OcspRequestError, `${f} must be rejected`);
        assert.equal(result.reason, want.reject);
        return;
      }
      assert.ok(!(result instanceof OcspRequestError), `${f}: ${result instanceof Error ? result.message : ""}`);
      const view = opensslRequestView(path);
      assert.equal(result.certIds.length, view.certIds.length);
      if (want.certIds !== undefined) assert.equal(result.certIds.length, want.certIds);
      result.certIds.forEach((c, i) => {
        const theirs = view.certIds[i]!;
        // openssl prints the INTEGER content; a sign octet would be the only difference
        assert.equal(c.serialHex, theirs.serial.replace(/^00(?=[89a-f])/, ""), `serial of CertID ${i}`);
        assert.equal(c.hashAlgorithm, /^\d+(\.\d+)+$/.test(theirs.hash) ? "unsupported" : theirs.hash, `hash of CertID ${i}`);
        assert.equal(c.der[0], 0x30, "CertID DER is a SEQUENCE");
      });
      if (want.hashes)
        assert.deepEqual(
          result.certIds.map((c) => c.hashAlgorithm),
          want.hashes,
        );
      // openssl shows unknown extensions too, so only compare nonces where one is expected
      assert.equal(result.nonce?.toString("hex"), want.nonceHex);
      if (want.nonceHex) assert.equal(view.nonceHex, want.nonceHex);
      assert.equal(result.signed, false);
    });
  }

  it("serials are the certificate-style magnitude hex (no sign octet)", () => {
    const r = parseOcspRequest(readFileSync(join(VECTORS, "req-sha1.der")));
    assert.equal(r.certIds[0]!.serialHex, "98d9e5c0b4c373552df77c5d0f1eb5128e4945f9");
    assert.equal(r.certIds[0]!.issuerNameHash.toString("hex"), "38ca468c07448df48196c76d6d4c70519e60a7bd");
    assert.equal(r.certIds[0]!.issuerKeyHash.toString("hex"), "7975bb843acb2cde7a09be311b43bc1c2a4d5358");
  });
});

describe("parseOcspRequest rejects hostile input with OcspRequestError only", () => {
  const nonceVector = readFileSync(join(VECTORS, "req-ext-nonce.der"));

  it("control: the hand-built request parses", () => {
    const r = parseOcspRequest(requestDer({ extensions: [nonceExt(Buffer.alloc(16, 1))] }));
    assert.equal(r.certIds.length, 1);
    assert.equal(r.certIds[0]!.serialHex, "0123");
    assert.equal(r.nonce?.length, 16);
  });

  it("empty input, garbage, trailing bytes, BER indefinite length", () => {
    assertRequestError(() => parseOcspRequest(Buffer.alloc(0)), "empty");
    assertRequestError(() => parseOcspRequest(Buffer.from("POST /ocsp HTTP/1.1\r\n\r\n")), "malformed-der");
    assertRequestError(() => parseOcspRequest(Buffer.from("MEUwQzBBMD8wPTAJBgUrDgMCGgUABBQ=", "latin1")), "malformed-der");
    assertRequestError(() => parseOcspRequest(Buffer.concat([nonceVector, Buffer.from([0])])), "malformed-der");
    const indefinite = Buffer.from(nonceVector);
    indefinite[1] = 0x80;
    assertRequestError(() => parseOcspRequest(indefinite), "malformed-der");
    assertRequestError(() => parseOcspRequest(sequence(sequence())), "malformed-der"); // no requestList
  });

  it("every truncation of a valid request", () => {
    for (let n = 1; n < nonceVector.length; n++) assertRequestError(() => parseOcspRequest(nonceVector.subarray(0, n)), "malformed-der");
  });

  it("oversized: more bytes than the limit, more CertIDs than the limit, an empty list", () => {
    assertRequestError(() => parseOcspRequest(Buffer.alloc(64 * 1024, 0x30)), "too-large");
    assertRequestError(() => parseOcspRequest(nonceVector, { maxBytes: 64 }), "too-large");
    const multi = readFileSync(join(VECTORS, "req-multi-sha1.der"));
    assert.equal(parseOcspRequest(multi, { maxCertIds: 2 }).certIds.length, 2);
    assertRequestError(() => parseOcspRequest(multi, { maxCertIds: 1 }), "too-many-cert-ids");
    const many = requestDer({ requests: Array.from({ length: 17 }, (_, i) => sequence(certIdDer({ serial: smallInteger(i + 1) }))) });
    assertRequestError(() => parseOcspRequest(many), "too-many-cert-ids");
    assertRequestError(() => parseOcspRequest(requestDer({ requests: [] })), "no-cert-ids");
  });

  it("nonce: 1 and 32 octets accepted; 0, 33 octets and a bare value rejected (RFC 8954)", () => {
    assert.equal(parseOcspRequest(requestDer({ extensions: [nonceExt(Buffer.from([7]))] })).nonce?.toString("hex"), "07");
    assert.equal(parseOcspRequest(requestDer({ extensions: [nonceExt(Buffer.alloc(32, 9))] })).nonce?.length, 32);
    assertRequestError(() => parseOcspRequest(requestDer({ extensions: [nonceExt(Buffer.alloc(0))] })), "bad-nonce");
    assertRequestError(() => parseOcspRequest(requestDer({ extensions: [nonceExt(Buffer.alloc(33, 9))] })), "bad-nonce");
    // the nonce bytes directly in extnValue, without the inner OCTET STRING
    assertRequestError(() => parseOcspRequest(requestDer({ extensions: [ext(OID.ocspNonce, Buffer.alloc(16, 0xee))] })), "bad-nonce");
    assertRequestError(() => parseOcspRequest(requestDer({ extensions: [ext(OID.ocspNonce, sequence())] })), "bad-nonce");
    // a critical nonce is fine: we understand it
    assert.ok(parseOcspRequest(requestDer({ extensions: [ext(OID.ocspNonce, octetString(Buffer.alloc(16, 1)), true)] })).nonce);
  });

  it("extensions: duplicates and unknown critical ones are malformed; unknown non-critical ones ignored", () => {
    assertRequestError(
      () => parseOcspRequest(requestDer({ extensions: [nonceExt(Buffer.alloc(16, 1)), nonceExt(Buffer.alloc(16, 2))] })),
      "duplicate-extension",
    );
    assertRequestError(
      () => parseOcspRequest(requestDer({ extensions: [ext("1.2.3.4", nullValue(), true)] })),
      "unsupported-critical-extension",
    );
    assert.equal(parseOcspRequest(requestDer({ extensions: [ext("1.2.3.4", nullValue(), false)] })).certIds.length, 1);
    assertRequestError(() => parseOcspRequest(requestDer({ extensions: [] })), "malformed-der"); // SIZE (1..MAX)
    const single = (exts: Buffer[]): Buffer => requestDer({ requests: [sequence(certIdDer(), explicit(0, sequence(...exts)))] });
    assert.equal(parseOcspRequest(single([ext("1.3.6.1.5.5.7.48.1.7", sequence())])).certIds.length, 1);
    assertRequestError(() => parseOcspRequest(single([ext("1.2.3.4", nullValue(), true)])), "unsupported-critical-extension");
    assertRequestError(() => parseOcspRequest(single([ext("1.2.3.4", nullValue()), ext("1.2.3.4", nullValue())])), "duplicate-extension");
    const badBool = sequence(oid("1.2.3.4"), tlv(TAG.BOOLEAN, Buffer.from([1])), octetString(nullValue()));
    assertRequestError(() => parseOcspRequest(requestDer({ extensions: [badBool] })), "malformed-der");
  });

  it("CertID: wrong hash length, negative serial, odd parameters, unknown digest", () => {
    const sha256Alg = sequence(oid(OID.sha256));
    assertRequestError(() => parseOcspRequest(requestDer({ requests: [sequence(certIdDer({ alg: sha256Alg }))] })), "bad-hash-length");
    assertRequestError(
      () => parseOcspRequest(requestDer({ requests: [sequence(certIdDer({ serial: tlv(TAG.INTEGER, Buffer.from([0xff, 0x01])) }))] })),
      "malformed-der",
    );
    assertRequestError(
      () => parseOcspRequest(requestDer({ requests: [sequence(certIdDer({ serial: tlv(TAG.INTEGER, Buffer.from([0x00, 0x01])) }))] })),
      "malformed-der",
    );
    const h32 = Buffer.alloc(32, 1);
    const ok256 = parseOcspRequest(requestDer({ requests: [sequence(certIdDer({ alg: sha256Alg, nameHash: h32, keyHash: h32 }))] }));
    assert.equal(ok256.certIds[0]!.hashAlgorithm, "sha256"); // absent parameters (RFC 5754)
    const withParams = sequence(oid(OID.sha256), smallInteger(5));
    assert.equal(
      parseOcspRequest(requestDer({ requests: [sequence(certIdDer({ alg: withParams, nameHash: h32, keyHash: h32 }))] })).certIds[0]!
        .hashAlgorithm,
      "unsupported",
    );
    const md5 = sequence(oid("1.2.840.113549.2.5"), nullValue());
    const mixed = parseOcspRequest(
      requestDer({
        requests: [sequence(certIdDer({ alg: md5, nameHash: Buffer.alloc(16), keyHash: Buffer.alloc(16) })), sequence(certIdDer())],
      }),
    );
    assert.deepEqual(
      mixed.certIds.map((c) => c.hashAlgorithm),
      ["unsupported", "sha1"],
    );
  });

  it("version, requestorName and a (not verified) signature", () => {
    assert.equal(parseOcspRequest(requestDer({ version: 0 })).certIds.length, 1);
    assertRequestError(() => parseOcspRequest(requestDer({ version: 1 })), "unsupported-version");
    assert.equal(parseOcspRequest(requestDer({ requestorName: true })).certIds.length, 1);
    const signature = sequence(sequence(oid(OID.ecdsaWithSHA256)), bitString(Buffer.alloc(70, 1)));
    assert.equal(parseOcspRequest(requestDer({ signature })).signed, true);
    assertRequestError(() => parseOcspRequest(requestDer({ signature: sequence(sequence()) })), "malformed-der");
  });

  it("single-byte mutations of every vector parse or throw OcspRequestError, nothing else", () => {
    let rejected = 0;
    let parsed = 0;
    const inputs: Buffer[] = readdirSync(VECTORS)
      .filter((f) => f.startsWith("req-") || f.endsWith("-req.der"))
      .map((f) => readFileSync(join(VECTORS, f)));
    inputs.push(
      requestDer({
        version: 0,
        requestorName: true,
        extensions: [nonceExt(Buffer.alloc(16, 1))],
        signature: sequence(sequence(oid(OID.ecdsaWithSHA256)), bitString(Buffer.alloc(8))),
      }),
    );
    for (const input of inputs) {
      for (let i = 0; i < input.length; i++) {
        for (const delta of [0x01, 0x80, 0xff]) {
          const mutated = Buffer.from(input);
          mutated[i] = mutated[i]! ^ delta;
          if (parseOrReject(mutated) instanceof OcspRequestError) rejected++;
          else parsed++;
        }
      }
    }
    assert.ok(rejected > 0 && parsed > 0, `${rejected} rejected, ${parsed} parsed`);
  });
});

// ---------------------------------------------------------------------------------------------

describe("the delegated OCSP responder certificate profile", () => {
  it("EKU OCSPSigning only, digitalSignature, ocsp-nocheck, AKI = CA SKI, CA:FALSE, no CDP/AIA", () => {
    const text = ok(openssl(["x509", "-in", pki.responderPath, "-noout", "-text"]), "openssl x509").stdout;
    assert.match(text, /Subject: CN = OCSP Test Devices CA OCSP responder\n/);
    assert.match(text, /Issuer: O = OCSP Test Robots, CN = OCSP Test Devices CA\n/);
    assert.match(text, /X509v3 Basic Constraints: critical\n\s+CA:FALSE\n/);
    assert.match(text, /X509v3 Key Usage: critical\n\s+Digital Signature\n/);
    assert.match(text, /X509v3 Extended Key Usage: \n\s+OCSP Signing\n/);
    assert.match(text, /OCSP No Check: \n/);
    assert.doesNotMatch(text, /CRL Distribution Points|Authority Information Access|Subject Alternative Name/);
    const nocheck = pki.responderCert.extensions.get(OID.ocspNoCheck)!;
    assert.deepEqual(nocheck, { critical: false, value: Buffer.from([0x05, 0x00]) });
    const aki = pki.responderCert.extensions.get(OID.authorityKeyIdentifier)!.value;
    const caSki = pki.ca.certificate.extensions.get(OID.subjectKeyIdentifier)!.value;
    assert.deepEqual(aki.subarray(4), caSki.subarray(2));
    const node = new X509Certificate(pki.responderCert.der);
    assert.ok(node.verify(new X509Certificate(pki.ca.certificate.der).publicKey), "signed by the CA");
    ok(openssl(["verify", "-x509_strict", "-CAfile", pki.caPath, pki.responderPath]), "openssl verify");
  });

  it("validity is clamped to the CA's and backdated a minute like other leaves", () => {
    const { cert } = makeResponder(pki.ca, NOW, 365 * DAY);
    assert.equal(cert.notAfter.getTime(), pki.ca.certificate.notAfter.getTime());
    assert.equal(cert.notBefore.getTime(), Math.floor(NOW.getTime() / 1000) * 1000 - 60_000);
    const short = makeResponder(pki.ca, NOW, 2 * HOUR).cert;
    assert.equal(short.notAfter.getTime(), Math.floor((NOW.getTime() + 2 * HOUR) / 1000) * 1000);
  });
});

// ---------------------------------------------------------------------------------------------

/** openssl's rendering of an ASN.1 time: "Nov  2 21:36:56 2026 GMT". */
function opensslTime(d: Date): string {
  const month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][d.getUTCMonth()]!;
  const p = (n: number): string => String(n).padStart(2, "0");
  return (
    `${month} ${String(d.getUTCDate()).padStart(2, " ")} ` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} ${d.getUTCFullYear()} GMT`
  );
}

const UNKNOWN_SERIAL = "0123abcd";
const REVOKED_AT = new Date(Math.floor((NOW.getTime() - 2 * HOUR) / 1000) * 1000);
const THIS_UPDATE = new Date(NOW.getTime() - 90_000 + 456); // milliseconds must be dropped
const NEXT_UPDATE = new Date(NOW.getTime() + HOUR);

/** good for leaf 0, revoked (keyCompromise) for leaf 1, unknown for anything else. */
function statusFor(certId: OcspCertId): CertStatus {
  if (certId.serialHex === pki.leaves[0]!.serialHex) return { status: "good" };
  if (certId.serialHex === pki.leaves[1]!.serialHex) return { status: "revoked", revokedAt: REVOKED_AT, reason: "keyCompromise" };
  return { status: "unknown" };
}

function respond(
  request: ParsedOcspRequest,
  opts: { nonce?: Buffer | null; includeCertificate?: boolean; responder?: OcspResponder } = {},
): Buffer {
  const nonce = opts.nonce === null ? undefined : (opts.nonce ?? request.nonce);
  return buildOcspResponse(opts.responder ?? pki.responder, {
    producedAt: NOW,
    responses: request.certIds.map((certId) => ({ certId, status: statusFor(certId), thisUpdate: THIS_UPDATE, nextUpdate: NEXT_UPDATE })),
    ...(nonce ? { nonce } : {}),
    ...(opts.includeCertificate === undefined ? {} : { includeCertificate: opts.includeCertificate }),
  });
}

function opensslRequest(name: string, extra: string[] = []): { path: string; der: Buffer; parsed: ParsedOcspRequest } {
  const path = file(name);
  ok(
    openssl([
      "ocsp",
      ...extra,
      "-issuer",
      pki.caPath,
      "-cert",
      pki.leaves[0]!.path,
      "-cert",
      pki.leaves[1]!.path,
      "-serial",
      `0x${UNKNOWN_SERIAL}`,
      "-reqout",
      path,
    ]),
    "openssl ocsp -reqout",
  );
  const der = readFileSync(path);
  return { path, der, parsed: parseOcspRequest(der) };
}

/** `openssl ocsp -respin` with the CertIDs given as -cert/-serial (prints per-certificate status). */
function opensslStatus(respPath: string, extra: string[] = []): RunResult {
  return openssl([
    "ocsp",
    "-respin",
    respPath,
    "-no_nonce",
    "-CAfile",
    pki.caPath,
    ...extra,
    "-issuer",
    pki.caPath,
    "-cert",
    pki.leaves[0]!.path,
    "-cert",
    pki.leaves[1]!.path,
    "-serial",
    `0x${UNKNOWN_SERIAL}`,
  ]);
}

function assertStatusLines(out: string): void {
  const leaf0 = pki.leaves[0]!.path;
  const leaf1 = pki.leaves[1]!.path;
  const times =
    `\tThis Update: ${opensslTime(new Date(Math.floor(THIS_UPDATE.getTime() / 1000) * 1000))}\n` +
    `\tNext Update: ${opensslTime(NEXT_UPDATE)}\n`;
  assert.ok(out.includes(`${leaf0}: good\n${times}`), out);
  assert.ok(out.includes(`${leaf1}: revoked\n${times}\tReason: keyCompromise\n\tRevocation Time: ${opensslTime(REVOKED_AT)}\n`), out);
  assert.ok(out.includes(`0x${UNKNOWN_SERIAL}: unknown\n${times}`), out);
}

describe("responses judged by openssl ocsp", () => {
  let withNonce: ReturnType<typeof opensslRequest>;

  before(() => {
    withNonce = opensslRequest("req.der");
  });

  it("parses openssl's request: three SHA-1 CertIDs for our CA, the right serials, a 16-octet nonce", () => {
    const { parsed, path } = withNonce;
    const hashes = issuerHashes(pki.ca.certificate, "sha1");
    assert.deepEqual(
      parsed.certIds.map((c) => c.serialHex),
      [pki.leaves[0]!.serialHex, pki.leaves[1]!.serialHex, UNKNOWN_SERIAL],
    );
    for (const c of parsed.certIds) {
      assert.equal(c.hashAlgorithm, "sha1");
      assert.deepEqual(c.issuerNameHash, hashes.nameHash);
      assert.deepEqual(c.issuerKeyHash, hashes.keyHash);
    }
    assert.equal(parsed.nonce?.length, 16);
    assert.equal(parsed.signed, false);
    const view = opensslRequestView(path);
    assert.equal(view.nonceHex, parsed.nonce?.toString("hex"));
    assert.deepEqual(
      view.certIds.map((c) => c.serial),
      parsed.certIds.map((c) => c.serialHex),
    );
  });

  it("a response for it verifies (delegated signer, nonce) and shows good / revoked keyCompromise / unknown", () => {
    const resp = respond(withNonce.parsed);
    const respPath = file("resp.der", resp);
    const verified = ok(
      openssl(["ocsp", "-reqin", withNonce.path, "-respin", respPath, "-CAfile", pki.caPath]),
      "openssl ocsp -reqin -respin",
    );
    assert.match(verified.stderr, /^Response verify OK$/m);
    assert.doesNotMatch(verified.stderr, /WARNING|error/i);
    const status = ok(opensslStatus(respPath), "openssl ocsp -respin with -cert");
    assert.match(status.stderr, /^Response verify OK$/m);
    assertStatusLines(status.stdout);
    const text = ok(openssl(["ocsp", "-respin", respPath, "-resp_text", "-noverify"]), "openssl ocsp -resp_text").stdout;
    assert.match(text, /Responder Id: [0-9A-F]{40}\n/);
    assert.ok(text.includes(`Responder Id: ${pki.responder.keyHash.toString("hex").toUpperCase()}`));
    assert.match(text, /Revocation Reason: keyCompromise \(0x1\)/);
    assert.ok(text.includes(`OCSP Nonce: \n            0410${withNonce.parsed.nonce!.toString("hex").toUpperCase()}`), text);
  });

  it("our own parser reads it back and the signature verifies with the responder's key", () => {
    const resp = respond(withNonce.parsed);
    const parsed = successful(resp);
    assert.equal(parsed.producedAt.getTime(), Math.floor(NOW.getTime() / 1000) * 1000);
    assert.deepEqual(parsed.responderKeyHash, keyIdentifier(pki.responderCert.subjectPublicKey));
    assert.deepEqual(parsed.nonce, withNonce.parsed.nonce);
    assert.deepEqual(parsed.certs, [pki.responderCert.der]);
    assert.equal(parsed.signatureAlgorithm, OID.ecdsaWithSHA256);
    const publicKey = new X509Certificate(pki.responderCert.der).publicKey;
    assert.ok(verify("sha256", parsed.tbsResponseData, publicKey, parsed.signature));
    assert.deepEqual(
      parsed.responses.map((r) => ({ serial: r.certId.serialHex, status: r.status })),
      [
        { serial: pki.leaves[0]!.serialHex, status: { status: "good" } },
        { serial: pki.leaves[1]!.serialHex, status: { status: "revoked", revokedAt: REVOKED_AT, reason: "keyCompromise" } },
        { serial: UNKNOWN_SERIAL, status: { status: "unknown" } },
      ],
    );
    parsed.responses.forEach((r, i) => {
      assert.deepEqual(r.certId.der, withNonce.parsed.certIds[i]!.der, "the request's CertID is echoed byte for byte");
      assert.equal(r.thisUpdate.getTime(), Math.floor(THIS_UPDATE.getTime() / 1000) * 1000);
      assert.equal(r.nextUpdate?.getTime(), NEXT_UPDATE.getTime() - (NEXT_UPDATE.getTime() % 1000));
    });
    // every time is GeneralizedTime in whole seconds: 18 0f YYYYMMDDHHMMSSZ, no fraction
    const tbsHex = parsed.tbsResponseData.toString("latin1");
    const times = [...tbsHex.matchAll(/\x18(.)(\d{14}[^Z]*Z)/g)];
    assert.ok(times.length >= 1 + 3 * 2 + 1, `found ${times.length} GeneralizedTimes`);
    for (const m of times) assert.equal(m[1]!.charCodeAt(0), 15, `GeneralizedTime ${m[2]} has 15 characters`);
  });

  it("without the requested nonce openssl warns; with a different nonce it fails", () => {
    const missing = file("resp-no-nonce.der", respond(withNonce.parsed, { nonce: null }));
    const warned = ok(openssl(["ocsp", "-reqin", withNonce.path, "-respin", missing, "-CAfile", pki.caPath]), "nonce missing");
    assert.match(warned.stderr, /WARNING: no nonce in response/);
    assert.match(warned.stderr, /Response verify OK/);
    const wrong = file("resp-wrong-nonce.der", respond(withNonce.parsed, { nonce: Buffer.alloc(16, 0x42) }));
    const failed = openssl(["ocsp", "-reqin", withNonce.path, "-respin", wrong, "-CAfile", pki.caPath]);
    assert.notEqual(failed.status, 0);
    assert.match(failed.stderr, /Nonce Verify error/);
  });

  it("-no_nonce request: no nonce parsed, none sent, no warning", () => {
    const req = opensslRequest("req-no-nonce.der", ["-no_nonce"]);
    assert.equal(req.parsed.nonce, undefined);
    const respPath = file("resp-for-no-nonce.der", respond(req.parsed));
    assert.equal(successful(readFileSync(respPath)).nonce, undefined);
    const r = ok(openssl(["ocsp", "-reqin", req.path, "-respin", respPath, "-CAfile", pki.caPath]), "no nonce");
    assert.doesNotMatch(r.stderr, /WARNING/);
    assert.match(r.stderr, /Response verify OK/);
  });

  it("-sha256 CertIDs: SHA-256 issuer hashes, echoed and verified", () => {
    const req = opensslRequest("req-sha256.der", ["-sha256"]);
    const hashes = issuerHashes(pki.ca.certificate, "sha256");
    for (const c of req.parsed.certIds) {
      assert.equal(c.hashAlgorithm, "sha256");
      assert.deepEqual(c.issuerNameHash, hashes.nameHash);
      assert.deepEqual(c.issuerKeyHash, hashes.keyHash);
    }
    assert.equal(opensslRequestView(req.path).certIds[0]!.hash, "sha256");
    const respPath = file("resp-sha256.der", respond(req.parsed));
    const verified = ok(openssl(["ocsp", "-reqin", req.path, "-respin", respPath, "-CAfile", pki.caPath]), "sha256 verify");
    assert.match(verified.stderr, /Response verify OK/);
    const status = ok(opensslStatus(respPath, ["-sha256"]), "sha256 status");
    assertStatusLines(status.stdout);
  });

  it("without certs [0] openssl needs the responder certificate from elsewhere", () => {
    const respPath = file("resp-no-cert.der", respond(withNonce.parsed, { includeCertificate: false }));
    assert.deepEqual(successful(readFileSync(respPath)).certs, []);
    const failed = openssl(["ocsp", "-reqin", withNonce.path, "-respin", respPath, "-CAfile", pki.caPath]);
    assert.notEqual(failed.status, 0);
    assert.match(failed.stderr, /signer certificate not found/);
    const r = ok(
      openssl(["ocsp", "-reqin", withNonce.path, "-respin", respPath, "-CAfile", pki.caPath, "-verify_other", pki.responderPath]),
      "-verify_other",
    );
    assert.match(r.stderr, /Response verify OK/);
  });

  it("a responder of another CA, or a certificate without OCSPSigning, is refused by openssl", () => {
    const other = makeCa("Other CA", NOW);
    const foreign = makeResponder(other.ca, NOW).responder;
    const foreignPath = file("resp-foreign.der", respond(withNonce.parsed, { responder: foreign }));
    const r1 = openssl([
      "ocsp",
      "-reqin",
      withNonce.path,
      "-respin",
      foreignPath,
      "-CAfile",
      pki.caPath,
      "-verify_other",
      file("other-ca.pem", toPem("CERTIFICATE", other.ca.certificate.der)),
    ]);
    assert.notEqual(r1.status, 0);
    assert.match(r1.stderr, /Response Verify Failure/);
    // a device leaf of the right CA signing OCSP answers
    const key = p256();
    const leaf = new LeafTemplate(pki.ca, "device").issue("impostor", [], {
      spki: key.spki,
      subjectPublicKey: subjectPublicKeyOf(key.spki),
      now: NOW,
      lifetimeMs: DAY,
    });
    const impostor = ocspResponder(parseCertificate(leaf.der), key.signer);
    const impostorPath = file("resp-impostor.der", respond(withNonce.parsed, { responder: impostor }));
    const r2 = openssl(["ocsp", "-reqin", withNonce.path, "-respin", impostorPath, "-CAfile", pki.caPath]);
    assert.notEqual(r2.status, 0);
    assert.match(r2.stderr, /Response Verify Failure/);
    assert.match(r2.stderr, /missing ocspsigning usage/i);
  });

  it("error responses are the constant 5-byte DER openssl reads as that status", () => {
    const codes: Record<OcspErrorStatus, number> = { malformedRequest: 1, internalError: 2, tryLater: 3, sigRequired: 5, unauthorized: 6 };
    for (const [status, code] of Object.entries(codes) as Array<[OcspErrorStatus, number]>) {
      const der = ocspErrorResponse(status);
      assert.equal(der.toString("hex"), `30030a010${code}`);
      assert.deepEqual(parseOcspResponse(der), { responseStatus: status });
      const r = openssl(["ocsp", "-respin", file(`err-${status}.der`, der), "-resp_text"]);
      assert.match(r.stdout + r.stderr, new RegExp(`Responder Error: ${status} \\(${code}\\)`, "i"));
    }
    ocspErrorResponse("malformedRequest")[4] = 0; // a copy: the shared constant is not affected
    assert.equal(ocspErrorResponse("malformedRequest").toString("hex"), "30030a0101");
  });

  it("reasons: unspecified is written by omission, removeFromCRL is refused, all others round-trip", () => {
    const certId = withNonce.parsed.certIds[0]!;
    const build = (status: CertStatus): Buffer =>
      buildOcspResponse(pki.responder, { producedAt: NOW, responses: [{ certId, status, thisUpdate: NOW }] });
    const unspecified = successful(build({ status: "revoked", revokedAt: REVOKED_AT, reason: "unspecified" }));
    assert.deepEqual(unspecified.responses[0]!.status, { status: "revoked", revokedAt: REVOKED_AT });
    assert.equal(unspecified.responses[0]!.nextUpdate, undefined);
    assert.throws(() => build({ status: "revoked", revokedAt: REVOKED_AT, reason: "removeFromCRL" }), RangeError);
    for (const reason of [
      "keyCompromise",
      "cACompromise",
      "affiliationChanged",
      "superseded",
      "cessationOfOperation",
      "certificateHold",
      "privilegeWithdrawn",
      "aACompromise",
    ] as const) {
      assert.deepEqual(successful(build({ status: "revoked", revokedAt: REVOKED_AT, reason })).responses[0]!.status, {
        status: "revoked",
        revokedAt: REVOKED_AT,
        reason,
      });
    }
  });

  it("small and large responses (all DER length forms) parse back and verify", () => {
    const publicKey = new X509Certificate(pki.responderCert.der).publicKey;
    const certId = withNonce.parsed.certIds[0]!;
    for (const [count, includeCertificate] of [
      [1, false],
      [1, true],
      [16, true],
      [400, false],
    ] as const) {
      const der = buildOcspResponse(pki.responder, {
        producedAt: NOW,
        includeCertificate,
        responses: Array.from({ length: count }, () => ({
          certId,
          status: { status: "good" } as const,
          thisUpdate: NOW,
          nextUpdate: NEXT_UPDATE,
        })),
      });
      const parsed = successful(der);
      assert.equal(parsed.responses.length, count);
      assert.equal(parsed.certs.length, includeCertificate ? 1 : 0);
      assert.ok(verify("sha256", parsed.tbsResponseData, publicKey, parsed.signature), `${count} responses`);
    }
    for (const [alg, length] of [
      ["sha1", 20],
      ["sha256", 32],
      ["sha384", 48],
      ["sha512", 64],
    ] as const) {
      const h = issuerHashes(pki.ca.certificate, alg);
      assert.equal(h.nameHash.length, length);
      assert.equal(h.keyHash.length, length);
    }
  });

  it("refuses bad input from its caller: no responses, a bad nonce, nextUpdate before thisUpdate", () => {
    const certId = withNonce.parsed.certIds[0]!;
    assert.throws(() => buildOcspResponse(pki.responder, { producedAt: NOW, responses: [] }), RangeError);
    assert.throws(
      () =>
        buildOcspResponse(pki.responder, {
          producedAt: NOW,
          nonce: Buffer.alloc(33),
          responses: [{ certId, status: { status: "good" }, thisUpdate: NOW }],
        }),
      RangeError,
    );
    assert.throws(
      () =>
        buildOcspResponse(pki.responder, {
          producedAt: NOW,
          responses: [{ certId, status: { status: "good" }, thisUpdate: NOW, nextUpdate: new Date(NOW.getTime() - 1000) }],
        }),
      RangeError,
    );
  });
});

describe("parseOcspResponse on pyca's response vectors", () => {
  const files = readdirSync(VECTORS).filter((f) => f.startsWith("resp-") || f.endsWith("-resp.der"));
  const rejected: Record<string, string> = {
    "resp-response-type-unknown-oid.der": "unsupported-response-type",
    "resp-successful-no-response-bytes.der": "missing-response-bytes",
    "resp-unknown-response-status.der": "unknown-response-status",
  };

  for (const f of files) {
    it(f, () => {
      const path = join(VECTORS, f);
      const result = parseResponseOrReject(readFileSync(path));
      if (rejected[f]) {
        assert.ok(result instanceof OcspResponseError, `${f} must be rejected`);
        assert.equal(result.reason, rejected[f]);
        return;
      }
      assert.ok(!(result instanceof OcspResponseError), `${f}: ${result instanceof Error ? result.message : ""}`);
      if (result.responseStatus !== "successful") {
        assert.equal(f, "resp-unauthorized.der");
        assert.equal(result.responseStatus, "unauthorized");
        return;
      }
      // compare with openssl's reading (status and serial of each SingleResponse)
      const text = ok(openssl(["ocsp", "-respin", path, "-resp_text", "-noverify"]), "openssl -resp_text").stdout;
      const serials = [...text.matchAll(/Serial Number: ([0-9A-F]+)\n\s+Cert Status: (\w+)/g)].map((m) => [m[1]!.toLowerCase(), m[2]!]);
      assert.deepEqual(
        result.responses.map((r) => [r.certId.serialHex, r.status.status]),
        serials,
      );
      const reasons = [...text.matchAll(/Revocation Reason: (\w+)/g)].map((m) => m[1]);
      assert.deepEqual(
        result.responses.flatMap((r) => (r.status.status === "revoked" && r.status.reason ? [r.status.reason] : [])),
        reasons,
      );
      assert.equal(
        result.responses.some((r) => r.nextUpdate === undefined),
        f === "resp-revoked-no-next-update.der",
      );
    });
  }

  it("specific fields: responder key hash, nonce, unknown CertID digest", () => {
    const keyHash = successful(readFileSync(join(VECTORS, "resp-responder-key-hash.der")));
    assert.equal(keyHash.responderKeyHash?.toString("hex"), "0f80611c823161d52f28e78d4638b42ce1c6d9e2");
    const reason = successful(readFileSync(join(VECTORS, "resp-revoked-reason.der")));
    assert.equal(reason.nonce?.toString("hex"), "3595379f610383878972578fae99f722");
    assert.ok(reason.responderName && reason.responderName[0] === 0x30);
    assert.equal(reason.certs.length, 1);
    const hash = successful(readFileSync(join(VECTORS, "resp-unknown-hash-alg.der")));
    assert.equal(hash.responses[0]!.certId.hashAlgorithm, "unsupported");
  });

  it("single-byte mutations of responses parse or throw OcspResponseError, nothing else", () => {
    const inputs = [
      respond(parseOcspRequest(readFileSync(join(tmp.path, "req.der")))),
      readFileSync(join(VECTORS, "resp-revoked-no-next-update.der")),
    ];
    let rejectedCount = 0;
    for (const input of inputs) {
      for (let i = 0; i < input.length; i++) {
        for (const delta of [0x01, 0x80]) {
          const mutated = Buffer.from(input);
          mutated[i] = mutated[i]! ^ delta;
          if (parseResponseOrReject(mutated) instanceof OcspResponseError) rejectedCount++;
        }
      }
      for (let n = 0; n < input.length; n += 7) assert.ok(parseResponseOrReject(input.subarray(0, n)) instanceof OcspResponseError);
    }
    assert.ok(rejectedCount > 0);
  });
});

describe("performance", () => {
  it("builds 1000 signed responses quickly (precomputed per-responder parts)", (t) => {
    const request = parseOcspRequest(readFileSync(join(VECTORS, "req-ext-nonce.der")));
    const signer = new OcspResponseSigner(pki.responder);
    const certId = request.certIds[0]!;
    const tbs = Buffer.alloc(300, 1);
    const key = pki.responder.signer.key;
    const build = (): Buffer => {
      const now = new Date();
      return signer.sign({
        producedAt: now,
        nonce: request.nonce!,
        responses: [{ certId, status: { status: "good" }, thisUpdate: now, nextUpdate: new Date(now.getTime() + HOUR) }],
      });
    };
    for (let i = 0; i < 200; i++) build(); // warm up
    // Interleave batches so the baseline (a bare ECDSA signature) sees the same machine load.
    let buildMs = 0;
    let signMs = 0;
    for (let batch = 0; batch < 10; batch++) {
      let t0 = performance.now();
      for (let i = 0; i < 100; i++) build();
      buildMs += performance.now() - t0;
      t0 = performance.now();
      for (let i = 0; i < 100; i++) sign("sha256", tbs, key);
      signMs += performance.now() - t0;
    }
    const rate = 1000 / (buildMs / 1000);
    const baseline = 1000 / (signMs / 1000);
    t.diagnostic(
      `OCSP responses: ${Math.round(rate)}/s; bare ECDSA P-256 sign: ${Math.round(baseline)}/s; ratio ${(rate / baseline).toFixed(2)}`,
    );
    assert.ok(buildMs < 5000, `1000 responses took ${Math.round(buildMs)} ms`);
    assert.ok(rate / baseline > 0.3, `encoding dominates: ${Math.round(rate)}/s vs ${Math.round(baseline)}/s bare signatures`);
    const parsed = successful(build());
    assert.ok(verify("sha256", parsed.tbsResponseData, new X509Certificate(pki.responderCert.der).publicKey, parsed.signature));
  });
});
