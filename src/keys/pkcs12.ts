// Passphrase-protected PKCS#12 (RFC 7292) of a key, its certificate and chain: what browsers
// (Chromium, Firefox through NSS) import as a client identity. node-forge's own toPkcs12Asn1 takes
// only RSA keys and certificates it can parse itself, so the PFX is assembled here from forge's
// ASN.1 and PBE primitives around the DER we already have (any key type). The same parameters as
// OpenSSL 3's defaults: the key shrouded with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC), the
// certificates in plain bags, and an HMAC-SHA256 MAC over the whole, so a wrong passphrase is refused.
import type { KeyObject } from "node:crypto";
import { createHash } from "node:crypto";
import forge from "node-forge";

const { asn1, pki } = forge;

/** PBKDF2 iterations for the key (forge runs it in JavaScript: about a tenth of a second). */
const KEY_ITERATIONS = 10_000;
/** PKCS#12 KDF iterations for the MAC key (OpenSSL's default). */
const MAC_ITERATIONS = 2048;

/** Printable ASCII only: PBES2 reads the passphrase as bytes and the MAC as BMPString; ASCII is the same in both everywhere. */
export const P12_PASSPHRASE_PATTERN = /^[\x20-\x7e]{8,1024}$/;

export class Pkcs12Error extends Error {
  override name = "Pkcs12Error";
}

const seq = (items: forge.asn1.Asn1[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
const set = (items: forge.asn1.Asn1[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, items);
const oid = (name: string) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(pki.oids[name]!).getBytes());
const octets = (bytes: string) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, bytes);
const explicit0 = (inner: forge.asn1.Asn1) => asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [inner]);
const der = (a: forge.asn1.Asn1) => asn1.toDer(a).getBytes();
const binary = (b: Buffer) => b.toString("binary");

/** ContentInfo of type data around DER bytes. */
const dataContent = (bytes: string) => seq([oid("data"), explicit0(octets(bytes))]);

export interface Pkcs12Input {
  key: KeyObject;
  /** The certificate first, then its chain (DER each). */
  certificates: readonly Buffer[];
  passphrase: string;
  /** Shown by the browser's certificate manager. */
  friendlyName?: string;
}

export function buildPkcs12(input: Pkcs12Input): Buffer {
  if (!P12_PASSPHRASE_PATTERN.test(input.passphrase))
    throw new Pkcs12Error("the PKCS#12 passphrase must be 8-1024 printable ASCII characters");
  if (input.certificates.length === 0) throw new Pkcs12Error("a PKCS#12 needs the certificate");
  // Key and certificate are paired by the same localKeyId (SHA-1 of the certificate, as OpenSSL does).
  const localKeyId = binary(createHash("sha1").update(input.certificates[0]!).digest());
  const attributes = [seq([oid("localKeyId"), set([octets(localKeyId)])])];
  if (input.friendlyName)
    attributes.push(seq([oid("friendlyName"), set([asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BMPSTRING, false, input.friendlyName)])]));
  const bagAttributes = () => set(attributes.map((a) => asn1.fromDer(der(a))));

  const certBags = input.certificates.map((cert, i) => {
    const bag = [oid("certBag"), explicit0(seq([oid("x509Certificate"), explicit0(octets(binary(cert)))]))];
    if (i === 0) bag.push(bagAttributes());
    return seq(bag);
  });
  const pkcs8 = asn1.fromDer(forge.util.createBuffer(binary(input.key.export({ type: "pkcs8", format: "der" }))));
  const shrouded = pki.encryptPrivateKeyInfo(pkcs8, input.passphrase, {
    algorithm: "aes256",
    prfAlgorithm: "sha256",
    count: KEY_ITERATIONS,
    saltSize: 16,
  });
  const keyBag = seq([oid("pkcs8ShroudedKeyBag"), explicit0(shrouded), bagAttributes()]);
  const safe = seq([dataContent(der(seq(certBags))), dataContent(der(seq([keyBag])))]);
  const safeDer = der(safe);

  const macSalt = forge.random.getBytesSync(16);
  const sha256 = forge.md.sha256.create();
  const macKey = forge.pkcs12.generateKey(input.passphrase, forge.util.createBuffer(macSalt), 3, MAC_ITERATIONS, 32, sha256);
  const hmac = forge.hmac.create();
  hmac.start(forge.md.sha256.create(), macKey.getBytes());
  hmac.update(safeDer);
  const macData = seq([
    seq([seq([oid("sha256"), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, "")]), octets(hmac.digest().getBytes())]),
    octets(macSalt),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(MAC_ITERATIONS).getBytes()),
  ]);
  const pfx = seq([
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(3).getBytes()),
    dataContent(safeDer),
    macData,
  ]);
  return Buffer.from(der(pfx), "binary");
}
