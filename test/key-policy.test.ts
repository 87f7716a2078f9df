// The key policy (issue 9, items 1.1 and 1.2): every hostile key is sent as a CSR whose
// "signature" verifies wherever the weakness allows one, and must be refused with its own reason
// before node:crypto sees it. Also: the canonical SubjectPublicKeyInfo in certificates, the key
// of an expired certificate that asks to renew, the point-at-infinity CSR against a running
// server, and the SKI-length bug of keyId (item 1.11).
// Only long-standing entry points are used (parseCsr, keyFromCsr, issueDeviceCertificate, the
// server), so each test also runs, and fails, against the code before the policy existed.
import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync, generatePrimeSync, sign, verify, X509Certificate, type KeyObject } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { sql } from "kysely";
import { addDevice } from "../src/authority/devices.js";
import { CsrInvalid, KeyTypeNotAllowed, ReEnrollRequired } from "../src/authority/errors.js";
import type { FleetServices } from "../src/authority/services.js";
import { issueDeviceCertificate, issueForKey, keyFromCsr, type SubjectKey } from "../src/authority/issue/issuance.js";
import { renewExpired, renewWithCertificate, renewalChallenge, expiredRenewalMessage } from "../src/authority/enroll/enrollment.js";
import { createToken } from "../src/authority/enroll/tokens.js";
import { nullValue, oid, sequence, smallInteger, tlv } from "../src/der/writer.js";
import { buildCertificate, parseCertificate } from "../src/x509/certificate.js";
import { CsrError, parseCsr } from "../src/x509/csr.js";
import { subjectKeyIdentifier } from "../src/x509/extensions.js";
import { LeafTemplate } from "../src/x509/profiles.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { fromPem, toPem } from "../src/x509/pem.js";
import { tempFleet } from "./helpers.js";
import { assertProblem, https, postJson, startTestServer, makeCsr, type TestServer } from "./server-helpers.js";
import * as F from "./support/csr-fuzz.js";
import { sqliteStore } from "./support/sqlite.js";

