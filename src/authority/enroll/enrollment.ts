// Enrollment and renewal decisions: which credential may obtain which device certificate.
// Transports hand in what they saw (token, TLS client certificate, CSR, peer address) and get a
// DeviceCertificate, a pending approval, or a typed error.
import { createPublicKey, randomBytes, randomUUID, verify, createHash } from "node:crypto";
import { BlockList, isIP } from "node:net";
import { type AuditEvent } from "../../audit/log.js";
import { parseDuration } from "../../config/duration.js";
import type { Transaction as SqliteTransaction } from "better-sqlite3";
import type { CertificateTable, EnrollmentRequestTable, FactoryEnrollmentTable } from "../../store/schema.js";
import { preparedStatement, type Db, type NativeDb } from "../../store/store.js";
import { parseCertificate, subjectAltNameUris, type ParsedCertificate } from "../../x509/certificate.js";
import { CsrError, csrDer, decodeCsr } from "../../x509/csr.js";
import { DerError } from "../../der/reader.js";
import { commonNameOf } from "../../x509/name.js";
import { fromPem } from "../../x509/pem.js";
import { deviceSpiffeId } from "../../x509/profiles.js";
import {
  AuthenticationFailed,
  ApprovalAlreadyIssued,
  CertificateAlreadyRenewed,
  CsrInvalid,
  DeviceNotActive,
  InvalidArgument,
  NotPermitted,
  ReEnrollRequired,
  TooManyRequests,
  UnknownDevice,
} from "../errors.js";
import type { FleetServices } from "../services.js";
import {
  assertDeviceId,
  certificateKey,
  issueForKey,
  keyFromCsr,
  recordedDeviceCertificate,
  type DeviceCertificate,
  type SubjectKey,
} from "../issue/issuance.js";
import { certificateOfSpentToken, checkToken } from "./tokens.js";
import { factoryAlreadyEnrolled, type IssueCondition } from "../issue/conditions.js";

/** Where a request came from, for audit events (e.g. "est 10.0.0.7"). */
export interface RequestSource {
  via: string;
  address?: string;
}

function context(source: RequestSource, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { via: source.via, ...(source.address ? { address: source.address } : {}), ...extra };
}

function requireProvisioner(fleet: FleetServices, name: "token" | "factory" | "approval"): void {
  if (!fleet.config.enrollment[name])
    throw new NotPermitted("provisioner-disabled", `${name} enrollment is switched off in fleetpki.yaml (enrollment.${name})`);
}

// ---- token ------------------------------------------------------------------------------

export async function enrollWithToken(
  fleet: FleetServices,
  req: { deviceId: string; token: string; csr: Buffer | string; source: RequestSource; credentialFirst?: boolean },
): Promise<DeviceCertificate> {
  requireProvisioner(fleet, "token");
  assertDeviceId(req.deviceId);
  const now = new Date();
  // The token is read while the CSR signature is checked on the thread pool; a wrong token still
  // costs no CA signature, and the CSR's own error wins only when the token is good. With
  // credentialFirst (a source over its failure limit) a wrong token costs no CSR check either.
  const tokenCheck = checkToken(fleet, req.deviceId, req.token, now);
  if (req.credentialFirst)
    await tokenCheck.catch((e: unknown) => {
      if (!isSpentToken(e)) throw e;
    });
  const [tokenChecked, csrChecked] = await Promise.allSettled([tokenCheck, keyFromCsr(req.csr)]);
  if (tokenChecked.status === "rejected") {
    if (isSpentToken(tokenChecked.reason) && csrChecked.status === "fulfilled")
      return retryWithSpentToken(fleet, req, csrChecked.value, tokenChecked.reason);
    throw tokenChecked.reason;
  }
  if (csrChecked.status === "rejected") throw csrChecked.reason;
  try {
    // The token id lets `audit verify` replay which token each enrollment spent.
    const ctx = context(req.source, { provisioner: "token", token_id: tokenChecked.value.tokenId });
    const issue = { deviceId: req.deviceId, actor: `token:${req.deviceId}`, now, context: ctx, condition: tokenChecked.value };
    return await issueForKey(fleet, issue, csrChecked.value);
  } catch (e) {
    // A concurrent request with this token won: the same key gets the certificate it got.
    if (isSpentToken(e)) return retryWithSpentToken(fleet, req, csrChecked.value, e);
    throw e;
  }
}

function isSpentToken(e: unknown): e is AuthenticationFailed {
  return e instanceof AuthenticationFailed && e.reason === "token-used";
}

/** A spent token asks again: the same key gets the certificate the token paid for; any other key gets `refusal` ("token used"). */
async function retryWithSpentToken(
  fleet: FleetServices,
  req: { deviceId: string; token: string; source: RequestSource },
  key: SubjectKey,
  refusal: AuthenticationFailed,
): Promise<DeviceCertificate> {
  const serial = await certificateOfSpentToken(fleet, req.deviceId, req.token);
  if (serial === undefined) throw refusal;
  const ctx = context(req.source, { provisioner: "token" });
  return redeliver(fleet, { serial, deviceId: req.deviceId, key, actor: `token:${req.deviceId}`, context: ctx, refusal: () => refusal });
}

// ---- retries after a lost answer ----------------------------------------------------------

/**
 * Answers a retry with the certificate its credential already obtained, when the retry is for the
 * same key (the first answer was lost). Any other key gets `refusal`; a certificate revoked or held
 * since, or a device no longer active, is refused as a new issuance would be. Audited.
 */
