// Enrollment and renewal: which credential may obtain which device certificate. Transports hand in
// what they saw (token, TLS client certificate, CSR, peer address) as one EnrollmentRequest; the
// provisioner registry (provisioners/index.ts) says which method serves it, fleetpki.yaml whether
// that method is on, and failed credentials are limited and tallied per source here. The answer is
// a DeviceCertificate, a pending approval, or a typed error.
import { AuthenticationFailed, NotPermitted, TooManyRequests, UnknownDevice } from "../errors.js";
import type { FleetServices } from "../services.js";
import type { DeviceCertificate } from "../issue/issuance.js";
import { AuthFailureLog } from "./auth-failures.js";
import type { EnrollmentOperation, EnrollmentOutcome, EnrollmentRequest, Provisioner } from "./provisioner.js";
import { PROVISIONERS } from "./provisioners/index.js";
import { approvalProvisioner, type ApprovalEnrollment } from "./provisioners/approval.js";
import { expiredRenewalProvisioner, renewalChallenge, type ExpiredRenewal } from "./provisioners/expired-renewal.js";
import { FactoryRefusal, factoryProvisioner, type FactoryEnrollment } from "./provisioners/factory.js";
import { renewalProvisioner, type MtlsRenewal } from "./provisioners/renewal.js";
import { tokenProvisioner, type TokenEnrollment } from "./provisioners/token.js";
import { FailureLimiter } from "./rate-limit.js";
import { sourceKey, type RequestSource } from "./request-source.js";

export type { EnrollmentOperation, EnrollmentOutcome, EnrollmentRequest, Provisioner } from "./provisioner.js";
export type { ClientCertificate } from "./presented-certificate.js";
export type { RequestSource } from "./request-source.js";
export { addressMatcher, sourceOf } from "./request-source.js";
export { FactoryRefusal } from "./provisioners/factory.js";
export { requestedDeviceId } from "./provisioners/approval.js";
export { EXPIRED_RENEWAL_LABEL, expiredRenewalMessage } from "./provisioners/expired-renewal.js";
export {
  checkDenial,
  decideRequest,
  denyEnrollment,
  denyRequests,
  keyFingerprint,
  listPendingRequests,
  parseKeyFingerprint,
  type DecideRequest,
  type Decision,
  type PendingRequest,
} from "./approval-requests.js";

/**
 * Renewal challenges per source address and minute. A challenge is unauthenticated and may cost a
 * write; a device needs one per renewal after expiry, so this leaves room for a fleet behind one NAT.
 */
const CHALLENGES_PER_MINUTE = 60;

/** A provisioner as the registry reports it. */
export interface ProvisionerInfo {
  name: string;
  operation: EnrollmentOperation;
  /** Its fleetpki.yaml switch (enrollment.<switch>), if it has one. */
  switch?: string;
  enabled: boolean;
}

/** True for outcomes that count as failed authentication (rate limit + audit). */
export function isAuthFailure(e: unknown): boolean {
  return e instanceof AuthenticationFailed || e instanceof UnknownDevice;
}

function isEnabled(fleet: FleetServices, p: Provisioner): boolean {
  return p.switch === undefined || fleet.config.enrollment[p.switch];
}

function assertEnabled(fleet: FleetServices, p: Provisioner): void {
  if (!isEnabled(fleet, p))
    throw new NotPermitted("provisioner-disabled", `${p.name} enrollment is switched off in fleetpki.yaml (enrollment.${p.switch})`);
}

/** The enrollment service of a running registration server: one per server (it holds the failure limits and tallies). */
export class Enrollment {
  private readonly limiter: FailureLimiter;
  private readonly challenges = new FailureLimiter(CHALLENGES_PER_MINUTE);
  /** Failed authentications and refused re-enrollments, tallied into the audit log. */
  readonly failures: AuthFailureLog;

  constructor(
    private readonly fleet: FleetServices,
    private readonly provisioners: readonly Provisioner[] = PROVISIONERS,
  ) {
    this.limiter = new FailureLimiter(fleet.config.enrollment.failed_auth_per_minute);
    this.failures = new AuthFailureLog(fleet);
  }

  /** The provisioners this service consults, in order, and whether fleetpki.yaml has them on. */
  list(): ProvisionerInfo[] {
    return this.provisioners.map((p) => ({
      name: p.name,
      operation: p.operation,
      ...(p.switch !== undefined && { switch: p.switch }),
      enabled: isEnabled(this.fleet, p),
    }));
  }

  /**
   * The provisioner for a request: the first of its operation whose credential the request presents.
   * Switched off, it refuses ("provisioner-disabled"); a request that presents nothing usable is
   * told what it could present.
   */
  choose(request: EnrollmentRequest): Provisioner {
    const candidates = this.provisioners.filter((p) => p.operation === request.operation);
    const chosen = candidates.find((p) => p.presents(request));
    if (chosen && isEnabled(this.fleet, chosen)) return chosen;
    if (chosen?.credential) assertEnabled(this.fleet, chosen);
    const ways = candidates.filter((p) => isEnabled(this.fleet, p)).map((p) => p.asks);
    const what = request.operation === "enroll" ? "enrollment" : "renewal";
    throw new AuthenticationFailed(
      request.operation === "enroll" ? "credentials-required" : "certificate-required",
      ways.length > 0 ? `${what} needs ${ways.join(", or ")}` : `every ${what} method is switched off in fleetpki.yaml (enrollment.*)`,
    );
  }

