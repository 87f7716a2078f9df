// Conditions consumed inside the transaction that records a certificate: a one-time token, a
// renewal (with its nonce after expiry), an approved request, a device's one factory enrollment.
// They are plain data, queued with their certificate until the group commit records the batch.
// The store spends a condition or, writing nothing, returns what it found instead (RecordRefusal);
// here that becomes the AuthorityError that refuses the certificate.
import type { EnrollmentTokenTable } from "../../store/schema.js";
import type { RecordCondition, RecordRefusal } from "../../store/operations/certificates.js";
import {
  ApprovalAlreadyIssued,
  AuthenticationFailed,
  CertificateAlreadyRenewed,
  DeviceNotActive,
  NotPermitted,
  UnknownDevice,
  type AuthorityError,
} from "../errors.js";

export type IssueCondition = RecordCondition;

/** The error refusing a certificate for device `deviceId` (null: no device) whose recording the store refused. */
export function refusalError(deviceId: string | null, condition: IssueCondition | undefined, refusal: RecordRefusal): AuthorityError {
  switch (refusal.refused) {
    case "unknown-device":
      return new UnknownDevice(deviceId!);
    case "device-not-active":
      return new DeviceNotActive(deviceId!, refusal.status);
    case "token-unusable": {
      const c = condition as Extract<IssueCondition, { kind: "token" }>;
      // The row was usable when checked: a racing request spent it in between.
      return tokenRefusal(refusal.token, c.deviceId, c.at) ?? tokenUsed(c.deviceId);
    }
    case "already-renewed":
      return new CertificateAlreadyRenewed((condition as Extract<IssueCondition, { kind: "renewal" }>).renews, refusal.renewal);
    case "nonce-unusable":
      return new AuthenticationFailed("nonce-invalid", "the renewal challenge is unknown, expired, already used or for another device");
    case "approval-not-approved":
      return new ApprovalAlreadyIssued();
    case "factory-already-enrolled":
      return factoryAlreadyEnrolled(deviceId!);
  }
}

/** Why a token row (undefined: none matched) cannot pay for a certificate at `at` (ISO), or undefined when it can. */
export function tokenRefusal(
  row: Pick<EnrollmentTokenTable, "used_at" | "expires_at"> | undefined,
  deviceId: string,
  at: string,
): AuthenticationFailed | undefined {
  if (!row) return new AuthenticationFailed("token-invalid", `invalid token for device "${deviceId}"`);
  if (row.used_at) return tokenUsed(deviceId);
  if (row.expires_at <= at)
    return new AuthenticationFailed("token-expired", `the token for device "${deviceId}" expired at ${row.expires_at}`);
  return undefined;
}

/** `at`: the request time, ISO 8601. */
export function assertUsableToken<T extends Pick<EnrollmentTokenTable, "used_at" | "expires_at">>(
  row: T | undefined,
  deviceId: string,
  at: string,
): asserts row is T {
  const refused = tokenRefusal(row, deviceId, at);
  if (refused) throw refused;
}

function tokenUsed(deviceId: string): AuthenticationFailed {
  return new AuthenticationFailed("token-used", `the token for device "${deviceId}" was already used`);
}

export function factoryAlreadyEnrolled(deviceId: string): NotPermitted {
  return new NotPermitted(
    "factory-already-enrolled",
    `device "${deviceId}" already enrolled with a factory certificate; ` +
      `an operator must run \`fleetpki device reprovision ${deviceId}\` to allow another`,
  );
}