async function redeliver(
  fleet: FleetServices,
  req: {
    serial: string;
    deviceId: string;
    key: SubjectKey;
    actor: string;
    context: Record<string, unknown>;
    refusal: () => Error;
    now?: Date;
  },
): Promise<DeviceCertificate> {
  const row = await fleet.store.db.selectFrom("certificates").selectAll().where("serial", "=", req.serial).executeTakeFirst();
  if (!row || row.device_id !== req.deviceId || !parseCertificate(Buffer.from(row.der)).spki.equals(req.key.spki)) throw req.refusal();
  if (row.status !== "valid")
    throw new NotPermitted("certificate-revoked", `certificate ${row.serial} is ${row.status === "hold" ? "on hold" : "revoked"}`);
  await assertIssuerActive(fleet, row.issuer_ca);
  const device = await fleet.store.db.selectFrom("devices").select("status").where("id", "=", req.deviceId).executeTakeFirst();
  if (!device) throw new UnknownDevice(req.deviceId);
  if (device.status !== "active") throw new DeviceNotActive(req.deviceId, device.status);
  const now = req.now ?? new Date();
  const seen = redeliveriesAudited(fleet);
  const key = `${row.serial}\u0000${createHash("sha256").update(req.key.spki).digest("hex")}`;
  const last = seen.get(key);
  if (last === undefined || now.getTime() - last >= REDELIVERY_AUDIT_WINDOW_MS || now.getTime() < last) {
    if (seen.size >= MAX_REDELIVERIES_REMEMBERED) {
      for (const [k, at] of seen) if (now.getTime() - at >= REDELIVERY_AUDIT_WINDOW_MS) seen.delete(k);
      if (seen.size >= MAX_REDELIVERIES_REMEMBERED) seen.clear();
    }
    // Marked before the write, so concurrent retries do not each write a row; unmarked if it fails.
    seen.set(key, now.getTime());
    await fleet.store
      .transaction(async (tx) => {
        // Checked again under the write lock: a revocation or hold may have committed meanwhile.
        const current = await tx.selectFrom("devices").select("status").where("id", "=", req.deviceId).executeTakeFirst();
        if (!current) throw new UnknownDevice(req.deviceId);
        if (current.status !== "active") throw new DeviceNotActive(req.deviceId, current.status);
        const details = { serial: row.serial, ...req.context };
        await tx.audit.append([{ actor: req.actor, action: "certificate.redeliver", subject: `device:${req.deviceId}`, details }]);
      })
      .catch((e: unknown) => {
        if (seen.get(key) === now.getTime()) seen.delete(key);
        throw e;
      });
  }
  return recordedDeviceCertificate(fleet, row, req.key.keyType);
}

/**
 * A re-delivery hands out nothing new (the issuance is audited), so a robot retrying in a loop
 * is audited once per certificate, key and window rather than once per request. Kept in memory:
 * after a restart the next re-delivery is audited again.
 */
const REDELIVERY_AUDIT_WINDOW_MS = 3_600_000;
/** Entries need a certificate whose key the requester holds, so this bound is rarely reached. */
const MAX_REDELIVERIES_REMEMBERED = 10_000;
const redeliveries = new WeakMap<FleetServices, Map<string, number>>();

