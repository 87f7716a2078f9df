// Enrollment and renewal decisions: which credential may obtain which device certificate.
// Transports hand in what they saw (token, TLS client certificate, CSR, peer address) and get a
// DeviceCertificate, a pending approval, or a typed error.
import { createPublicKey, randomBytes, randomUUID, verify, createHash } from "node:crypto";
import { appendAudit } from "../audit/log.js";
import { parseDuration } from "../config/duration.js";
import type { CertificateTable, EnrollmentRequestTable } from "../store/schema.js";
import { parseCertificate, subjectAltNameUris, type ParsedCertificate } from "../x509/certificate.js";
import { CsrError, csrDer, decodeCsr } from "../x509/csr.js";
import { commonNameOf } from "../x509/name.js";
import { fromPem, toPem } from "../x509/pem.js";
import { deviceSpiffeId } from "../x509/profiles.js";
import {
  AuthenticationFailed,
  ApprovalAlreadyIssued,
  CsrInvalid,
  DeviceNotActive,
  InvalidArgument,
  NotPermitted,
  ReEnrollRequired,
  TooManyRequests,
} from "./errors.js";
import type { Fleet } from "./fleet.js";
import { assertDeviceId, certificateKey, issueForKey, keyFromCsr, type DeviceCertificate, type SubjectKey } from "./issuance.js";
import { checkToken } from "./tokens.js";
import type { Claim } from "./claims.js";

/** Where a request came from, for audit events (e.g. "est 10.0.0.7"). */
export interface RequestSource {
  via: string;
  address?: string;
}

function context(source: RequestSource, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { via: source.via, ...(source.address ? { address: source.address } : {}), ...extra };
}

function requireProvisioner(fleet: Fleet, name: "token" | "factory" | "approval"): void {
  if (!fleet.config.enrollment[name]) throw new NotPermitted("provisioner-disabled", `${name} enrollment is switched off in fleetpki.yaml (enrollment.${name})`);
}

// ---- token ------------------------------------------------------------------------------

export async function enrollWithToken(fleet: Fleet, req: { deviceId: string; token: string; csr: Buffer | string; source: RequestSource }): Promise<DeviceCertificate> {
  requireProvisioner(fleet, "token");
  assertDeviceId(req.deviceId);
  const now = new Date();
  // The token is read while the CSR signature is checked on the thread pool; a wrong token still
  // costs no CA signature, and the CSR's own error wins only when the token is good.
  const [tokenChecked, csrChecked] = await Promise.allSettled([checkToken(fleet, req.deviceId, req.token, now), keyFromCsr(req.csr)]);
  if (tokenChecked.status === "rejected") throw tokenChecked.reason;
  if (csrChecked.status === "rejected") throw csrChecked.reason;
  return issueForKey(fleet, { deviceId: req.deviceId, actor: `token:${req.deviceId}`, now, context: context(req.source, { provisioner: "token" }), claim: tokenChecked.value }, csrChecked.value);
}

// ---- presented certificates -------------------------------------------------------------

/** What the TLS layer saw: the client's leaf certificate and whether its chain verified to the root. */
export interface ClientCertificate {
  der: Buffer;
  /** OpenSSL's verdict, e.g. undefined (verified), "CERT_HAS_EXPIRED", "UNABLE_TO_GET_ISSUER_CERT". */
  verificationError?: string;
}

interface KnownCertificate {
  parsed: ParsedCertificate;
  row: CertificateTable;
  deviceId: string;
}

/** A certificate is ours only if its exact bytes were recorded at issuance. */
async function lookupCertificate(fleet: Fleet, der: Buffer): Promise<KnownCertificate> {
  let parsed: ParsedCertificate;
  try {
    parsed = parseCertificate(der);
  } catch {
    throw new AuthenticationFailed("certificate-unknown", "the client certificate cannot be parsed");
  }
  const row = await fleet.store.db.selectFrom("certificates").selectAll().where("serial", "=", parsed.serialHex).executeTakeFirst();
  if (!row || !Buffer.from(row.der).equals(der) || !row.device_id)
    throw new AuthenticationFailed("certificate-unknown", "the client certificate was not issued to a device of this fleet");
  const expected = deviceSpiffeId(fleet.domain, row.device_id);
  if (!subjectAltNameUris(parsed).includes(expected)) throw new AuthenticationFailed("certificate-unknown", "the client certificate does not carry its device identity");
  return { parsed, row, deviceId: row.device_id };
}

