// The one key policy for every public key the CA certifies or trusts: CSR keys, the key of an
// expired certificate that asks to renew, and keys fleetpki generates itself (factory bundles).
// The SubjectPublicKeyInfo is parsed and checked here completely, with BigInt arithmetic, before
// any byte of it reaches node:crypto: OpenSSL behind Node aborts the whole process on some keys
// (an EC point at infinity), and accepts others nobody needs a private key for (RSA e = 1, a
// prime modulus, small-order Ed25519 points). What passes is re-encoded canonically; the bytes
// as sent are never used again.
import { checkPrime, checkPrimeSync, createPublicKey, type JsonWebKey, type KeyObject } from "node:crypto";
import { OID, oidName } from "../der/oids.js";
import { DerError, children, expectTag, readBitStringBytes, readOid, readRoot, readUnsignedInteger, type Element } from "../der/reader.js";
import { bitString, nullValue, oid, sequence, unsignedInteger } from "../der/writer.js";
import { MAX_RSA_BITS, MIN_RSA_BITS, type KeyDescription } from "./algorithms.js";

export type KeyRejection =
  /** Algorithm, curve or RSA size outside the policy. */
  | "key-type-not-allowed"
  /** AlgorithmIdentifier parameters other than exactly what the key type requires. */
  | "key-parameters-invalid"
  /** SubjectPublicKeyInfo or RSAPublicKey structure, point format (compressed, wrong length). */
  | "key-encoding-invalid"
  | "rsa-exponent-not-allowed"
  | "rsa-modulus-not-allowed"
  /** EC point at infinity, coordinates >= p, or not on the curve. */
  | "ec-point-invalid"
  /** Ed25519 point: non-canonical, not on the curve, or of small order. */
  | "ed25519-point-invalid";

export class KeyPolicyError extends Error {
  constructor(
    readonly reason: KeyRejection,
    message: string,
  ) {
    super(message);
    this.name = "KeyPolicyError";
  }
}

/** A public key that passed the policy (apart from the RSA primality test, see below). */
export interface PolicyKey {
  family: "rsa" | "ec" | "ed25519";
  keyType: KeyDescription;
  /** Canonical DER SubjectPublicKeyInfo, byte for byte what node:crypto exports for this key. */
  spki: Buffer;
  /** The BIT STRING value of `spki` (input of key identifiers). */
  subjectPublicKey: Buffer;
  /** For node:crypto: the JWK import is the fast path and sees only checked values. */
  jwk: JsonWebKey;
  /** RSA modulus magnitude, still to be shown composite (assertModulusNotPrime). */
  modulus?: Buffer;
}

const ALLOWED = `allowed: P-256, P-384, Ed25519, RSA ${MIN_RSA_BITS}-${MAX_RSA_BITS}`;

const fail = (reason: KeyRejection, message: string): never => {
  throw new KeyPolicyError(reason, message);
};

const toBig = (bytes: Buffer): bigint => (bytes.length === 0 ? 0n : BigInt(`0x${bytes.toString("hex")}`));

function modPow(base: bigint, exponent: bigint, m: bigint): bigint {
  let result = 1n;
  let b = base % m;
  for (let e = exponent; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % m;
    b = (b * b) % m;
  }
  return result;
}

// ---- RSA ---------------------------------------------------------------------------------

/** Primes below 752: the CA/Browser Forum Baseline Requirements (6.1.6) want no such factor. */
const SMALL_PRIMES: readonly number[] = (() => {
  const out: number[] = [];
  for (let n = 3; n < 752; n += 2) if (out.every((p) => n % p !== 0)) out.push(n);
  return out;
})();
/** Their product, and the primes in groups whose product fits a double exactly. */
const PRIME_GROUPS: readonly { product: bigint; primes: number[] }[] = (() => {
  const groups: { product: number; primes: number[] }[] = [];
  for (const p of SMALL_PRIMES) {
    const last = groups[groups.length - 1];
    if (last && last.product * p < 2 ** 53) {
      last.product *= p;
      last.primes.push(p);
    } else groups.push({ product: p, primes: [p] });
  }
  return groups.map((g) => ({ product: BigInt(g.product), primes: g.primes }));
})();
const PRIMORIAL = PRIME_GROUPS.reduce((acc, g) => acc * g.product, 1n);

