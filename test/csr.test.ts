// CSR parsing and device issuance: public vectors, forged and hostile CSRs made with openssl,
// key policy, malformed input, device ids, and concurrent issuance.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate as NodeX509, createPrivateKey, createPublicKey, sign, verify } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sql } from "kysely";
import { CsrError, parseCsr, type CsrRejection } from "../src/x509/csr.js";
import { fromPem } from "../src/x509/pem.js";
import { parseCertificate } from "../src/x509/certificate.js";
import { OID } from "../src/der/oids.js";
import { nullValue, oid, sequence, set, smallInteger, tlv, utf8String } from "../src/der/writer.js";
import * as F from "./support/csr-fuzz.js";
import { issueDeviceCertificate, keyFromCsr, type DeviceCertificate } from "../src/authority/issue/issuance.js";
import { addDevice } from "../src/authority/devices.js";
import { AuthorityError, CsrInvalid, InvalidDeviceId, KeyTypeNotAllowed, UnknownDevice } from "../src/authority/errors.js";
import type { FleetServices } from "../src/authority/services.js";
import { verifyAudit } from "../src/audit/log.js";
import { vectorPath, openssl, opensslCsr, tempDir, tempFleet } from "./helpers.js";
import { sqliteStore } from "./support/sqlite.js";

/** @peculiar/x509 certificate from PEM text or DER bytes. */
const peculiar = (cert: Buffer | string): x509.X509Certificate =>
  new x509.X509Certificate(typeof cert === "string" ? cert : new Uint8Array(cert));

const VECTOR_DIR = vectorPath("pyca", "x509", "requests");

type Outcome =
  { accept: string /* keyType */ } | { reason: CsrRejection; message: RegExp; authority: typeof CsrInvalid | typeof KeyTypeNotAllowed };

const SHA1 = {
  reason: "signature-algorithm-not-allowed",
  message: /signature algorithm not allowed: sha1WithRSAEncryption/,
  authority: CsrInvalid,
} as const;

/**
 * Every file of the pyca request vectors and what fleetpki must do with it. Verified independently:
 * `openssl req -verify` says OK for exactly the accepted ones plus the SHA-1 and DSA ones (which
 * are refused by policy); everything else has a bad signature or bad structure.
 */
const VECTORS: Record<string, Outcome> = {
  "challenge-unstructured.pem": { accept: "rsa2048" },
  "challenge.pem": { accept: "rsa2048" },
  "ec_sha256.der": { accept: "p384" },
  "ec_sha256.pem": { accept: "p384" },
  "ec_sha256_old_header.pem": { accept: "p384" }, // "NEW CERTIFICATE REQUEST" label
  "freeipa-bad-critical.pem": { accept: "rsa2048" }, // requested extensions are ignored, so their criticality is irrelevant
  "rsa_sha256.der": { accept: "rsa2048" },
  "rsa_sha256.pem": { accept: "rsa2048" },

  "rsa_sha1.der": SHA1,
  "rsa_sha1.pem": SHA1,
  "san_rsa_sha1.der": SHA1,
  "san_rsa_sha1.pem": SHA1,
  // These four are PEM preceded by `openssl req -text` output (~3.5 kB before "-----BEGIN");
  // the CSRs inside are sha1WithRSAEncryption (and openssl says their signatures do not verify).
  "basic_constraints.pem": SHA1,
  "two_basic_constraints.pem": SHA1,
  "unsupported_extension.pem": SHA1,
  "unsupported_extension_critical.pem": SHA1,
  "rsa_md4.der": {
    reason: "signature-algorithm-not-allowed",
    message: /signature algorithm not allowed: md4WithRSAEncryption/,
    authority: CsrInvalid,
  },
  "rsa_md4.pem": {
    reason: "signature-algorithm-not-allowed",
    message: /signature algorithm not allowed: md4WithRSAEncryption/,
    authority: CsrInvalid,
  },

  "dsa_sha1.der": { reason: "key-type-not-allowed", message: /key type not allowed: dsa/, authority: KeyTypeNotAllowed },
  "dsa_sha1.pem": { reason: "key-type-not-allowed", message: /key type not allowed: dsa/, authority: KeyTypeNotAllowed },
  // RSA-1024 with a bad signature: the key policy is checked before the signature.
  "invalid_signature.pem": {
    reason: "key-type-not-allowed",
    message: /RSA 1024 bits is below the minimum of 2048/,
    authority: KeyTypeNotAllowed,
  },

  "bad-version.pem": { reason: "unsupported-version", message: /unsupported version 1 /, authority: CsrInvalid },
  // challengePassword attribute holding an INTEGER / two values; signatures do not verify (openssl agrees)
  "challenge-invalid.der": { reason: "signature-invalid", message: /signature does not verify/, authority: CsrInvalid },
  "challenge-multi-valued.der": { reason: "signature-invalid", message: /signature does not verify/, authority: CsrInvalid },
  // attribute value with a high-number ("long form") tag [APPLICATION 32], 7f 20 at byte 337
  "long-form-attribute.pem": {
    reason: "malformed",
    message: /malformed DER: multi-byte tags are not supported at byte 337/,
    authority: CsrInvalid,
  },
};

