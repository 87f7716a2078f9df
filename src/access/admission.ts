// Who may open a session: from the client certificate a TLS handshake already verified, its SAN
// URI, the MQTT client id and the fleet's in-memory status (kept current by the change feed).
// Pure decision, no MQTT types: the gateway maps a refusal to its CONNACK code. Asked again for
// every live session whenever a certificate, device or CA changes, so a session lasts only as
// long as its admission would still be granted.
import { createHash } from "node:crypto";
import { parseCertificate, subjectAltNameUris } from "../x509/certificate.js";
import { DEVICE_ID_PATTERN } from "../x509/profiles.js";
import type { AccessIdentity, OperatorRole } from "./identity.js";

/** How a refusal is reported: MQTT 3.1.1 CONNACK 2, 4 and 5 respectively. */
export type RefusalKind = "identifier-rejected" | "bad-credentials" | "not-authorized";

export type RefusalCode =
  | "no-certificate"
  | "bad-certificate"
  | "no-identity"
  | "unknown-certificate"
  | "wrong-ca"
  | "wrong-kind"
  | "subject-mismatch"
  | "revoked"
  | "held"
  | "expired"
  | "device-inactive"
  | "client-id";

export interface AdmissionRefusal {
  kind: RefusalKind;
  /** Short and stable, for counters. */
  code: RefusalCode;
  /** One line for the log (names the identity and serial, never key material). */
  reason: string;
}

/** What admission needs to know of a certificate (CertificateStatus answers it). */
export interface AdmissionCertificate {
  status: "good" | "expired" | "revoked" | "held" | "unknown";
  serial: string;
  issuerCa?: string;
  kind?: string;
  deviceId?: string | null;
  /** Device id, service or operator name the certificate was issued to (as recorded). */
  subjectId?: string | null;
  notAfter?: Date;
  reason?: string;
}

export interface AdmissionDevice {
  status: string;
  group?: string | null;
  labels?: Readonly<Record<string, string>>;
}

/** The in-memory status every decision reads (CertificateStatus fits). */
export interface AdmissionFacts {
  /** By DER (matched byte for byte with the one issued), or by serial once a DER was so matched. */
  certificate(query: { der: Uint8Array } | { serial: string; issuerCa: string }): AdmissionCertificate;
  device(deviceId: string): AdmissionDevice;
}

export interface AdmissionRequest {
  /** The peer certificate (DER) the TLS layer verified; undefined when the client sent none. */
  certificateDer?: Uint8Array | undefined;
  /** The same, already read (PeerCertificates); takes the place of certificateDer. */
  certificate?: PeerCertificate | undefined;
  clientId: string;
  domain: string;
  /** gateway.allow_local_cas: devices may use certificates of (active) local CAs. */
  allowLocalCas: boolean;
  /** An operator's stored role (OperatorDirectory); without it, or null (unknown or removed), an operator has none. */
  operatorRole?: (name: string) => OperatorRole | null;
}

export interface Admitted {
  admitted: true;
  identity: AccessIdentity;
  /** "device:<id>", "service:<name>" or "operator:<name>": the audit subject. */
  subject: string;
  serial: string;
  issuerCa: string;
  notAfter: Date | undefined;
}

export type AdmissionResult = Admitted | { admitted: false; refusal: AdmissionRefusal };

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

type Refused = { admitted: false; refusal: AdmissionRefusal };

const refuse = (kind: RefusalKind, code: RefusalCode, reason: string): Refused => ({
  admitted: false,
  refusal: { kind, code, reason },
});

type Kind = AccessIdentity["kind"];

/** The one SAN URI of the fleet's form, or a refusal. */
function identityUri(uris: readonly string[], domain: string): { kind: Kind; name: string } | string {
  const prefix = `spiffe://${domain}/`;
  const ours = uris.filter((u) => u.startsWith("spiffe://"));
  if (ours.length !== 1) return `expected exactly one spiffe:// SAN URI, found ${ours.length}`;
  const uri = ours[0]!;
  if (!uri.startsWith(prefix)) return `SAN URI ${JSON.stringify(uri)} is not in the trust domain ${domain}`;
  const m = /^(device|service|operator)\/([^/]+)$/.exec(uri.slice(prefix.length));
  if (!m) return `SAN URI ${JSON.stringify(uri)} names no device, service or operator`;
  const kind = m[1] as Kind;
  const name = m[2]!;
  if (!(kind === "device" ? DEVICE_ID_PATTERN : NAME).test(name)) return `SAN URI ${JSON.stringify(uri)}: invalid ${kind} name`;
  return { kind, name };
}

