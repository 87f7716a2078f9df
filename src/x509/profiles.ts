// Certificate profiles: what every kind of certificate fleetpki issues contains. The leaf
// templates precompute everything that is constant per issuer, so issuing one certificate is
// a handful of buffer concatenations plus one signature.
import { OID } from "../der/oids.js";
import {
  authorityInfoAccess,
  authorityKeyIdentifier,
  basicConstraints,
  certificateKeyId,
  crlDistributionPoints,
  extendedKeyUsage,
  extension,
  fleetDomainConstraints,
  keyIdentifier,
  keyUsage,
  subjectAltName,
  subjectKeyIdentifier,
  type GeneralName,
} from "./extensions.js";
import { buildCertificate, randomSerial, type ParsedCertificate, type Signer } from "./certificate.js";
import { commonNameOf, encodeName, nameToString } from "./name.js";
import { nullValue } from "../der/writer.js";

export const DEVICE_ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function deviceSpiffeId(domain: string, deviceId: string): string {
  return `spiffe://${domain}/device/${deviceId}`;
}

/** Devices' DNS names live in a zone of their own, so no device can claim a service's name. */
export function deviceDnsZone(domain: string): string {
  return `devices.${domain}`;
}

/** True when `name` is the device zone or inside it: only robots may carry such names. */
export function inDeviceDnsZone(domain: string, name: string): boolean {
  const zone = deviceDnsZone(domain).toLowerCase();
  const n = name.toLowerCase().replace(/\.$/, "");
  return n === zone || n.endsWith(`.${zone}`);
}

/**
 * The DNS name in a device certificate, for services the robot itself serves (e.g.
 * foxglove_bridge); undefined for ids that are no DNS label (an underscore, a leading or
 * trailing hyphen), which some TLS stacks would refuse in a certificate.
 */
export function deviceDnsName(domain: string, deviceId: string): string | undefined {
  return /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(deviceId) ? `${deviceId}.${deviceDnsZone(domain)}` : undefined;
}
export function operatorSpiffeId(domain: string, name: string): string {
  return `spiffe://${domain}/operator/${name}`;
}
/** A backend's identity (`fleetpki service add`): what the gateway reads from a service certificate. */
export function serviceSpiffeId(domain: string, name: string): string {
  return `spiffe://${domain}/service/${name}`;
}

/** Where relying parties find status for certificates of one issuer. */
export interface StatusUrls {
  crl?: string;
  ocsp?: string;
}

function statusExtensions(urls: StatusUrls): Buffer[] {
  const out: Buffer[] = [];
  if (urls.crl) out.push(crlDistributionPoints([urls.crl]));
  if (urls.ocsp) out.push(authorityInfoAccess({ ocsp: [urls.ocsp] }));
  return out;
}

export interface IssuedCertificate {
  der: Buffer;
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
}

/** The issuing side of a CA: its certificate, its signing key and the URLs it writes. */
export interface IssuingCa {
  certificate: ParsedCertificate;
  signer: Signer;
  status: StatusUrls;
}

/** Clamp a validity to the issuer's own lifetime: a child never outlives its CA. */
export class IssuerExpired extends Error {
  constructor(subject: string, notAfter: Date) {
    super(`the issuing CA (${subject}) expired at ${notAfter.toISOString()}; it can no longer issue`);
    this.name = "IssuerExpired";
  }
}

function clampedValidity(ca: IssuingCa, now: Date, lifetimeMs: number): { notBefore: Date; notAfter: Date } {
  if (now.getTime() >= ca.certificate.notAfter.getTime())
    throw new IssuerExpired(nameToString(ca.certificate.subject), ca.certificate.notAfter);
  // Backdate one minute so robots whose clocks run slightly behind accept the certificate.
  const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000 - 60_000);
  const wanted = Math.floor((now.getTime() + lifetimeMs) / 1000) * 1000;
  const notAfter = new Date(Math.min(wanted, ca.certificate.notAfter.getTime()));
  return { notBefore, notAfter };
}

export interface LeafRequest {
  /** DER SubjectPublicKeyInfo of the subject key. */
  spki: Buffer;
  /** BIT STRING value of that key (input for the SKI). */
  subjectPublicKey: Buffer;
  now: Date;
  lifetimeMs: number;
  serial?: Buffer;
}

/** A certificate signed by `ca`: issuer = the CA's subject, validity clamped to the CA's, a random serial unless given. */
function issueUnder(ca: IssuingCa, subject: Buffer, request: LeafRequest, extensions: readonly Buffer[]): IssuedCertificate {
  const serial = request.serial ?? randomSerial();
  const { notBefore, notAfter } = clampedValidity(ca, request.now, request.lifetimeMs);
  const der = buildCertificate(
    { serial, issuer: ca.certificate.subject, subject, notBefore, notAfter, spki: request.spki, extensions },
    ca.signer,
  );
  return { der, serialHex: serial.toString("hex"), notBefore, notAfter };
}