function csrError(fn: () => unknown): CsrError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof CsrError, `expected CsrError, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    return e;
  }
  assert.fail("expected a CsrError, nothing was thrown");
}

async function authorityError<C extends abstract new (...a: never[]) => AuthorityError>(
  p: Promise<unknown>,
  cls: C,
): Promise<InstanceType<C>> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    return e as InstanceType<C>;
  }
  assert.fail(`expected ${cls.name}, nothing was thrown`);
}

const tmp = tempDir("fleetpki-csr-test-");
let ctx: Awaited<ReturnType<typeof tempFleet>>;
let fleet: FleetServices;
let rootPem: string;
let devicesPem: string;

function writeTmp(name: string, data: string | Buffer): string {
  const p = join(tmp.path, name);
  writeFileSync(p, data);
  return p;
}

/** openssl verify of a leaf against the fleet's root and devices CA, as a TLS server would. */
function opensslVerify(certPem: string, name: string): { ok: boolean; out: string } {
  const leaf = writeTmp(`${name}.leaf.pem`, certPem);
  const root = writeTmp("root.pem", rootPem);
  const chain = writeTmp("devices.pem", devicesPem);
  const r = openssl(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", root, "-untrusted", chain, leaf]);
  return { ok: r.status === 0 && /: OK\s*$/.test(r.stdout), out: r.stdout + r.stderr };
}

async function certCount(where?: { deviceId: string }): Promise<number> {
  let q = sqliteStore(fleet)
    .db.selectFrom("certificates")
    .select(sql<number>`count(*)`.as("n"));
  if (where) q = q.where("device_id", "=", where.deviceId);
  return Number((await q.executeTakeFirstOrThrow()).n);
}

async function addDevices(...ids: string[]): Promise<void> {
  for (const id of ids) await addDevice(fleet, { id, actor: "test" });
}

let p256: { key: string; csr: string };
let rsa2048: { key: string; csr: string };

before(async () => {
  ctx = await tempFleet({ publicUrl: "http://localhost:8080" });
  fleet = ctx.fleet;
  rootPem = (await fleet.caRecord("root")).certificate_pem;
  devicesPem = (await fleet.caRecord("devices")).certificate_pem;
  p256 = opensslCsr(tmp.path, "p256");
  rsa2048 = opensslCsr(tmp.path, "rsa2048", ["-newkey", "rsa:2048"]);
  await addDevices("robot-1");
});

after(async () => {
  await ctx?.close();
  tmp.cleanup();
});

describe("pyca request vectors", () => {
  it("the table covers exactly the files in the vector directory", () => {
    assert.deepEqual(readdirSync(VECTOR_DIR).sort(), Object.keys(VECTORS).sort());
    assert.equal(Object.keys(VECTORS).length, 25);
  });

  for (const [file, outcome] of Object.entries(VECTORS)) {
    const label = "accept" in outcome ? `accepted (${outcome.accept})` : `${outcome.reason} (${outcome.authority.name})`;
    it(`${file}: ${label}`, async () => {
      const bytes = readFileSync(join(VECTOR_DIR, file));
      // Uploads arrive as bytes; PEM files are also tried as text.
      const inputs: Array<Buffer | string> = file.endsWith(".pem") ? [bytes, bytes.toString("utf8")] : [bytes];
      for (const input of inputs) {
        const kind = typeof input === "string" ? "string" : "Buffer";
        if ("accept" in outcome) {
          const parsed = parseCsr(input);
          assert.equal(parsed.keyType, outcome.accept, kind);
          const key = await keyFromCsr(input);
          assert.equal(key.keyType, outcome.accept);
          assert.ok(key.spki.equals(parsed.spki));
        } else {
          const e = csrError(() => parseCsr(input));
          assert.equal(e.reason, outcome.reason, `${kind}: ${e.message}`);
          assert.match(e.message, outcome.message, kind);
          assert.match(e.message, /^CSR: /);
          const ae = await authorityError(keyFromCsr(input), outcome.authority);
          assert.match(ae.message, outcome.message);
          if (ae instanceof CsrInvalid) assert.equal(ae.reason, outcome.reason);
        }
      }
    });
  }

  it("every accepted vector issues a device certificate carrying the CSR's key", async () => {
    const accepted = Object.entries(VECTORS).filter(([, o]) => "accept" in o);
    assert.equal(accepted.length, 8);
    const before = await certCount({ deviceId: "robot-1" });
    for (const [file, outcome] of accepted) {
      const csr = readFileSync(join(VECTOR_DIR, file));
      const cert = await issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr });
      assert.equal(cert.keyType, (outcome as { accept: string }).accept, file);
      assert.ok(parseCertificate(cert.der).spki.equals(parseCsr(csr).spki), `${file}: the certificate carries the CSR's key`);
      const v = opensslVerify(cert.certificatePem, file);
      assert.ok(v.ok, `${file}: ${v.out}`);
    }
    assert.equal(await certCount({ deviceId: "robot-1" }), before + 8);
  });
});

