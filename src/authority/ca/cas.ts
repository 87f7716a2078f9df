// CA records and files: creating intermediates and local CAs, listing the hierarchy.
import { createPublicKey, type KeyObject } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseDuration } from "../../config/duration.js";
import { ensurePrivateDir, writeFileAtomic } from "../../keys/files.js";
import { generateKey, publicSpki, writePrivateKey } from "../../keys/keys.js";
import type { CaTable } from "../../store/schema.js";
import type { Operations } from "../../store/operations.js";
import { describeKey, signatureSchemeFor, type CaKeyType } from "../../x509/algorithms.js";
import { parseCertificate, subjectPublicKeyOf } from "../../x509/certificate.js";
import { nameToString } from "../../x509/name.js";
import { toPem } from "../../x509/pem.js";
import { buildIntermediateCertificate, buildTrustAnchorCertificate, caName, type CaSubject } from "../../x509/profiles.js";
import { CaExists, CaKeyOffline, InvalidArgument } from "../errors.js";
import type { FleetServices } from "../services.js";
import { sha256Fingerprint } from "../../x509/certificate.js";
import { LOCAL_CA_NAME, ROS2_CAS, intermediateKeyPurposes, isRos2Ca, layout, localCaId, type IntermediateRole } from "../layout.js";
import { writeCeremonyRequest } from "./ceremony.js";
import { checkpointAfter } from "../audit-checkpoints.js";

const ROLE_TITLES: Record<string, string> = {
  root: "Root CA",
  devices: "Devices CA",
  services: "Services CA",
  operators: "Operators CA",
  "ros2-identity": "ROS 2 Identity CA",
  "ros2-permissions": "ROS 2 Permissions CA",
};

export function caSubjectFor(organization: string, id: string): CaSubject {
  const title = ROLE_TITLES[id] ?? `Local CA ${id.replace(/^local-/, "")}`;
  return { organization, commonName: `${organization} ${title}` };
}

export function roleOf(id: string): CaTable["role"] {
  if (id === "root" || id === "devices" || id === "services" || id === "operators") return id;
  if (id.startsWith("local-")) return "local";
  if (isRos2Ca(id)) return id;
  throw new InvalidArgument(`unknown CA role for "${id}"`);
}

/**
 * Devices, operators and local CAs may only issue names under the fleet domain. The ROS 2 CAs are
 * not constrained: their certificates name enclave paths ("CN=/ns/node"), and no fleetpki listener trusts them.
 */
export function isDomainConstrained(role: IntermediateRole | "root"): boolean {
  return role === "devices" || role === "operators" || role === "local";
}

/**
 * The key type of a new intermediate: the fleet's, except for the ROS 2 CAs, which are P-256
 * whatever the fleet uses (DDS Security's PKI-DH knows only RSA-2048 and P-256).
 */
export function intermediateKeyType(fleetKeyType: CaKeyType, role: IntermediateRole): CaKeyType {
  return isRos2Ca(role) ? "p256" : fleetKeyType;
}

/** The SROS2 permissions CA signs governance and permissions documents with its own key (S/MIME). */
export function signsDocuments(role: IntermediateRole): boolean {
  return role === ROS2_CAS.permissions;
}

export interface NewCaRecord {
  id: string;
  der: Buffer;
  keyFile: string | null;
  issuerId: string;
  /** A ROS 2 CA's self-signed trust anchor (ros2TrustAnchor), recorded and audited with the CA. */
  anchorDer?: Buffer;
}

/**
 * The self-signed twin of a ROS 2 CA's fleet certificate `der` (same subject, key, SKI and validity),
 * signed with the CA's own `key`. DDS implementations accept only a self-signed identity or
 * permissions CA as trust anchor (no partial chains); the root-signed certificate stays the
 * fleet's record (cas, `ca list`, revocation).
 */
export function ros2TrustAnchor(id: string, der: Buffer, key: KeyObject): Buffer {
  const cert = parseCertificate(der);
  return buildTrustAnchorCertificate({
    subject: cert.subject,
    spki: cert.spki,
    subjectPublicKey: subjectPublicKeyOf(cert.spki),
    signer: { key, scheme: signatureSchemeFor(key) },
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    signsDocuments: signsDocuments(roleOf(id) as IntermediateRole),
  }).der;
}