function redeliveriesAudited(fleet: FleetServices): Map<string, number> {
  let seen = redeliveries.get(fleet);
  if (!seen) redeliveries.set(fleet, (seen = new Map()));
  return seen;
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
async function lookupCertificate(fleet: FleetServices, der: Buffer): Promise<KnownCertificate> {
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
  if (!subjectAltNameUris(parsed).includes(expected))
    throw new AuthenticationFailed("certificate-unknown", "the client certificate does not carry its device identity");
  return { parsed, row, deviceId: row.device_id };
}

function assertNotRevoked(known: KnownCertificate): void {
  if (known.row.status !== "valid")
    throw new NotPermitted(
      "certificate-revoked",
      `certificate ${known.row.serial} of device "${known.deviceId}" is ${known.row.status === "hold" ? "on hold" : "revoked"}`,
    );
}

async function assertIssuerActive(fleet: FleetServices, caId: string): Promise<void> {
  const ca = await fleet.caRecord(caId);
  if (ca.status !== "active") throw new NotPermitted("certificate-revoked", `the issuing CA ${caId} is ${ca.status}`);
}

function assertVerified(cert: ClientCertificate, what: string): void {
  if (cert.verificationError === "CERT_HAS_EXPIRED")
    throw new NotPermitted(
      "certificate-expired",
      `${what} has expired; renew with /api/v1/renew/expired within the grace period, or re-enroll`,
    );
  if (cert.verificationError)
    throw new AuthenticationFailed("certificate-unknown", `${what} does not verify against the fleet root (${cert.verificationError})`);
}

// ---- factory ----------------------------------------------------------------------------

export async function enrollWithFactoryCertificate(
  fleet: FleetServices,
  req: { clientCertificate: ClientCertificate; deviceId?: string; csr: Buffer | string; source: RequestSource },
): Promise<DeviceCertificate> {
  requireProvisioner(fleet, "factory");
  assertVerified(req.clientCertificate, "the factory certificate");
  const known = await lookupCertificate(fleet, req.clientCertificate.der);
  if (known.row.kind !== "factory")
    throw new NotPermitted(
      "wrong-issuer",
      "only certificates from a local (factory) CA can enroll; operational certificates renew at /renew",
    );
  assertNotRevoked(known);
  // As for renewal: a factory certificate for a key the policy refuses proves nothing over TLS.
  certificateKey(known.parsed.spki, known.row.serial);
  await assertIssuerActive(fleet, known.row.issuer_ca);
  if (req.deviceId !== undefined && req.deviceId !== known.deviceId)
    throw new NotPermitted("identity-mismatch", `the factory certificate belongs to "${known.deviceId}", not "${req.deviceId}"`);
  const key = await keyFromCsr(req.csr);
  const now = new Date();
  const attempt = async (): Promise<DeviceCertificate> => {
    // A factory certificate enrolls its device once: a copied bundle must not mint certificates
    // for its year of life. Checked before signing; the condition settles racing requests.
    const previous = await fleet.store.db
      .selectFrom("factory_enrollments")
      .selectAll()
      .where("device_id", "=", known.deviceId)
      .executeTakeFirst();
    if (previous) return (await factoryRetryAnswer(fleet, previous, known.row.serial, key)) ?? refuseFactoryReenrollment(known, previous);
    const condition: IssueCondition = { kind: "factory", deviceId: known.deviceId, factorySerial: known.row.serial, at: now.toISOString() };
    const context_ = context(req.source, { provisioner: "factory", factory_serial: known.row.serial });
    return issueForKey(
      fleet,
      { deviceId: known.deviceId, actor: `factory:${known.row.issuer_ca}`, now, context: context_, condition },
      key,
    );
  };
  try {
    return await attempt();
  } catch (e) {
    // Lost the race to a concurrent enrollment of the same device: answer as if it came second.
    if (e instanceof NotPermitted && e.reason === "factory-already-enrolled" && !(e instanceof FactoryRefusal)) return attempt();
    throw e;
  }
}

/**
 * The refusal of a second factory enrollment. Not audited one row each (a copied bundle could
 * flood the log): the transport counts it against the source like a failed authentication and
 * tallies it (AuthFailureLog, action "enrollment.refuse"), with the details carried here.
 */
export class FactoryRefusal extends NotPermitted {
  constructor(
    readonly deviceId: string,
    /** The factory certificate presented now, and the enrollment that already used the device's one. */
    readonly details: { factory_serial: string; enrolled_with: string; enrolled_certificate: string },
  ) {
    const e = factoryAlreadyEnrolled(deviceId);
    super(e.reason, e.message);
  }
}

/**
 * The answer to a factory enrollment repeated because its answer was lost: the same factory
 * certificate and the same key get the certificate already issued (kept apart for the general
 * idempotent retry of issue 9, 1.10). Anything else is a second enrollment.
 */
async function factoryRetryAnswer(
  fleet: FleetServices,
  previous: FactoryEnrollmentTable,
  factorySerial: string,
  key: SubjectKey,
): Promise<DeviceCertificate | undefined> {
  if (previous.factory_serial !== factorySerial) return undefined;
  const row = await fleet.store.db
    .selectFrom("certificates")
    .selectAll()
    .where("serial", "=", previous.certificate_serial)
    .executeTakeFirst();
  if (!row || row.status !== "valid" || row.not_after <= new Date().toISOString()) return undefined;
  if (!parseCertificate(Buffer.from(row.der)).spki.equals(key.spki)) return undefined;
  return recordedDeviceCertificate(fleet, row, key.keyType);
}

function refuseFactoryReenrollment(known: KnownCertificate, previous: FactoryEnrollmentTable): never {
  throw new FactoryRefusal(known.deviceId, {
    factory_serial: known.row.serial,
    enrolled_with: previous.factory_serial,
    enrolled_certificate: previous.certificate_serial,
  });
}

// ---- renewal ----------------------------------------------------------------------------

export async function renewWithCertificate(
  fleet: FleetServices,
  req: { clientCertificate: ClientCertificate; csr: Buffer | string; source: RequestSource },
): Promise<DeviceCertificate> {
  assertVerified(req.clientCertificate, "the client certificate");
  const known = await lookupCertificate(fleet, req.clientCertificate.der);
  if (known.row.kind !== "device")
    throw new NotPermitted("wrong-issuer", "only operational device certificates renew; factory certificates enroll");
  assertNotRevoked(known);
  // A key issued before the key policy existed may be one whose TLS signature anyone can forge.
  certificateKey(known.parsed.spki, known.row.serial);
  await assertIssuerActive(fleet, known.row.issuer_ca);
  const key = await keyFromCsr(req.csr);
  return renewOnce(fleet, known, key, { now: new Date(), context: context(req.source, { renews: known.row.serial }) });
}

/**
 * A certificate renews once. Asked again (its answer was lost, or two requests raced), the same
 * key gets the renewal already issued; another key is refused: the certificate has been replaced,
 * and only its renewal can renew now. `nonce`: the renewal-after-expiry challenge, spent with a
 * new renewal; a repeated answer needs it unexpired and for this device (it may be spent).
 */
async function renewOnce(
  fleet: FleetServices,
  known: KnownCertificate,
  key: SubjectKey,
  req: { now: Date; context: Record<string, unknown>; nonce?: string },
): Promise<DeviceCertificate> {
  const actor = `device:${known.deviceId}`;
  const renewals = fleet.store.db.selectFrom("renewals").select("serial");
  const earlier = await renewals.where("renewed_serial", "=", known.row.serial).executeTakeFirst();
  let renewal = earlier?.serial;
  if (renewal === undefined) {
    const at = req.now.toISOString();
    const condition: IssueCondition = { kind: "renewal", deviceId: known.deviceId, renews: known.row.serial, nonce: req.nonce, at };
    try {
      return await issueForKey(fleet, { deviceId: known.deviceId, actor, now: req.now, context: req.context, condition }, key);
    } catch (e) {
      if (!(e instanceof CertificateAlreadyRenewed)) throw e;
      renewal = e.serial;
    }
  }
  if (req.nonce !== undefined) {
    const nonces = fleet.store.db.selectFrom("renewal_nonces").select(["device_id", "expires_at"]);
    const nonce = await nonces.where("nonce", "=", req.nonce).executeTakeFirst();
    if (!nonce || nonce.device_id !== known.deviceId || nonce.expires_at <= req.now.toISOString())
      throw new AuthenticationFailed("nonce-invalid", "the renewal challenge is unknown, expired or for another device");
  }
  const replaced = renewal;
  return redeliver(fleet, {
    serial: replaced,
    deviceId: known.deviceId,
    key,
    actor,
    context: req.context,
    now: req.now,
    refusal: () =>
      new ReEnrollRequired(
        `certificate ${known.row.serial} was already renewed (certificate ${replaced}) for another key; a certificate renews once: ` +
          "renew with that certificate, or ask again with the key of that renewal, or re-enroll",
      ),
  });
}

const NONCE_LIFETIME_MS = 5 * 60_000;
export const EXPIRED_RENEWAL_LABEL = "fleetpki-renew-expired/v1";

/** The bytes a device signs with its expired certificate's key (docs/enrollment.md). */
export function expiredRenewalMessage(deviceId: string, nonce: string, csrDer: Buffer): Buffer {
  return Buffer.from(`${EXPIRED_RENEWAL_LABEL}\n${deviceId}\n${nonce}\n${createHash("sha256").update(csrDer).digest("hex")}`, "utf8");
}

/** Unexpired challenges kept per device; a new one replaces the oldest, so junk cannot lock a device out. */
const MAX_OPEN_CHALLENGES = 20;
/** A device whose clock runs ahead asks a little before its certificate has expired here. */
const CHALLENGE_CLOCK_SKEW_MS = NONCE_LIFETIME_MS;

/**
 * A challenge for renewing an expired certificate. Only a device that can use one gets a stored
 * challenge: an active device with an unrevoked certificate that expired within the grace. Every
 * other id gets an answer of the same shape that is stored nowhere (the proof then fails as
 * "nonce-invalid", after the certificate's own checks), so this unauthenticated endpoint neither
 * tells which devices exist nor fills the table for them.
 */
export async function renewalChallenge(
  fleet: FleetServices,
  deviceId: string,
  now = new Date(),
): Promise<{ nonce: string; expiresAt: Date }> {
  assertDeviceId(deviceId);
  const nonce = randomBytes(32).toString("base64url");
  const expiresAt = new Date(now.getTime() + NONCE_LIFETIME_MS);
  const graceMs = parseDuration(fleet.config.renewal.after_expiry_grace);
  const challenge = {
    nonce,
    device: deviceId,
    at: now.toISOString(),
    expires: expiresAt.toISOString(),
    expiredSince: new Date(now.getTime() - graceMs).toISOString(),
    expiredBy: new Date(now.getTime() + CHALLENGE_CLOCK_SKEW_MS).toISOString(),
    keep: MAX_OPEN_CHALLENGES - 1,
  };
  // Not waiting for the disk: a challenge lost in a crash is only asked for again. So both
  // answers cost about the same (a short write transaction, no sync), whether stored or not.
  await fleet.store.withNative((native) => {
    let store = challengeTransactions.get(native);
    if (!store) challengeTransactions.set(native, (store = native.transaction((c: ChallengeRow) => storeChallenge(native, c))));
    store.immediate(challenge);
  });
  return { nonce, expiresAt };
}

type ChallengeRow = { nonce: string; device: string; at: string; expires: string; expiredSince: string; expiredBy: string; keep: number };
const challengeTransactions = new WeakMap<NativeDb, SqliteTransaction<(c: ChallengeRow) => void>>();

function storeChallenge(native: NativeDb, c: ChallengeRow): void {
  const eligible = preparedStatement<ChallengeRow>(
    native,
    "select 1 from certificates c join devices d on d.id = c.device_id " +
      "where c.device_id = @device and c.kind = 'device' and c.status = 'valid' and d.status = 'active' " +
      "and c.not_after <= @expiredBy and (c.not_after >= @expiredSince " +
      // Past the grace, only to collect a renewal already recorded and still valid (its answer was lost).
      "or exists (select 1 from renewals r join certificates n on n.serial = r.serial " +
      "where r.renewed_serial = c.serial and n.status = 'valid' and n.not_after > @at)) limit 1",
  );
  if (eligible.get(c) === undefined) return;
  // Expired challenges are useless (a spent one is refused as unknown just as well): the table
  // holds at most MAX_OPEN_CHALLENGES unexpired rows per eligible device.
  preparedStatement<ChallengeRow>(native, "delete from renewal_nonces where expires_at <= @at").run(c);
  preparedStatement<ChallengeRow>(
    native,
    "delete from renewal_nonces where device_id = @device " +
      "and nonce not in (select nonce from renewal_nonces where device_id = @device order by expires_at desc limit @keep)",
  ).run(c);
  const insert = "insert into renewal_nonces (nonce, device_id, expires_at, used_at) values (@nonce, @device, @expires, null)";
  preparedStatement<ChallengeRow>(native, insert).run(c);
}

function hashFor(key: ReturnType<typeof createPublicKey>): string | null {
  if (key.asymmetricKeyType === "ed25519") return null;
  if (key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "secp384r1") return "sha384";
  return "sha256";
}

export async function renewExpired(
  fleet: FleetServices,
  req: { certificate: string | Buffer; csr: Buffer | string; nonce: string; signature: string; source: RequestSource; now?: Date },
): Promise<DeviceCertificate> {
  let der: Buffer;
  try {
    der = typeof req.certificate === "string" ? fromPem(req.certificate, ["CERTIFICATE"]) : req.certificate;
  } catch (e) {
    throw new InvalidArgument(`certificate: ${(e as Error).message}`);
  }
  const known = await lookupCertificate(fleet, der);
  if (known.row.kind !== "device") throw new NotPermitted("wrong-issuer", "only operational device certificates renew");
  const now = req.now ?? new Date();
  if (known.row.status !== "valid")
    throw new ReEnrollRequired(
      `certificate ${known.row.serial} was ${known.row.status === "hold" ? "put on hold" : "revoked"}; it ` +
        `cannot renew after expiry: re-enroll`,
    );
  const key: SubjectKey = await keyFromCsr(req.csr);
  const parsedCsrDer = csrDer(req.csr);
  const publicKey = certificateKey(known.parsed.spki, known.row.serial);
  let ok = false;
  try {
    ok = verify(
      hashFor(publicKey),
      expiredRenewalMessage(known.deviceId, req.nonce, parsedCsrDer),
      publicKey,
      Buffer.from(req.signature, "base64"),
    );
  } catch {
    ok = false;
  }
  if (!ok) throw new AuthenticationFailed("proof-invalid", "the proof of possession does not verify with the expired certificate's key");
  // The grace bounds new renewals only: a renewal already recorded (its answer was lost while the
  // robot stayed offline) is handed out again for the same key, proved by the signature above.
  const renewals = fleet.store.db.selectFrom("renewals").select("serial");
  const earlier = await renewals.where("renewed_serial", "=", known.row.serial).executeTakeFirst();
  const graceMs = parseDuration(fleet.config.renewal.after_expiry_grace);
  if (!earlier && now.getTime() > known.parsed.notAfter.getTime() + graceMs)
    throw new ReEnrollRequired(
      `certificate ${known.row.serial} expired at ${known.parsed.notAfter.toISOString()}, beyond the ` +
        `${fleet.config.renewal.after_expiry_grace} renewal grace: re-enroll`,
    );
  await assertIssuerActive(fleet, known.row.issuer_ca);
  const renewal = { now, nonce: req.nonce, context: context(req.source, { renews: known.row.serial, after_expiry: true }) };
  return renewOnce(fleet, known, key, renewal);
}

// ---- approval ---------------------------------------------------------------------------
//
// A request without credentials waits for an operator, who decides that request, for that key
// (compared out of band by its fingerprint), never a device id as such: approving always names
// the request or the key. A request is never replaced by another: a second request for an id is
// its own pending request. Waiting requests expire (enrollment.approval_request_ttl) and are
// purged. Rows stay bounded per device id and source, per device id, per source and in total:
//   - per device id and source group (an IPv4 address or an IPv6 /64): 2, then 429 (a robot keeps
//     its key while it waits, so more from one place are not the robot);
//   - per device id: 5; a request from a source with nothing waiting for the id then evicts the
//     oldest request of the source group holding the most (2), so junk from a few addresses cannot
//     shut out the robot; a group's only request is never evicted (5 groups of 1 get 429);
//   - per source group: 20, whatever the ids; a device the operator registered (`device add`)
//     may still file ONE request from a full source, so a robot behind a NAT full of junk can
//     reach the operator; that adds at most one row per registered device and source (and 5 per
//     device), a bound the operator sets, not the requester. Unregistered ids get 429 there until
//     the junk expires or `device deny --all-from` clears it;
//   - in total: 10,000; a request then evicts the oldest of the biggest source group (never its
//     own group's), so one flood cannot fill the table for everyone else.
// Only waiting requests are ever evicted or purged, never an operator's decision.

export type ApprovalOutcome =
  { status: "pending"; requestId: string; retryAfterSeconds: number } | { status: "issued"; certificate: DeviceCertificate };

const POLL_SECONDS = 10;
/** Waiting requests in total: the last bound on the table, far above what one source can fill. */
const MAX_PENDING = 10_000;
/** Waiting requests from one source (an IPv4 address or an IPv6 /64), whatever the device ids. */
const MAX_PENDING_PER_SOURCE = 20;
/** Waiting requests for one device id (each with its own key), from any source. */
const MAX_PENDING_PER_DEVICE = 5;
/** Waiting requests for one device id from one source: a robot keeps its key while it waits. */
const MAX_PENDING_PER_DEVICE_AND_SOURCE = 2;

/** "sha256:<hex>" of a SubjectPublicKeyInfo, the form `device requests` shows and the agent prints. */
export function keyFingerprint(spki: Buffer): string {
  return `sha256:${createHash("sha256").update(spki).digest("hex")}`;
}

/** Accepts "sha256:HEX" or bare hex, any case, with colons; returns the canonical form. */
export function parseKeyFingerprint(text: string): string {
  const m = /^(?:sha-?256\s*[:=]\s*)?([0-9a-f:\s]+)$/i.exec(text.trim());
  const hex = m ? m[1]!.replace(/[:\s]/g, "").toLowerCase() : "";
  if (!/^[0-9a-f]{64}$/.test(hex))
    throw new InvalidArgument(`invalid key fingerprint "${text}": expected sha256:<64 hex digits>, as \`fleetpki device requests\` shows`);
  return `sha256:${hex}`;
}

/** The peer address as shown and matched (IPv4-mapped IPv6 as IPv4), and the bucket it is counted in. */
export function sourceOf(address: string | undefined): { address: string | null; group: string | null } {
  if (!address) return { address: null, group: null };
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (v4) return { address: v4[1]!, group: v4[1]! };
  if (isIP(address) !== 6) return { address, group: address };
  // One IPv6 host usually holds a whole /64: counting addresses would not bound it.
  return { address, group: `${expandIpv6(address).slice(0, 4).join(":")}::/64` };
}

function expandIpv6(address: string): string[] {
  const [head, tail] = address.split("%")[0]!.toLowerCase().split("::") as [string, string | undefined];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  return groups.map((g) => g.padStart(4, "0"));
}

/** Requests filed before this instant have expired: they count for nothing and are purged. */
function expiryCutoff(fleet: FleetServices, now: Date): string {
  return new Date(now.getTime() - parseDuration(fleet.config.enrollment.approval_request_ttl)).toISOString();
}

function expiresAt(fleet: FleetServices, createdAt: string): string {
  return new Date(Date.parse(createdAt) + parseDuration(fleet.config.enrollment.approval_request_ttl)).toISOString();
}

export async function enrollByApproval(
  fleet: FleetServices,
  req: { deviceId: string; csr: Buffer | string; source: RequestSource; retried?: boolean; now?: Date },
): Promise<ApprovalOutcome> {
  requireProvisioner(fleet, "approval");
  assertDeviceId(req.deviceId);
  const now = req.now ?? new Date();
  // The CSR's signature proves the requester holds the key the operator will approve.
  const key = await keyFromCsr(req.csr);
  const fingerprint = keyFingerprint(key.spki);
  const latest = await fleet.store.db
    .selectFrom("enrollment_requests")
    .selectAll()
    .where("device_id", "=", req.deviceId)
    .where("key_fingerprint", "=", fingerprint)
    .orderBy("created_at", "desc")
    .limit(1)
    .executeTakeFirst();

  // A denial is for this key: the device may still ask with another one.
  if (latest?.status === "denied")
    throw new NotPermitted(
      "enrollment-denied",
      `the enrollment request of "${req.deviceId}" for key ${fingerprint} was denied by an operator`,
    );
  if (latest?.status === "approved") {
    const condition: IssueCondition = { kind: "approval", requestId: latest.id };
    try {
      const certificate = await issueForKey(
        fleet,
        {
          deviceId: req.deviceId,
          actor: `approval:${latest.decided_by}`,
          context: context(req.source, { provisioner: "approval", request: latest.id }),
          condition,
        },
        key,
      );
      return { status: "issued", certificate };
    } catch (e) {
      // A concurrent poll collected the approval first: answer with the certificate it got.
      if (e instanceof ApprovalAlreadyIssued && !req.retried) return enrollByApproval(fleet, { ...req, retried: true });
      throw e;
    }
  }
  // An expired request is gone (purged when this one is filed): the robot asks anew.
  if (latest?.status === "pending" && latest.created_at >= expiryCutoff(fleet, now))
    return { status: "pending", requestId: latest.id, retryAfterSeconds: POLL_SECONDS };
  if (latest?.status === "issued" && latest.certificate_serial) {
    // A poll repeated after the answer was lost gets the same certificate again, unless it was
    // revoked or held since, its CA retired or the device held: checked as for any redelivery.
    const ctx = context(req.source, { provisioner: "approval", request: latest.id });
    const refusal = () => new NotPermitted("key-mismatch", `the certificate of request ${latest.id} is not for key ${fingerprint}`);
    const certificate = await redeliver(fleet, {
      serial: latest.certificate_serial,
      deviceId: req.deviceId,
      key,
      actor: `approval:${req.deviceId}`,
      context: ctx,
      refusal,
    });
    return { status: "issued", certificate };
  }
  return newApprovalRequest(fleet, { ...req, csr: csrDer(req.csr) }, key, fingerprint, now);
}

async function newApprovalRequest(
  fleet: FleetServices,
  req: { deviceId: string; csr: Buffer; source: RequestSource },
  key: SubjectKey,
  fingerprint: string,
  nowDate: Date,
): Promise<ApprovalOutcome> {
  const now = nowDate.toISOString();
  const cutoff = expiryCutoff(fleet, nowDate);
  const source = sourceOf(req.source.address);
  const row: EnrollmentRequestTable = {
    id: randomUUID(),
    device_id: req.deviceId,
    csr: req.csr,
    status: "pending",
    source: [req.source.via, source.address].filter(Boolean).join(" "),
    created_at: now,
    decided_at: null,
    decided_by: null,
    certificate_serial: null,
    key_fingerprint: fingerprint,
    source_address: source.address,
    source_group: source.group,
  };
  // Checked first without the write lock, so a flood of refused junk costs no write transaction;
  // checked again inside it, where the answer holds.
  await planRequest(fleet.store.db, req.deviceId, source.group, cutoff);
  await fleet.store.transaction(async (tx) => {
    const events: AuditEvent[] = [];
    const expired = await tx
      .selectFrom("enrollment_requests")
      .select(SUMMARY)
      .where("status", "=", "pending")
      .where("created_at", "<", cutoff)
      .execute();
    if (expired.length > 0) {
      await tx.deleteFrom("enrollment_requests").where("status", "=", "pending").where("created_at", "<", cutoff).execute();
      for (const r of expired)
        events.push(
          decisionEvent(r, "enrollment.expire", "fleetpki", { reason: "nobody decided it within enrollment.approval_request_ttl" }),
        );
    }
    const { evict } = await planRequest(tx, req.deviceId, source.group, cutoff);
    if (evict) {
      await tx.deleteFrom("enrollment_requests").where("id", "=", evict.row.id).where("status", "=", "pending").execute();
      events.push(decisionEvent(evict.row, "enrollment.evict", `approval:${req.deviceId}`, { reason: evict.reason, by_request: row.id }));
    }
    await tx.insertInto("enrollment_requests").values(row).execute();
    events.push({
      actor: `approval:${req.deviceId}`,
      action: "enrollment.request",
      subject: `device:${req.deviceId}`,
      details: { request: row.id, source: row.source, key_type: key.keyType, key_fingerprint: fingerprint },
    });
    await tx.audit.append(events);
  });
  return { status: "pending", requestId: row.id, retryAfterSeconds: POLL_SECONDS };
}

/** What bounds, audit and listings need of a request (not its CSR). */
const SUMMARY = ["id", "device_id", "source", "source_group", "source_address", "key_fingerprint", "created_at"] as const;
type RequestSummary = Pick<EnrollmentRequestTable, (typeof SUMMARY)[number]>;

const pendingRequests = (tx: Db, cutoff: string) =>
  tx.selectFrom("enrollment_requests").where("status", "=", "pending").where("created_at", ">=", cutoff);

/** The oldest request of the group holding most of `rows` (ties: the group with the oldest request), if it holds at least 2. */
function oldestOfBiggestGroup(rows: readonly RequestSummary[]): RequestSummary | undefined {
  const groups = new Map<string, RequestSummary[]>();
  for (const r of [...rows].sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id))) {
    const key = r.source_group ?? "";
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  let best: RequestSummary[] = [];
  for (const g of groups.values())
    if (g.length > best.length || (g.length === best.length && g[0]!.created_at < best[0]!.created_at)) best = g;
  return best.length >= 2 ? best[0] : undefined;
}