function assertNotRevoked(known: KnownCertificate): void {
  if (known.row.status !== "valid")
    throw new NotPermitted("certificate-revoked", `certificate ${known.row.serial} of device "${known.deviceId}" is ${known.row.status === "hold" ? "on hold" : "revoked"}`);
}

async function assertIssuerActive(fleet: Fleet, caId: string): Promise<void> {
  const ca = await fleet.caRecord(caId);
  if (ca.status !== "active") throw new NotPermitted("certificate-revoked", `the issuing CA ${caId} is ${ca.status}`);
}

function assertVerified(cert: ClientCertificate, what: string): void {
  if (cert.verificationError === "CERT_HAS_EXPIRED")
    throw new NotPermitted("certificate-expired", `${what} has expired; renew with /api/v1/renew/expired within the grace period, or re-enroll`);
  if (cert.verificationError) throw new AuthenticationFailed("certificate-unknown", `${what} does not verify against the fleet root (${cert.verificationError})`);
}

// ---- factory ----------------------------------------------------------------------------

export async function enrollWithFactoryCertificate(
  fleet: Fleet,
  req: { clientCertificate: ClientCertificate; deviceId?: string; csr: Buffer | string; source: RequestSource },
): Promise<DeviceCertificate> {
  requireProvisioner(fleet, "factory");
  assertVerified(req.clientCertificate, "the factory certificate");
  const known = await lookupCertificate(fleet, req.clientCertificate.der);
  if (known.row.kind !== "factory") throw new NotPermitted("wrong-issuer", "only certificates from a local (factory) CA can enroll; operational certificates renew at /renew");
  assertNotRevoked(known);
  await assertIssuerActive(fleet, known.row.issuer_ca);
  if (req.deviceId !== undefined && req.deviceId !== known.deviceId)
    throw new NotPermitted("identity-mismatch", `the factory certificate belongs to "${known.deviceId}", not "${req.deviceId}"`);
  const key = await keyFromCsr(req.csr);
  return issueForKey(fleet, { deviceId: known.deviceId, actor: `factory:${known.row.issuer_ca}`, context: context(req.source, { provisioner: "factory", factory_serial: known.row.serial }) }, key);
}

// ---- renewal ----------------------------------------------------------------------------

export async function renewWithCertificate(fleet: Fleet, req: { clientCertificate: ClientCertificate; csr: Buffer | string; source: RequestSource }): Promise<DeviceCertificate> {
  assertVerified(req.clientCertificate, "the client certificate");
  const known = await lookupCertificate(fleet, req.clientCertificate.der);
  if (known.row.kind !== "device") throw new NotPermitted("wrong-issuer", "only operational device certificates renew; factory certificates enroll");
  assertNotRevoked(known);
  await assertIssuerActive(fleet, known.row.issuer_ca);
  const key = await keyFromCsr(req.csr);
  return issueForKey(fleet, { deviceId: known.deviceId, actor: `device:${known.deviceId}`, context: context(req.source, { renews: known.row.serial }) }, key);
}

const NONCE_LIFETIME_MS = 5 * 60_000;
export const EXPIRED_RENEWAL_LABEL = "fleetpki-renew-expired/v1";

/** The bytes a device signs with its expired certificate's key (docs/enrollment.md). */
export function expiredRenewalMessage(deviceId: string, nonce: string, csrDer: Buffer): Buffer {
  return Buffer.from(`${EXPIRED_RENEWAL_LABEL}\n${deviceId}\n${nonce}\n${createHash("sha256").update(csrDer).digest("hex")}`, "utf8");
}

export async function renewalChallenge(fleet: Fleet, deviceId: string): Promise<{ nonce: string; expiresAt: Date }> {
  assertDeviceId(deviceId);
  const now = new Date();
  const nonce = randomBytes(32).toString("base64url");
  const expiresAt = new Date(now.getTime() + NONCE_LIFETIME_MS);
  await fleet.store.transaction(async (tx) => {
    // Old challenges are useless after expiry; keep the table small.
    await tx.deleteFrom("renewal_nonces").where("expires_at", "<", new Date(now.getTime() - 3_600_000).toISOString()).execute();
    const open = await tx.selectFrom("renewal_nonces").select((eb) => eb.fn.countAll().as("n")).where("device_id", "=", deviceId).where("used_at", "is", null).executeTakeFirstOrThrow();
    if (Number(open.n) >= 20) throw new TooManyRequests(`too many open renewal challenges for "${deviceId}"`, 60);
    await tx.insertInto("renewal_nonces").values({ nonce, device_id: deviceId, expires_at: expiresAt.toISOString(), used_at: null }).execute();
  });
  return { nonce, expiresAt };
}

