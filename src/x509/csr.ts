// PKCS#10 (RFC 2986) parsing and proof-of-possession check. Only the public key of a CSR is
// used for issuance (through the key policy, x509/key-policy.ts); everything else is checked as
// strict DER, refusing at least what `openssl req -verify` refuses, and otherwise ignored.
import { sign, verify, type KeyObject } from "node:crypto";
import { bitString, implicitConstructed, sequence, smallInteger } from "../der/writer.js";
import { oidName } from "../der/oids.js";
import { DerError, children, content, expectTag, raw, readBitStringBytes, readOid, readRoot, readSmallInteger } from "../der/reader.js";
import type { Element } from "../der/reader.js";
import { CSR_SIGNATURE_ALGORITHMS, type KeyDescription, type SignatureScheme } from "./algorithms.js";
import { KeyPolicyError, assertModulusNotPrime, importPolicyKey, readPolicyKey } from "./key-policy.js";
import type { KeyRejection, PolicyKey } from "./key-policy.js";
import { PemError, fromPem, looksLikePem } from "./pem.js";

export type CsrRejection =
  | "malformed" // not DER / not PEM / structure wrong
  | "wrong-pem-label"
  | "unsupported-version"
  | "signature-algorithm-not-allowed"
  | "signature-invalid"
  | KeyRejection; // the key policy's own reasons (x509/key-policy.ts)

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
  /** Canonical DER SubjectPublicKeyInfo re-encoded from the checked key (never the CSR's bytes). */
  spki: Buffer;
  /** The subjectPublicKey BIT STRING value (input of the key identifier). */
  subjectPublicKey: Buffer;
  publicKey: KeyObject;
  keyType: KeyDescription;
  /** DER Name the requester asked for (informational only; profiles decide the subject). */
  subject: Buffer;
}

export const CSR_PEM_LABELS = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"] as const;

/** PEM text or DER bytes to DER; wrong labels and broken PEM are reported as such. */
export function csrDer(input: Buffer | string): Buffer {
  if (looksLikePem(input)) {
    try {
      return fromPem(typeof input === "string" ? input : input.toString("latin1"), CSR_PEM_LABELS);
    } catch (e) {
      if (e instanceof PemError)
        throw new CsrError(e.message.startsWith("wrong PEM label") ? "wrong-pem-label" : "malformed", `CSR: ${e.message}`);
      throw e;
    }
  }
  if (typeof input === "string") throw new CsrError("malformed", "CSR: neither PEM nor DER");
  return input;
}

// Universal string types a Name value may have. OpenSSL also takes a few odd tags (SEQUENCE,
// REAL, EXTERNAL, ...) as "unknown"; nobody writes those, so they are refused here.
const UTF8_STRING = 0x0c;
const BMP_STRING = 0x1e;
const UNIVERSAL_STRING = 0x1c;
const NAME_STRING_TAGS: ReadonlySet<number> = new Set([
  UTF8_STRING,
  0x12,
  0x13,
  0x14,
  0x15,
  0x16,
  0x19,
  0x1a,
  0x1b,
  UNIVERSAL_STRING,
  BMP_STRING,
]);
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Rejects what OpenSSL cannot convert to UTF-8 (it refuses such a Name when it decodes it). */
function checkNameString(value: Element): void {
  if (!NAME_STRING_TAGS.has(value.tag))
    throw new DerError(`a Name attribute value has tag 0x${value.tag.toString(16)}, not a string type`, value.start);
  const bytes = content(value);
  let ok = true;
  if (value.tag === UTF8_STRING) {
    try {
      utf8.decode(bytes);
    } catch {
      ok = false;
    }
  } else if (value.tag === BMP_STRING) {
    ok = bytes.length % 2 === 0;
    for (let i = 0; ok && i < bytes.length; i += 2) ok = bytes[i]! < 0xd8 || bytes[i]! > 0xdf;
  } else if (value.tag === UNIVERSAL_STRING) {
    ok = bytes.length % 4 === 0;
    for (let i = 0; ok && i < bytes.length; i += 4) {
      const c = bytes.readUInt32BE(i);
      ok = c < 0x110000 && (c < 0xd800 || c > 0xdfff);
    }
  }
  const type = value.tag === UTF8_STRING ? "UTF8String" : value.tag === BMP_STRING ? "BMPString" : "UniversalString";
  if (!ok) throw new DerError(`a Name attribute value is not a valid ${type}`, value.start);
}