function csrError(fn: () => unknown): CsrError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof CsrError, `expected CsrError, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    return e;
  }
  assert.fail("expected a CsrError, nothing was thrown");
}

async function rejected(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  assert.fail("expected a rejection");
}

/** The CSR's own key and "signature", verified by node:crypto: shows the input really is hostile. */
function signatureVerifies(csr: Buffer): boolean {
  const root = F.parseDer(csr);
  const info = F.encodeDer(root.children![0]!);
  const spki = F.encodeDer(root.children![0]!.children![2]!);
  const sigOid = F.encodeDer(root.children![1]!.children![0]!);
  const hash = sigOid.equals(oid(F.OIDS.ed25519)) ? null : sigOid.equals(oid(F.OIDS.ecdsaSha384)) ? "sha384" : "sha256";
  return verify(hash, info, createPublicKey({ key: spki, format: "der", type: "spki" }), root.children![2]!.content!.subarray(1));
}

let ctx: Awaited<ReturnType<typeof tempFleet>>;
let fleet: FleetServices;
let keys: Record<F.FuzzKeyKind, F.FuzzKey>;

before(async () => {
  ctx = await tempFleet();
  fleet = ctx.fleet;
  await addDevice(fleet, { id: "robot-1", actor: "test" });
  keys = { p256: F.makeKey("p256"), p384: F.makeKey("p384"), ed25519: F.makeKey("ed25519"), rsa2048: F.makeKey("rsa2048") };
});

after(async () => {
  await ctx?.close();
});

async function certCount(): Promise<number> {
  return Number(
    (
      await sqliteStore(fleet)
        .db.selectFrom("certificates")
        .select(sql<number>`count(*)`.as("n"))
        .executeTakeFirstOrThrow()
    ).n,
  );
}

interface HostileCase {
  name: string;
  csr: () => Buffer;
  reason: string;
  message: RegExp;
  /** The CSR's signature verifies under its own key (the weakness makes forging possible). */
  forged?: boolean;
  /** Refused at issuance, once the requester authenticated, rather than by keyFromCsr (it is costly). */
  atIssuance?: boolean;
}

/** Resigns a CSR around `spki` with the real private key of `key` (extra encodings of a real key). */
const around = (key: F.FuzzKey, spki: Buffer): Buffer => F.signedCsr(F.requestInfo({ spki }), key);

/** A point (x >= p, y) on P-256 with x = p + k: the same point as (k, y), written out of range. */
function p256PointAboveP(): Buffer {
  const b = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;
  for (let k = 0n; ; k++) {
    const rhs = (((k * k * k - 3n * k + b) % F.P256_P) + F.P256_P) % F.P256_P;
    const y = F.modPow(rhs, (F.P256_P + 1n) / 4n, F.P256_P);
    if ((y * y) % F.P256_P !== rhs || F.P256_P + k >= 2n ** 256n) continue;
    const hex = (n: bigint) => n.toString(16).padStart(64, "0");
    return Buffer.from(`04${hex(F.P256_P + k)}${hex(y)}`, "hex");
  }
}

function rsaKeyWith(options: { modulusLength: number; publicExponent?: number }): F.FuzzKey {
  const pair = generateKeyPairSync("rsa", options);
  return {
    kind: "rsa2048",
    privateKey: pair.privateKey,
    spki: pair.publicKey.export({ type: "spki", format: "der" }),
    sigAlg: sequence(oid(F.OIDS.sha256WithRSA), nullValue()),
    hash: "sha256",
  };
}

/** n = 3 * q: everyone can factor it, so everyone can sign for it. */
function smallFactorCsr(): Buffer {
  for (;;) {
    // OpenSSL sets the top two bits of generated primes, so 3 * q has 2048 bits for a 2046-bit q.
    const q = generatePrimeSync(2046, { bigint: true });
    const n = 3n * q;
    if (n.toString(2).length !== 2048) continue;
    // lambda(3q) = lcm(2, q - 1) = q - 1
    const d = modInverse(65537n, q - 1n);
    if (d === undefined) continue;
    const nBytes = Buffer.from(n.toString(16).padStart(512, "0"), "hex");
    const info = F.requestInfo({ subject: F.nameCn("small-factor"), spki: F.rsaSpki(nBytes, Buffer.from([1, 0, 1])) });
    const em = BigInt(`0x${F.pkcs1Sha256(info, 256).toString("hex")}`);
    const s = Buffer.from(F.modPow(em, d, n).toString(16).padStart(512, "0"), "hex");
    return F.assemble(info, sequence(oid(F.OIDS.sha256WithRSA), nullValue()), s);
  }
}

function modInverse(a: bigint, m: bigint): bigint | undefined {
  let [r0, r1, s0, s1] = [a % m, m, 1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1, s0, s1] = [r1, r0 - q * r1, s1, s0 - q * s1];
  }
  return r0 === 1n ? ((s0 % m) + m) % m : undefined;
}

const edBytes = (): Buffer => F.spkiKeyBytes(keys.ed25519.spki);

const CASES: HostileCase[] = [
  // RSA
  {
    name: "RSA e = 1 with the PKCS#1 padding as its 'signature'",
    csr: () => F.rsaExponentOneCsr(F.rsaParts(keys.rsa2048.spki).n),
    reason: "rsa-exponent-not-allowed",
    message: /public exponent 1 is not allowed/,
    forged: true,
  },
  {
    name: "RSA e = 2 with a square root as signature",
    csr: () => F.rsaExponentTwoCsr(F.blumModulus()),
    reason: "rsa-exponent-not-allowed",
    message: /public exponent 2 is not allowed/,
    forged: true,
  },
  {
    name: "RSA e = 3 (below 65537), a real key",
    csr: () => F.validCsr(rsaKeyWith({ modulusLength: 2048, publicExponent: 3 })),
    reason: "rsa-exponent-not-allowed",
    message: /public exponent 3 is not allowed/,
    forged: true,
  },
  {
    name: "RSA prime modulus (the private exponent is public)",
    csr: () => F.rsaPrimeModulusCsr(generatePrimeSync(2048, { bigint: true })),
    reason: "rsa-modulus-not-allowed",
    message: /the modulus is prime/,
    forged: true,
    atIssuance: true,
  },
  { name: "RSA modulus 3 * q", csr: smallFactorCsr, reason: "rsa-modulus-not-allowed", message: /small factor 3\b/, forged: true },
  {
    name: "RSA 2052-bit modulus (not a multiple of 8), a real key",
    csr: () => F.validCsr(rsaKeyWith({ modulusLength: 2052 })),
    reason: "rsa-modulus-not-allowed",
    message: /2052-bit modulus is not allowed/,
    forged: true,
  },
  {
    name: "rsaEncryption parameters absent",
    csr: () => around(keys.rsa2048, F.rsaSpki(F.rsaParts(keys.rsa2048.spki).n, F.rsaParts(keys.rsa2048.spki).e, null)),
    reason: "key-parameters-invalid",
    message: /rsaEncryption parameters must be NULL/,
    forged: true,
  },
  {
    name: "rsaEncryption parameters an OID",
    csr: () => around(keys.rsa2048, F.rsaSpki(F.rsaParts(keys.rsa2048.spki).n, F.rsaParts(keys.rsa2048.spki).e, oid(F.OIDS.prime256v1))),
    reason: "key-parameters-invalid",
    message: /rsaEncryption parameters must be NULL/,
    forged: true,
  },
  {
    name: "RSAPublicKey with a trailing third INTEGER",
    csr: () =>
      around(keys.rsa2048, F.rsaSpki(F.rsaParts(keys.rsa2048.spki).n, F.rsaParts(keys.rsa2048.spki).e, undefined, [smallInteger(7)])),
    reason: "key-encoding-invalid",
    message: /RSAPublicKey has 3 fields/,
  },
  // EC
  {
    name: "P-256 point at infinity (the issue's CSR)",
    csr: () =>
      Buffer.from("MEwwMwIBADARMQ8wDQYDVQQDDAZub2JvZHkwGTATBgcqhkjOPQIBBggqhkjOPQMBBwMCAACgADAKBggqhkjOPQQDAgMJADAGAgEBAgEB", "base64"),
    reason: "ec-point-invalid",
    message: /point at infinity/,
  },
  {
    name: "P-384 point at infinity",
    csr: () =>
      F.assemble(
        F.requestInfo({ spki: F.ecSpki(Buffer.from([0]), oid(F.OIDS.secp384r1)) }),
        sequence(oid(F.OIDS.ecdsaSha384)),
        Buffer.from("3006020101020101", "hex"),
      ),
    reason: "ec-point-invalid",
    message: /point at infinity/,
  },
  {
    name: "compressed P-256 point of a real key",
    csr: () => around(keys.p256, F.ecSpki(F.compressPoint(F.spkiKeyBytes(keys.p256.spki)))),
    reason: "key-encoding-invalid",
    message: /compressed points are not allowed/,
    forged: true,
  },
  {
    name: "compressed P-384 point of a real key",
    csr: () => around(keys.p384, F.ecSpki(F.compressPoint(F.spkiKeyBytes(keys.p384.spki)), oid(F.OIDS.secp384r1))),
    reason: "key-encoding-invalid",
    message: /compressed points are not allowed/,
    forged: true,
  },
  {
    name: "P-256 point off the curve",
    csr: () =>
      around(
        keys.p256,
        F.ecSpki(Buffer.concat([F.spkiKeyBytes(keys.p256.spki).subarray(0, 64), Buffer.from([F.spkiKeyBytes(keys.p256.spki)[64]! ^ 1])])),
      ),
    reason: "ec-point-invalid",
    message: /not on P-256/,
  },
  {
    name: "P-256 x coordinate >= p",
    csr: () => around(keys.p256, F.ecSpki(p256PointAboveP())),
    reason: "ec-point-invalid",
    message: /coordinate is not below the P-256 field prime/,
  },
  {
    name: "EC parameters NULL (implicitCurve)",
    csr: () => around(keys.p256, F.ecSpki(F.spkiKeyBytes(keys.p256.spki), nullValue())),
    reason: "key-parameters-invalid",
    message: /must name the curve/,
  },
  {
    name: "EC explicit curve parameters (specifiedCurve)",
    csr: () => around(keys.p256, F.ecSpki(F.spkiKeyBytes(keys.p256.spki), sequence(smallInteger(1)))),
    reason: "key-parameters-invalid",
    message: /must name the curve/,
  },
  // Ed25519
  {
    name: "Ed25519 identity point, signature 01 00..00 (R = identity, S = 0)",
    csr: () => F.smallOrderEd25519Csr(F.ED_IDENTITY, 1),
    reason: "ed25519-point-invalid",
    message: /small order/,
    forged: true,
  },
  {
    name: "Ed25519 identity written non-canonically (y = p + 1)",
    csr: () => around(keys.ed25519, F.edSpki(Buffer.from(`ee${"ff".repeat(30)}7f`, "hex"))),
    reason: "ed25519-point-invalid",
    message: /non-canonical encoding \(y is not below/,
  },
  {
    name: "Ed25519 identity with the sign bit set",
    csr: () => around(keys.ed25519, F.edSpki(Buffer.from(`01${"00".repeat(30)}80`, "hex"))),
    reason: "ed25519-point-invalid",
    message: /sign bit set for x = 0/,
  },
  {
    name: "Ed25519 encoding that is no point",
    csr: () => around(keys.ed25519, F.edSpki(Buffer.from(`02${"00".repeat(31)}`, "hex"))),
    reason: "ed25519-point-invalid",
    message: /not a point on the curve/,
  },
  {
    name: "Ed25519 key with NULL parameters",
    csr: () => around(keys.ed25519, F.edSpki(edBytes(), nullValue())),
    reason: "key-parameters-invalid",
    message: /must have no parameters/,
  },
  {
    name: "Ed25519 key with an OID as parameters",
    csr: () => around(keys.ed25519, F.edSpki(edBytes(), oid(F.OIDS.prime256v1))),
    reason: "key-parameters-invalid",
    message: /must have no parameters/,
  },
  {
    name: "Ed25519 key with 2 kB of garbage as parameters",
    csr: () => around(keys.ed25519, F.edSpki(edBytes(), tlv(0x04, Buffer.alloc(2048, 0x41)))),
    reason: "key-parameters-invalid",
    message: /must have no parameters/,
  },
  // SubjectPublicKeyInfo
  {
    name: "SubjectPublicKeyInfo with two BIT STRINGs",
    csr: () =>
      around(
        keys.p256,
        sequence(...F.parseDer(keys.p256.spki).children!.map(F.encodeDer), F.encodeDer(F.parseDer(keys.p256.spki).children![1]!)),
      ),
    reason: "key-encoding-invalid",
    message: /SubjectPublicKeyInfo has 3 fields/,
  },
  {
    name: "public key AlgorithmIdentifier with three fields",
    csr: () =>
      around(
        keys.p256,
        sequence(
          sequence(oid(F.OIDS.ecPublicKey), oid(F.OIDS.prime256v1), nullValue()),
          F.encodeDer(F.parseDer(keys.p256.spki).children![1]!),
        ),
      ),
    reason: "key-encoding-invalid",
    message: /AlgorithmIdentifier has 3 fields/,
  },
];

describe("hostile keys in CSRs are refused with their own reason", () => {
  for (const c of CASES) {
    it(`${c.name} -> ${c.reason}`, async () => {
      const csr = c.csr();
      if (c.forged) assert.ok(signatureVerifies(csr), "control: the CSR's signature verifies under its own key");
      const e = csrError(() => parseCsr(csr));
      assert.equal(e.reason, c.reason, e.message);
      assert.match(e.message, c.message);
      if (c.atIssuance) await keyFromCsr(csr);
      else {
        const ae = await rejected(keyFromCsr(csr));
        assert.ok(ae instanceof CsrInvalid, String(ae));
        assert.equal(ae.reason, c.reason);
      }
      const before = await certCount();
      const ie = await rejected(issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr }));
      assert.ok(ie instanceof CsrInvalid && ie.reason === c.reason, String(ie));
      assert.equal(await certCount(), before, "nothing recorded");
    });
  }

  it("RSA keys of 2048 and 3072 bits with e = 65537 and a large odd e are accepted (controls)", () => {
    for (const modulusLength of [2048, 3072])
      assert.equal(parseCsr(F.validCsr(rsaKeyWith({ modulusLength }))).keyType, `rsa${modulusLength}`);
    assert.equal(parseCsr(F.validCsr(rsaKeyWith({ modulusLength: 2048, publicExponent: 0x7fffffff }))).keyType, "rsa2048");
  });

  it("secp256k1 and Ed448 keys -> KeyTypeNotAllowed, before any signature check", async () => {
    for (const [name, pair] of [
      ["secp256k1", generateKeyPairSync("ec", { namedCurve: "secp256k1" })],
      ["ed448", generateKeyPairSync("ed448")],
    ] as const) {
      const key: F.FuzzKey = {
        kind: "p256",
        privateKey: pair.privateKey,
        spki: pair.publicKey.export({ type: "spki", format: "der" }),
        sigAlg: keys.p256.sigAlg,
        hash: "sha256",
      };
      const csr = F.assemble(F.requestInfo({ spki: key.spki }), key.sigAlg, Buffer.from("3006020101020101", "hex"));
      const e = csrError(() => parseCsr(csr));
      assert.equal(e.reason, "key-type-not-allowed", `${name}: ${e.message}`);
      assert.ok((await rejected(keyFromCsr(csr))) instanceof KeyTypeNotAllowed);
    }
  });
});

describe("Ed25519 small-order points", () => {
  const points = F.smallOrderPoints();

  it("E[8] has eight points, each with 8P = identity, and all of them are refused", () => {
    assert.equal(new Set(points.map((p) => F.edEncode(p).toString("hex"))).size, 8);
    for (const p of points) {
      const order = F.edOrder(p);
      assert.ok([1, 2, 4, 8].includes(order), `order ${order}`);
      assert.deepEqual(F.edMul(8n, p), F.ED_IDENTITY);
      const csr = F.smallOrderEd25519Csr(p, order);
      assert.ok(signatureVerifies(csr), `control: R = identity, S = 0 verifies for a point of order ${order} when k = 0 mod ${order}`);
      const e = csrError(() => parseCsr(csr));
      assert.equal(e.reason, "ed25519-point-invalid", e.message);
    }
  });

  it("the fast decoding agrees with plain RFC 8032 arithmetic on 600 random encodings", async () => {
    // Imported here so that this file still loads, and its other tests run, against older code.
    const { readPolicyKey, KeyPolicyError } = await import("../src/x509/key-policy.js");
    const rng = new F.Rng(8032);
    let points = 0;
    for (let i = 0; i < 600; i++) {
      const bytes = rng.bytes(32);
      if (i % 3 === 0) bytes[31]! &= 0x7f; // more canonical ones
      const point = F.edDecode(bytes);
      const expected = point !== undefined && !(F.edMul(8n, point)[0] === 0n && F.edMul(8n, point)[1] === 1n);
      let accepted = true;
      try {
        readPolicyKey(F.edSpki(bytes));
      } catch (e) {
        assert.ok(e instanceof KeyPolicyError && e.reason === "ed25519-point-invalid", String(e));
        accepted = false;
      }
      assert.equal(accepted, expected, bytes.toString("hex"));
      if (expected) points++;
    }
    assert.ok(points > 100 && points < 500, `${points} of 600 are points`);
  });

  it("real keys are not of small order and are accepted (controls)", () => {
    for (let i = 0; i < 10; i++) {
      const key = F.makeKey("ed25519");
      const point = F.edDecode(F.spkiKeyBytes(key.spki))!;
      assert.notDeepEqual(F.edMul(8n, point), F.ED_IDENTITY);
      assert.equal(parseCsr(F.validCsr(key)).keyType, "ed25519");
    }
  });
});

describe("certificates carry the canonical SubjectPublicKeyInfo", () => {
  it("for every accepted key type, the certificate's SPKI is what node:crypto exports for that key", async () => {
    for (const kind of F.FUZZ_KEY_KINDS) {
      const key = keys[kind];
      // RSA PKCS#1 v1.5 signature algorithms may come without their NULL (RFC 4055 5).
      const csr =
        kind === "rsa2048" ? F.signedCsr(F.requestInfo({ spki: key.spki }), key, sequence(oid(F.OIDS.sha256WithRSA))) : F.validCsr(key);
      const cert = await issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr });
      const spki = parseCertificate(cert.der).spki;
      assert.ok(spki.equals(createPublicKey({ key: spki, format: "der", type: "spki" }).export({ type: "spki", format: "der" })), kind);
      assert.ok(spki.equals(key.spki), kind);
      assert.ok(new X509Certificate(cert.der).publicKey.equals(createPublicKey(key.privateKey)), kind);
    }
  });
});

describe("the key of an expired certificate", () => {
  /** A certificate for a small-order key, as the CA issued them before the policy existed. */
  async function weakCertificate(deviceId: string, now = new Date(Date.now() - 2 * 3_600_000)): Promise<string> {
    await addDevice(fleet, { id: deviceId, actor: "test" });
    const spki = F.edSpki(F.edEncode(F.ED_IDENTITY));
    const legacy = { spki, subjectPublicKey: F.edEncode(F.ED_IDENTITY), keyType: "ed25519" } as unknown as SubjectKey;
    const cert = await issueForKey(fleet, { deviceId, actor: "test", now, lifetimeMs: 3_600_000 }, legacy);
    return cert.certificatePem;
  }

  it("a valid certificate for a small-order key cannot renew over mTLS either (its TLS 'proof' may be forged)", async () => {
    const certificate = await weakCertificate("legacy-weak-mtls", new Date());
    const { csr: fresh } = await makeCsr("legacy-weak-mtls");
    const before = await certCount();
    const e = await rejected(
      renewWithCertificate(fleet, {
        clientCertificate: { der: fromPem(certificate, ["CERTIFICATE"]) },
        csr: fresh.der,
        source: { via: "test" },
      }),
    );
    assert.ok(e instanceof ReEnrollRequired, String(e));
    assert.match((e as Error).message, /key policy refuses .*small order.*re-enroll/);
    assert.equal(await certCount(), before);
  });

  it("a certificate issued for a small-order key cannot renew after expiry, even with a 'proof' that verifies", async () => {
    const certificate = await weakCertificate("legacy-weak");
    const { nonce } = await renewalChallenge(fleet, "legacy-weak");
    const { csr: fresh } = await makeCsr("legacy-weak");
    // R = identity, S = 0 verifies under the identity point for every message.
    const forged = Buffer.concat([F.edEncode(F.ED_IDENTITY), Buffer.alloc(32)]);
    const message = expiredRenewalMessage("legacy-weak", nonce, fresh.der);
    assert.ok(
      verify(null, message, createPublicKey({ key: F.edSpki(F.edEncode(F.ED_IDENTITY)), format: "der", type: "spki" }), forged),
      "control: the forged proof verifies",
    );
    const before = await certCount();
    const e = await rejected(
      renewExpired(fleet, { certificate, csr: fresh.der, nonce, signature: forged.toString("base64"), source: { via: "test" } }),
    );
    assert.ok(e instanceof ReEnrollRequired, String(e));
    assert.match((e as Error).message, /key policy refuses .*small order.*re-enroll/);
    assert.equal(await certCount(), before);
  });

  it("a certificate with a good key still renews after expiry (control)", async () => {
    await addDevice(fleet, { id: "legacy-good", actor: "test" });
    const old = await makeCsr("legacy-good");
    const cert = await issueDeviceCertificate(fleet, {
      deviceId: "legacy-good",
      actor: "test",
      csr: old.csr.der,
      now: new Date(Date.now() - 2 * 3_600_000),
      lifetimeMs: 3_600_000,
    });
    const { nonce } = await renewalChallenge(fleet, "legacy-good");
    const { csr: fresh } = await makeCsr("legacy-good");
    const proof = sign("sha256", expiredRenewalMessage("legacy-good", nonce, fresh.der), old.key.privateKey);
    const renewed = await renewExpired(fleet, {
      certificate: cert.certificatePem,
      csr: fresh.der,
      nonce,
      signature: proof.toString("base64"),
      source: { via: "test" },
    });
    assert.equal(renewed.deviceId, "legacy-good");
  });
});

describe("keyId of an issuing CA whose SubjectKeyIdentifier is longer than 127 bytes (item 1.11)", () => {
  it("the AKI of its leaves is exactly the CA's SKI", () => {
    const caKey = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const scheme = signatureSchemeFor(caKey.privateKey);
    const spki = caKey.publicKey.export({ type: "spki", format: "der" });
    const ski = Buffer.alloc(200, 0x5a);
    const name = F.nameCn("Long SKI CA");
    const now = new Date();
    const der = buildCertificate(
      {
        serial: Buffer.from([1]),
        issuer: name,
        subject: name,
        notBefore: new Date(now.getTime() - 60_000),
        notAfter: new Date(now.getTime() + 86_400_000),
        spki,
        extensions: [subjectKeyIdentifier(ski)],
      },
      { key: caKey.privateKey, scheme },
    );
    const template = new LeafTemplate(
      { certificate: parseCertificate(der), signer: { key: caKey.privateKey, scheme }, status: {} },
      "device",
    );
    const leafKey = F.makeKey("p256");
    const leaf = template.issue("robot-1", [{ uri: "spiffe://fleet.example/device/robot-1" }], {
      spki: leafKey.spki,
      subjectPublicKey: F.spkiKeyBytes(leafKey.spki),
      now,
      lifetimeMs: 3_600_000,
    });
    const aki = parseCertificate(leaf.der).extensions.get("2.5.29.35")!.value;
    // AuthorityKeyIdentifier ::= SEQUENCE { [0] keyIdentifier }: 30 81 cb 80 81 c8 <200 bytes>
    assert.ok(aki.equals(sequence(tlv(0x80, ski))), aki.subarray(0, 8).toString("hex"));
    assert.ok(
      new X509Certificate(leaf.der).checkIssued(new X509Certificate(der)),
      "OpenSSL links the leaf to its CA by the key identifiers",
    );
  });
});

describe("the point-at-infinity CSR against a running server (item 1.1)", () => {
  let server: TestServer;
  let ca: string;
  let key: KeyObject;

  before(async () => {
    server = await startTestServer(ctx.dir);
    ca = (await fleet.caRecord("root")).certificate_pem;
    key = keys.p256.privateKey;
  });
  after(async () => {
    await server?.close();
  });

  const infinity = (curve: "P-256" | "P-384"): Buffer =>
    curve === "P-256"
      ? Buffer.from("MEwwMwIBADARMQ8wDQYDVQQDDAZub2JvZHkwGTATBgcqhkjOPQIBBggqhkjOPQMBBwMCAACgADAKBggqhkjOPQQDAgMJADAGAgEBAgEB", "base64")
      : F.assemble(
          F.requestInfo({ subject: F.nameCn("nobody"), spki: F.ecSpki(Buffer.from([0]), oid(F.OIDS.secp384r1)) }),
          sequence(oid(F.OIDS.ecdsaSha384)),
          Buffer.from("3006020101020101", "hex"),
        );

  for (const curve of ["P-256", "P-384"] as const) {
    it(`${curve}: EST simpleenroll and /api/v1/enroll answer 400, and the same server then enrolls normally`, async () => {
      const bad = infinity(curve);
      const est = await https(`${server.url}/.well-known/est/simpleenroll`, {
        ca,
        method: "POST",
        headers: { "content-type": "application/pkcs10", authorization: `Basic ${Buffer.from("nobody:anything").toString("base64")}` },
        body: bad.toString("base64"),
      });
      // Credentials are checked alongside the CSR; a bad key is a 400 whichever finishes first.
      assert.ok(est.status === 400 || est.status === 401, `EST: ${est.status} ${est.text}`);
      const id = `inf-${curve === "P-256" ? "256" : "384"}`;
      await addDevice(fleet, { id, actor: "test" });
      const token = (await createToken(fleet, { deviceId: id, actor: "test" })).token;
      const withToken = await https(`${server.url}/.well-known/est/simpleenroll`, {
        ca,
        method: "POST",
        headers: { "content-type": "application/pkcs10", authorization: `Basic ${Buffer.from(`${id}:${token}`).toString("base64")}` },
        body: bad.toString("base64"),
      });
      assertProblem(withToken, 400, "csr-ec-point-invalid");
      const api = await postJson(`${server.url}/api/v1/enroll`, { device_id: id, token, csr: toPem("CERTIFICATE REQUEST", bad) }, { ca });
      assertProblem(api, 400, "csr-ec-point-invalid");
      // Still alive, and the token was not spent by the refusals.
      const good = await postJson(
        `${server.url}/api/v1/enroll`,
        { device_id: id, token, csr: toPem("CERTIFICATE REQUEST", F.validCsr(keys.p256, id)) },
        { ca },
      );
      assert.equal(good.status, 200, good.text);
      assert.ok(new X509Certificate(good.json().certificate).publicKey.equals(createPublicKey(key)));
    });
  }
});
