// CSR material shared by test/key-policy.test.ts, test/csr-fuzz.test.ts and scripts/fuzz-csr.ts:
// a seeded PRNG, a small DER tree, CSR building and re-signing, hostile public keys (with
// "signatures" that verify where the weakness allows one) and DER-aware mutations.
// Only src/der is used, so the same code runs against older versions of the parser.
import { createHash, generateKeyPairSync, generatePrimeSync, sign, type KeyObject } from "node:crypto";
import { bitString, nullValue, oid, sequence, set, smallInteger, tlv, unsignedInteger, utf8String } from "../../src/der/writer.js";

// ---- PRNG ------------------------------------------------------------------------------------

/** sfc32: small, fast, deterministic per seed. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(readonly seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.next();
  }
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

// ---- a DER tree (lenient: it reads what the mutations write) ------------------------------

export interface DerNode {
  tag: number;
  /** Children of a constructed element; undefined for primitives. */
  children?: DerNode[];
  /** Content of a primitive element. */
  content?: Buffer;
}

function readHeader(buf: Buffer, at: number, limit: number): { tag: number; start: number; end: number } {
  if (at + 2 > limit) throw new RangeError("truncated");
  const tag = buf[at]!;
  if ((tag & 0x1f) === 0x1f) throw new RangeError("multi-byte tag");
  const first = buf[at + 1]!;
  let len = first;
  let start = at + 2;
  if (first & 0x80) {
    const count = first & 0x7f;
    if (count === 0 || count > 4 || at + 2 + count > limit) throw new RangeError("bad length");
    len = 0;
    for (let i = 0; i < count; i++) len = len * 256 + buf[at + 2 + i]!;
    start += count;
  }
  if (start + len > limit) throw new RangeError("overrun");
  return { tag, start, end: start + len };
}

function parseAt(buf: Buffer, at: number, limit: number): { node: DerNode; end: number } {
  const h = readHeader(buf, at, limit);
  if (h.tag & 0x20) {
    const children: DerNode[] = [];
    for (let p = h.start; p < h.end;) {
      const c = parseAt(buf, p, h.end);
      children.push(c.node);
      p = c.end;
    }
    return { node: { tag: h.tag, children }, end: h.end };
  }
  return { node: { tag: h.tag, content: Buffer.from(buf.subarray(h.start, h.end)) }, end: h.end };
}

/** Parses one element spanning the buffer; throws RangeError when it cannot. */
export function parseDer(buf: Buffer): DerNode {
  const { node, end } = parseAt(buf, 0, buf.length);
  if (end !== buf.length) throw new RangeError("trailing bytes");
  return node;
}

export function encodeDer(node: DerNode): Buffer {
  return tlv(node.tag, node.children ? node.children.map(encodeDer) : node.content!);
}

/** Every node with the path of child indexes leading to it (root first). */
export function walk(
  node: DerNode,
  path: number[] = [],
  out: { node: DerNode; path: number[] }[] = [],
): { node: DerNode; path: number[] }[] {
  out.push({ node, path });
  node.children?.forEach((c, i) => walk(c, [...path, i], out));
  return out;
}

const clone = (n: DerNode): DerNode =>
  n.children ? { tag: n.tag, children: n.children.map(clone) } : { tag: n.tag, content: Buffer.from(n.content!) };

// ---- keys and CSRs ---------------------------------------------------------------------------

export type FuzzKeyKind = "p256" | "p384" | "ed25519" | "rsa2048";
export const FUZZ_KEY_KINDS: readonly FuzzKeyKind[] = ["p256", "p384", "ed25519", "rsa2048"];

export interface FuzzKey {
  kind: FuzzKeyKind;
  privateKey: KeyObject;
  spki: Buffer;
  /** DER AlgorithmIdentifier of the signature this key makes, and its digest. */
  sigAlg: Buffer;
  hash: string | null;
}

export const OIDS = {
  rsaEncryption: "1.2.840.113549.1.1.1",
  sha256WithRSA: "1.2.840.113549.1.1.11",
  ecPublicKey: "1.2.840.10045.2.1",
  prime256v1: "1.2.840.10045.3.1.7",
  secp384r1: "1.3.132.0.34",
  secp521r1: "1.3.132.0.35",
  secp256k1: "1.3.132.0.10",
  ed25519: "1.3.101.112",
  ed448: "1.3.101.113",
  ecdsaSha256: "1.2.840.10045.4.3.2",
  ecdsaSha384: "1.2.840.10045.4.3.3",
  commonName: "2.5.4.3",
  extensionRequest: "1.2.840.113549.1.9.14",
  subjectAltName: "2.5.29.17",
  challengePassword: "1.2.840.113549.1.9.7",
  sha1WithRSA: "1.2.840.113549.1.1.5",
  rsassaPss: "1.2.840.113549.1.1.10",
} as const;

