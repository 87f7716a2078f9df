// S/MIME detached signatures (governance.p7s, permissions.p7s): our signer against python cryptography (what
// sros2 calls) byte for byte, both directions against openssl smime, and hostile input to the verifier.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { children, raw, readRoot, type Element } from "../src/der/reader.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { signSmime, verifySmime, SmimeError, type SmimeErrorReason } from "../src/x509/smime.js";
import { openssl, tempDir, vectorPath, writeTemp, type RunResult } from "./helpers.js";

const vector = (name: string): Buffer => readFileSync(vectorPath("smime", name));
const certDer = (name: string): Buffer => new X509Certificate(vector(name)).raw;
const CONTENT = vector("content.xml");
/** What openssl -text prints and the signed part carries: every LF as CRLF. */
const CRLF_CONTENT = Buffer.from(CONTENT.toString("utf8").replace(/\r?\n/g, "\r\n"), "utf8");
/** What verifySmime returns: the content with CRLF as LF. */
const LF_CONTENT = Buffer.from(CONTENT.toString("utf8").replace(/\r\n/g, "\n"), "utf8");
const SIGNING_TIME = new Date("2026-12-05T01:02:03Z");

function assertSmimeError(fn: () => unknown, reason: SmimeErrorReason, message: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SmimeError, `expected an SmimeError, got ${String(e)}`);
    assert.equal(e.reason, reason, e.message);
    assert.match(e.message, message);
    return true;
  });
}

/** The SignedData fields and the SignerInfo fields before the signature value. */
function signedStructure(smime: string): { signedData: Buffer[]; signerInfo: Buffer[] } {
  const b64 = /\r?\n\r?\n([A-Za-z0-9+/=\r\n]+)\r?\n--[^\r\n]+--\r?\n$/.exec(smime)![1]!;
  const der = Buffer.from(b64.replace(/\s/g, ""), "base64");
  const top = children(readRoot(der));
  const signedData = children(children(top[1]!)[0]!);
  const signerInfo = children(children(signedData[signedData.length - 1]!)[0]!);
  const bytes = (list: Element[]): Buffer[] => list.map((e) => Buffer.from(raw(e)));
  return { signedData: bytes(signedData.slice(0, -1)), signerInfo: bytes(signerInfo.slice(0, -1)) };
}

const boundaryOf = (smime: string): string => /boundary="([^"]+)"/.exec(smime)![1]!;