/**
 * Refuses a new request for a revoked device, or one over a bound (most specific bound named
 * first); or says which waiting request it displaces (see the bounds above).
 */
async function planRequest(
  tx: Db,
  deviceId: string,
  group: string | null,
  cutoff: string,
): Promise<{ evict?: { row: RequestSummary; reason: string } }> {
  const device = await tx.selectFrom("devices").select("status").where("id", "=", deviceId).executeTakeFirst();
  if (device?.status === "revoked") throw new DeviceNotActive(deviceId, device.status);
  const from = group ?? "an unknown source";
  const waiting = "already wait for an operator's decision";
  const mine = await pendingRequests(tx, cutoff).select(SUMMARY).where("device_id", "=", deviceId).execute();
  const fromHere = mine.filter((r) => r.source_group === group).length;
  if (fromHere >= MAX_PENDING_PER_DEVICE_AND_SOURCE)
    throw new TooManyRequests(`${MAX_PENDING_PER_DEVICE_AND_SOURCE} enrollment requests for "${deviceId}" from ${from} ${waiting}`, 60);
  let evict: { row: RequestSummary; reason: string } | undefined;
  if (mine.length >= MAX_PENDING_PER_DEVICE) {
    const oldest = fromHere === 0 ? oldestOfBiggestGroup(mine) : undefined;
    if (!oldest) throw new TooManyRequests(`${MAX_PENDING_PER_DEVICE} enrollment requests for "${deviceId}" ${waiting}`, 60);
    evict = {
      row: oldest,
      reason:
        `${MAX_PENDING_PER_DEVICE} requests for the device waited; a request from a new source ` +
        `displaced the oldest of the source with the most`,
    };
  }
  const count = async (q: ReturnType<typeof pendingRequests>) =>
    Number((await q.select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);
  // A registered device's first request from a full source still reaches the operator (see above).
  const exempt = fromHere === 0 && device?.status === "active";
  if (!exempt && (await count(pendingRequests(tx, cutoff).where("source_group", "is", group))) >= MAX_PENDING_PER_SOURCE)
    throw new TooManyRequests(`${MAX_PENDING_PER_SOURCE} enrollment requests from ${from} ${waiting}`, 60);
  if (!evict && (await count(pendingRequests(tx, cutoff))) >= MAX_PENDING) {
    const biggest = await pendingRequests(tx, cutoff)
      .select(["source_group", (eb) => eb.fn.countAll().as("n")])
      .groupBy("source_group")
      .orderBy("n", "desc")
      .limit(1)
      .executeTakeFirst();
    if (!biggest || biggest.source_group === group || Number(biggest.n) < 2)
      throw new TooManyRequests("too many enrollment requests are waiting for approval", 60);
    const oldest = await pendingRequests(tx, cutoff)
      .select(SUMMARY)
      .where("source_group", "is", biggest.source_group)
      .orderBy("created_at")
      .orderBy("id")
      .limit(1)
      .executeTakeFirstOrThrow();
    evict = {
      row: oldest,
      reason: `${MAX_PENDING} requests waited; a request from another source displaced the oldest of the source with the most`,
    };
  }
  return evict ? { evict } : {};
}

export interface PendingRequest {
  id: string;
  deviceId: string;
  /** "sha256:<hex>" of the requested key's SubjectPublicKeyInfo. */
  keyFingerprint: string | null;
  /** Transport and peer address, e.g. "api 10.0.0.7". */
  source: string;
  address: string | null;
  createdAt: string;
  /** When it stops counting and is purged unless decided (enrollment.approval_request_ttl). */
  expiresAt: string;
}

function toPending(fleet: FleetServices, r: RequestSummary): PendingRequest {
  const { id, device_id, key_fingerprint, source, source_address, created_at } = r;
  return {
    id,
    deviceId: device_id,
    keyFingerprint: key_fingerprint,
    source,
    address: source_address,
    createdAt: created_at,
    expiresAt: expiresAt(fleet, created_at),
  };
}

export async function listPendingRequests(fleet: FleetServices, filter: { deviceId?: string; now?: Date } = {}): Promise<PendingRequest[]> {
  let q = pendingRequests(fleet.store.db, expiryCutoff(fleet, filter.now ?? new Date()))
    .select(SUMMARY)
    .orderBy("created_at")
    .orderBy("id");
  if (filter.deviceId !== undefined) q = q.where("device_id", "=", filter.deviceId);
  return (await q.execute()).map((r) => toPending(fleet, r));
}

function describePending(rows: readonly RequestSummary[]): string {
  return rows.map((r) => `${r.id} (${r.key_fingerprint ?? "key unknown"} from ${r.source_address ?? "?"} at ${r.created_at})`).join("; ");
}

export interface DecideRequest {
  deviceId: string;
  /** The request to decide; or `fingerprint`. A denial may name neither when exactly one request waits. */
  requestId?: string;
  /** The key's "sha256:<hex>" fingerprint, as the robot prints it. */
  fingerprint?: string;
  approve: boolean;
  actor: string;
  now?: Date;
}

export interface Decision {
  request: PendingRequest;
  /** Other requests for the device denied with an approval (they cannot also be the device). */
  alsoDenied: PendingRequest[];
}

/**
 * Approves or denies one waiting request; approval registers an unknown device and denies the
 * device's other waiting requests. Approval always names the request or the key: anyone can ask
 * for a device id, so "the only waiting request" may be an attacker's. A denial without either
 * applies when exactly one request waits (it certifies nothing; the robot can ask with a new key).
 */
export async function decideRequest(fleet: FleetServices, req: DecideRequest): Promise<Decision> {
  assertDeviceId(req.deviceId);
  const fingerprint = req.fingerprint === undefined ? undefined : parseKeyFingerprint(req.fingerprint);
  if (req.requestId !== undefined && fingerprint !== undefined)
    throw new InvalidArgument("give a request id or a key fingerprint, not both");
  const nowDate = req.now ?? new Date();
  const now = nowDate.toISOString();
  return fleet.store.transaction(async (tx) => {
    const pending = await pendingRequests(tx, expiryCutoff(fleet, nowDate))
      .select(SUMMARY)
      .where("device_id", "=", req.deviceId)
      .orderBy("created_at")
      .orderBy("id")
      .execute();
    if (pending.length === 0) throw new InvalidArgument(`no pending enrollment request for "${req.deviceId}"`);
    let chosen: RequestSummary | undefined;
    if (req.requestId !== undefined) {
      chosen = pending.find((r) => r.id === req.requestId);
      if (!chosen)
        throw new InvalidArgument(
          `request ${req.requestId} is not a pending request of "${req.deviceId}"; pending: ${describePending(pending)}`,
        );
    } else if (fingerprint !== undefined) {
      chosen = pending.find((r) => r.key_fingerprint === fingerprint);
      if (!chosen)
        throw new InvalidArgument(
          `no pending request of "${req.deviceId}" is for key ${fingerprint}; pending: ${describePending(pending)}`,
        );
    } else if (!req.approve && pending.length === 1) {
      chosen = pending[0]!;
    } else {
      const n = pending.length === 1 ? "1 enrollment request" : `${pending.length} enrollment requests`;
      throw new InvalidArgument(
        `${n} for "${req.deviceId}" ${pending.length === 1 ? "is" : "are"} waiting; ` +
          `${req.approve ? "approve" : "choose"} one with --request ID or ` +
          `--fingerprint sha256:… after comparing its key fingerprint with the one the robot prints (anyone can ask for a device id)` +
          `${req.approve ? "" : ", or deny them all with --all"}: ${describePending(pending)}`,
      );
    }
    const events: AuditEvent[] = [];
    let others: RequestSummary[] = [];
    if (req.approve) {
      const device = await tx.selectFrom("devices").select("status").where("id", "=", req.deviceId).executeTakeFirst();
      if (device && device.status !== "active") throw new DeviceNotActive(req.deviceId, device.status);
      if (!device) {
        await tx
          .insertInto("devices")
          .values({ id: req.deviceId, group_name: null, labels: "{}", status: "active", created_at: now, updated_at: now })
          .execute();
        events.push({ actor: req.actor, action: "device.add", subject: `device:${req.deviceId}`, details: { via: "approval" } });
      }
      others = pending.filter((r) => r.id !== chosen.id);
    }
    await tx
      .updateTable("enrollment_requests")
      .set({ status: req.approve ? "approved" : "denied", decided_at: now, decided_by: req.actor })
      .where("id", "=", chosen.id)
      .execute();
    events.push(decisionEvent(chosen, req.approve ? "enrollment.approve" : "enrollment.deny", req.actor));
    for (const other of others) {
      await tx
        .updateTable("enrollment_requests")
        .set({ status: "denied", decided_at: now, decided_by: req.actor })
        .where("id", "=", other.id)
        .execute();
      events.push(
        decisionEvent(other, "enrollment.deny", req.actor, {
          reason: "another request for the device was approved",
          approved_request: chosen.id,
        }),
      );
    }
    await tx.audit.append(events);
    return { request: toPending(fleet, chosen), alsoDenied: others.map((r) => toPending(fleet, r)) };
  });
}

function decisionEvent(r: RequestSummary, action: string, actor: string, extra: Record<string, unknown> = {}): AuditEvent {
  return {
    actor,
    action,
    subject: `device:${r.device_id}`,
    details: { request: r.id, key_fingerprint: r.key_fingerprint, source: r.source, ...extra },
  };
}

/** "ADDRESS" or "ADDRESS/LENGTH" (IPv4 or IPv6; an IPv4-mapped address as IPv4) as a matcher of source addresses. */
export function addressMatcher(text: string): (address: string) => boolean {
  const [rawAddress, length, extra] = text.trim().split("/");
  const address = sourceOf(rawAddress).address ?? "";
  const family = isIP(address);
  const bits = family === 6 ? 128 : 32;
  if (family === 0 || extra !== undefined || (length !== undefined && (!/^\d{1,3}$/.test(length) || Number(length) > bits)))
    throw new InvalidArgument(
      `--all-from "${text}" is not an IP address or prefix (e.g. 198.51.100.7, 198.51.100.0/24, 2001:db8:1:2::/64)`,
    );
  const type = family === 6 ? "ipv6" : "ipv4";
  const list = new BlockList();
  if (length === undefined) list.addAddress(address, type);
  else list.addSubnet(address, Number(length), type);
  return (a) => {
    const f = isIP(a);
    return f !== 0 && (f === 6 ? "ipv6" : "ipv4") === type && list.check(a, type);
  };
}

/**
 * Denies every waiting request of a device, or from an address or prefix (junk from one source
 * is cleared with one command). Each denial is audited; returns what was denied.
 */
export async function denyRequests(
  fleet: FleetServices,
  req: { deviceId?: string; fromAddress?: string; actor: string; now?: Date },
): Promise<PendingRequest[]> {
  if (req.deviceId === undefined && req.fromAddress === undefined)
    throw new InvalidArgument("say whose requests to deny: a device id, or --all-from ADDRESS[/PREFIX]");
  if (req.deviceId !== undefined) assertDeviceId(req.deviceId);
  const matches = req.fromAddress === undefined ? undefined : addressMatcher(req.fromAddress);
  const nowDate = req.now ?? new Date();
  const now = nowDate.toISOString();
  return fleet.store.transaction(async (tx) => {
    let q = pendingRequests(tx, expiryCutoff(fleet, nowDate)).select(SUMMARY);
    if (req.deviceId !== undefined) q = q.where("device_id", "=", req.deviceId);
    // Prefixes are matched here, not in SQL; waiting rows are bounded (MAX_PENDING and a few).
    if (matches !== undefined) q = q.where("source_address", "is not", null);
    const rows = (await q.orderBy("created_at").execute()).filter((r) => matches === undefined || matches(r.source_address!));
    if (rows.length === 0) return [];
    for (let i = 0; i < rows.length; i += 500) {
      const ids = rows.slice(i, i + 500).map((r) => r.id);
      await tx
        .updateTable("enrollment_requests")
        .set({ status: "denied", decided_at: now, decided_by: req.actor })
        .where("id", "in", ids)
        .execute();
    }
    const bulk = req.fromAddress !== undefined ? `all from ${req.fromAddress.trim()}` : "all of the device";
    await tx.audit.append(rows.map((r) => decisionEvent(r, "enrollment.deny", req.actor, { bulk })));
    return rows.map((r) => toPending(fleet, r));
  });
}

/** EST approval requests carry no credentials: the device id is the CSR's commonName. */
export function requestedDeviceId(csr: Buffer | string): string {
  let cn: string | undefined;
  try {
    cn = commonNameOf(decodeCsr(csr).subject);
  } catch (e) {
    if (e instanceof CsrError) throw new CsrInvalid(e.reason, e.message);
    // A subject string that is not text (an odd-length BMPString, say) is the requester's error.
    if (e instanceof DerError) throw new CsrInvalid("malformed", `CSR: malformed subject: ${e.message}`);
    throw e;
  }
  if (!cn) throw new InvalidArgument("the CSR has no commonName to take the device id from");
  assertDeviceId(cn);
  return cn;
}