function hashFor(key: ReturnType<typeof createPublicKey>): string | null {
  if (key.asymmetricKeyType === "ed25519") return null;
  if (key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "secp384r1") return "sha384";
  return "sha256";
}

export async function renewExpired(
  fleet: Fleet,
  req: { certificate: string | Buffer; csr: Buffer | string; nonce: string; signature: string; source: RequestSource },
): Promise<DeviceCertificate> {
  let der: Buffer;
  try {
    der = typeof req.certificate === "string" ? fromPem(req.certificate, ["CERTIFICATE"]) : req.certificate;
  } catch (e) {
    throw new InvalidArgument(`certificate: ${(e as Error).message}`);
  }
  const known = await lookupCertificate(fleet, der);
  if (known.row.kind !== "device") throw new NotPermitted("wrong-issuer", "only operational device certificates renew");
  const now = new Date();
  if (known.row.status !== "valid")
    throw new ReEnrollRequired(`certificate ${known.row.serial} was ${known.row.status === "hold" ? "put on hold" : "revoked"}; it cannot renew after expiry: re-enroll`);
  const graceMs = parseDuration(fleet.config.renewal.after_expiry_grace);
  if (now.getTime() > known.parsed.notAfter.getTime() + graceMs)
    throw new ReEnrollRequired(`certificate ${known.row.serial} expired at ${known.parsed.notAfter.toISOString()}, beyond the ${fleet.config.renewal.after_expiry_grace} renewal grace: re-enroll`);
  const key: SubjectKey = await keyFromCsr(req.csr);
  const parsedCsrDer = csrDer(req.csr);
  const publicKey = certificateKey(known.parsed.spki, known.row.serial);
  let ok = false;
  try {
    ok = verify(hashFor(publicKey), expiredRenewalMessage(known.deviceId, req.nonce, parsedCsrDer), publicKey, Buffer.from(req.signature, "base64"));
  } catch {
    ok = false;
  }
  if (!ok) throw new AuthenticationFailed("proof-invalid", "the proof of possession does not verify with the expired certificate's key");
  const claim: Claim = { kind: "renewal-nonce", deviceId: known.deviceId, nonce: req.nonce, at: now.toISOString() };
  await assertIssuerActive(fleet, known.row.issuer_ca);
  return issueForKey(fleet, { deviceId: known.deviceId, actor: `device:${known.deviceId}`, now, context: context(req.source, { renews: known.row.serial, after_expiry: true }), claim }, key);
}

// ---- approval ---------------------------------------------------------------------------

export type ApprovalOutcome = { status: "pending"; requestId: string; retryAfterSeconds: number } | { status: "issued"; certificate: DeviceCertificate };

const POLL_SECONDS = 10;
const MAX_PENDING = 1000;