describe("PEM preceded by text", () => {
  // `openssl req -text -out x.csr` writes the human-readable dump first, then the PEM block;
  // the PEM parser is documented to ignore text outside blocks.
  it("a short preamble is ignored (control)", () => {
    const pem = readFileSync(p256.csr, "utf8");
    assert.equal(parseCsr(`Certificate Request for robot-1\n${pem}`).keyType, "p256");
  });

  it("`openssl req -text` output before the PEM block is ignored, however long it is", async () => {
    const out = join(tmp.path, "with-text.csr");
    const r = openssl(["req", "-in", rsa2048.csr, "-text", "-out", out]);
    assert.equal(r.status, 0, r.stderr);
    const text = readFileSync(out, "utf8");
    assert.ok(text.indexOf("-----BEGIN CERTIFICATE REQUEST-----") > 200, "the dump is longer than 200 characters");
    assert.equal(openssl(["req", "-in", out, "-noout", "-verify"]).status, 0, "openssl reads it");
    for (const input of [text, Buffer.from(text)]) {
      assert.equal(parseCsr(input).keyType, "rsa2048");
      assert.equal((await keyFromCsr(input)).keyType, "rsa2048");
    }
  });
});

describe("forged CSRs", () => {
  function derOf(csrPath: string): Buffer {
    const out = join(tmp.path, `${csrPath.split("/").pop()}.der`);
    const r = openssl(["req", "-in", csrPath, "-outform", "DER", "-out", out]);
    assert.equal(r.status, 0, r.stderr);
    return readFileSync(out);
  }
  function opensslSaysBad(der: Buffer, name: string): void {
    const r = openssl(["req", "-inform", "DER", "-in", writeTmp(name, der), "-noout", "-verify"]);
    assert.match(r.stdout + r.stderr, /verify failure/, `openssl should also reject ${name}`);
  }

  it("the unmodified openssl CSRs verify (control)", () => {
    assert.equal(parseCsr(derOf(p256.csr)).keyType, "p256");
    assert.equal(parseCsr(derOf(rsa2048.csr)).keyType, "rsa2048");
  });

  for (const which of ["p256", "rsa2048"] as const) {
    it(`${which}: a flipped byte in the signature -> signature-invalid`, async () => {
      const der = Buffer.from(derOf(which === "p256" ? p256.csr : rsa2048.csr));
      der[der.length - 2]! ^= 0x01; // inside the signature value, the last field
      opensslSaysBad(der, `${which}-forged-sig.der`);
      const e = csrError(() => parseCsr(der));
      assert.equal(e.reason, "signature-invalid");
      assert.match(e.message, /signature does not verify \(no proof of possession/);
      const ae = await authorityError(keyFromCsr(der), CsrInvalid);
      assert.equal(ae.reason, "signature-invalid");
      assert.equal(ae.code, "csr-invalid");
    });

    it(`${which}: a flipped byte in the signed subject -> signature-invalid`, async () => {
      const der = Buffer.from(derOf(which === "p256" ? p256.csr : rsa2048.csr));
      const at = der.indexOf(Buffer.from(which, "latin1")); // the CN value, inside CertificationRequestInfo
      assert.ok(at > 0 && at < 60, "CN found near the start");
      der[at] = "X".charCodeAt(0);
      opensslSaysBad(der, `${which}-forged-subject.der`);
      const e = csrError(() => parseCsr(der));
      assert.equal(e.reason, "signature-invalid");
      const before = await certCount({ deviceId: "robot-1" });
      await authorityError(issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr: der }), CsrInvalid);
      assert.equal(await certCount({ deviceId: "robot-1" }), before, "nothing recorded");
    });
  }
});

describe("the device host name", () => {
  it("is <id>.devices.<domain> for ids that are DNS labels, and left out for the others (an underscore)", async () => {
    await addDevices("robot-7", "robot_8");
    const { csr: csrFile } = opensslCsr(tmp.path, "host");
    const csr = readFileSync(csrFile, "utf8");
    const withName = await issueDeviceCertificate(fleet, { deviceId: "robot-7", actor: "test", csr });
    const without = await issueDeviceCertificate(fleet, { deviceId: "robot_8", actor: "test", csr });
    assert.equal(new NodeX509(withName.der).subjectAltName, "URI:spiffe://fleet.example/device/robot-7, DNS:robot-7.devices.fleet.example");
    assert.equal(new NodeX509(without.der).subjectAltName, "URI:spiffe://fleet.example/device/robot_8");
  });
});

