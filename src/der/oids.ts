// Object identifiers used across fleetpki, by name.
export const OID = {
  // attribute types
  commonName: "2.5.4.3",
  organizationName: "2.5.4.10",
  organizationalUnitName: "2.5.4.11",
  countryName: "2.5.4.6",
  serialNumberAttr: "2.5.4.5",
  extensionRequest: "1.2.840.113549.1.9.14",
  // public keys
  rsaEncryption: "1.2.840.113549.1.1.1",
  rsassaPss: "1.2.840.113549.1.1.10",
  ecPublicKey: "1.2.840.10045.2.1",
  prime256v1: "1.2.840.10045.3.1.7",
  secp384r1: "1.3.132.0.34",
  secp521r1: "1.3.132.0.35",
  ed25519: "1.3.101.112",
  ed448: "1.3.101.113",
  dsa: "1.2.840.10040.4.1",
  // signature algorithms
  md2WithRSAEncryption: "1.2.840.113549.1.1.2",
  md4WithRSAEncryption: "1.2.840.113549.1.1.3",
  md5WithRSAEncryption: "1.2.840.113549.1.1.4",
  sha1WithRSAEncryption: "1.2.840.113549.1.1.5",
  sha256WithRSAEncryption: "1.2.840.113549.1.1.11",
  sha384WithRSAEncryption: "1.2.840.113549.1.1.12",
  sha512WithRSAEncryption: "1.2.840.113549.1.1.13",
  ecdsaWithSHA1: "1.2.840.10045.4.1",
  ecdsaWithSHA256: "1.2.840.10045.4.3.2",
  ecdsaWithSHA384: "1.2.840.10045.4.3.3",
  ecdsaWithSHA512: "1.2.840.10045.4.3.4",
  dsaWithSHA1: "1.2.840.10040.4.3",
  dsaWithSHA256: "2.16.840.1.101.3.4.3.2",
  // certificate extensions
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  nameConstraints: "2.5.29.30",
  crlDistributionPoints: "2.5.29.31",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  authorityInfoAccess: "1.3.6.1.5.5.7.1.1",
  // CRL and CRL entry extensions (RFC 5280 5.2, 5.3)
  issuerAltName: "2.5.29.18",
  cRLNumber: "2.5.29.20",
  cRLReason: "2.5.29.21",
  invalidityDate: "2.5.29.24",
  deltaCRLIndicator: "2.5.29.27",
  issuingDistributionPoint: "2.5.29.28",
  certificateIssuer: "2.5.29.29",
  freshestCRL: "2.5.29.46",
  // access methods and key purposes
  ocsp: "1.3.6.1.5.5.7.48.1",
  caIssuers: "1.3.6.1.5.5.7.48.2",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  /** S/MIME; what the SROS2 permissions CA's fleet certificate is limited to (it signs governance and permissions). */
  emailProtection: "1.3.6.1.5.5.7.3.4",
  ocspSigning: "1.3.6.1.5.5.7.3.9",
  /** RFC 9336; the audit key's only purpose (signing audit checkpoints), never TLS. */
  documentSigning: "1.3.6.1.5.5.7.3.36",
  // OCSP (RFC 6960, RFC 8954) and the digests its CertIDs use
  ocspBasic: "1.3.6.1.5.5.7.48.1.1",
  ocspNonce: "1.3.6.1.5.5.7.48.1.2",
  ocspNoCheck: "1.3.6.1.5.5.7.48.1.5",
  sha1: "1.3.14.3.2.26",
  sha256: "2.16.840.1.101.3.4.2.1",
  sha384: "2.16.840.1.101.3.4.2.2",
  sha512: "2.16.840.1.101.3.4.2.3",
  // CMS content types (RFC 5652) and EST CSR attributes (RFC 7030 4.5.2)
  idData: "1.2.840.113549.1.7.1",
  idSignedData: "1.2.840.113549.1.7.2",
  idEnvelopedData: "1.2.840.113549.1.7.3",
  idDigestedData: "1.2.840.113549.1.7.5",
  idEncryptedData: "1.2.840.113549.1.7.6",
  idAuthEnvelopedData: "1.2.840.113549.1.9.16.1.23",
  challengePassword: "1.2.840.113549.1.9.7",
  // CMS signed attributes (RFC 5652 11, RFC 8551 2.5.2) and what S/MIME signers put in them
  contentType: "1.2.840.113549.1.9.3",
  messageDigest: "1.2.840.113549.1.9.4",
  signingTime: "1.2.840.113549.1.9.5",
  smimeCapabilities: "1.2.840.113549.1.9.15",
  aes128Cbc: "2.16.840.1.101.3.4.1.2",
  aes192Cbc: "2.16.840.1.101.3.4.1.22",
  aes256Cbc: "2.16.840.1.101.3.4.1.42",
  md5: "1.2.840.113549.2.5",
  macAddress: "1.3.6.1.1.1.1.22",
} as const;

const NAMES = new Map<string, string>(Object.entries(OID).map(([name, oid]) => [oid, name]));

export function oidName(oid: string): string {
  return NAMES.get(oid) ?? oid;
}