export function makeKey(kind: FuzzKeyKind): FuzzKey {
  const pair =
    kind === "rsa2048"
      ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : kind === "ed25519"
        ? generateKeyPairSync("ed25519")
        : generateKeyPairSync("ec", { namedCurve: kind === "p256" ? "P-256" : "P-384" });
  const spki = pair.publicKey.export({ type: "spki", format: "der" });
  const [sigAlg, hash] =
    kind === "rsa2048"
      ? [sequence(oid(OIDS.sha256WithRSA), nullValue()), "sha256"]
      : kind === "ed25519"
        ? [sequence(oid(OIDS.ed25519)), null]
        : [sequence(oid(kind === "p256" ? OIDS.ecdsaSha256 : OIDS.ecdsaSha384)), kind === "p256" ? "sha256" : "sha384"];
  return { kind, privateKey: pair.privateKey, spki, sigAlg, hash };
}

export const nameCn = (cn: string): Buffer => sequence(set(sequence(oid(OIDS.commonName), utf8String(cn))));

/** An extensionRequest attribute asking for a SAN, so mutations find attributes to work on. */
const EXTENSION_REQUEST = sequence(
  oid(OIDS.extensionRequest),
  set(sequence(sequence(oid(OIDS.subjectAltName), tlv(0x04, sequence(tlv(0x82, Buffer.from("fuzz.example", "latin1"))))))),
);

export interface CsrParts {
  subject?: Buffer;
  spki: Buffer;
  /** Encoded Attribute elements inside [0]. */
  attributes?: Buffer[];
  version?: Buffer;
}

export function requestInfo(parts: CsrParts): Buffer {
  return sequence(
    parts.version ?? smallInteger(0),
    parts.subject ?? nameCn("fuzz"),
    parts.spki,
    tlv(0xa0, parts.attributes ?? [EXTENSION_REQUEST]),
  );
}

/** CertificationRequest around a (possibly hostile) CertificationRequestInfo, signed by `key`. */
export function signedCsr(info: Buffer, key: FuzzKey, sigAlg: Buffer = key.sigAlg): Buffer {
  return sequence(info, sigAlg, bitString(sign(key.hash, info, key.privateKey)));
}

export function assemble(info: Buffer, sigAlg: Buffer, signature: Buffer): Buffer {
  return sequence(info, sigAlg, bitString(signature));
}

export function validCsr(key: FuzzKey, cn = "fuzz"): Buffer {
  return signedCsr(requestInfo({ subject: nameCn(cn), spki: key.spki }), key);
}

// ---- hostile keys -------------------------------------------------------------------------------

const big = (b: Buffer): bigint => BigInt(`0x${b.toString("hex") || "0"}`);
const bytesOf = (n: bigint, length?: number): Buffer => {
  const hex = n.toString(16);
  const b = Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
  return length === undefined ? b : Buffer.concat([Buffer.alloc(Math.max(0, length - b.length)), b]);
};
export function modPow(base: bigint, exponent: bigint, m: bigint): bigint {
  let r = 1n;
  let b = ((base % m) + m) % m;
  for (let e = exponent; e > 0n; e >>= 1n) {
    if (e & 1n) r = (r * b) % m;
    b = (b * b) % m;
  }
  return r;
}
function modInverse(a: bigint, m: bigint): bigint {
  let [r0, r1, s0, s1] = [((a % m) + m) % m, m, 1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1, s0, s1] = [r1, r0 - q * r1, s1, s0 - q * s1];
  }
  return ((s0 % m) + m) % m;
}

export function rsaSpki(n: Buffer, e: Buffer, params: Buffer | null = nullValue(), extra: Buffer[] = []): Buffer {
  const alg = params ? sequence(oid(OIDS.rsaEncryption), params) : sequence(oid(OIDS.rsaEncryption));
  return sequence(alg, bitString(sequence(unsignedInteger(n), unsignedInteger(e), ...extra)));
}

export function ecSpki(point: Buffer, params: Buffer | null = oid(OIDS.prime256v1)): Buffer {
  return sequence(params ? sequence(oid(OIDS.ecPublicKey), params) : sequence(oid(OIDS.ecPublicKey)), bitString(point));
}