describe("a CSR asking for more than the device profile", () => {
  let evil: { key: string; csr: string };
  let cert: DeviceCertificate;

  before(async () => {
    evil = { key: join(tmp.path, "evil.key"), csr: join(tmp.path, "evil.csr") };
    const r = openssl([
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      evil.key,
      "-subj",
      "/CN=admin/O=Evil Corp",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "subjectAltName=DNS:evil.example,URI:spiffe://evil/x",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-addext",
      "extendedKeyUsage=serverAuth",
      "-out",
      evil.csr,
    ]);
    assert.equal(r.status, 0, r.stderr);
    await addDevices("robot-2");
    cert = await issueDeviceCertificate(fleet, { deviceId: "robot-2", actor: "test", csr: readFileSync(evil.csr, "utf8") });
  });

  it("the CSR really asks for CA:TRUE, foreign SANs, another CN and keyCertSign (control)", () => {
    const text = openssl(["req", "-in", evil.csr, "-noout", "-text"]).stdout;
    for (const s of [
      "CA:TRUE",
      "DNS:evil.example",
      "URI:spiffe://evil/x",
      "CN = admin",
      "Certificate Sign",
      "TLS Web Server Authentication",
    ])
      assert.ok(text.includes(s), s);
  });

  it("the certificate has exactly the device profile (@peculiar/x509)", async () => {
    const c = peculiar(cert.der);
    assert.equal(c.subject, "CN=robot-2");
    assert.equal(c.issuer, "O=Test Robots, CN=Test Robots Devices CA");
    assert.deepEqual(
      [...c.extensions].map((e) => e.type).sort(),
      [
        OID.keyUsage,
        OID.extKeyUsage,
        OID.subjectKeyIdentifier,
        OID.authorityKeyIdentifier,
        OID.crlDistributionPoints,
        OID.authorityInfoAccess,
        OID.subjectAltName,
      ].sort(),
    );
    assert.equal(c.getExtension(x509.BasicConstraintsExtension), null);

    const san = c.getExtension(x509.SubjectAlternativeNameExtension)!;
    assert.deepEqual(san.names.toJSON(), [
      { type: "url", value: "spiffe://fleet.example/device/robot-2" },
      { type: "dns", value: "robot-2.devices.fleet.example" },
    ]);

    const ku = c.getExtension(x509.KeyUsagesExtension)!;
    assert.equal(ku.critical, true);
    assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature);

    const eku = c.getExtension(x509.ExtendedKeyUsageExtension)!;
    assert.deepEqual([...eku.usages], [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth]);

    const ski = c.getExtension(x509.SubjectKeyIdentifierExtension)!;
    const expectedSki = await x509.SubjectKeyIdentifierExtension.create(c.publicKey);
    assert.equal(ski.keyId, expectedSki.keyId);

    const devicesCa = peculiar(devicesPem);
    const aki = c.getExtension(x509.AuthorityKeyIdentifierExtension)!;
    assert.equal(aki.keyId, devicesCa.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);

    const cdp = c.getExtension(x509.CRLDistributionPointsExtension)!;
    assert.equal(cdp.distributionPoints.length, 1);
    assert.deepEqual(
      [...cdp.distributionPoints[0]!.distributionPoint!.fullName!].map((n) => n.uniformResourceIdentifier),
      ["http://localhost:8080/crl/devices.crl"],
    );

    const aia = c.getExtension(x509.AuthorityInfoAccessExtension)!;
    assert.deepEqual(
      aia.ocsp.map((n) => n.toJSON()),
      [{ type: "url", value: "http://localhost:8080/ocsp" }],
    );
    assert.equal(aia.caIssuers.length, 0);

    // the key is the CSR's key
    const csrSpki = createPublicKey(readFileSync(evil.key)).export({ type: "spki", format: "der" });
    assert.ok(Buffer.from(c.publicKey.rawData).equals(csrSpki));
    assert.ok(await c.verify({ publicKey: devicesCa.publicKey, signatureOnly: true }), "signed by the devices CA");
  });

  it("the certificate has exactly the device profile (openssl x509 -text)", () => {
    const text = openssl(["x509", "-noout", "-text"], cert.certificatePem).stdout;
    assert.match(text, /Subject: CN = robot-2\n/);
    assert.doesNotMatch(text, /Basic Constraints/);
    assert.doesNotMatch(text, /evil|admin|Evil Corp/i);
    assert.doesNotMatch(text, /Certificate Sign|CRL Sign/);
    assert.match(text, /X509v3 Key Usage: critical\n\s+Digital Signature\n/);
    assert.match(text, /X509v3 Extended Key Usage: \n\s+TLS Web Client Authentication, TLS Web Server Authentication\n/);
    assert.match(
      text,
      /X509v3 Subject Alternative Name: \n\s+URI:spiffe:\/\/fleet\.example\/device\/robot-2, DNS:robot-2\.devices\.fleet\.example\n/,
    );
    assert.match(text, /X509v3 Subject Key Identifier: \n\s+[0-9A-F:]{59}\n/);
    assert.match(text, /X509v3 Authority Key Identifier: \n\s+[0-9A-F:]{59}\n/);
    assert.match(text, /X509v3 CRL Distribution Points: \n\s+Full Name:\n\s+URI:http:\/\/localhost:8080\/crl\/devices\.crl\n/);
    assert.match(text, /Authority Information Access: \n\s+OCSP - URI:http:\/\/localhost:8080\/ocsp\n/);
    assert.equal((text.match(/X509v3 [A-Z][\w ]+:|Authority Information Access:/g) ?? []).length, 7, "seven extensions");
    const v = opensslVerify(cert.certificatePem, "evil");
    assert.ok(v.ok, v.out);
  });
});

