// Key types and signature algorithms: which we accept in CSRs and which our CAs sign with.
import type { KeyObject } from "node:crypto";
import { OID } from "../der/oids.js";
import { nullValue, oid, sequence } from "../der/writer.js";

/** Key types a fleet's CAs can be created with. */
export const CA_KEY_TYPES = ["p256", "p384", "ed25519", "rsa3072"] as const;
export type CaKeyType = (typeof CA_KEY_TYPES)[number];

/** A public key's type as fleetpki describes it: p256, p384, ed25519, rsa2048, rsa3072, ... */
export type KeyDescription = string;

export const MIN_RSA_BITS = 2048;
export const MAX_RSA_BITS = 8192;

export function describeKey(key: KeyObject): KeyDescription {
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case "ec":
      if (details.namedCurve === "prime256v1") return "p256";
      if (details.namedCurve === "secp384r1") return "p384";
      return `ec-${details.namedCurve ?? "unknown"}`;
    case "ed25519":
      return "ed25519";
    case "rsa":
      return `rsa${details.modulusLength ?? 0}`;
    default:
      return key.asymmetricKeyType ?? "unknown";
  }
}

export interface SignatureScheme {
  /** DER AlgorithmIdentifier written into certificates this key signs. */
  algorithmIdentifier: Buffer;
  /** Digest passed to crypto.sign (null for Ed25519). */
  hash: string | null;
  name: string;
}

const ECDSA_SHA256: SignatureScheme = {
  algorithmIdentifier: sequence(oid(OID.ecdsaWithSHA256)),
  hash: "sha256",
  name: "ecdsa-with-SHA256",
};
const ECDSA_SHA384: SignatureScheme = {
  algorithmIdentifier: sequence(oid(OID.ecdsaWithSHA384)),
  hash: "sha384",
  name: "ecdsa-with-SHA384",
};
const ED25519: SignatureScheme = { algorithmIdentifier: sequence(oid(OID.ed25519)), hash: null, name: "Ed25519" };
const RSA_SHA256: SignatureScheme = {
  algorithmIdentifier: sequence(oid(OID.sha256WithRSAEncryption), nullValue()),
  hash: "sha256",
  name: "sha256WithRSAEncryption",
};

/** How a CA key of this type signs. */
export function signatureSchemeFor(key: KeyObject): SignatureScheme {
  const type = describeKey(key);
  if (type === "p256") return ECDSA_SHA256;
  if (type === "p384") return ECDSA_SHA384;
  if (type === "ed25519") return ED25519;
  if (type.startsWith("rsa")) return RSA_SHA256;
  throw new RangeError(`no signature scheme for key type ${type}`);
}

/** Signature algorithms accepted on CSRs: family of key they need and the digest. */
export const CSR_SIGNATURE_ALGORITHMS: ReadonlyMap<string, { keyType: "ec" | "rsa" | "ed25519"; hash: string | null }> = new Map([
  [OID.ecdsaWithSHA256, { keyType: "ec", hash: "sha256" }],
  [OID.ecdsaWithSHA384, { keyType: "ec", hash: "sha384" }],
  [OID.ecdsaWithSHA512, { keyType: "ec", hash: "sha512" }],
  [OID.sha256WithRSAEncryption, { keyType: "rsa", hash: "sha256" }],
  [OID.sha384WithRSAEncryption, { keyType: "rsa", hash: "sha384" }],
  [OID.sha512WithRSAEncryption, { keyType: "rsa", hash: "sha512" }],
  [OID.ed25519, { keyType: "ed25519", hash: null }],
] as const);