/** Which CAs may issue which identity's certificates, and of what recorded kind. */
function issuerAllowed(kind: Kind, issuerCa: string, certKind: string | undefined, allowLocalCas: boolean): string | undefined {
  switch (kind) {
    case "device":
      if (issuerCa === "devices") return certKind === "device" ? undefined : `a ${certKind} certificate is no device identity`;
      if (issuerCa.startsWith("local-")) {
        if (!allowLocalCas) return `issued by local CA ${issuerCa} (gateway.allow_local_cas is off)`;
        return certKind === "device" || certKind === "factory" ? undefined : `a ${certKind} certificate is no device identity`;
      }
      return `a device certificate must come from the devices CA, not ${issuerCa}`;
    case "service":
      if (issuerCa !== "services") return `a service certificate must come from the services CA, not ${issuerCa}`;
      return certKind === "service" ? undefined : `a ${certKind} certificate is no service identity`;
    case "operator":
      if (issuerCa !== "operators") return `an operator certificate must come from the operators CA, not ${issuerCa}`;
      return certKind === "operator" ? undefined : `a ${certKind} certificate is no operator identity`;
  }
}

/**
 * A client certificate as admission reads it. What its bytes say (the SAN URI identity, or why it
 * has none) never changes, so it is parsed once; its status is asked of the facts at every decision.
 */
export interface PeerCertificate {
  readonly der: Uint8Array;
  /** The SAN URI identity, or the refusal the bytes alone earn. */
  readonly read: { kind: Kind; name: string } | Refused;
  /**
   * Set once the facts matched these bytes with a certificate the fleet issued: later questions go
   * by serial and issuing CA (the status, revocation included, is still the facts' answer now).
   */
  issued?: { serial: string; issuerCa: string };
}

/** Parses a client certificate for admission (no status: that is asked at every decision). */
export function readPeerCertificate(der: Uint8Array, domain: string): PeerCertificate {
  let uris: string[];
  try {
    uris = subjectAltNameUris(parseCertificate(Buffer.from(der.buffer, der.byteOffset, der.byteLength)));
  } catch (e) {
    return { der, read: refuse("bad-credentials", "bad-certificate", `client certificate unreadable: ${(e as Error).message}`) };
  }
  const id = identityUri(uris, domain);
  return { der, read: typeof id === "string" ? refuse("bad-credentials", "no-identity", id) : id };
}

/**
 * Client certificates read once and kept by their SHA-256 (the same bytes, so the same reading),
 * for a gateway whose devices reconnect with the same certificate: a CONNECT then costs a hash and
 * the status lookups, not a DER parse and a fingerprint match. At most `max`, oldest dropped first.
 */
export class PeerCertificates {
  private readonly byDigest = new Map<string, PeerCertificate>();

  constructor(
    private readonly domain: string,
    private readonly max = 20_000,
  ) {}

  get(der: Uint8Array): PeerCertificate {
    const digest = createHash("sha256").update(der).digest("base64");
    let cert = this.byDigest.get(digest);
    if (!cert) {
      if (this.byDigest.size >= this.max) this.byDigest.delete(this.byDigest.keys().next().value!);
      cert = readPeerCertificate(Buffer.from(der), this.domain);
      this.byDigest.set(digest, cert);
    }
    return cert;
  }
}

/** A certificate the fleet issued to the identity its SAN URI names, good now (not revoked, held or expired). */
export interface CertifiedIdentity {
  kind: Kind;
  name: string;
  /** "device:<id>", "service:<name>" or "operator:<name>". */
  subject: string;
  certificate: AdmissionCertificate;
}