/** Name ::= SEQUENCE OF RelativeDistinguishedName (SET SIZE (1..MAX) OF AttributeTypeAndValue). */
function checkName(name: Element): void {
  for (const rdn of children(expectTag(name, 0x30, "subject Name"))) {
    const atvs = children(expectTag(rdn, 0x31, "RelativeDistinguishedName SET"));
    if (atvs.length === 0) throw new DerError("empty RelativeDistinguishedName", rdn.start);
    for (const atv of atvs) {
      const parts = children(expectTag(atv, 0x30, "AttributeTypeAndValue"));
      if (parts.length !== 2) throw new DerError(`AttributeTypeAndValue has ${parts.length} fields, expected 2`, atv.start);
      readOid(parts[0]!);
      checkNameString(parts[1]!);
    }
  }
}

/**
 * An attribute value is ANY; OpenSSL still decodes the universal primitive types it finds there
 * and refuses the CSR when one is malformed, so the same rules apply here.
 */
function checkAnyValue(value: Element): void {
  const bytes = content(value);
  const bad = (what: string): never => {
    throw new DerError(`an attribute value is not a valid ${what}`, value.start);
  };
  switch (value.tag) {
    case 0x01:
      if (bytes.length !== 1) bad("BOOLEAN");
      break;
    case 0x02:
    case 0x0a:
      if (bytes.length === 0) bad("INTEGER");
      if (bytes.length > 1 && ((bytes[0] === 0 && !(bytes[1]! & 0x80)) || (bytes[0] === 0xff && bytes[1]! & 0x80))) bad("INTEGER");
      break;
    case 0x03:
      if (bytes.length === 0 || bytes[0]! > 7 || (bytes.length === 1 && bytes[0] !== 0)) bad("BIT STRING");
      break;
    case 0x05:
      if (bytes.length !== 0) bad("NULL");
      break;
    case 0x06:
      readOid(value);
      break;
    case BMP_STRING:
      if (bytes.length % 2 !== 0) bad("BMPString");
      break;
    case UNIVERSAL_STRING:
      if (bytes.length % 4 !== 0) bad("UniversalString");
      break;
  }
}

/** Attributes [0] IMPLICIT SET OF Attribute; Attribute ::= SEQUENCE { type OID, values SET SIZE (1..MAX) }. */
function checkAttributes(attributes: Element): void {
  for (const attr of children(expectTag(attributes, 0xa0, "attributes [0]"))) {
    const parts = children(expectTag(attr, 0x30, "Attribute"));
    if (parts.length !== 2) throw new DerError(`Attribute has ${parts.length} fields, expected 2`, attr.start);
    readOid(parts[0]!);
    const values = children(expectTag(parts[1], 0x31, "Attribute values SET"));
    if (values.length === 0) throw new DerError("Attribute with no values", parts[1]!.start);
    values.forEach(checkAnyValue);
  }
}

const NULL_PARAMS = (e: Element | undefined): boolean => e?.tag === 0x05 && e.end === e.contentStart;

/** A structurally valid CSR with an allowed key, whose signature is not yet checked. */
export interface DecodedCsr extends ParsedCsr {
  signedInfo: Buffer;
  signature: Buffer;
  hash: string | null;
  /** The checked key, for the primality test that verification adds. */
  key: PolicyKey;
}

function csrKeyError(e: KeyPolicyError): CsrError {
  return new CsrError(e.reason, `CSR: ${e.message}`);
}