/** One BigInt division by the product of all small primes, then cheap ones per group (~10 us). */
function smallFactor(modulus: Buffer): number | undefined {
  const r = toBig(modulus) % PRIMORIAL;
  for (const { product, primes } of PRIME_GROUPS) {
    const rg = Number(r % product);
    for (const p of primes) if (rg % p === 0) return p;
  }
  return undefined;
}

const E_MIN = 65537n;
const E_MAX = 2n ** 256n - 1n;

function checkRsa(params: Element | undefined, bits: Buffer): PolicyKey {
  // RFC 3279 2.3.1: the parameters of rsaEncryption are NULL (present, not absent).
  if (!params || params.tag !== 0x05 || params.end - params.contentStart !== 0)
    fail("key-parameters-invalid", "RSA key: the rsaEncryption parameters must be NULL");
  let n: Buffer, e: Buffer;
  try {
    const fields = children(expectTag(readRoot(bits), 0x30, "RSAPublicKey"));
    if (fields.length !== 2) throw new DerError(`RSAPublicKey has ${fields.length} fields, expected 2`, 0);
    n = readUnsignedInteger(fields[0]!);
    e = readUnsignedInteger(fields[1]!);
  } catch (err) {
    if (err instanceof DerError) fail("key-encoding-invalid", `RSA key: malformed RSAPublicKey: ${err.message}`);
    throw err;
  }
  const size = n!.length * 8 - Math.clz32(n![0]!) + 24;
  if (size < MIN_RSA_BITS) fail("key-type-not-allowed", `key type not allowed: RSA ${size} bits is below the minimum of ${MIN_RSA_BITS}`);
  if (size > MAX_RSA_BITS) fail("key-type-not-allowed", `key type not allowed: RSA ${size} bits is above the maximum of ${MAX_RSA_BITS}`);
  if (size % 8 !== 0) fail("rsa-modulus-not-allowed", `RSA key: a ${size}-bit modulus is not allowed (its size must be a multiple of 8)`);
  const exponent = toBig(e!);
  if (exponent % 2n === 0n || exponent < E_MIN || exponent > E_MAX) {
    const shown = exponent < 2n ** 64n ? String(exponent) : `of ${e!.length * 8} bits`;
    fail("rsa-exponent-not-allowed", `RSA key: public exponent ${shown} is not allowed (odd, 65537 to 2^256-1)`);
  }
  if (n![n!.length - 1]! % 2 === 0) fail("rsa-modulus-not-allowed", "RSA key: the modulus is even");
  const factor = smallFactor(n!);
  if (factor !== undefined) fail("rsa-modulus-not-allowed", `RSA key: the modulus has the small factor ${factor}`);
  const rsaPublicKey = sequence(unsignedInteger(n!), unsignedInteger(e!));
  const spki = sequence(sequence(oid(OID.rsaEncryption), nullValue()), bitString(rsaPublicKey));
  return {
    family: "rsa",
    keyType: `rsa${size}`,
    spki,
    subjectPublicKey: spki.subarray(spki.length - rsaPublicKey.length),
    jwk: { kty: "RSA", n: n!.toString("base64url"), e: e!.toString("base64url") },
    modulus: n!,
  };
}

const PRIME_MODULUS = "RSA key: the modulus is prime (anyone can compute the private key)";

/*
 * A prime modulus makes the private exponent public. One Miller-Rabin round is exact for what we
 * need: a prime always passes, so every prime modulus is caught; a composite that slips through
 * one round is only refused wrongly (never accepted wrongly), at odds of at most 1/4 for a
 * crafted number and negligibly small for a real RSA modulus. OpenSSL raises the round count to
 * its minimum (64, or 128 above 2048 bits) on its own, which costs time only for a prime.
 */
