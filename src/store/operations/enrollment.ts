// What enrollment asks of its database: tokens, renewal challenges, enrollment requests waiting for
// an operator, and the lookups that answer a retry with what a credential already obtained. Spending
// a token, nonce or approval happens where the certificate is recorded (issue/), not here. Devices
// and certificates are read through their own areas (devices, certificates).
import type { EnrollmentRequestTable, EnrollmentTokenTable, FactoryEnrollmentTable, RenewalNonceTable } from "../schema.js";

/** What bounds, audit and listings need of an enrollment request (not its CSR). */
export type RequestSummary = Pick<
  EnrollmentRequestTable,
  "id" | "device_id" | "source" | "source_group" | "source_address" | "key_fingerprint" | "created_at"
>;

/** A token row as the constant-time match needs it. */
export type TokenCheckRow = Pick<EnrollmentTokenTable, "id" | "token_hash" | "used_at" | "expires_at">;

/** A renewal challenge to store if its device may use one; instants are ISO 8601. */
export interface RenewalChallenge {
  nonce: string;
  deviceId: string;
  /** The request time: challenges expired by then are dropped. */
  at: string;
  expiresAt: string;
  /** Eligible: an active device's valid certificate that expired in [expiredSince, expiredBy] ... */
  expiredSince: string;
  expiredBy: string;
  /** ... and the newest `keep` unexpired challenges of the device are kept besides the new one. */
  keep: number;
}

/** Waiting requests filed at or after `since` (older ones have expired). */
export interface PendingFilter {
  since: string;
  deviceId?: string;
  /** Only requests from this source group (null: from an unknown source). */
  sourceGroup?: string | null;
  /** Only requests whose source address is known. */
  withAddress?: boolean;
}

export interface RequestDecision {
  status: "approved" | "denied";
  at: string;
  by: string;
}

export interface EnrollmentOperations {
  insertToken(row: EnrollmentTokenTable): Promise<void>;
  /** Every token of a device (the caller matches the presented one in constant time). On the token hot path. */
  tokensOf(deviceId: string): Promise<TokenCheckRow[]>;
  /** The spent tokens of a device, with the certificate each paid for. */
  spentTokensOf(deviceId: string): Promise<Pick<EnrollmentTokenTable, "token_hash" | "certificate_serial">[]>;

  /** The serial of the certificate that renewed `renewedSerial`, if it was renewed. */
  renewalOf(renewedSerial: string): Promise<string | undefined>;
  /** The device's one factory enrollment, if it has used it. */
  factoryEnrollment(deviceId: string): Promise<FactoryEnrollmentTable | undefined>;

  renewalNonce(nonce: string): Promise<Pick<RenewalNonceTable, "device_id" | "expires_at"> | undefined>;
  /**
   * Stores the challenge when its device is eligible, dropping expired challenges and the device's
   * oldest beyond `keep`; one short write transaction that does not wait for the disk (a challenge
   * lost in a crash is only asked for again). True when stored.
   */
  storeRenewalChallenge(challenge: RenewalChallenge): Promise<boolean>;

  /** The newest request of a device for a key, whatever its status. */
  latestRequest(deviceId: string, keyFingerprint: string): Promise<EnrollmentRequestTable | undefined>;
  /** Waiting requests, oldest first (ties by id). */
  pendingRequests(filter: PendingFilter): Promise<RequestSummary[]>;
  countPending(filter: PendingFilter): Promise<number>;
  /** The source group with the most waiting requests and how many (ties: any of them). */
  biggestPendingGroup(since: string): Promise<{ sourceGroup: string | null; count: number } | undefined>;
  insertRequest(row: EnrollmentRequestTable): Promise<void>;
  /** Deletes the waiting requests filed before `before`; returns what it deleted. */
  purgeExpiredRequests(before: string): Promise<RequestSummary[]>;
  /** Deletes a request if it is still waiting (eviction). */
  deletePendingRequest(id: string): Promise<void>;
  decideRequests(ids: readonly string[], decision: RequestDecision): Promise<void>;
}