/**
 * device: operational (devices CA); factory: first-enrollment identity from a local CA; audit: signs
 * audit checkpoints; service: a backend's TLS client identity (services CA, like server certificates);
 * ros2-enclave: an SROS2 enclave's DDS identity (ros2-identity CA).
 */
export type LeafKind = "device" | "factory" | "operator" | "server" | "audit" | "service" | "ros2-enclave";

/**
 * Precomputed per issuer and kind: issuer name, AKI, key usage, EKU, CDP and AIA bytes.
 */
export class LeafTemplate {
  private readonly constant: Buffer[];

  constructor(
    private readonly ca: IssuingCa,
    readonly kind: LeafKind,
  ) {
    const usage = keyUsage(["digitalSignature"]);
    if (kind === "ros2-enclave") {
      // DDS Security PKI-DH: the key signs the authentication handshake, nothing else. No EKU, as
      // sros2 writes none and no DDS implementation asks for one (Fast DDS and Cyclone DDS verify the
      // chain with no purpose); no SAN, since the identity is the subject "CN=<enclave path>" that
      // permissions.xml names, and without a SPIFFE URI no fleetpki listener sees an identity in it.
      this.constant = [basicConstraints(false), usage, authorityKeyIdentifier(certificateKeyId(ca.certificate))];
      this.constant.push(...statusExtensions(ca.status));
      return;
    }
    // Devices are mTLS clients and serve TLS themselves (foxglove_bridge, a local web UI), as
    // SPIFFE X.509-SVIDs do. Factory certificates (a year in stock), operators and services are
    // clients only: the services CA also signs the servers' certificates, and a service's must never
    // pass for one (no serverAuth).
    // The audit key signs checkpoints only (RFC 9336 document signing), never TLS.
    const client = kind === "device" ? [OID.clientAuth, OID.serverAuth] : [OID.clientAuth];
    const eku = extendedKeyUsage(kind === "audit" ? [OID.documentSigning] : kind === "server" ? [OID.serverAuth] : client);
    this.constant = [usage, eku, authorityKeyIdentifier(certificateKeyId(ca.certificate)), ...statusExtensions(ca.status)];
  }

  issue(commonName: string, sans: readonly GeneralName[], request: LeafRequest): IssuedCertificate {
    if (this.kind === "ros2-enclave") {
      if (sans.length > 0) throw new Error("an SROS2 enclave certificate carries no subjectAltName");
      return issueUnder(this.ca, encodeName([{ type: OID.commonName, value: commonName }]), request, [
        ...this.constant.slice(0, 2),
        subjectKeyIdentifier(keyIdentifier(request.subjectPublicKey)),
        ...this.constant.slice(2),
      ]);
    }
    return issueUnder(this.ca, encodeName([{ type: OID.commonName, value: commonName }]), request, [
      ...this.constant.slice(0, 2),
      subjectKeyIdentifier(keyIdentifier(request.subjectPublicKey)),
      ...this.constant.slice(2),
      subjectAltName(sans),
    ]);
  }
}

export interface CaSubject {
  commonName: string;
  organization: string;
}

export function caName(subject: CaSubject): Buffer {
  return encodeName([
    { type: OID.organizationName, value: subject.organization },
    { type: OID.commonName, value: subject.commonName },
  ]);
}

export interface SelfSignedRootRequest {
  subject: CaSubject;
  spki: Buffer;
  subjectPublicKey: Buffer;
  signer: Signer;
  notBefore: Date;
  notAfter: Date;
}

export function buildRootCertificate(req: SelfSignedRootRequest): IssuedCertificate {
  const serial = randomSerial();
  const name = caName(req.subject);
  const ski = keyIdentifier(req.subjectPublicKey);
  const der = buildCertificate(
    {
      serial,
      issuer: name,
      subject: name,
      notBefore: req.notBefore,
      notAfter: req.notAfter,
      spki: req.spki,
      extensions: [basicConstraints(true), keyUsage(["keyCertSign", "cRLSign"]), subjectKeyIdentifier(ski), authorityKeyIdentifier(ski)],
    },
    req.signer,
  );
  return { der, serialHex: serial.toString("hex"), notBefore: req.notBefore, notAfter: req.notAfter };
}