export function assertModulusNotPrime(key: PolicyKey): void {
  if (key.modulus && checkPrimeSync(key.modulus, { checks: 1 })) fail("rsa-modulus-not-allowed", PRIME_MODULUS);
}

/** As assertModulusNotPrime, on libuv's thread pool (a round costs ~2 ms at 2048 bits). */
export async function assertModulusNotPrimeAsync(key: Pick<PolicyKey, "modulus">): Promise<void> {
  const modulus = key.modulus;
  if (!modulus) return;
  const prime = await new Promise<boolean>((resolve, reject) =>
    checkPrime(modulus, { checks: 1 }, (err, result) => (err ? reject(err) : resolve(result))),
  );
  if (prime) fail("rsa-modulus-not-allowed", PRIME_MODULUS);
}

// ---- EC (P-256, P-384) ----------------------------------------------------------------------

interface Curve {
  name: "P-256" | "P-384";
  keyType: KeyDescription;
  oid: string;
  size: number;
  p: bigint;
  b: bigint;
}

// Both curves have a = -3 and cofactor 1: every point on the curve other than infinity is in the
// prime-order group, so "on the curve and not infinity" is the whole public-key validation
// (SP 800-56A 5.6.2.3.3, ECC partial validation suffices with cofactor 1).
const CURVES: Record<string, Curve> = {
  [OID.prime256v1]: {
    name: "P-256",
    keyType: "p256",
    oid: OID.prime256v1,
    size: 32,
    p: 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n,
    b: 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn,
  },
  [OID.secp384r1]: {
    name: "P-384",
    keyType: "p384",
    oid: OID.secp384r1,
    size: 48,
    p: 2n ** 384n - 2n ** 128n - 2n ** 96n + 2n ** 32n - 1n,
    b: 0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aefn,
  },
};

function checkEc(params: Element | undefined, point: Buffer): PolicyKey {
  // RFC 5480 2.1.1: namedCurve only; implicitCurve (NULL) and specifiedCurve are not allowed.
  if (!params || params.tag !== 0x06) fail("key-parameters-invalid", "EC key: the parameters must name the curve (a named-curve OID)");
  let curveOid = "";
  try {
    curveOid = readOid(params!);
  } catch (err) {
    if (err instanceof DerError) fail("key-parameters-invalid", `EC key: malformed curve OID: ${err.message}`);
    throw err;
  }
  const curve = CURVES[curveOid];
  if (!curve) return fail("key-type-not-allowed", `key type not allowed: EC curve ${oidName(curveOid)} (${ALLOWED})`);
  if (point.length === 1 && point[0] === 0) fail("ec-point-invalid", `EC key: the point at infinity is not a public key`);
  if (point[0] === 0x02 || point[0] === 0x03)
    fail("key-encoding-invalid", "EC key: compressed points are not allowed (uncompressed 04||X||Y only)");
  if (point[0] !== 0x04 || point.length !== 1 + 2 * curve.size) {
    const got = `${point.length} bytes starting 0x${(point[0] ?? 0).toString(16)}`;
    fail("key-encoding-invalid", `EC key: a ${curve.name} point is 0x04 followed by ${2 * curve.size} bytes (got ${got})`);
  }
  const xBytes = point.subarray(1, 1 + curve.size);
  const yBytes = point.subarray(1 + curve.size);
  const { p, b } = curve;
  const x = toBig(xBytes);
  const y = toBig(yBytes);
  if (x >= p || y >= p) fail("ec-point-invalid", `EC key: a coordinate is not below the ${curve.name} field prime`);
  if ((y * y - (x * x * x - 3n * x + b)) % p !== 0n) fail("ec-point-invalid", `EC key: the point is not on ${curve.name}`);
  const spki = sequence(sequence(oid(OID.ecPublicKey), oid(curve.oid)), bitString(point));
  return {
    family: "ec",
    keyType: curve.keyType,
    spki,
    subjectPublicKey: spki.subarray(spki.length - point.length),
    jwk: { kty: "EC", crv: curve.name, x: xBytes.toString("base64url"), y: yBytes.toString("base64url") },
  };
}