export async function enrollByApproval(
  fleet: Fleet,
  req: { deviceId: string; csr: Buffer | string; source: RequestSource; retried?: boolean },
): Promise<ApprovalOutcome> {
  requireProvisioner(fleet, "approval");
  assertDeviceId(req.deviceId);
  const key = await keyFromCsr(req.csr);
  const csr = csrDer(req.csr);
  const latest = await fleet.store.db
    .selectFrom("enrollment_requests")
    .selectAll()
    .where("device_id", "=", req.deviceId)
    .orderBy("created_at", "desc")
    .limit(1)
    .executeTakeFirst();
  const sameKey = latest ? (await keyFromCsr(Buffer.from(latest.csr))).spki.equals(key.spki) : false;

  if (latest?.status === "denied") throw new NotPermitted("enrollment-denied", `enrollment of "${req.deviceId}" was denied by an operator`);
  if (latest?.status === "approved") {
    if (!sameKey) throw new NotPermitted("key-mismatch", `the approved request for "${req.deviceId}" was for another key`);
    const claim: Claim = { kind: "approval", requestId: latest.id };
    try {
      const certificate = await issueForKey(fleet, { deviceId: req.deviceId, actor: `approval:${latest.decided_by}`, context: context(req.source, { provisioner: "approval", request: latest.id }), claim }, key);
      return { status: "issued", certificate };
    } catch (e) {
      // A concurrent poll collected the approval first: answer with the certificate it got.
      if (e instanceof ApprovalAlreadyIssued && !req.retried) return enrollByApproval(fleet, { ...req, retried: true });
      throw e;
    }
  }
  if (latest?.status === "pending" && sameKey) return { status: "pending", requestId: latest.id, retryAfterSeconds: POLL_SECONDS };
  if (latest?.status === "issued" && sameKey && latest.certificate_serial) {
    // A poll repeated after the answer was lost gets the same certificate again.
    const row = await fleet.store.db.selectFrom("certificates").selectAll().where("serial", "=", latest.certificate_serial).executeTakeFirstOrThrow();
    // It may have been committed by a concurrent poll whose sync is still running.
    await fleet.store.durable();
    const { chain, root } = await fleet.chainPem(row.issuer_ca);
    const der = Buffer.from(row.der);
    return {
      status: "issued",
      certificate: { deviceId: req.deviceId, serial: row.serial, der, certificatePem: toPem("CERTIFICATE", der), chainPem: chain, caPem: root, notBefore: new Date(row.not_before), notAfter: new Date(row.not_after), keyType: key.keyType },
    };
  }

  // New request (or a new key replacing a pending one).
  const now = new Date().toISOString();
  const row: EnrollmentRequestTable = {
    id: randomUUID(),
    device_id: req.deviceId,
    csr,
    status: "pending",
    source: [req.source.via, req.source.address].filter(Boolean).join(" "),
    created_at: now,
    decided_at: null,
    decided_by: null,
    certificate_serial: null,
  };
  await fleet.store.transaction(async (tx) => {
    const pending = await tx.selectFrom("enrollment_requests").select((eb) => eb.fn.countAll().as("n")).where("status", "=", "pending").executeTakeFirstOrThrow();
    if (Number(pending.n) >= MAX_PENDING) throw new TooManyRequests("too many enrollment requests are waiting for approval", 60);
    await tx.updateTable("enrollment_requests").set({ status: "denied", decided_at: now, decided_by: "superseded" }).where("device_id", "=", req.deviceId).where("status", "=", "pending").execute();
    await tx.insertInto("enrollment_requests").values(row).execute();
    await appendAudit(tx, [{ actor: `approval:${req.deviceId}`, action: "enrollment.request", subject: `device:${req.deviceId}`, details: { request: row.id, source: row.source, key_type: key.keyType } }]);
  });
  return { status: "pending", requestId: row.id, retryAfterSeconds: POLL_SECONDS };
}

export interface PendingRequest {
  id: string;
  deviceId: string;
  source: string;
  createdAt: string;
}

export async function listPendingRequests(fleet: Fleet): Promise<PendingRequest[]> {
  const rows = await fleet.store.db.selectFrom("enrollment_requests").select(["id", "device_id", "source", "created_at"]).where("status", "=", "pending").orderBy("created_at").execute();
  return rows.map((r) => ({ id: r.id, deviceId: r.device_id, source: r.source, createdAt: r.created_at }));
}

/** Approves or denies the device's pending request; approval registers an unknown device. */
export async function decideRequest(fleet: Fleet, req: { deviceId: string; approve: boolean; actor: string }): Promise<void> {
  assertDeviceId(req.deviceId);
  const now = new Date().toISOString();
  await fleet.store.transaction(async (tx) => {
    const pending = await tx.selectFrom("enrollment_requests").select("id").where("device_id", "=", req.deviceId).where("status", "=", "pending").executeTakeFirst();
    if (!pending) throw new InvalidArgument(`no pending enrollment request for "${req.deviceId}"`);
    if (req.approve) {
      const device = await tx.selectFrom("devices").select("status").where("id", "=", req.deviceId).executeTakeFirst();
      if (device && device.status !== "active") throw new DeviceNotActive(req.deviceId, device.status);
      if (!device) {
        await tx.insertInto("devices").values({ id: req.deviceId, group_name: null, labels: "{}", status: "active", created_at: now, updated_at: now }).execute();
        await appendAudit(tx, [{ actor: req.actor, action: "device.add", subject: `device:${req.deviceId}`, details: { via: "approval" } }]);
      }
    }
    await tx.updateTable("enrollment_requests").set({ status: req.approve ? "approved" : "denied", decided_at: now, decided_by: req.actor }).where("id", "=", pending.id).execute();
    await appendAudit(tx, [{ actor: req.actor, action: req.approve ? "enrollment.approve" : "enrollment.deny", subject: `device:${req.deviceId}`, details: { request: pending.id } }]);
  });
}

/** EST approval requests carry no credentials: the device id is the CSR's commonName. */
export function requestedDeviceId(csr: Buffer | string): string {
  let cn: string | undefined;
  try {
    cn = commonNameOf(decodeCsr(csr).subject);
  } catch (e) {
    if (e instanceof CsrError) throw new CsrInvalid(e.reason, e.message);
    throw e;
  }
  if (!cn) throw new InvalidArgument("the CSR has no commonName to take the device id from");
  assertDeviceId(cn);
  return cn;
}