describe("key policy", () => {
  const allowed: Array<[string, string[], string]> = [
    ["rsa2048", ["-newkey", "rsa:2048"], "rsa2048"],
    ["p384", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], "p384"],
    ["ed25519", ["-newkey", "ed25519"], "ed25519"],
    ["p256", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "p256"],
  ];
  for (const [name, keyArgs, keyType] of allowed) {
    it(`${name} CSR made by openssl -> issued, bound to the CSR's key, verifying under the fleet root`, async () => {
      const made = opensslCsr(tmp.path, `allowed-${name}`, keyArgs);
      const cert = await issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr: readFileSync(made.csr) });
      assert.equal(cert.keyType, keyType);
      const nodeCert = new NodeX509(cert.der);
      const privateKey = createPrivateKey(readFileSync(made.key));
      assert.ok(nodeCert.checkPrivateKey(privateKey), "certificate public key matches the CSR's private key");
      // a signature made with the device key verifies with the certificate's key
      const data = Buffer.from("telemetry frame");
      const hash = keyType === "ed25519" ? null : "sha256";
      assert.ok(verify(hash, data, nodeCert.publicKey, sign(hash, data, privateKey)));
      assert.ok(nodeCert.verify(new NodeX509(devicesPem).publicKey), "signed by the devices CA");
      assert.ok(!nodeCert.verify(new NodeX509(rootPem).publicKey), "not signed by the root");
      const v = opensslVerify(cert.certificatePem, name);
      assert.ok(v.ok, v.out);
    });
  }

  it("RSA-1024 -> KeyTypeNotAllowed", async () => {
    const made = opensslCsr(tmp.path, "rsa1024", ["-newkey", "rsa:1024"]);
    const csr = readFileSync(made.csr);
    const e = csrError(() => parseCsr(csr));
    assert.equal(e.reason, "key-type-not-allowed");
    assert.match(e.message, /RSA 1024 bits is below the minimum of 2048/);
    const before = await certCount();
    const ae = await authorityError(issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr }), KeyTypeNotAllowed);
    assert.equal(ae.code, "key-type-not-allowed");
    assert.match(ae.message, /RSA 1024/);
    assert.equal(await certCount(), before);
  });

  it("secp521r1 -> KeyTypeNotAllowed", async () => {
    const made = opensslCsr(tmp.path, "p521", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"]);
    const csr = readFileSync(made.csr, "utf8");
    const e = csrError(() => parseCsr(csr));
    assert.equal(e.reason, "key-type-not-allowed");
    assert.match(e.message, /EC curve secp521r1/);
    const ae = await authorityError(issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr }), KeyTypeNotAllowed);
    assert.match(ae.message, /secp521r1/);
  });
});

