// Service identities: the fleet's backends (telemetry readers, command senders) connect to the
// gateway as TLS clients with a certificate from the services CA naming
// spiffe://<domain>/service/<name>. A service has no table of its own: it is its certificates of
// kind "service" whose subject_id is its name. It exists while one of them is not revoked;
// `removeService` revokes them all (cessationOfOperation), and the name may then be added again.
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseDuration } from "../../config/duration.js";
import { ensurePrivateDir, writeFileAtomic } from "../../keys/files.js";
import { generateKey, privateKeyPem, publicSpki } from "../../keys/keys.js";
import type { SubjectCertificateSummary } from "../../store/operations/certificates.js";
import type { Operations } from "../../store/operations.js";
import { subjectPublicKeyOf } from "../../x509/certificate.js";
import { toPem } from "../../x509/pem.js";
import { serviceSpiffeId } from "../../x509/profiles.js";
import { checkpointAfter } from "../audit-checkpoints.js";
import { InvalidArgument, ServiceExists, UnknownService } from "../errors.js";
import { assertModulusNotPrime, keyFromCsr } from "../issue/issuance.js";
import { certificateRow, issueAuditDetails, issuedRecord } from "../issue/records.js";
import type { FleetServices } from "../services.js";
import { revokeIdentityCertificates, type StatusChange } from "../status/revocation.js";

/** As device ids: the name is a SPIFFE path segment, the certificate's CN and a prefix of MQTT client ids. */
export const SERVICE_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** The files written for a service, named as the agent names a device's, so the same commands use them. */
export const SERVICE_FILES = { key: "key.pem", cert: "cert.pem", chain: "chain.pem", ca: "ca.pem" } as const;

const REMOVE_REASON = "cessationOfOperation";

export function assertServiceName(name: string): void {
  if (!SERVICE_NAME_PATTERN.test(name))
    throw new InvalidArgument(
      `invalid service name ${JSON.stringify(name)}: use 1-63 characters a-z 0-9 _ - starting with a letter or digit`,
    );
}

export interface AddServiceRequest {
  name: string;
  /** Directory for key.pem (0600), cert.pem, chain.pem and ca.pem; created 0700 when missing (an existing one keeps its mode). */
  outDir: string;
  /** Required when the service exists: a new key and certificate (the earlier ones stay valid until they expire). */
  renew?: boolean;
  actor: string;
}

export interface AddedService {
  name: string;
  identity: string;
  serial: string;
  notAfter: Date;
  dir: string;
  files: { key: string; cert: string; chain: string; ca: string };
  renewed: boolean;
}

/** A service's certificates that keep it in existence: not revoked (expired ones included, so renewal needs --renew). */
function live(rows: readonly SubjectCertificateSummary[]): SubjectCertificateSummary[] {
  return rows.filter((r) => r.status !== "revoked");
}

async function certificatesOf(ops: Operations, name: string): Promise<SubjectCertificateSummary[]> {
  return ops.certificates.ofKind("service", name);
}

function checkExistence(name: string, rows: readonly SubjectCertificateSummary[], renew: boolean): void {
  const exists = live(rows).length > 0;
  if (exists && !renew) throw new ServiceExists(name);
  if (!exists && renew)
    throw new InvalidArgument(
      `service "${name}" has no certificate to renew${rows.length > 0 ? " (it was removed)" : ""}; add it without --renew`,
    );
}

/**
 * Issues a service certificate (services CA, clientAuth only) for a key generated here, records and
 * audits it (`certificate.issue` of kind "service", then `service.add`), then writes the files.
 * Everything that can be refused (name, existence, output directory) is refused before anything is
 * written or recorded.
 */
export async function addService(fleet: FleetServices, req: AddServiceRequest): Promise<AddedService> {
  assertServiceName(req.name);
  const renew = req.renew === true;
  const dir = resolve(req.outDir);
  const files = {
    key: join(dir, SERVICE_FILES.key),
    cert: join(dir, SERVICE_FILES.cert),
    chain: join(dir, SERVICE_FILES.chain),
    ca: join(dir, SERVICE_FILES.ca),
  };
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new InvalidArgument(`--out ${req.outDir} exists and is not a directory`);
  // A fresh service never replaces someone's key; a renewal replaces the service's own files.
  if (!renew && existsSync(files.key))
    throw new InvalidArgument(`${files.key} already exists; choose another --out directory (or give --renew to replace it)`);
  checkExistence(req.name, await certificatesOf(fleet.store.ops, req.name), renew);

  const key = generateKey("p256");
  const spki = publicSpki(key);
  const subjectKey = { spki, subjectPublicKey: subjectPublicKeyOf(spki) };
  const { issued, identity, chain, root } = await issueAndRecord(fleet, req.name, renew, subjectKey, req.actor, () => {
    // The directory first: a path that cannot be created fails here, before anything is recorded. An
    // existing one keeps its mode (it may be the backend's own, which its user must still enter): the key is 0600.
    if (!existsSync(dir)) ensurePrivateDir(dir);
  });
  // The key before the certificate: a reader never pairs the new certificate with the old key.
  writeFileAtomic(files.key, privateKeyPem(key), 0o600);
  writeFileAtomic(files.cert, toPem("CERTIFICATE", issued.der));
  writeFileAtomic(files.chain, chain);
  writeFileAtomic(files.ca, root);
  await checkpointAfter(fleet, req.actor);
  return { name: req.name, identity, serial: issued.serialHex, notAfter: issued.notAfter, dir, files, renewed: renew };
}