export function edSpki(point: Buffer, params?: Buffer): Buffer {
  return sequence(params ? sequence(oid(OIDS.ed25519), params) : sequence(oid(OIDS.ed25519)), bitString(point));
}

/** The raw public key bytes of an SPKI made by node:crypto (BIT STRING value). */
export function spkiKeyBytes(spki: Buffer): Buffer {
  const root = parseDer(spki);
  return root.children![1]!.content!.subarray(1);
}

export function rsaParts(spki: Buffer): { n: Buffer; e: Buffer } {
  const key = parseDer(spkiKeyBytes(spki));
  const magnitude = (b: Buffer): Buffer => (b.length > 1 && b[0] === 0 ? b.subarray(1) : b);
  return { n: magnitude(key.children![0]!.content!), e: magnitude(key.children![1]!.content!) };
}

/** EMSA-PKCS1-v1_5 encoding (RFC 8017 9.2) of SHA-256(message) for a modulus of `size` bytes. */
export function pkcs1Sha256(message: Buffer, size: number): Buffer {
  const digestInfo = Buffer.concat([
    Buffer.from("3031300d060960864801650304020105000420", "hex"),
    createHash("sha256").update(message).digest(),
  ]);
  return Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(size - digestInfo.length - 3, 0xff), Buffer.from([0]), digestInfo]);
}

const SHA256_RSA_ALG = sequence(oid(OIDS.sha256WithRSA), nullValue());

/** e = 1: the "signature" is the padded digest itself, which anyone can write down. */
export function rsaExponentOneCsr(n: Buffer, cn = "weak-e1"): Buffer {
  const info = requestInfo({ subject: nameCn(cn), spki: rsaSpki(n, Buffer.from([1])) });
  return assemble(info, SHA256_RSA_ALG, pkcs1Sha256(info, n.length));
}

/** A 2048-bit RSA modulus p*q with p = q = 3 (mod 4), so square roots (e = 2) are computable. */
export function blumModulus(): { n: bigint; p: bigint; q: bigint } {
  for (;;) {
    // With `add`, OpenSSL sets only the top bit of each prime: the product may have 2047 bits.
    const p = generatePrimeSync(1024, { bigint: true, add: 4n, rem: 3n });
    const q = generatePrimeSync(1024, { bigint: true, add: 4n, rem: 3n });
    if ((p * q).toString(2).length === 2048) return { n: p * q, p, q };
  }
}

/** e = 2 with a signature that verifies: s = sqrt(EM) mod n, for a subject whose EM is a square. */
export function rsaExponentTwoCsr(m: { n: bigint; p: bigint; q: bigint }): Buffer {
  const size = bytesOf(m.n).length;
  for (let i = 0; ; i++) {
    const info = requestInfo({ subject: nameCn(`weak-e2-${i}`), spki: rsaSpki(bytesOf(m.n), Buffer.from([2])) });
    const em = big(pkcs1Sha256(info, size));
    const rp = modPow(em, (m.p + 1n) / 4n, m.p);
    const rq = modPow(em, (m.q + 1n) / 4n, m.q);
    if ((rp * rp) % m.p !== em % m.p || (rq * rq) % m.q !== em % m.q) continue;
    // CRT: s = rp (mod p), s = rq (mod q)
    const s = (rp * m.q * modInverse(m.q, m.p) + rq * m.p * modInverse(m.p, m.q)) % m.n;
    return assemble(info, SHA256_RSA_ALG, bytesOf(s, size));
  }
}

/** A prime "modulus": d = e^-1 mod (p - 1) is known to everyone, and it signs like any RSA key. */
export function rsaPrimeModulusCsr(p: bigint): Buffer {
  const size = bytesOf(p).length;
  const info = requestInfo({ subject: nameCn("weak-prime"), spki: rsaSpki(bytesOf(p), Buffer.from([1, 0, 1])) });
  const d = modInverse(65537n, p - 1n);
  return assemble(info, SHA256_RSA_ALG, bytesOf(modPow(big(pkcs1Sha256(info, size)), d, p), size));
}

// Ed25519 arithmetic (extended coordinates would be faster; these are a handful of points).
export const P25519 = 2n ** 255n - 19n;
export const L25519 = 2n ** 252n + 27742317777372353535851937790883648493n;
const D25519 = ((P25519 - 121665n) * modInverse(121666n, P25519)) % P25519;
export type EdPoint = [bigint, bigint];
export const ED_IDENTITY: EdPoint = [0n, 1n];