/** Strict structure, the key policy and the signature algorithm; the signature itself is checked separately. */
export function decodeCsr(input: Buffer | string): DecodedCsr {
  const der = csrDer(input);
  let info: Element, sigBits: Element, spkiElement: Element, subject: Buffer, sigAlg: Element[];
  try {
    const root = readRoot(der);
    const top = children(expectTag(root, 0x30, "CertificationRequest"));
    if (top.length !== 3) throw new DerError(`CertificationRequest has ${top.length} fields, expected 3`, root.start);
    info = top[0]!;
    sigBits = expectTag(top[2], 0x03, "signature");
    const fields = children(expectTag(info, 0x30, "CertificationRequestInfo"));
    if (fields.length !== 4) throw new DerError(`CertificationRequestInfo has ${fields.length} fields, expected 4`, info.start);
    const version = readSmallInteger(fields[0]!);
    if (version !== 0) throw new CsrError("unsupported-version", `CSR: unsupported version ${version} (only version 1, encoded 0, exists)`);
    checkName(fields[1]!);
    subject = raw(fields[1]!);
    spkiElement = expectTag(fields[2], 0x30, "SubjectPublicKeyInfo");
    checkAttributes(fields[3]!);
    sigAlg = children(expectTag(top[1], 0x30, "signatureAlgorithm"));
    if (sigAlg.length < 1 || sigAlg.length > 2)
      throw new DerError(`signatureAlgorithm has ${sigAlg.length} fields, expected 1 or 2`, top[1]!.start);
  } catch (e) {
    if (e instanceof DerError) throw new CsrError("malformed", `CSR: malformed DER: ${e.message}`);
    throw e;
  }

  // The key policy runs before anything else looks at the key; node:crypto only ever sees a
  // key re-encoded from checked values.
  let key: PolicyKey;
  try {
    key = readPolicyKey(spkiElement);
  } catch (e) {
    if (e instanceof KeyPolicyError) throw csrKeyError(e);
    throw e;
  }

  let sigOid: string;
  let signature: Buffer;
  try {
    sigOid = readOid(sigAlg[0]!);
    signature = readBitStringBytes(sigBits);
  } catch (e) {
    if (e instanceof DerError) throw new CsrError("malformed", `CSR: malformed signature: ${e.message}`);
    throw e;
  }
  const scheme = CSR_SIGNATURE_ALGORITHMS.get(sigOid);
  if (!scheme) throw new CsrError("signature-algorithm-not-allowed", `CSR: signature algorithm not allowed: ${oidName(sigOid)}`);
  // ECDSA (RFC 5758 3.2) and Ed25519 (RFC 8410 3): parameters absent. RSA PKCS#1 v1.5 (RFC 4055 5):
  // NULL, and implementations must accept them absent too.
  const params = sigAlg[1];
  if (scheme.keyType === "rsa" ? params && !NULL_PARAMS(params) : params) {
    const wanted = scheme.keyType === "rsa" ? "NULL (or no) parameters" : "no parameters (absent, not NULL)";
    throw new CsrError("malformed", `CSR: ${oidName(sigOid)} takes ${wanted}`);
  }
  if (scheme.keyType !== key.family)
    throw new CsrError("signature-invalid", `CSR: signature algorithm ${oidName(sigOid)} does not fit a ${key.keyType} key`);
  let publicKey: KeyObject;
  try {
    publicKey = importPolicyKey(key);
  } catch {
    throw new CsrError("key-encoding-invalid", "CSR: public key cannot be decoded (not a valid key of its type)");
  }
  const { spki, subjectPublicKey, keyType } = key;
  return { der, spki, subjectPublicKey, publicKey, keyType, subject, signedInfo: raw(info), signature, hash: scheme.hash, key };
}

const BAD_SIGNATURE = "CSR: signature does not verify (no proof of possession of the private key)";

function verified(csr: DecodedCsr): ParsedCsr {
  return {
    der: csr.der,
    spki: csr.spki,
    subjectPublicKey: csr.subjectPublicKey,
    publicKey: csr.publicKey,
    keyType: csr.keyType,
    subject: csr.subject,
  };
}

/** Parses and verifies a CSR. Throws CsrError with a specific reason. */
export function parseCsr(input: Buffer | string): ParsedCsr {
  const csr = decodeCsr(input);
  try {
    assertModulusNotPrime(csr.key);
  } catch (e) {
    if (e instanceof KeyPolicyError) throw csrKeyError(e);
    throw e;
  }
  let ok = false;
  try {
    ok = verify(csr.hash, csr.signedInfo, csr.publicKey, csr.signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new CsrError("signature-invalid", BAD_SIGNATURE);
  return verified(csr);
}

/**
 * As parseCsr, but the signature check runs on libuv's thread pool, off the event loop, and the
 * primality test of an RSA modulus is left to the caller (`rsaModulus`): OpenSSL runs 64 to 128
 * Miller-Rabin rounds on a prime (0.1 s at 2048 bits, 13 s at 8192 here), a price that should be
 * paid only once the requester has authenticated (authority/issue/issuance.ts issueForKey).
 */
export async function parseCsrAsync(input: Buffer | string): Promise<ParsedCsr & { rsaModulus?: Buffer }> {
  const csr = decodeCsr(input);
  const ok = await new Promise<boolean>((resolve) => {
    try {
      verify(csr.hash, csr.signedInfo, csr.publicKey, csr.signature, (err, result) => resolve(!err && result));
    } catch {
      resolve(false);
    }
  });
  if (!ok) throw new CsrError("signature-invalid", BAD_SIGNATURE);
  return { ...verified(csr), ...(csr.key.modulus ? { rsaModulus: csr.key.modulus } : {}) };
}

/** A minimal PKCS#10 request (no attributes) signed by `key`; used for CA ceremony requests. */
export function buildCsr(subject: Buffer, spki: Buffer, signer: { key: KeyObject; scheme: SignatureScheme }): Buffer {
  const info = sequence(smallInteger(0), subject, spki, implicitConstructed(0, []));
  return sequence(info, signer.scheme.algorithmIdentifier, bitString(sign(signer.scheme.hash, info, signer.key)));
}
