// "Degenerate" certs-only CMS SignedData (RFC 5652 5.1, RFC 8551 3.8), the PKCS#7 that EST
// (RFC 7030 4.1.3, 4.2.3) uses to carry certificates: no content, no signers, only certificates.
// Pure encoders/decoders: no I/O, no clock.
import { DerError, children, expectTag, raw, readOid, readRoot, readSmallInteger, type Element } from "../der/reader.js";
import { implicitConstructed, oid, sequence, set, smallInteger } from "../der/writer.js";
import { OID, oidName } from "../der/oids.js";

export { Base64Error, fromBase64Body, toBase64Body } from "./base64.js";

export class Pkcs7Error extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "Pkcs7Error";
  }
}

const CERTS_ONLY_HEAD = {
  contentType: oid(OID.idSignedData),
  version: smallInteger(1),
  digestAlgorithms: set(),
  encapContentInfo: sequence(oid(OID.idData)),
  signerInfos: set(),
};

/** Checks that a buffer is exactly one DER Certificate-shaped element (SEQUENCE of 3). */
function checkCertificateShape(cert: Buffer, what: string): void {
  try {
    const root = readRoot(cert);
    const parts = children(expectTag(root, 0x30, "Certificate SEQUENCE"));
    if (parts.length !== 3) throw new DerError(`Certificate has ${parts.length} fields, expected 3`, root.start);
    expectTag(parts[0], 0x30, "tbsCertificate");
    expectTag(parts[1], 0x30, "signatureAlgorithm");
    expectTag(parts[2], 0x03, "signatureValue");
  } catch (e) {
    if (e instanceof DerError) throw new Pkcs7Error(`${what} is not a DER certificate: ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * DER ContentInfo { signedData, SignedData } holding only the given DER certificates:
 * version 1, no digest algorithms, encapContentInfo { id-data } without eContent, the
 * certificates as [0] IMPLICIT SET OF in DER order (sorted by encoding; identical certificates
 * appear once), no CRLs, no signerInfos.
 */
export function certsOnly(certificates: readonly Buffer[]): Buffer {
  if (certificates.length === 0) throw new Pkcs7Error("a certs-only PKCS#7 needs at least one certificate");
  certificates.forEach((cert, i) => checkCertificateShape(cert, `certificate ${i}`));
  const sorted = [...certificates].sort(Buffer.compare).filter((cert, i, all) => i === 0 || !cert.equals(all[i - 1]!));
  const h = CERTS_ONLY_HEAD;
  const signedData = sequence(h.version, h.digestAlgorithms, h.encapContentInfo, implicitConstructed(0, sorted), h.signerInfos);
  return sequence(h.contentType, implicitConstructed(0, signedData));
}

function describeContentType(type: string): string {
  const name = oidName(type);
  return name === type ? type : `${name} (${type})`;
}

/**
 * The DER certificates carried by a certs-only ContentInfo, in the order they are encoded.
 * Accepts SignedData versions 1, 3, 4 and 5 and ignores CRLs ([1], e.g. `openssl crl2pkcs7`
 * with a CRL). Refuses, with a Pkcs7Error: other content types, malformed or BER-only
 * encodings (indefinite lengths), encapsulated content, signerInfos (a signed message is not
 * certs-only, and its signatures would go unchecked here), and certificate choices other than
 * plain X.509 certificates. An empty certificates field gives [].
 */
export function parseCertsOnly(der: Buffer): Buffer[] {
  if (der.length === 0) throw new Pkcs7Error("PKCS#7: empty input");
  if (der.subarray(0, 64).includes("-----BEGIN")) throw new Pkcs7Error("PKCS#7: input is PEM text, expected DER");
  try {
    const root = readRoot(der);
    const top = children(expectTag(root, 0x30, "ContentInfo SEQUENCE"));
    if (top[0]?.tag === 0x30 && top.length === 3 && top[2]!.tag === 0x03)
      throw new Pkcs7Error("PKCS#7: input is a single X.509 certificate, not a ContentInfo");
    if (top.length !== 2) throw new DerError(`ContentInfo has ${top.length} fields, expected 2`, root.start);
    const contentType = readOid(top[0]!);
    if (contentType !== OID.idSignedData)
      throw new Pkcs7Error(`PKCS#7: content type is ${describeContentType(contentType)}, expected signedData (${OID.idSignedData})`);
    const explicit = expectTag(top[1], 0xa0, "content [0]");
    const inner = children(explicit);
    if (inner.length !== 1) throw new DerError(`content [0] holds ${inner.length} elements, expected 1`, explicit.start);
    return readSignedData(expectTag(inner[0], 0x30, "SignedData SEQUENCE"));
  } catch (e) {
    if (e instanceof DerError) throw new Pkcs7Error(`PKCS#7: malformed DER: ${e.message}`, { cause: e });
    throw e;
  }
}

function readSignedData(signedData: Element): Buffer[] {
  const fields = children(signedData);
  let i = 0;
  const versionElement = expectTag(fields[i++], 0x02, "SignedData version");
  const version = readSmallInteger(versionElement);
  if (![1, 3, 4, 5].includes(version)) throw new Pkcs7Error(`PKCS#7: unsupported SignedData version ${version}`);
  children(expectTag(fields[i++], 0x31, "digestAlgorithms SET"));
  const encap = children(expectTag(fields[i++], 0x30, "encapContentInfo SEQUENCE"));
  readOid(expectTag(encap[0], 0x06, "eContentType"));
  if (encap.length > 1) throw new Pkcs7Error("PKCS#7: SignedData carries encapsulated content; a certs-only message has none");
  const certificates: Buffer[] = [];
  if (fields[i]?.tag === 0xa0) {
    for (const choice of children(fields[i++]!)) {
      if (choice.tag !== 0x30)
        throw new Pkcs7Error(
          `PKCS#7: unsupported CertificateChoices element (tag 0x${choice.tag.toString(16)}); only X.509 certificates are accepted`,
        );
      const cert = Buffer.from(raw(choice));
      checkCertificateShape(cert, `PKCS#7: certificate ${certificates.length}`);
      certificates.push(cert);
    }
  }
  if (fields[i]?.tag === 0xa1) children(fields[i++]!); // CRLs: structure only, contents ignored
  const signerInfos = expectTag(fields[i++], 0x31, "signerInfos SET");
  if (children(signerInfos).length > 0)
    throw new Pkcs7Error("PKCS#7: SignedData has signerInfos; expected a certs-only message without signers");
  if (i !== fields.length)
    throw new DerError(`unexpected element (tag 0x${fields[i]!.tag.toString(16)}) after signerInfos`, fields[i]!.start);
  return certificates;
}