/**
 * Signs a service certificate for `key` and records it with its audit events (`certificate.issue`
 * of kind "service", then `service.add`) in one transaction, the existence check repeated inside it.
 * `beforeRecord` runs after signing, before anything is recorded (a failure there records nothing).
 */
async function issueAndRecord(
  fleet: FleetServices,
  name: string,
  renew: boolean,
  key: { spki: Buffer; subjectPublicKey: Buffer },
  actor: string,
  beforeRecord: () => void = () => {},
) {
  const template = await fleet.leafTemplate("services", "service");
  const { chain, root } = await fleet.chainPem("services");
  const lifetimeMs = parseDuration(fleet.config.validity.service);
  const identity = serviceSpiffeId(fleet.domain, name);
  const now = fleet.clock.now();
  const issued = template.issue(name, [{ uri: identity }], { ...key, now, lifetimeMs });
  const record = issuedRecord(issued, { issuerCa: "services", kind: "service", subjectId: name, deviceId: null });
  beforeRecord();
  await fleet.store.transaction(async (tx) => {
    const rows = await certificatesOf(tx, name);
    checkExistence(name, rows, renew); // another process may have added it meanwhile
    await tx.cas.recordOwnCertificate(certificateRow(record, now));
    const subject = `service:${name}`;
    await tx.audit.append([
      { actor, action: "certificate.issue", subject, details: issueAuditDetails(record, { subject_id: name }), at: now },
      {
        actor,
        action: "service.add",
        subject,
        details: { serial: record.issued.serialHex, identity, renew, previous: live(rows).map((r) => r.serial) },
        at: now,
      },
    ]);
  });
  return { issued, identity, chain, root };
}

export interface ServiceCertificate {
  name: string;
  identity: string;
  serial: string;
  notAfter: Date;
  certificatePem: string;
  /** The services CA (without the root). */
  chainPem: string;
  caPem: string;
}

/**
 * A service certificate for the key of a CSR made elsewhere (the admin API: no private key travels).
 * The CSR is verified and its key passes the key policy, as in enrollment; only its key is used.
 */
export async function addServiceFromCsr(
  fleet: FleetServices,
  req: { name: string; csr: string; renew?: boolean; actor: string },
): Promise<ServiceCertificate> {
  assertServiceName(req.name);
  const renew = req.renew === true;
  const key = await keyFromCsr(req.csr);
  await assertModulusNotPrime(key);
  checkExistence(req.name, await certificatesOf(fleet.store.ops, req.name), renew);
  const { issued, identity, chain, root } = await issueAndRecord(fleet, req.name, renew, key, req.actor);
  await checkpointAfter(fleet, req.actor);
  return {
    name: req.name,
    identity,
    serial: issued.serialHex,
    notAfter: issued.notAfter,
    certificatePem: toPem("CERTIFICATE", issued.der),
    chainPem: chain,
    caPem: root,
  };
}

/**
 * Revokes every certificate of the service that is not revoked yet (cessationOfOperation), each as
 * its own `certificate.revoke` event (so CRLs, OCSP and the gateway follow as for any revocation),
 * then `service.remove`; one transaction.
 */
export async function removeService(fleet: FleetServices, req: { name: string; actor: string }): Promise<StatusChange> {
  assertServiceName(req.name);
  const now = fleet.clock.now();
  const change = await fleet.store.transaction(async (tx) => {
    const rows = await certificatesOf(tx, req.name);
    if (rows.length === 0) throw new UnknownService(req.name);
    if (live(rows).length === 0) throw new InvalidArgument(`service "${req.name}" is already removed (every certificate of it is revoked)`);
    const { serials, cas, events } = await revokeIdentityCertificates(tx, rows, {
      name: req.name,
      reason: REMOVE_REASON,
      actor: req.actor,
      now,
    });
    await tx.audit.append([
      ...events,
      {
        actor: req.actor,
        action: "service.remove",
        subject: `service:${req.name}`,
        details: { reason: REMOVE_REASON, serials, cas },
        at: now,
      },
    ]);
    return { serials, cas };
  });
  await checkpointAfter(fleet, req.actor);
  return change;
}

export interface ServiceSummary {
  name: string;
  identity: string;
  /** The newest certificate's. */
  serial: string;
  notAfter: string;
  /** valid | expired | revoked (of the newest certificate; a removed service's is revoked). */
  status: "valid" | "expired" | "revoked";
  /** Certificates issued to it so far. */
  certificates: number;
}

/** Every service ever added, by name, with its newest certificate. */
export async function listServices(fleet: FleetServices): Promise<ServiceSummary[]> {
  const now = fleet.clock.now().toISOString();
  const byName = new Map<string, SubjectCertificateSummary[]>();
  for (const row of await fleet.store.ops.certificates.ofKind("service")) {
    let rows = byName.get(row.subject_id);
    if (!rows) byName.set(row.subject_id, (rows = []));
    rows.push(row);
  }
  return [...byName].map(([name, rows]) => {
    const newest = rows[0]!; // ordered newest first
    const status = newest.status === "revoked" ? "revoked" : newest.not_after <= now ? "expired" : "valid";
    return {
      name,
      identity: serviceSpiffeId(fleet.domain, name),
      serial: newest.serial,
      notAfter: newest.not_after,
      status,
      certificates: rows.length,
    };
  });
}
