// One way to prove that a device may obtain a certificate (as smallstep's authority/provisioner):
// a one-time token, a factory certificate, an operator's approval, the current certificate over
// mTLS, or a proof of possession after expiry. Each is one file in provisioners/, listed once in
// provisioners/index.ts; Enrollment (enrollment.ts) picks the one whose credential a request
// presents, applies the fleetpki.yaml switch and the failure limits, and runs it.
import type { EnrollmentConfig } from "../../config/config.js";
import type { DeviceCertificate } from "../issue/issuance.js";
import type { FleetServices } from "../services.js";
import type { ClientCertificate } from "./presented-certificate.js";
import type { RequestSource } from "./request-source.js";

/** enroll: a first certificate; renew: replace the certificate presented over mTLS; renew-expired: one that expired. */
export type EnrollmentOperation = "enroll" | "renew" | "renew-expired";

/** An enrollment or renewal request, as a transport saw it. */
export interface EnrollmentRequest {
  operation: EnrollmentOperation;
  csr: Buffer | string;
  source: RequestSource;
  /** The device id the requester names (HTTP Basic user, JSON device_id). */
  deviceId?: string;
  token?: string;
  /** The TLS client certificate, if one was presented. */
  clientCertificate?: ClientCertificate;
  /** renew-expired: the expired certificate, the challenge and the proof of possession over it. */
  proof?: { certificate: string | Buffer; nonce: string; signature: string };
  /** The transport has no field for the device id (EST): a request without credentials names it in the CSR's commonName. */
  deviceIdInCsr?: boolean;
  /** The request time; the fleet's clock unless a caller replays one. */
  now?: Date;
}

export type EnrollmentOutcome =
  | { status: "issued"; certificate: DeviceCertificate }
  | { status: "pending"; deviceId: string; requestId: string; retryAfterSeconds: number };

export interface ProvisionerContext {
  /** The request time. */
  now: Date;
  /** The source is over its failure limit: check the credential before costlier work (a CSR check). */
  credentialFirst: boolean;
}

export interface Provisioner {
  /** Its name in audit details, errors and the listing. */
  readonly name: string;
  readonly operation: EnrollmentOperation;
  /** Its switch in fleetpki.yaml (enrollment.<switch>), or undefined when always on. */
  readonly switch?: keyof Pick<EnrollmentConfig, "token" | "factory" | "approval">;
  /**
   * What a refusal of its credential does to the source: "count" (a failed authentication, counted
   * against the source's limit and audited in tallies), "audit" (audited only: an mTLS handshake
   * already proved the key), or "none" (it checks no credential).
   */
  readonly failures: "count" | "audit" | "none";
  /**
   * False for a provisioner that applies when a request presents no credential (approval): switched
   * off, such a request is answered "credentials required" rather than "provisioner disabled".
   */
  readonly credential: boolean;
  /** What it needs, for the answer to a request that presents nothing (e.g. "a factory client certificate"). */
  readonly asks: string;
  /** True when the request presents this provisioner's credential, or, for one without a credential, when it applies. */
  presents(request: EnrollmentRequest): boolean;
  /** The `via` of its failure tallies for a transport (e.g. "est-basic"). */
  failureVia(transport: string): string;
  /** Checks the credential and issues (or files a request); typed AuthorityErrors refuse. */
  run(fleet: FleetServices, request: EnrollmentRequest, context: ProvisionerContext): Promise<EnrollmentOutcome>;
}

/** The answer of a provisioner that only ever issues. */
export const issued = (certificate: DeviceCertificate): EnrollmentOutcome => ({ status: "issued", certificate });