/** Writes a ROS 2 CA's anchor beside its certificate (ca/<id>/anchor.pem). */
export function writeCaAnchor(dir: string, id: string, anchorDer: Buffer): void {
  writeFileAtomic(join(dir, layout.caAnchor(id)), toPem("CERTIFICATE", anchorDer));
}

export async function recordCa(tx: Operations, ca: NewCaRecord, actor: string, now: Date): Promise<void> {
  const cert = parseCertificate(ca.der);
  const pem = toPem("CERTIFICATE", ca.der);
  const row: CaTable = {
    id: ca.id,
    role: roleOf(ca.id),
    subject: nameToString(cert.subject),
    issuer: nameToString(cert.issuer),
    serial: cert.serialHex,
    fingerprint_sha256: sha256Fingerprint(ca.der),
    not_before: cert.notBefore.toISOString(),
    not_after: cert.notAfter.toISOString(),
    key_type: describeKey(createPublicKey({ key: cert.spki, format: "der", type: "spki" })),
    certificate_pem: pem,
    ...(ca.anchorDer ? { anchor_pem: toPem("CERTIFICATE", ca.anchorDer) } : {}),
    key_file: ca.keyFile,
    status: "active",
    created_at: now.toISOString(),
  };
  await tx.cas.create(row, {
    serial: cert.serialHex,
    issuer_ca: ca.issuerId,
    kind: "ca",
    subject_id: ca.id,
    device_id: null,
    not_before: row.not_before,
    not_after: row.not_after,
    fingerprint_sha256: row.fingerprint_sha256,
    der: ca.der,
    status: "valid",
    revoked_at: null,
    revocation_reason: null,
    created_at: row.created_at,
  });
  await tx.audit.append([
    {
      actor,
      action: "ca.create",
      subject: `ca:${ca.id}`,
      details: {
        serial: row.serial,
        subject: row.subject,
        issuer: ca.issuerId,
        not_after: row.not_after,
        // Lets a listener of the feed (CertificateStatus) tell the CA's certificate from a forgery with its serial.
        fingerprint_sha256: row.fingerprint_sha256,
        key_type: row.key_type,
        key_online: ca.keyFile !== null,
        ...(ca.anchorDer
          ? { anchor: { serial: parseCertificate(ca.anchorDer).serialHex, fingerprint_sha256: sha256Fingerprint(ca.anchorDer) } }
          : {}),
      },
      at: now,
    },
  ]);
}

/** cert.pem, chain.pem (this CA then the root) and, when given, the encrypted key.pem. */
export function writeCaFiles(dir: string, id: string, der: Buffer, rootPem: string, key?: KeyObject, passphrase?: string): void {
  const certPath = join(dir, layout.caCert(id));
  ensurePrivateDir(dirname(certPath));
  const pem = toPem("CERTIFICATE", der);
  writeFileAtomic(certPath, pem);
  if (id !== "root") writeFileAtomic(join(dir, layout.caChain(id)), pem + rootPem);
  if (key) writePrivateKey(join(dir, layout.caKey(id)), key, passphrase);
}

export interface CaSummary {
  id: string;
  role: string;
  subject: string;
  issuer: string;
  serial: string;
  fingerprintSha256: string;
  notBefore: string;
  notAfter: string;
  keyType: string;
  status: string;
  keyOnline: boolean;
}

export async function listCas(fleet: FleetServices): Promise<CaSummary[]> {
  const order = ["root", "devices", "services", "operators", ROS2_CAS.identity, ROS2_CAS.permissions];
  const rows = await fleet.store.ops.cas.list();
  rows.sort((a, b) => (order.indexOf(a.id) + 1 || 99) - (order.indexOf(b.id) + 1 || 99) || a.id.localeCompare(b.id));
  return rows.map((r) => ({
    id: r.id,
    role: r.role,
    subject: r.subject,
    issuer: r.issuer,
    serial: r.serial,
    fingerprintSha256: r.fingerprint_sha256,
    notBefore: r.not_before,
    notAfter: r.not_after,
    keyType: r.key_type,
    status: r.status,
    keyOnline: r.key_file !== null && existsSync(fleet.path(r.key_file)),
  }));
}