export function edAdd([x1, y1]: EdPoint, [x2, y2]: EdPoint): EdPoint {
  const t = (D25519 * x1 * x2 * y1 * y2) % P25519;
  const x = ((x1 * y2 + x2 * y1) * modInverse(1n + t, P25519)) % P25519;
  const y = ((y1 * y2 + x1 * x2) * modInverse((1n - t + P25519) % P25519, P25519)) % P25519;
  return [(x + P25519) % P25519, (y + P25519) % P25519];
}

export function edMul(k: bigint, point: EdPoint): EdPoint {
  let r = ED_IDENTITY;
  let q = point;
  for (let e = k; e > 0n; e >>= 1n) {
    if (e & 1n) r = edAdd(r, q);
    q = edAdd(q, q);
  }
  return r;
}

export function edEncode([x, y]: EdPoint): Buffer {
  const b = bytesOf(y, 32).reverse();
  if (x & 1n) b[31]! |= 0x80;
  return b;
}

/** RFC 8032 decoding; undefined for encodings that are no point. */
export function edDecode(bytes: Buffer): EdPoint | undefined {
  const be = Buffer.from(bytes).reverse();
  const sign = be[0]! >> 7;
  be[0]! &= 0x7f;
  const y = big(be);
  if (y >= P25519) return undefined;
  const u = (y * y - 1n + P25519) % P25519;
  const v = (D25519 * y * y + 1n) % P25519;
  const x2 = (u * modInverse(v, P25519)) % P25519;
  let x = modPow(x2, (P25519 + 3n) / 8n, P25519);
  if ((x * x) % P25519 !== x2) x = (x * modPow(2n, (P25519 - 1n) / 4n, P25519)) % P25519;
  if ((x * x) % P25519 !== x2) return undefined;
  if (x === 0n && sign) return undefined;
  if ((x & 1n) !== BigInt(sign)) x = P25519 - x;
  return [x, y];
}

/**
 * The eight points P with 8P = identity, by arithmetic alone: l * Q lies in E[8] for any point Q
 * (the group is Z/8 x Z/l); once that has order 8, its multiples are all of E[8].
 */
export function smallOrderPoints(): EdPoint[] {
  for (let y = 2n; ; y++) {
    const q = edDecode(bytesOf(y, 32).reverse());
    if (!q) continue;
    const t = edMul(L25519, q);
    if (edOrder(t) !== 8) continue;
    const multiples: EdPoint[] = [];
    for (let i = 0, m = ED_IDENTITY; i < 8; i++, m = edAdd(m, t)) multiples.push(m);
    return multiples;
  }
}

/**
 * A CSR for a small-order key A with the "signature" R = identity, S = 0. It verifies when
 * k = H(R || A || M) kills A (k = 0 mod the order of A): the subject is varied until it does.
 */
export function smallOrderEd25519Csr(point: EdPoint, order: number): Buffer {
  const a = edEncode(point);
  const r = edEncode(ED_IDENTITY);
  for (let i = 0; ; i++) {
    const info = requestInfo({ subject: nameCn(`small-order-${i}`), spki: edSpki(a) });
    const k =
      big(
        Buffer.from(
          createHash("sha512")
            .update(Buffer.concat([r, a, info]))
            .digest(),
        ).reverse(),
      ) % L25519;
    if (k % BigInt(order) !== 0n) continue;
    return assemble(info, sequence(oid(OIDS.ed25519)), Buffer.concat([r, Buffer.alloc(32)]));
  }
}

export function edOrder(point: EdPoint): number {
  let q = point;
  for (let n = 1; n <= 8; n++) {
    if (q[0] === 0n && q[1] === 1n) return n;
    q = edAdd(q, point);
  }
  return 0;
}

/** P-256 field prime and a few points that are not public keys. */
export const P256_P = 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n;

export function compressPoint(uncompressed: Buffer): Buffer {
  const size = (uncompressed.length - 1) / 2;
  const y = uncompressed.subarray(1 + size);
  return Buffer.concat([Buffer.from([0x02 | (y[y.length - 1]! & 1)]), uncompressed.subarray(1, 1 + size)]);
}

// ---- DER-aware mutations -------------------------------------------------------------------------

/** Interesting values to put where an OID or parameters go. */
const OID_POOL = Object.values(OIDS);
const PARAM_POOL = (): Buffer[] => [
  nullValue(),
  oid(OIDS.prime256v1),
  oid(OIDS.secp384r1),
  oid(OIDS.ed25519),
  sequence(),
  Buffer.from("0500", "hex"),
  Buffer.from("0401ff", "hex"),
];
const TAG_POOL = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x13, 0x16, 0x1e, 0x1c, 0x30, 0x31, 0xa0, 0xa3, 0x80, 0x17];