  /**
   * Serves a request with the provisioner it calls for. Failed credentials count against the
   * source (per address; an IPv6 /64): over its limit, a source is not locked out (a valid
   * credential still succeeds, checked before costlier work), only its failures get 429. Renewal
   * over mTLS is never limited (the handshake proved the key; every robot behind one NAT renews).
   */
  async enroll(request: EnrollmentRequest): Promise<EnrollmentOutcome> {
    const provisioner = this.choose(request);
    const now = request.now ?? this.fleet.clock.now();
    const key = sourceKey(request.source.address);
    const limited = provisioner.failures === "count" && this.limiter.blockedFor(key, now.getTime()) > 0;
    try {
      return await provisioner.run(this.fleet, request, { now, credentialFirst: limited });
    } catch (e) {
      if (provisioner.failures === "none") throw e;
      const via = provisioner.failureVia(request.source.via);
      // A refused second enrollment with a factory bundle is counted like a failed login: a copied
      // bundle is a credential someone should not be using.
      const refusal = e instanceof FactoryRefusal;
      if (!isAuthFailure(e) && !refusal) throw e;
      if (provisioner.failures === "audit") {
        this.recordFailure(request.source, request.deviceId, via, e);
        throw e;
      }
      this.limiter.fail(key, now.getTime());
      if (refusal) this.recordRefusal(request.source, via, e);
      else this.recordFailure(request.source, request.deviceId, via, e);
      const wait = this.limiter.blockedFor(key, now.getTime());
      if (limited && wait > 0) throw new TooManyRequests(`too many failed attempts from this address; retry in ${wait} s`, wait);
      throw e;
    }
  }

  /** A challenge for renewal after expiry (see renewalChallenge), limited per source: it needs no credentials. */
  async challenge(deviceId: string, source: RequestSource): Promise<{ nonce: string; expiresAt: Date }> {
    const now = this.fleet.clock.now();
    const wait = this.challenges.take(sourceKey(source.address), now.getTime());
    if (wait > 0) throw new TooManyRequests(`too many renewal challenges from this address; retry in ${wait} s`, wait);
    return renewalChallenge(this.fleet, deviceId, now);
  }

  /** Writes the pending failure tallies. */
  async close(): Promise<void> {
    await this.failures.close();
  }

  private recordFailure(source: RequestSource, deviceId: string | undefined, via: string, e: unknown): void {
    const reason = (e as AuthenticationFailed).reason ?? "unknown-device";
    this.failures.record({ address: source.address ?? "unknown", source: sourceKey(source.address), deviceId, reason, via });
  }

  private recordRefusal(source: RequestSource, via: string, e: FactoryRefusal): void {
    this.failures.record({
      address: source.address ?? "unknown",
      source: sourceKey(source.address),
      deviceId: e.deviceId,
      reason: e.reason,
      via,
      action: "enrollment.refuse",
      details: { provisioner: "factory", ...e.details },
    });
  }
}

// ---- one method directly (the CLI, tests, benchmarks): the switch applies, the failure limits do not.
// These are the only entries per method: provisioners/ export their Provisioner alone, so nothing
// outside Enrollment and these functions can run a method without its fleetpki.yaml switch.

/** Runs one provisioner for a request, after its switch. */
async function runDirect(
  fleet: FleetServices,
  provisioner: Provisioner,
  request: EnrollmentRequest,
  credentialFirst = false,
): Promise<EnrollmentOutcome> {
  assertEnabled(fleet, provisioner);
  return provisioner.run(fleet, request, { now: request.now ?? fleet.clock.now(), credentialFirst });
}

/** As runDirect, for the provisioners that only ever issue. */
async function issueDirect(
  fleet: FleetServices,
  provisioner: Provisioner,
  request: EnrollmentRequest,
  credentialFirst = false,
): Promise<DeviceCertificate> {
  const outcome = await runDirect(fleet, provisioner, request, credentialFirst);
  if (outcome.status !== "issued") throw new Error(`the ${provisioner.name} provisioner answered "${outcome.status}"`);
  return outcome.certificate;
}

export function enrollWithToken(fleet: FleetServices, req: TokenEnrollment): Promise<DeviceCertificate> {
  const { credentialFirst, ...request } = req;
  return issueDirect(fleet, tokenProvisioner, { operation: "enroll", ...request }, credentialFirst);
}

export function enrollWithFactoryCertificate(fleet: FleetServices, req: FactoryEnrollment): Promise<DeviceCertificate> {
  return issueDirect(fleet, factoryProvisioner, { operation: "enroll", ...req });
}

export function enrollByApproval(fleet: FleetServices, req: ApprovalEnrollment): Promise<EnrollmentOutcome> {
  return runDirect(fleet, approvalProvisioner, { operation: "enroll", ...req });
}

export function renewWithCertificate(fleet: FleetServices, req: MtlsRenewal): Promise<DeviceCertificate> {
  return issueDirect(fleet, renewalProvisioner, { operation: "renew", ...req });
}

export function renewExpired(fleet: FleetServices, req: ExpiredRenewal): Promise<DeviceCertificate> {
  const { certificate, nonce, signature, ...request } = req;
  return issueDirect(fleet, expiredRenewalProvisioner, {
    operation: "renew-expired",
    ...request,
    proof: { certificate, nonce, signature },
  });
}

export { renewalChallenge };