/** Creates a key for a new intermediate and signs it with the root when the root key is here. */
export async function createIntermediate(
  fleet: FleetServices,
  id: string,
  lifetime: string,
  actor: string,
  now: Date,
): Promise<{ status: "created" } | { status: "pending"; requestFile: string }> {
  if (await fleet.store.ops.cas.get(id)) throw new CaExists(id);
  const role = roleOf(id) as IntermediateRole;
  const key = generateKey(intermediateKeyType(fleet.config.keys.type as CaKeyType, role));
  const subject = caSubjectFor(fleet.config.fleet.name, id);
  let root;
  try {
    root = await fleet.issuingCa("root");
  } catch (e) {
    if (!(e instanceof CaKeyOffline)) throw e;
    // Offline root: keep the new key here and hand the offline machine a request to sign.
    writePrivateKey(fleet.path(layout.caKey(id)), key, fleet.passphrase());
    const requestFile = writeCeremonyRequest(fleet, id, role, subject, key, lifetime);
    await fleet.store.transaction((tx) =>
      tx.audit.append([{ actor, action: "ca.request", subject: `ca:${id}`, details: { request: requestFile }, at: now }]),
    );
    await checkpointAfter(fleet, actor);
    return { status: "pending", requestFile };
  }
  const spki = publicSpki(key);
  const issued = buildIntermediateCertificate(root, {
    subject: caName(subject),
    spki,
    subjectPublicKey: subjectPublicKeyOf(spki),
    now,
    lifetimeMs: parseDuration(lifetime),
    constrainToDomain: isDomainConstrained(role) ? fleet.domain : undefined,
    signsDocuments: signsDocuments(role),
    keyPurposes: intermediateKeyPurposes(role),
  });
  const { root: rootPem } = await fleet.chainPem("root");
  writeCaFiles(fleet.dir, id, issued.der, rootPem, key, fleet.passphrase());
  const anchorDer = isRos2Ca(id) ? ros2TrustAnchor(id, issued.der, key) : undefined;
  if (anchorDer) writeCaAnchor(fleet.dir, id, anchorDer);
  await fleet.store.transaction((tx) =>
    recordCa(tx, { id, der: issued.der, keyFile: layout.caKey(id), issuerId: "root", ...(anchorDer ? { anchorDer } : {}) }, actor, now),
  );
  await checkpointAfter(fleet, actor);
  return { status: "created" };
}

export interface CreateLocalCaRequest {
  name: string;
  validity?: string;
  actor: string;
}

export async function createLocalCa(fleet: FleetServices, req: CreateLocalCaRequest) {
  if (!LOCAL_CA_NAME.test(req.name))
    throw new InvalidArgument(`invalid local CA name "${req.name}": 1-32 characters a-z 0-9 - starting with a letter or digit`);
  const validity = req.validity ?? fleet.config.validity.local_ca;
  try {
    parseDuration(validity);
  } catch (e) {
    throw new InvalidArgument((e as Error).message);
  }
  return createIntermediate(fleet, localCaId(req.name), validity, req.actor, fleet.clock.now());
}

/** Active CAs by id, each with its PEM, that `include` admits. */
async function activeCas(fleet: FleetServices, include: (id: string) => boolean): Promise<{ id: string; pem: string }[]> {
  return (await fleet.store.ops.cas.list())
    .filter((c) => c.status === "active" && include(c.id))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((c) => ({ id: c.id, pem: c.certificate_pem }));
}

/** PEMs of the root and the active CAs that issue device certificates (trust set for device clients). */
export async function deviceClientCas(fleet: FleetServices): Promise<string[]> {
  return (await activeCas(fleet, (id) => id === "root" || id === "devices" || id.startsWith("local-"))).map((c) => c.pem);
}

/**
 * The CAs whose certificates may open a gateway session: the root and the standard intermediates
 * (devices, services, operators), and local (factory) CAs only when `allowLocalCas`.
 */
export async function gatewayClientCas(fleet: FleetServices, allowLocalCas: boolean): Promise<{ id: string; pem: string }[]> {
  const standard = new Set(["root", "devices", "services", "operators"]);
  return activeCas(fleet, (id) => standard.has(id) || (allowLocalCas && id.startsWith("local-")));
}