// ---- Ed25519 ----------------------------------------------------------------------------------

const P25519 = 2n ** 255n - 19n;
const MASK255 = 2n ** 255n - 1n;
const D25519 = ((P25519 - 121665n) * modPow(121666n, P25519 - 2n, P25519)) % P25519;
const SQRT_M1 = modPow(2n, (P25519 - 1n) / 4n, P25519);

/** x mod 2^255-19 for 0 <= x < 2^512, by folding (2^255 = 19): several times faster than `%`. */
function reduce25519(x: bigint): bigint {
  let r = (x & MASK255) + 19n * (x >> 255n);
  r = (r & MASK255) + 19n * (r >> 255n);
  return r >= P25519 ? r - P25519 : r;
}

/** z^(2^k) mod 2^255-19 after k squarings. */
function square25519(z: bigint, k: number): bigint {
  let r = z;
  for (let i = 0; i < k; i++) r = reduce25519(r * r);
  return r;
}

/**
 * z^((p-5)/8) = z^(2^252-3) mod p, the exponentiation of RFC 8032 5.1.3, by ref10's addition
 * chain (251 squarings, 11 multiplications instead of ~500 operations for plain square-and-multiply).
 */
function pow22523(z: bigint): bigint {
  const mul = (a: bigint, b: bigint): bigint => reduce25519(a * b);
  const a2 = mul(square25519(z, 1), z); // z^(2^2-1)
  const a3 = mul(square25519(a2, 1), z);
  const a5 = mul(square25519(a3, 2), a2);
  const a10 = mul(square25519(a5, 5), a5);
  const a20 = mul(square25519(a10, 10), a10);
  const a40 = mul(square25519(a20, 20), a20);
  const a50 = mul(square25519(a40, 10), a10);
  const a100 = mul(square25519(a50, 50), a50);
  const a200 = mul(square25519(a100, 100), a100);
  const a250 = mul(square25519(a200, 50), a50); // z^(2^250-1)
  return mul(square25519(a250, 2), z);
}

/*
 * The points P with 8P = identity form the 8-torsion subgroup E[8], which has exactly 8 elements
 * (the group is Z/8 x Z/l). Their y coordinates are 1 (identity), p-1 (order 2), 0 (two points
 * of order 4) and the two values below (two points of order 8 each). After canonical decoding
 * (y < p, no "negative zero" x) each point has exactly one encoding, so comparing y with these
 * five values finds all eight without a scalar multiplication; test/key-policy.test.ts checks the
 * list against the curve arithmetic.
 */
const SMALL_ORDER_Y: ReadonlySet<bigint> = new Set([
  0n,
  1n,
  P25519 - 1n,
  0x05fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826n,
  0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7n,
]);