describe("strict structure: what OpenSSL refuses, and a little more (issue 9 item 1.2)", () => {
  // Each CSR is correctly signed by its own key, so only the structure can be at fault.
  const key = F.makeKey("p256");
  const ed = F.makeKey("ed25519");
  const rsa = F.makeKey("rsa2048");
  const cn = oid(OID.commonName);
  const withName = (value: Buffer): Buffer =>
    F.signedCsr(F.requestInfo({ spki: key.spki, subject: sequence(set(sequence(cn, value))) }), key);
  const withAttribute = (attribute: Buffer): Buffer => F.signedCsr(F.requestInfo({ spki: key.spki, attributes: [attribute] }), key);
  const challenge = oid(OID.challengePassword);
  /** openssl: what `openssl req -verify` says; where it accepts, fleetpki is stricter on purpose (RFC cited). */
  const CASES: { name: string; csr: () => Buffer; message: RegExp; openssl: "refuses" | "accepts" }[] = [
    {
      name: "signature AlgorithmIdentifier with three fields",
      csr: () => F.signedCsr(F.requestInfo({ spki: rsa.spki }), rsa, sequence(oid(OID.sha256WithRSAEncryption), nullValue(), nullValue())),
      message: /signatureAlgorithm has 3 fields, expected 1 or 2/,
      openssl: "refuses",
    },
    // RFC 5758 3.2: the ECDSA AlgorithmIdentifiers have absent parameters.
    {
      name: "ecdsa-with-SHA256 with NULL parameters",
      csr: () => F.signedCsr(F.requestInfo({ spki: key.spki }), key, sequence(oid(OID.ecdsaWithSHA256), nullValue())),
      message: /ecdsaWithSHA256 takes no parameters \(absent, not NULL\)/,
      openssl: "accepts",
    },
    // RFC 8410 3: absent.
    {
      name: "Ed25519 signature with NULL parameters",
      csr: () => F.signedCsr(F.requestInfo({ spki: ed.spki }), ed, sequence(oid(OID.ed25519), nullValue())),
      message: /ed25519 takes no parameters/,
      openssl: "accepts",
    },
    // RFC 4055 5: NULL (or absent).
    {
      name: "sha256WithRSAEncryption with an OID as parameters",
      csr: () => F.signedCsr(F.requestInfo({ spki: rsa.spki }), rsa, sequence(oid(OID.sha256WithRSAEncryption), oid(OID.ed25519))),
      message: /takes NULL \(or no\) parameters/,
      openssl: "accepts",
    },
    {
      name: "a subject AttributeTypeAndValue with three fields",
      csr: () =>
        F.signedCsr(F.requestInfo({ spki: key.spki, subject: sequence(set(sequence(cn, utf8String("a"), utf8String("b")))) }), key),
      message: /AttributeTypeAndValue has 3 fields/,
      openssl: "refuses",
    },
    // RFC 5280 4.1.2.4: RelativeDistinguishedName ::= SET SIZE (1..MAX).
    {
      name: "an empty RelativeDistinguishedName",
      csr: () => F.signedCsr(F.requestInfo({ spki: key.spki, subject: sequence(set()) }), key),
      message: /empty RelativeDistinguishedName/,
      openssl: "accepts",
    },
    {
      name: "a subject value that is an INTEGER",
      csr: () => withName(smallInteger(5)),
      message: /has tag 0x2, not a string type/,
      openssl: "refuses",
    },
    {
      name: "a subject value that is context-tagged",
      csr: () => withName(tlv(0x80, Buffer.from("x"))),
      message: /has tag 0x80, not a string type/,
      openssl: "refuses",
    },
    {
      name: "a subject UTF8String that is not UTF-8",
      csr: () => withName(tlv(0x0c, Buffer.from([0xc3, 0x28]))),
      message: /not a valid UTF8String/,
      openssl: "refuses",
    },
    {
      name: "a subject BMPString of odd length",
      csr: () => withName(tlv(0x1e, Buffer.from([0, 0x41, 0]))),
      message: /not a valid BMPString/,
      openssl: "refuses",
    },
    {
      name: "a subject BMPString holding a surrogate",
      csr: () => withName(tlv(0x1e, Buffer.from([0xd8, 0x00]))),
      message: /not a valid BMPString/,
      openssl: "refuses",
    },
    {
      name: "a subject UniversalString of 3 bytes",
      csr: () => withName(tlv(0x1c, Buffer.from([0, 0, 0x41]))),
      message: /not a valid UniversalString/,
      openssl: "refuses",
    },
    {
      name: "an Attribute with three fields",
      csr: () => withAttribute(sequence(challenge, set(utf8String("x")), nullValue())),
      message: /Attribute has 3 fields/,
      openssl: "refuses",
    },
    // RFC 2986 4.1: values SET SIZE (1..MAX).
    {
      name: "an Attribute with no values",
      csr: () => withAttribute(sequence(challenge, set())),
      message: /Attribute with no values/,
      openssl: "accepts",
    },
    {
      name: "an attribute value BOOLEAN of two bytes",
      csr: () => withAttribute(sequence(challenge, set(tlv(0x01, Buffer.from([0xff, 0]))))),
      message: /not a valid BOOLEAN/,
      openssl: "refuses",
    },
    {
      name: "an attribute value NULL with content",
      csr: () => withAttribute(sequence(challenge, set(tlv(0x05, Buffer.from([0]))))),
      message: /not a valid NULL/,
      openssl: "refuses",
    },
    {
      name: "an attribute value INTEGER with a redundant leading zero",
      csr: () => withAttribute(sequence(challenge, set(tlv(0x02, Buffer.from([0, 1]))))),
      message: /not a valid INTEGER/,
      openssl: "refuses",
    },
    {
      name: "an attribute value BIT STRING with 9 unused bits",
      csr: () => withAttribute(sequence(challenge, set(tlv(0x03, Buffer.from([9, 0]))))),
      message: /not a valid BIT STRING/,
      openssl: "refuses",
    },
    {
      name: "an attribute value BMPString of odd length",
      csr: () => withAttribute(sequence(challenge, set(tlv(0x1e, Buffer.from([0]))))),
      message: /not a valid BMPString/,
      openssl: "refuses",
    },
  ];

  for (const c of CASES) {
    it(`${c.name} -> malformed (openssl ${c.openssl})`, async () => {
      const der = c.csr();
      const r = openssl(["req", "-inform", "DER", "-in", writeTmp(`strict-${c.name.replace(/\W+/g, "-")}.der`, der), "-noout", "-verify"]);
      assert.equal(r.status === 0 && /verify OK/i.test(r.stdout + r.stderr) ? "accepts" : "refuses", c.openssl, r.stdout + r.stderr);
      const e = csrError(() => parseCsr(der));
      assert.equal(e.reason, "malformed", e.message);
      assert.match(e.message, c.message);
      const ae = await authorityError(keyFromCsr(der), CsrInvalid);
      assert.equal(ae.reason, "malformed");
    });
  }

  it(
    "sha256WithRSAEncryption without parameters is accepted (RFC 4055 5: implementations must accept it), " + "and so is an empty subject",
    () => {
      assert.equal(
        parseCsr(F.signedCsr(F.requestInfo({ spki: rsa.spki }), rsa, sequence(oid(OID.sha256WithRSAEncryption)))).keyType,
        "rsa2048",
      );
      assert.equal(parseCsr(F.signedCsr(F.requestInfo({ spki: key.spki, subject: sequence() }), key)).keyType, "p256");
    },
  );
});