export interface Mutant {
  der: Buffer;
  /** What was done, for reports. */
  label: string;
}

type TreeMutation = (rng: Rng, root: DerNode, key: FuzzKey) => string | undefined;

const TREE_MUTATIONS: Record<string, TreeMutation> = {
  "flip-content": (rng, root) => {
    const prims = walk(root).filter((w) => w.node.content && w.node.content.length > 0);
    const t = rng.pick(prims).node;
    t.content![rng.int(t.content!.length)]! ^= 1 << rng.int(8);
    return `flip in tag ${t.tag.toString(16)}`;
  },
  "insert-element": (rng, root) => {
    const cons = walk(root).filter((w) => w.node.children);
    const parent = rng.pick(cons).node;
    const items: DerNode[] = [
      { tag: 0x05, content: Buffer.alloc(0) },
      { tag: 0x02, content: Buffer.from([rng.int(256) & 0x7f]) },
      { tag: 0x03, content: Buffer.from([0, ...rng.bytes(rng.int(4))]) },
      { tag: 0x06, content: parseDer(oid(rng.pick(OID_POOL))).content! },
    ];
    if (parent.children!.length) items.push(clone(rng.pick(parent.children!)));
    parent.children!.splice(rng.int(parent.children!.length + 1), 0, rng.pick(items));
    return `insert into ${parent.tag.toString(16)}`;
  },
  "remove-element": (rng, root) => {
    const cons = walk(root).filter((w) => w.node.children && w.node.children.length > 0);
    const parent = rng.pick(cons).node;
    parent.children!.splice(rng.int(parent.children!.length), 1);
    return `remove from ${parent.tag.toString(16)}`;
  },
  "swap-oid": (rng, root) => {
    const oids = walk(root).filter((w) => w.node.tag === 0x06);
    const t = rng.pick(oids).node;
    t.content = parseDer(oid(rng.pick(OID_POOL))).content!;
    return "swap oid";
  },
  "change-tag": (rng, root) => {
    const nodes = walk(root).slice(1);
    const t = rng.pick(nodes).node;
    const tag = rng.pick(TAG_POOL);
    // Constructed <-> primitive needs the other representation.
    if ((tag & 0x20) !== (t.tag & 0x20)) {
      if (t.children) {
        t.content = encodeDerChildren(t);
        delete t.children;
      } else {
        try {
          t.children = [parseDer(t.content!)];
          delete t.content;
        } catch {
          return undefined;
        }
      }
    }
    t.tag = tag;
    return `tag -> ${tag.toString(16)}`;
  },
  "bit-string-unused": (rng, root) => {
    const bits = walk(root).filter((w) => w.node.tag === 0x03 && w.node.content!.length > 0);
    if (bits.length === 0) return undefined;
    rng.pick(bits).node.content![0] = 1 + rng.int(7);
    return "unused bits";
  },
  "alg-params": (rng, root) => {
    // An AlgorithmIdentifier: SEQUENCE starting with an OID.
    const algs = walk(root).filter((w) => w.node.tag === 0x30 && w.node.children?.[0]?.tag === 0x06 && w.node.children.length <= 3);
    if (algs.length === 0) return undefined;
    const alg = rng.pick(algs).node;
    const choice = rng.int(3);
    if (choice === 0)
      alg.children!.splice(1); // params absent
    else if (choice === 1)
      alg.children!.splice(1, 1, parseDer(rng.pick(PARAM_POOL()))); // params replaced
    else alg.children!.push(parseDer(rng.pick(PARAM_POOL()))); // one more field
    return `alg params ${choice}`;
  },
  "key-bytes": (rng, root, key) => {
    // Rewrite the subjectPublicKey itself: a point or modulus changed in a way a parser must notice.
    const spki = root.children?.[0]?.children?.[2];
    const bits = spki?.children?.[1];
    if (!bits?.content || bits.content.length < 2) return undefined;
    const value = bits.content.subarray(1);
    let next: Buffer;
    if (key.kind === "p256" || key.kind === "p384") {
      const options = [
        compressPoint(value),
        Buffer.from([0]),
        Buffer.concat([Buffer.from([4]), rng.bytes(value.length - 1)]),
        Buffer.concat([Buffer.from([4]), Buffer.alloc(value.length - 1, 0xff)]),
        value.subarray(0, value.length - 1),
      ];
      next = rng.pick(options);
    } else if (key.kind === "ed25519") {
      const points = smallOrderEncodings();
      const nonCanonical = Buffer.alloc(32, 0xff);
      nonCanonical[0] = 0xee;
      nonCanonical[31] = 0x7f;
      next = rng.pick([...points, nonCanonical, rng.bytes(32), Buffer.concat([value, Buffer.from([0])])]);
    } else {
      const { n } = rsaParts(encodeDer(spki!));
      const e = rng.pick([
        Buffer.from([1]),
        Buffer.from([2]),
        Buffer.from([3]),
        Buffer.from([1, 0, 0]),
        Buffer.from([1, 0, 1]),
        rng.bytes(40),
      ]);
      next = sequence(unsignedInteger(n), unsignedInteger(e));
    }
    bits.content = Buffer.concat([Buffer.from([0]), next]);
    return "key bytes";
  },
};