function checkEd25519(params: Element | undefined, bits: Buffer): PolicyKey {
  // RFC 8410 3: the parameters MUST be absent.
  if (params) fail("key-parameters-invalid", "Ed25519 key: the AlgorithmIdentifier must have no parameters");
  if (bits.length !== 32) fail("key-encoding-invalid", `Ed25519 key: the public key is 32 bytes (got ${bits.length})`);
  const le = Buffer.from(bits).reverse();
  const sign = le[0]! >> 7;
  le[0]! &= 0x7f;
  const y = toBig(le);
  if (y >= P25519) fail("ed25519-point-invalid", "Ed25519 key: non-canonical encoding (y is not below 2^255-19)");
  // RFC 8032 5.1.3: x^2 = (y^2 - 1) / (d y^2 + 1), recovered as (u v^3)(u v^7)^((p-5)/8).
  const y2 = reduce25519(y * y);
  const u = y2 === 0n ? P25519 - 1n : y2 - 1n;
  const v = reduce25519(D25519 * y2 + 1n);
  const v3 = reduce25519(reduce25519(v * v) * v);
  const uv3 = reduce25519(u * v3);
  let x = reduce25519(uv3 * pow22523(reduce25519(uv3 * reduce25519(v3 * v))));
  const vx2 = reduce25519(v * reduce25519(x * x));
  if (vx2 !== u) {
    if (vx2 !== (u === 0n ? 0n : P25519 - u)) fail("ed25519-point-invalid", "Ed25519 key: not a point on the curve (no square root for x)");
    x = reduce25519(x * SQRT_M1);
  }
  if (x === 0n && sign === 1) fail("ed25519-point-invalid", "Ed25519 key: non-canonical encoding (sign bit set for x = 0)");
  if (SMALL_ORDER_Y.has(y))
    fail("ed25519-point-invalid", "Ed25519 key: a point of small order (signatures for it can be forged without a private key)");
  const spki = sequence(sequence(oid(OID.ed25519)), bitString(bits));
  const jwk = { kty: "OKP", crv: "Ed25519", x: bits.toString("base64url") };
  return { family: "ed25519", keyType: "ed25519", spki, subjectPublicKey: spki.subarray(spki.length - 32), jwk };
}

// ---- SubjectPublicKeyInfo ---------------------------------------------------------------------

/**
 * Every check but the RSA primality test (assertModulusNotPrime, kept apart because it costs a
 * modular exponentiation): strict SPKI structure, allowed algorithm and parameters, the key's
 * own encoding and arithmetic. Returns the key re-encoded canonically.
 */
export function readPolicyKey(spki: Buffer | Element): PolicyKey {
  let algorithm: string, params: Element | undefined, bits: Buffer;
  try {
    const root = Buffer.isBuffer(spki) ? readRoot(spki) : spki;
    const fields = children(expectTag(root, 0x30, "SubjectPublicKeyInfo"));
    if (fields.length !== 2) throw new DerError(`SubjectPublicKeyInfo has ${fields.length} fields, expected 2`, root.start);
    const algId = children(expectTag(fields[0], 0x30, "public key AlgorithmIdentifier"));
    if (algId.length < 1 || algId.length > 2)
      throw new DerError(`public key AlgorithmIdentifier has ${algId.length} fields, expected 1 or 2`, fields[0]!.start);
    algorithm = readOid(algId[0]!);
    params = algId[1];
    bits = readBitStringBytes(expectTag(fields[1], 0x03, "subjectPublicKey BIT STRING"));
  } catch (err) {
    if (err instanceof DerError) return fail("key-encoding-invalid", `public key: malformed SubjectPublicKeyInfo: ${err.message}`);
    throw err;
  }
  if (algorithm === OID.rsaEncryption) return checkRsa(params, bits);
  if (algorithm === OID.ecPublicKey) return checkEc(params, bits);
  if (algorithm === OID.ed25519) return checkEd25519(params, bits);
  return fail("key-type-not-allowed", `key type not allowed: ${oidName(algorithm)} (${ALLOWED})`);
}

/** The whole policy, synchronously: for keys that do not arrive in a request (certificates, our own keys). */
export function checkPublicKey(spki: Buffer): PolicyKey {
  const key = readPolicyKey(spki);
  assertModulusNotPrime(key);
  return key;
}

/** The policy for a key node:crypto already holds, private or public (e.g. one generated for a factory bundle). */
export function checkKeyObject(key: KeyObject): PolicyKey {
  return checkPublicKey((key.type === "public" ? key : createPublicKey(key)).export({ type: "spki", format: "der" }));
}

/** The checked key as a node:crypto KeyObject. */
export function importPolicyKey(key: PolicyKey): KeyObject {
  return createPublicKey({ key: key.jwk, format: "jwk" });
}