/**
 * Who a verified client certificate identifies, if the fleet vouches for it now: its one SAN URI,
 * the certificate known (byte for byte), from the CA that issues that kind, recorded for that
 * name, and good. The gateway's admission and the admin listener both start here.
 */
export function certifiedIdentity(peer: PeerCertificate, facts: AdmissionFacts, allowLocalCas: boolean): CertifiedIdentity | Refused {
  if ("admitted" in peer.read) return peer.read;
  const id = peer.read;
  const subject = `${id.kind}:${id.name}`;
  const cert = facts.certificate(peer.issued ?? { der: peer.der });
  if (!peer.issued && cert.status !== "unknown" && cert.issuerCa !== undefined)
    peer.issued = { serial: cert.serial, issuerCa: cert.issuerCa };
  const at = `${subject} (serial ${cert.serial})`;
  if (cert.status === "unknown") return refuse("bad-credentials", "unknown-certificate", `${at}: certificate not issued by this fleet`);
  const wrongIssuer = issuerAllowed(id.kind, cert.issuerCa ?? "?", cert.kind, allowLocalCas);
  if (wrongIssuer) return refuse("bad-credentials", "wrong-ca", `${at}: ${wrongIssuer}`);
  const recorded = id.kind === "device" ? cert.deviceId : cert.subjectId;
  if (recorded !== id.name)
    return refuse("bad-credentials", "subject-mismatch", `${at}: certificate was issued to ${JSON.stringify(recorded ?? null)}`);
  if (cert.status === "revoked") return refuse("not-authorized", "revoked", `${at}: certificate revoked (${cert.reason ?? "unspecified"})`);
  if (cert.status === "held") return refuse("not-authorized", "held", `${at}: certificate on hold`);
  if (cert.status === "expired") return refuse("not-authorized", "expired", `${at}: certificate expired`);
  return { kind: id.kind, name: id.name, subject, certificate: cert };
}

/** Decides a CONNECT (and, again, a live session after any status change). */
export function admit(request: AdmissionRequest, facts: AdmissionFacts): AdmissionResult {
  const peer =
    request.certificate ??
    (request.certificateDer && request.certificateDer.length > 0 ? readPeerCertificate(request.certificateDer, request.domain) : undefined);
  if (!peer || peer.der.length === 0) return refuse("bad-credentials", "no-certificate", "no client certificate");
  const certified = certifiedIdentity(peer, facts, request.allowLocalCas);
  if ("admitted" in certified) return certified;
  const id = certified;
  const { subject, certificate: cert } = certified;
  const at = `${subject} (serial ${cert.serial})`;
  let identity: AccessIdentity;
  if (id.kind === "device") {
    const device = facts.device(id.name);
    if (device.status !== "active") return refuse("not-authorized", "device-inactive", `${at}: device is ${device.status}`);
    identity = { kind: "device", id: id.name, group: device.group ?? null, labels: device.labels ?? {} };
    if (request.clientId !== id.name)
      return refuse("identifier-rejected", "client-id", `${at}: client id ${JSON.stringify(request.clientId)} is not the device id`);
  } else {
    if (request.clientId !== id.name && !request.clientId.startsWith(`${id.name}-`))
      return refuse(
        "identifier-rejected",
        "client-id",
        `${at}: client id ${JSON.stringify(request.clientId)} must be ${id.name} or begin with ${id.name}-`,
      );
    // Devices, services and operators share one client-id space, and MQTT hands a client id's session
    // (and its queued messages) to whoever connects with it: service "robot" may not be "robot-1" (a
    // device's). The gateway also refuses a client id another identity holds (src/gateway/server.ts).
    if (facts.device(request.clientId).status !== "unknown")
      return refuse("identifier-rejected", "client-id", `${at}: client id ${JSON.stringify(request.clientId)} is a registered device's id`);
    identity =
      id.kind === "service"
        ? { kind: "service", name: id.name }
        : { kind: "operator", name: id.name, role: request.operatorRole?.(id.name) ?? null };
  }
  return { admitted: true, identity, subject, serial: cert.serial, issuerCa: cert.issuerCa!, notAfter: cert.notAfter };
}