function encodeDerChildren(n: DerNode): Buffer {
  return Buffer.concat(n.children!.map(encodeDer));
}

let smallOrderCache: Buffer[] | undefined;
export function smallOrderEncodings(): Buffer[] {
  return (smallOrderCache ??= smallOrderPoints().map(edEncode));
}

type ByteMutation = (rng: Rng, der: Buffer) => Buffer;

const BYTE_MUTATIONS: Record<string, ByteMutation> = {
  "flip-byte": (rng, der) => {
    const out = Buffer.from(der);
    out[rng.int(out.length)]! ^= 1 << rng.int(8);
    return out;
  },
  truncate: (rng, der) => der.subarray(0, rng.int(der.length)),
  "trailing-bytes": (rng, der) => Buffer.concat([der, rng.bytes(1 + rng.int(3))]),
  "length-change": (rng, der) => {
    // A length byte of some element: +-1, long form for a short length, indefinite.
    const nodes = headerOffsets(der);
    const at = rng.pick(nodes);
    const out = Buffer.from(der);
    const kind = rng.int(3);
    if (kind === 0) out[at + 1] = (out[at + 1]! + (rng.chance(0.5) ? 1 : 255)) & 0xff;
    else if (kind === 1 && out[at + 1]! < 0x80)
      return Buffer.concat([out.subarray(0, at + 1), Buffer.from([0x81, out[at + 1]!]), out.subarray(at + 2)]);
    else out[at + 1] = 0x80;
    return out;
  },
};

/** Offsets of every element header in a DER buffer (as far as it parses). */
function headerOffsets(der: Buffer): number[] {
  const out: number[] = [];
  const visit = (at: number, limit: number): void => {
    while (at < limit) {
      let h;
      try {
        h = readHeader(der, at, limit);
      } catch {
        return;
      }
      out.push(at);
      if (h.tag & 0x20) visit(h.start, h.end);
      at = h.end;
    }
  };
  visit(0, der.length);
  return out.length ? out : [0];
}

/**
 * One mutant of a valid CSR: one to three tree mutations, then most of the time a fresh
 * signature over the mutated CertificationRequestInfo (so the parser's checks, not the
 * signature, decide), sometimes a raw byte mutation on top.
 */
export function mutateCsr(rng: Rng, csr: Buffer, key: FuzzKey): Mutant {
  const root = parseDer(csr);
  const labels: string[] = [];
  const names = Object.keys(TREE_MUTATIONS);
  for (let i = 1 + rng.int(3); i > 0; i--) {
    const name = rng.pick(names);
    try {
      const what = TREE_MUTATIONS[name]!(rng, root, key);
      if (what) labels.push(what);
    } catch {
      // a mutation that does not apply to this tree
    }
  }
  let der: Buffer;
  const info = root.children?.[0];
  if (info && rng.chance(0.7) && root.children!.length >= 2) {
    const infoDer = encodeDer(info);
    const sigAlg = root.children![1]!;
    der = assemble(infoDer, encodeDer(sigAlg), sign(key.hash, infoDer, key.privateKey));
    if (root.children!.length > 3) der = encodeDer({ tag: 0x30, children: [...parseDer(der).children!, ...root.children!.slice(3)] });
    labels.push("re-signed");
  } else der = encodeDer(root);
  if (rng.chance(0.25)) {
    const name = rng.pick(Object.keys(BYTE_MUTATIONS));
    der = BYTE_MUTATIONS[name]!(rng, der);
    labels.push(name);
  }
  return { der, label: labels.join(", ") };
}
