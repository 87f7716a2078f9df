// X.509 v3 certificate encoding from prepared parts, and a minimal strict parser.
import { createHash, randomBytes, sign, type KeyObject } from "node:crypto";
import {
  DerError,
  children,
  content,
  expectTag,
  raw,
  readBitStringBytes,
  readElement,
  readOid,
  readRoot,
  readUnsignedInteger,
  type Element,
} from "../der/reader.js";
import { bitString, explicit, sequence, smallInteger, time, unsignedInteger } from "../der/writer.js";
import type { SignatureScheme } from "./algorithms.js";
import { InvalidTime, readX509Time } from "./time.js";

export interface Signer {
  key: KeyObject;
  scheme: SignatureScheme;
}

export interface CertificateFields {
  /** Unsigned big-endian serial number. */
  serial: Buffer;
  /** DER Name of the issuer (the issuing CA's subject, byte for byte). */
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** DER SubjectPublicKeyInfo. */
  spki: Buffer;
  /** Encoded Extension elements, in the order they should appear. */
  extensions: readonly Buffer[];
}

const VERSION_3 = explicit(0, smallInteger(2));

export function encodeTbs(fields: CertificateFields, scheme: SignatureScheme): Buffer {
  return sequence(
    VERSION_3,
    unsignedInteger(fields.serial),
    scheme.algorithmIdentifier,
    fields.issuer,
    sequence(time(fields.notBefore), time(fields.notAfter)),
    fields.subject,
    fields.spki,
    explicit(3, sequence(...fields.extensions)),
  );
}

export function signTbs(tbs: Buffer, signer: Signer): Buffer {
  return sequence(tbs, signer.scheme.algorithmIdentifier, bitString(sign(signer.scheme.hash, tbs, signer.key)));
}

export function buildCertificate(fields: CertificateFields, signer: Signer): Buffer {
  return signTbs(encodeTbs(fields, signer.scheme), signer);
}

/**
 * A positive serial with 128 random bits: 0x01 followed by 16 random octets, so the DER
 * INTEGER is always 17 octets (well under RFC 5280's 20) and never needs a sign octet.
 */
export function randomSerial(): Buffer {
  const serial = randomBytes(17);
  serial[0] = 0x01;
  return serial;
}

export interface ParsedExtension {
  critical: boolean;
  value: Buffer;
}

export interface ParsedCertificate {
  der: Buffer;
  tbs: Buffer;
  serialHex: string;
  issuer: Buffer;
  subject: Buffer;
  notBefore: Date;
  notAfter: Date;
  spki: Buffer;
  subjectPublicKey: Buffer;
  extensions: Map<string, ParsedExtension>;
  signatureAlgorithm: string;
}

/** notBefore / notAfter through the one strict time reader (x509/time.ts): month 13 is no date. */
function readTime(e: Element): Date {
  try {
    return new Date(readX509Time(e.tag, e.source, e.contentStart, e.end));
  } catch (err) {
    if (err instanceof InvalidTime) throw new DerError(`invalid validity time: ${err.message}`, e.start);
    throw err;
  }
}

export function parseCertificate(der: Buffer): ParsedCertificate {
  const root = readRoot(der);
  const [tbsEl, sigAlg] = children(expectTag(root, 0x30, "Certificate"));
  const fields = children(expectTag(tbsEl, 0x30, "TBSCertificate"));
  let i = 0;
  if (fields[0]?.tag === 0xa0) i++;
  const serial = readUnsignedInteger(fields[i++]!);
  i++; // signature AlgorithmIdentifier (repeated outside)
  const issuer = expectTag(fields[i++], 0x30, "issuer");
  const validity = children(expectTag(fields[i++], 0x30, "validity"));
  const subject = expectTag(fields[i++], 0x30, "subject");
  const spki = expectTag(fields[i++], 0x30, "subjectPublicKeyInfo");
  const extensions = new Map<string, ParsedExtension>();
  for (; i < fields.length; i++) {
    if (fields[i]!.tag !== 0xa3) continue;
    const list = readElement(der, fields[i]!.contentStart, fields[i]!.end);
    for (const ext of children(expectTag(list, 0x30, "Extensions"))) {
      const parts = children(ext);
      const critical = parts.length === 3 && content(parts[1]!)[0] === 0xff;
      extensions.set(readOid(parts[0]!), { critical, value: content(parts[parts.length - 1]!) });
    }
  }
  const spkiParts = children(spki);
  return {
    der,
    tbs: raw(tbsEl!),
    serialHex: serial.toString("hex"),
    issuer: raw(issuer),
    subject: raw(subject),
    notBefore: readTime(validity[0]!),
    notAfter: readTime(validity[1]!),
    spki: raw(spki),
    subjectPublicKey: readBitStringBytes(expectTag(spkiParts[1], 0x03, "subjectPublicKey")),
    extensions,
    signatureAlgorithm: readOid(children(expectTag(sigAlg, 0x30, "signatureAlgorithm"))[0]!),
  };
}

/** The BIT STRING value inside a DER SubjectPublicKeyInfo (input of key identifiers). */
export function subjectPublicKeyOf(spki: Buffer): Buffer {
  const [, bits] = children(expectTag(readRoot(spki), 0x30, "SubjectPublicKeyInfo"));
  return readBitStringBytes(expectTag(bits, 0x03, "subjectPublicKey"));
}

/** URIs in the subjectAltName extension (empty when there is none). */
export function subjectAltNameUris(cert: ParsedCertificate): string[] {
  const san = cert.extensions.get("2.5.29.17");
  if (!san) return [];
  const names = children(readRoot(san.value));
  return names.filter((n) => n.tag === 0x86).map((n) => content(n).toString("latin1"));
}

/** Lower-case hex SHA-256 of a certificate's DER, as stored and printed (`fleetpki init`, `ca list`). */
export function sha256Fingerprint(der: Uint8Array): string {
  return createHash("sha256").update(der).digest("hex");
}