/** Replaces the base64 signature part's body with `der`'s base64 (64-column lines). */
function withSignature(smime: string, der: Buffer): string {
  const lines = der
    .toString("base64")
    .match(/.{1,64}/g)!
    .join("\r\n");
  return smime.replace(/(smime\.p7s"\r\n\r\n)[A-Za-z0-9+/=\r\n]+?(\r\n\r\n--)/, `$1${lines}\r\n$2`);
}

const signatureDer = (smime: string): Buffer =>
  Buffer.from(/\r?\n\r?\n([A-Za-z0-9+/=\r\n]+)\r?\n--[^\r\n]+--\r?\n$/.exec(smime)![1]!.replace(/\s/g, ""), "base64");

describe("S/MIME signing as sros2 does (python cryptography)", () => {
  it("is byte-identical to cryptography's output for RSA (deterministic signatures), given its signing time and boundary", () => {
    const theirs = vector("cryptography-rsa.p7s").toString("utf8");
    const { signingTime } = verifySmime(theirs, certDer("rsa-cert.pem"));
    assert.ok(signingTime);
    const key = createPrivateKey(vector("rsa-key.pem"));
    const ours = signSmime(CONTENT, certDer("rsa-cert.pem"), key, { signingTime, boundary: boundaryOf(theirs) });
    assert.equal(ours, theirs);
  });

  it("matches cryptography's P-256 output in every byte but the (randomised) ECDSA signature", () => {
    const theirs = vector("cryptography-p256.p7s").toString("utf8");
    const { signingTime } = verifySmime(theirs, certDer("p256-cert.pem"));
    const key = createPrivateKey(vector("p256-key.pem"));
    const ours = signSmime(
      CONTENT,
      certDer("p256-cert.pem"),
      { key, scheme: signatureSchemeFor(key) },
      {
        signingTime,
        boundary: boundaryOf(theirs),
      },
    );
    assert.deepEqual(signedStructure(ours), signedStructure(theirs));
    const mimeOnly = (s: string): string => s.replace(/smime\.p7s"\r\n\r\n[A-Za-z0-9+/=\r\n]+?\r\n\r\n--/, "BASE64");
    assert.equal(mimeOnly(ours), mimeOnly(theirs));
    assert.deepEqual(verifySmime(ours, certDer("p256-cert.pem")).content, LF_CONTENT);
  });

  it("canonicalises line ends only (LF -> CRLF, CRLF kept) and leaves no signingTime when none is given", () => {
    const key = createPrivateKey(vector("p256-key.pem"));
    const ours = signSmime(CONTENT, certDer("p256-cert.pem"), key);
    assert.ok(ours.includes(`Content-Type: text/plain\r\n\r\n${CRLF_CONTENT.toString("utf8")}\r\n--`));
    assert.match(boundaryOf(ours), /^={15}\d{19}==$/);
    assert.equal(verifySmime(ours).signingTime, undefined);
  });

  it("refuses a key that is not the certificate's and non-UTF-8 content", () => {
    const rsa = createPrivateKey(vector("rsa-key.pem"));
    assertSmimeError(
      () => signSmime(CONTENT, certDer("p256-cert.pem"), rsa),
      "invalid-input",
      /does not belong to the signer certificate CN=smime test p256/,
    );
    const p256 = createPrivateKey(vector("p256-key.pem"));
    assertSmimeError(() => signSmime(Buffer.from([0x3c, 0xff, 0x3e]), certDer("p256-cert.pem"), p256), "invalid-input", /must be UTF-8/);
  });
});

describe("S/MIME against openssl smime", () => {
  const tmp = tempDir("fleetpki-smime-");
  let identityCa: string;
  let permissionsCa: string;
  let permissionsKey: KeyObject;
  let permissionsDer: Buffer;
  let identityDer: Buffer;
  let leafDer: Buffer;
  let leafKey: KeyObject;

  const sh = (args: string[]): RunResult => {
    const r = openssl(args);
    assert.equal(r.status, 0, `openssl ${args.join(" ")}: ${r.stderr}`);
    return r;
  };

  before(() => {
    // Two distinct self-signed CAs, as a keystore ships them (DDS takes no partial chain), made by openssl,
    // an independent implementation.
    const d = tmp.path;
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    const ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"];
    for (const name of ["identity", "permissions"])
      sh(
        ["req", "-x509", ...ec, ...ext, "-keyout", join(d, `${name}.key`), "-out", join(d, `${name}.pem`)].concat([
          "-subj",
          `/CN=${name} ca`,
          "-days",
          "30",
        ]),
      );
    sh(["req", "-new", ...ec, "-keyout", join(d, "leaf.key"), "-out", join(d, "leaf.csr"), "-subj", "/CN=leaf"]);
    sh(
      ["x509", "-req", "-in", join(d, "leaf.csr"), "-CA", join(d, "permissions.pem"), "-CAkey", join(d, "permissions.key")].concat([
        "-CAcreateserial",
        "-out",
        join(d, "leaf.pem"),
        "-days",
        "30",
      ]),
    );
    identityCa = join(d, "identity.pem");
    permissionsCa = join(d, "permissions.pem");
    permissionsKey = createPrivateKey(readFileSync(join(d, "permissions.key")));
    permissionsDer = new X509Certificate(readFileSync(permissionsCa)).raw;
    identityDer = new X509Certificate(readFileSync(identityCa)).raw;
    leafDer = new X509Certificate(readFileSync(join(d, "leaf.pem"))).raw;
    leafKey = createPrivateKey(readFileSync(join(d, "leaf.key")));
  });
  after(() => tmp.cleanup());

  const ours = (): string => signSmime(CONTENT, permissionsDer, permissionsKey, { signingTime: SIGNING_TIME });

  it("openssl smime -verify -CAfile <permissions CA> accepts ours and prints the exact content", () => {
    const file = writeTemp(tmp.path, "ours.p7s", ours());
    const text = openssl(["smime", "-verify", "-CAfile", permissionsCa, "-in", file, "-text", "-out", join(tmp.path, "out-text")]);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stderr, /Verification successful/);
    assert.deepEqual(readFileSync(join(tmp.path, "out-text")), CRLF_CONTENT);
    const plain = openssl(["smime", "-verify", "-CAfile", permissionsCa, "-in", file, "-out", join(tmp.path, "out")]);
    assert.equal(plain.status, 0, plain.stderr);
    assert.deepEqual(readFileSync(join(tmp.path, "out")), Buffer.concat([Buffer.from("Content-Type: text/plain\r\n\r\n"), CRLF_CONTENT]));
  });

  it("openssl refuses ours against the identity CA; so does verifySmime", () => {
    const file = writeTemp(tmp.path, "ours-identity.p7s", ours());
    const r = openssl(["smime", "-verify", "-CAfile", identityCa, "-in", file, "-text", "-out", join(tmp.path, "x")]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /certificate verify error|unable to get local issuer/);
    assertSmimeError(
      () => verifySmime(ours(), identityDer),
      "untrusted-signer",
      /signer CN=permissions ca is neither the trusted CA CN=identity ca/,
    );
  });

  it("verifySmime accepts openssl's signature (-text, sha256) and cryptography's, and returns the content with LF", () => {
    const made = sh(
      ["smime", "-sign", "-text", "-md", "sha256", "-signer", permissionsCa, "-inkey", join(tmp.path, "permissions.key")].concat([
        "-in",
        vectorPath("smime", "content.xml"),
      ]),
    );
    const result = verifySmime(made.stdout, permissionsDer);
    assert.deepEqual(result.content, LF_CONTENT);
    assert.deepEqual(result.signerCertDer, permissionsDer);
    assert.deepEqual(verifySmime(vector("openssl-p256.p7s"), certDer("p256-cert.pem")).content, LF_CONTENT);
    assert.deepEqual(verifySmime(vector("cryptography-p256.p7s"), certDer("p256-cert.pem")).content, LF_CONTENT);
  });

  it("a signer issued by the trusted CA is accepted (and by openssl with the chain's CA)", () => {
    const signed = signSmime(CONTENT, leafDer, leafKey, { signingTime: SIGNING_TIME });
    assert.deepEqual(verifySmime(signed, permissionsDer).signerCertDer, leafDer);
    const file = writeTemp(tmp.path, "leaf.p7s", signed);
    const r = openssl(["smime", "-verify", "-CAfile", permissionsCa, "-purpose", "any", "-in", file, "-out", join(tmp.path, "y")]);
    assert.equal(r.status, 0, r.stderr);
  });

  it("tampered content: digest mismatch here, refused by openssl too", () => {
    const tampered = ours().replace('name="/café/talker"', 'name="/evil/talker"');
    assertSmimeError(() => verifySmime(tampered, permissionsDer), "digest-mismatch", /content does not match the signed message digest/);
    const file = writeTemp(tmp.path, "tampered.p7s", tampered);
    assert.notEqual(openssl(["smime", "-verify", "-CAfile", permissionsCa, "-in", file, "-out", join(tmp.path, "z")]).status, 0);
  });

  it("tampered signature value: bad signature", () => {
    const smime = ours();
    const der = signatureDer(smime);
    der[der.length - 5]! ^= 0x01; // inside the ECDSA signature, the last element
    assertSmimeError(
      () => verifySmime(withSignature(smime, der), permissionsDer),
      "bad-signature",
      /does not verify with the signer certificate CN=permissions ca/,
    );
  });

  it("truncated base64: a specific error, whether the closing boundary is kept or lost", () => {
    const smime = ours();
    const cutBody = smime.replace(/([A-Za-z0-9+/]{10})[A-Za-z0-9+/=]*\r\n\r\n--(=+\d+==)--\r\n$/, "$1\r\n\r\n--$2--\r\n");
    assert.notEqual(cutBody, smime);
    assertSmimeError(() => verifySmime(cutBody, permissionsDer), "malformed-mime", /not a multiple of 4|malformed|truncated/);
    assertSmimeError(
      () => verifySmime(smime.slice(0, smime.length - 300), permissionsDer),
      "malformed-mime",
      /no closing MIME boundary \(truncated\?\)/,
    );
    // Whole base64 groups dropped: well-formed base64, truncated DER.
    const der = signatureDer(smime);
    assertSmimeError(
      () => verifySmime(withSignature(smime, der.subarray(0, 300)), permissionsDer),
      "malformed-cms",
      /not DER SignedData: .*truncated/,
    );
  });

  it("two signers: refused", () => {
    const r = sh(
      ["smime", "-sign", "-text", "-md", "sha256", "-signer", permissionsCa, "-inkey", join(tmp.path, "permissions.key")].concat([
        "-signer",
        join(tmp.path, "leaf.pem"),
        "-inkey",
        join(tmp.path, "leaf.key"),
        "-in",
        vectorPath("smime", "content.xml"),
      ]),
    );
    assertSmimeError(() => verifySmime(r.stdout, permissionsDer), "unsupported", /2 signers, expected exactly one/);
  });

  it("md5: refused by micalg, and in the CMS digest algorithm when micalg claims sha-256", () => {
    // OpenSSL signs MD5 only with RSA (no ECDSA-with-MD5).
    const r = sh(
      ["smime", "-sign", "-text", "-md", "md5", "-signer", vectorPath("smime", "rsa-cert.pem")].concat([
        "-inkey",
        vectorPath("smime", "rsa-key.pem"),
        "-in",
        vectorPath("smime", "content.xml"),
      ]),
    );
    assertSmimeError(() => verifySmime(r.stdout, certDer("rsa-cert.pem")), "unsupported", /micalg is md5; only sha-256/);
    const lying = r.stdout.replace('micalg="md5"', 'micalg="sha-256"');
    assertSmimeError(
      () => verifySmime(lying, certDer("rsa-cert.pem")),
      "unsupported",
      /digest algorithm is md5 \(1\.2\.840\.113549\.2\.5\); only sha256/,
    );
  });

  it("no signed attributes, a non-text part, wrong protocol, oversized input: specific errors", () => {
    const noattr = sh(
      ["smime", "-sign", "-text", "-noattr", "-md", "sha256", "-signer", permissionsCa, "-inkey", join(tmp.path, "permissions.key")].concat(
        ["-in", vectorPath("smime", "content.xml")],
      ),
    );
    assertSmimeError(() => verifySmime(noattr.stdout, permissionsDer), "missing-attribute", /signer has no signed attributes/);
    const smime = ours();
    assertSmimeError(
      () => verifySmime(smime.replace("Content-Type: text/plain", "Content-Type: text/html"), permissionsDer),
      "malformed-mime",
      /signed part: Content-Type is text\/html, expected text\/plain/,
    );
    assertSmimeError(
      () => verifySmime(smime.replace('protocol="application/x-pkcs7-signature"', 'protocol="application/pgp-signature"'), permissionsDer),
      "malformed-mime",
      /protocol is application\/pgp-signature/,
    );
    const binary = sh(
      ["smime", "-sign", "-md", "sha256", "-signer", permissionsCa, "-inkey", join(tmp.path, "permissions.key")].concat([
        "-in",
        vectorPath("smime", "content.xml"),
      ]),
    );
    assertSmimeError(
      () => verifySmime(binary.stdout, permissionsDer),
      "malformed-mime",
      /no Content-Type: text\/plain header \(signed in binary mode/,
    );
    assertSmimeError(() => verifySmime(Buffer.alloc(9 * 1024 * 1024, 0x41)), "too-large", /over 8388608 bytes/);
    assertSmimeError(
      () => verifySmime("MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n"),
      "malformed-mime",
      /expected multipart\/signed/,
    );
  });
});