describe("malformed input", () => {
  async function rejects(input: Buffer | string, reason: CsrRejection, message: RegExp): Promise<void> {
    const e = csrError(() => parseCsr(input));
    assert.equal(e.reason, reason, e.message);
    assert.match(e.message, message);
    const ae = await authorityError(keyFromCsr(input), CsrInvalid);
    assert.equal(ae.reason, reason);
    assert.match(ae.message, message);
  }
  const pemOf = (): string => readFileSync(p256.csr, "utf8");

  it("garbage bytes", async () => {
    await rejects(Buffer.from("this is not a certificate request"), "malformed", /malformed DER: .*truncated/);
    await rejects(Buffer.from([0xff, 0xff, 0xff, 0xff]), "malformed", /malformed DER: multi-byte tags/);
    await rejects(
      Buffer.from("3003020100", "hex"),
      "malformed",
      /malformed DER: expected CertificationRequest \(tag 0x30\)|CertificationRequest has 1 fields, expected 3/,
    );
    await rejects("just some text", "malformed", /CSR: neither PEM nor DER/);
  });

  it("empty input", async () => {
    await rejects(Buffer.alloc(0), "malformed", /malformed DER: unexpected end of data \(truncated\)/);
    await rejects("", "malformed", /neither PEM nor DER/);
  });

  it("truncated DER (a valid CSR cut in half)", async () => {
    const der = fromPem(pemOf(), ["CERTIFICATE REQUEST"]);
    assert.equal(parseCsr(der).keyType, "p256"); // control
    await rejects(
      der.subarray(0, der.length >> 1),
      "malformed",
      /malformed DER: element of length \d+ runs past the end of its container \(truncated\)/,
    );
    await rejects(der.subarray(0, der.length - 1), "malformed", /truncated/);
  });

  it("trailing bytes after a valid DER CSR", async () => {
    const der = fromPem(pemOf(), ["CERTIFICATE REQUEST"]);
    await rejects(Buffer.concat([der, Buffer.from([0])]), "malformed", /1 trailing bytes after the outer element/);
  });

  it("PEM with the wrong label", async () => {
    await rejects(rootPem, "wrong-pem-label", /wrong PEM label "CERTIFICATE" \(expected CERTIFICATE REQUEST or NEW CERTIFICATE REQUEST\)/);
    await rejects(readFileSync(p256.key), "wrong-pem-label", /wrong PEM label "PRIVATE KEY"/);
  });

  it("PEM with broken base64", async () => {
    const pem = pemOf();
    const lines = pem.split("\n");
    const bad = [lines[0], "!!" + lines[1]!.slice(2), ...lines.slice(2)].join("\n");
    await rejects(bad, "malformed", /contains characters that are not base64/);
    const short = [lines[0], lines[1]!.slice(1), ...lines.slice(2)].join("\n");
    await rejects(short, "malformed", /truncated base64 body/);
    await rejects(
      pem.replace("-----END CERTIFICATE REQUEST-----", "-----END CERTIFICATE-----"),
      "malformed",
      /ends with "END CERTIFICATE"/,
    );
    await rejects("-----BEGIN CERTIFICATE REQUEST-----\nno end line\n", "malformed", /no PEM block found/);
  });

  it("two CSR blocks in one PEM", async () => {
    await rejects(pemOf() + pemOf(), "malformed", /more than one CERTIFICATE REQUEST PEM block/);
  });

  it("every rejection is a CsrError, never another exception", () => {
    const der = fromPem(pemOf(), ["CERTIFICATE REQUEST"]);
    // truncations and single-byte corruptions anywhere
    for (let n = 0; n < der.length; n += 3) csrError(() => parseCsr(der.subarray(0, n)));
    for (let i = 0; i < der.length; i++)
      for (const x of [0x01, 0x80, 0xff]) {
        const copy = Buffer.from(der);
        copy[i]! ^= x;
        try {
          parseCsr(copy);
        } catch (e) {
          assert.ok(e instanceof CsrError, `byte ${i} ^ ${x}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
        }
      }
  });
});

describe("device ids and error paths", () => {
  const bad = ["", "UPPER", "-x", "a/b", "x".repeat(64), "robot.01", " robot", "robot\n", "_x", "robot 1"];
  for (const id of bad) {
    it(`device id ${JSON.stringify(id)} -> InvalidDeviceId`, async () => {
      const before = await certCount();
      const e = await authorityError(
        issueDeviceCertificate(fleet, { deviceId: id, actor: "test", csr: readFileSync(p256.csr) }),
        InvalidDeviceId,
      );
      assert.equal(e.code, "invalid-device-id");
      assert.ok(e.message.includes(`"${id}"`), e.message);
      if (id === "robot.01") assert.match(e.message, /must not contain '\.'/);
      await authorityError(addDevice(fleet, { id, actor: "test" }), InvalidDeviceId);
      assert.equal(await certCount(), before);
    });
  }

  it("a 63-character id is fine", async () => {
    const id = "x".repeat(63);
    await addDevices(id);
    const cert = await issueDeviceCertificate(fleet, { deviceId: id, actor: "test", csr: readFileSync(p256.csr) });
    assert.equal(peculiar(cert.der).subject, `CN=${id}`);
  });

  it("unknown device -> UnknownDevice, and nothing is recorded", async () => {
    const before = await certCount();
    const auditBefore = await sqliteStore(fleet)
      .db.selectFrom("audit_log")
      .select(sql<number>`count(*)`.as("n"))
      .executeTakeFirstOrThrow();
    const e = await authorityError(
      issueDeviceCertificate(fleet, { deviceId: "ghost", actor: "test", csr: readFileSync(p256.csr) }),
      UnknownDevice,
    );
    assert.equal(e.code, "unknown-device");
    assert.match(e.message, /unknown device "ghost"/);
    assert.equal(await certCount({ deviceId: "ghost" }), 0);
    assert.equal(await certCount(), before);
    const rows = await sqliteStore(fleet).db.selectFrom("certificates").select("serial").where("subject_id", "=", "ghost").execute();
    assert.deepEqual(rows, []);
    const auditAfter = await sqliteStore(fleet)
      .db.selectFrom("audit_log")
      .select(sql<number>`count(*)`.as("n"))
      .executeTakeFirstOrThrow();
    assert.equal(Number(auditAfter.n), Number(auditBefore.n), "no audit event either");
  });

  it("an unknown device in the same batch as known ones fails alone", async () => {
    await addDevices("robot-3");
    const csr = readFileSync(p256.csr);
    const results = await Promise.allSettled([
      issueDeviceCertificate(fleet, { deviceId: "robot-3", actor: "test", csr }),
      issueDeviceCertificate(fleet, { deviceId: "ghost-2", actor: "test", csr }),
      issueDeviceCertificate(fleet, { deviceId: "robot-3", actor: "test", csr }),
    ]);
    assert.equal(results[0]!.status, "fulfilled");
    assert.equal(results[2]!.status, "fulfilled");
    assert.equal(results[1]!.status, "rejected");
    assert.ok((results[1] as PromiseRejectedResult).reason instanceof UnknownDevice);
    assert.equal(await certCount({ deviceId: "robot-3" }), 2);
    assert.equal(await certCount({ deviceId: "ghost-2" }), 0);
  });

  it("an invalid CSR for a known device records nothing", async () => {
    const before = await certCount();
    await authorityError(issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr: "garbage" }), CsrInvalid);
    assert.equal(await certCount(), before);
  });
});

describe("concurrent issuance", () => {
  it("200 concurrent issuances for one device: 200 distinct 17-byte serials, 200 rows, audit chain intact", async () => {
    await addDevices("swarm");
    const csr = readFileSync(p256.csr);
    const certs = await Promise.all(
      Array.from({ length: 200 }, (_, i) => issueDeviceCertificate(fleet, { deviceId: "swarm", actor: "test", csr, context: { i } })),
    );
    const serials = new Set(certs.map((c) => c.serial));
    assert.equal(serials.size, 200);
    for (const c of certs) {
      assert.match(c.serial, /^01[0-9a-f]{32}$/, "0x01 then 16 random octets: 17 octets, 128 random bits, positive");
      assert.equal(parseCertificate(c.der).serialHex, c.serial);
      assert.equal(peculiar(c.der).serialNumber.toLowerCase(), c.serial);
    }
    assert.equal(await certCount({ deviceId: "swarm" }), 200);
    const rows = await sqliteStore(fleet)
      .db.selectFrom("certificates")
      .select(["serial", "der"])
      .where("device_id", "=", "swarm")
      .execute();
    assert.deepEqual(new Set(rows.map((r) => r.serial)), serials);
    const bySerial = new Map(certs.map((c) => [c.serial, c.der]));
    for (const r of rows) assert.ok(Buffer.from(r.der).equals(bySerial.get(r.serial)!), `stored DER for ${r.serial}`);
    const events = await sqliteStore(fleet)
      .db.selectFrom("audit_log")
      .select("details")
      .where("action", "=", "certificate.issue")
      .where("subject", "=", "device:swarm")
      .execute();
    assert.equal(events.length, 200);
    assert.deepEqual(new Set(events.map((e) => JSON.parse(e.details).serial)), serials);
    const verdict = await verifyAudit(fleet.store.ops.audit);
    assert.ok(verdict.ok, JSON.stringify(verdict));
  });
});