export interface IntermediateRequest {
  /** DER Name for the intermediate's subject. */
  subject: Buffer;
  spki: Buffer;
  subjectPublicKey: Buffer;
  now: Date;
  lifetimeMs: number;
  /** Fleet domain to constrain names to, or undefined for an unconstrained CA. */
  constrainToDomain?: string;
  /**
   * Also digitalSignature (besides keyCertSign, cRLSign): for a CA that signs documents with its own
   * key, as the SROS2 permissions CA signs governance and permissions (S/MIME signers need it).
   */
  signsDocuments?: boolean;
  /**
   * Key purposes the CA certificate carries. OpenSSL applies a CA's EKU to every chain through it, so
   * one without serverAuth and clientAuth keeps the CA's key from minting a TLS identity under the root.
   */
  keyPurposes?: readonly string[];
}

/** An intermediate CA (pathLen 0) signed by the root. */
export function buildIntermediateCertificate(root: IssuingCa, req: IntermediateRequest): IssuedCertificate {
  const extensions = [
    basicConstraints(true, 0),
    keyUsage(req.signsDocuments ? ["digitalSignature", "keyCertSign", "cRLSign"] : ["keyCertSign", "cRLSign"]),
    subjectKeyIdentifier(keyIdentifier(req.subjectPublicKey)),
    authorityKeyIdentifier(certificateKeyId(root.certificate)),
    ...statusExtensions(root.status),
  ];
  if (req.constrainToDomain) extensions.push(fleetDomainConstraints(req.constrainToDomain));
  if (req.keyPurposes) extensions.push(extendedKeyUsage(req.keyPurposes));
  return issueUnder(root, req.subject, req, extensions);
}

export interface TrustAnchorRequest {
  /** DER Name: the same subject as the CA's fleet (root-signed) certificate. */
  subject: Buffer;
  spki: Buffer;
  subjectPublicKey: Buffer;
  /** The CA's own key: the anchor is self-signed. */
  signer: Signer;
  notBefore: Date;
  notAfter: Date;
  /** digitalSignature too, for a CA that signs S/MIME documents with its own key (IntermediateRequest.signsDocuments). */
  signsDocuments?: boolean;
}

/**
 * A self-signed twin of an intermediate (same subject, key and SKI; AKI = SKI; no EKU, no CDP/AIA):
 * the trust anchor DDS implementations need, since neither Fast DDS nor Cyclone DDS accepts a
 * non-self-signed CA file (no partial chains). Whatever the intermediate signs verifies against it too.
 */
export function buildTrustAnchorCertificate(req: TrustAnchorRequest): IssuedCertificate {
  const serial = randomSerial();
  const ski = keyIdentifier(req.subjectPublicKey);
  const der = buildCertificate(
    {
      serial,
      issuer: req.subject,
      subject: req.subject,
      notBefore: req.notBefore,
      notAfter: req.notAfter,
      spki: req.spki,
      extensions: [
        basicConstraints(true, 0),
        keyUsage(req.signsDocuments ? ["digitalSignature", "keyCertSign", "cRLSign"] : ["keyCertSign", "cRLSign"]),
        subjectKeyIdentifier(ski),
        authorityKeyIdentifier(ski),
      ],
    },
    req.signer,
  );
  return { der, serialHex: serial.toString("hex"), notBefore: req.notBefore, notAfter: req.notAfter };
}

/**
 * The responder key (never the CA's own key; its subjectPublicKey also gives the OCSP ResponderID
 * byKey). Keep lifetimeMs short (days): with ocsp-nocheck nobody checks whether this certificate is revoked.
 */
export type OcspResponderRequest = LeafRequest;

/**
 * A delegated OCSP responder certificate (RFC 6960 4.2.2.2) for one CA: EKU id-kp-OCSPSigning
 * only, so the key can sign OCSP answers for this CA and nothing else; id-pkix-ocsp-nocheck
 * (4.2.2.2.1) so clients do not ask about the responder itself; no CDP/AIA for the same reason.
 * Validity is clamped to the CA's like every leaf.
 */
export function buildOcspResponderCertificate(ca: IssuingCa, req: OcspResponderRequest): IssuedCertificate {
  const caCommonName = commonNameOf(ca.certificate.subject) ?? nameToString(ca.certificate.subject);
  const extensions = [
    basicConstraints(false),
    keyUsage(["digitalSignature"]),
    extendedKeyUsage([OID.ocspSigning]),
    subjectKeyIdentifier(keyIdentifier(req.subjectPublicKey)),
    authorityKeyIdentifier(certificateKeyId(ca.certificate)),
    extension(OID.ocspNoCheck, false, nullValue()),
  ];
  const subject = encodeName([{ type: OID.commonName, value: `${caCommonName} OCSP responder` }]);
  return issueUnder(ca, subject, req, extensions);
}
