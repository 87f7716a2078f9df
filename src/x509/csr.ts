// PKCS#10 (RFC 2986) parsing and proof-of-possession check. Only the public key of a CSR is
// used for issuance; everything else it asks for is read just far enough to validate structure.
import { createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { bitString, implicitConstructed, sequence, smallInteger } from "../der/writer.js";
import { OID, oidName } from "../der/oids.js";
import { DerError, children, expectTag, raw, readBitStringBytes, readOid, readRoot, readSmallInteger, type Element } from "../der/reader.js";
import { CSR_SIGNATURE_ALGORITHMS, MAX_RSA_BITS, MIN_RSA_BITS, describeKey, type KeyDescription, type SignatureScheme } from "./algorithms.js";
import { PemError, fromPem, looksLikePem } from "./pem.js";

export type CsrRejection =
  | "malformed" // not DER / not PEM / structure wrong
  | "wrong-pem-label"
  | "unsupported-version"
  | "key-type-not-allowed"
  | "signature-algorithm-not-allowed"
  | "signature-invalid";

export class CsrError extends Error {
  constructor(
    readonly reason: CsrRejection,
    message: string,
  ) {
    super(message);
    this.name = "CsrError";
  }
}

export interface ParsedCsr {
  der: Buffer;
  /** DER SubjectPublicKeyInfo, copied verbatim into the certificate. */
  spki: Buffer;
  /** The subjectPublicKey BIT STRING value (input of the key identifier). */
  subjectPublicKey: Buffer;
  publicKey: KeyObject;
  keyType: KeyDescription;
}

export const CSR_PEM_LABELS = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"] as const;

/** PEM text or DER bytes to DER; wrong labels and broken PEM are reported as such. */
export function csrDer(input: Buffer | string): Buffer {
  if (looksLikePem(input)) {
    try {
      return fromPem(typeof input === "string" ? input : input.toString("latin1"), CSR_PEM_LABELS);
    } catch (e) {
      if (e instanceof PemError) throw new CsrError(e.message.startsWith("wrong PEM label") ? "wrong-pem-label" : "malformed", `CSR: ${e.message}`);
      throw e;
    }
  }
  if (typeof input === "string") throw new CsrError("malformed", "CSR: neither PEM nor DER");
  return input;
}

interface SpkiInfo {
  subjectPublicKey: Buffer;
  algorithm: string;
}

function readSpki(spki: Element): SpkiInfo {
  const [algId, bits] = children(expectTag(spki, 0x30, "SubjectPublicKeyInfo"));
  const [algOid, params] = children(expectTag(algId, 0x30, "public key AlgorithmIdentifier"));
  const algorithm = readOid(algOid!);
  const subjectPublicKey = readBitStringBytes(expectTag(bits, 0x03, "subjectPublicKey"));
  if (algorithm === OID.ecPublicKey) {
    if (!params || params.tag !== 0x06) throw new CsrError("key-type-not-allowed", "CSR: EC keys must name their curve");
    const curve = readOid(params);
    if (curve !== OID.prime256v1 && curve !== OID.secp384r1)
      throw new CsrError("key-type-not-allowed", `CSR: key type not allowed: EC curve ${oidName(curve)} (allowed: P-256, P-384, Ed25519, RSA >= ${MIN_RSA_BITS})`);
  } else if (algorithm !== OID.rsaEncryption && algorithm !== OID.ed25519) {
    throw new CsrError("key-type-not-allowed", `CSR: key type not allowed: ${oidName(algorithm)} (allowed: P-256, P-384, Ed25519, RSA >= ${MIN_RSA_BITS})`);
  }
  return { subjectPublicKey, algorithm };
}

/** Parses and verifies a CSR. Throws CsrError with a specific reason. */
export function parseCsr(input: Buffer | string): ParsedCsr {
  const der = csrDer(input);
  let info: Element, sigAlg: Element, sigBits: Element, spkiElement: Element;
  let spkiInfo: SpkiInfo;
  try {
    const root = readRoot(der);
    const top = children(expectTag(root, 0x30, "CertificationRequest"));
    if (top.length !== 3) throw new DerError(`CertificationRequest has ${top.length} fields, expected 3`, root.start);
    [info, sigAlg, sigBits] = top as [Element, Element, Element];
    const fields = children(expectTag(info, 0x30, "CertificationRequestInfo"));
    if (fields.length !== 4) throw new DerError(`CertificationRequestInfo has ${fields.length} fields, expected 4`, info.start);
    const version = readSmallInteger(fields[0]!);
    if (version !== 0) throw new CsrError("unsupported-version", `CSR: unsupported version ${version} (only version 1, encoded 0, exists)`);
    expectTag(fields[1], 0x30, "subject Name");
    spkiElement = fields[2]!;
    spkiInfo = readSpki(spkiElement);
    const attributes = expectTag(fields[3], 0xa0, "attributes [0]");
    for (const attr of children(attributes)) {
      const [type, values] = children(expectTag(attr, 0x30, "Attribute"));
      readOid(type!);
      children(expectTag(values, 0x31, "Attribute values SET"));
    }
    expectTag(sigAlg, 0x30, "signatureAlgorithm");
    expectTag(sigBits, 0x03, "signature");
  } catch (e) {
    if (e instanceof DerError) throw new CsrError("malformed", `CSR: malformed DER: ${e.message}`);
    throw e;
  }

  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: raw(spkiElement), format: "der", type: "spki" });
  } catch {
    throw new CsrError("malformed", "CSR: public key cannot be decoded");
  }
  const keyType = describeKey(publicKey);
  if (publicKey.asymmetricKeyType === "rsa") {
    const bits = publicKey.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) throw new CsrError("key-type-not-allowed", `CSR: key type not allowed: RSA ${bits} bits is below the minimum of ${MIN_RSA_BITS}`);
    if (bits > MAX_RSA_BITS) throw new CsrError("key-type-not-allowed", `CSR: key type not allowed: RSA ${bits} bits is above the maximum of ${MAX_RSA_BITS}`);
  }

  let sigOid: string;
  let signature: Buffer;
  try {
    sigOid = readOid(children(sigAlg)[0]!);
    signature = readBitStringBytes(sigBits);
  } catch (e) {
    if (e instanceof DerError) throw new CsrError("malformed", `CSR: malformed signature: ${e.message}`);
    throw e;
  }
  const scheme = CSR_SIGNATURE_ALGORITHMS.get(sigOid);
  if (!scheme)
    throw new CsrError("signature-algorithm-not-allowed", `CSR: signature algorithm not allowed: ${oidName(sigOid)}`);
  if (scheme.keyType !== publicKey.asymmetricKeyType)
    throw new CsrError("signature-invalid", `CSR: signature algorithm ${oidName(sigOid)} does not fit a ${keyType} key`);
  let ok = false;
  try {
    ok = verify(scheme.hash, raw(info), publicKey, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new CsrError("signature-invalid", "CSR: signature does not verify (no proof of possession of the private key)");
  return { der, spki: raw(spkiElement), subjectPublicKey: spkiInfo.subjectPublicKey, publicKey, keyType };
}

/** A minimal PKCS#10 request (no attributes) signed by `key`; used for CA ceremony requests. */
export function buildCsr(subject: Buffer, spki: Buffer, signer: { key: KeyObject; scheme: SignatureScheme }): Buffer {
  const info = sequence(smallInteger(0), subject, spki, implicitConstructed(0, []));
  return sequence(info, signer.scheme.algorithmIdentifier, bitString(sign(signer.scheme.hash, info, signer.key)));
}
