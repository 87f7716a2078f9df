// Conditions consumed inside the transaction that records a certificate: a one-time token, a
// renewal (with its nonce after expiry), an approved request, a device's one factory enrollment.
// They are plain data, queued with their certificate until the group commit records the batch.
// Each throws an AuthorityError to refuse its certificate, before writing anything, so a refusal
// leaves no trace.
//
// They run inside recorder.ts's synchronous better-sqlite3 transaction (the issuance hot path).
import type { CertificateTable, EnrollmentTokenTable, RenewalNonceTable } from "../../store/schema.js";
import { preparedStatement, type NativeDb } from "../../store/store.js";
import { ApprovalAlreadyIssued, AuthenticationFailed, CertificateAlreadyRenewed, NotPermitted } from "../errors.js";
import { assertUsableToken } from "../enroll/tokens.js";

export type IssueCondition =
  /** A one-time enrollment token, the row checkToken matched in constant time; `at` is the request time (ISO). */
  | { kind: "token"; deviceId: string; tokenId: string; at: string }
  /**
   * Renewal of certificate `renews` (it renews once); `nonce`: the renewal-after-expiry challenge
   * the proof was made over, spent with it.
   */
  | { kind: "renewal"; deviceId: string; renews: string; nonce?: string; at: string }
  /** An operator's approval of enrollment request `requestId`; the certificate's serial is recorded on it. */
  | { kind: "approval"; requestId: string }
  /** The device's one enrollment with a factory certificate (until `device reprovision`); `at` is the request time (ISO). */
  | { kind: "factory"; deviceId: string; factorySerial: string; at: string };

export function applyCondition(native: NativeDb, condition: IssueCondition, certificate: CertificateTable): void {
  switch (condition.kind) {
    case "token": {
      // One statement when the token is still good; only a refusal reads the row to say why.
      const spent = preparedStatement<{ at: string; serial: string; id: string; device: string }>(
        native,
        "update enrollment_tokens set used_at = @at, certificate_serial = @serial " +
          "where id = @id and device_id = @device and used_at is null and expires_at > @at",
      ).run({ at: condition.at, serial: certificate.serial, id: condition.tokenId, device: condition.deviceId });
      if (spent.changes === 1) return;
      const row = preparedStatement<[string, string], EnrollmentTokenTable>(
        native,
        "select * from enrollment_tokens where id = ? and device_id = ?",
      ).get(condition.tokenId, condition.deviceId);
      assertUsableToken(row, condition.deviceId, condition.at);
      throw new AuthenticationFailed("token-used", `the token for device "${condition.deviceId}" was already used`);
    }
    case "renewal": {
      // Checked first: a racing request renewed it already (enrollment.ts answers with that renewal
      // for the same key), and then the nonce stays unspent.
      const renewals = preparedStatement<[string], { serial: string }>(native, "select serial from renewals where renewed_serial = ?");
      const renewed = renewals.get(condition.renews);
      if (renewed) throw new CertificateAlreadyRenewed(condition.renews, renewed.serial);
      if (condition.nonce !== undefined) {
        const row = preparedStatement<[string], RenewalNonceTable>(native, "select * from renewal_nonces where nonce = ?").get(
          condition.nonce,
        );
        if (!row || row.device_id !== condition.deviceId || row.used_at || row.expires_at <= condition.at)
          throw new AuthenticationFailed("nonce-invalid", "the renewal challenge is unknown, expired, already used or for another device");
        preparedStatement<[string, string]>(native, "update renewal_nonces set used_at = ? where nonce = ?").run(
          condition.at,
          condition.nonce,
        );
      }
      const insert = "insert into renewals (renewed_serial, serial, device_id, created_at) values (?, ?, ?, ?)";
      preparedStatement<[string, string, string, string]>(native, insert).run(
        condition.renews,
        certificate.serial,
        condition.deviceId,
        condition.at,
      );
      return;
    }
    case "approval": {
      // The serial is recorded with the certificate, so a repeated poll finds what was issued.
      const r = preparedStatement<[string, string]>(
        native,
        "update enrollment_requests set status = 'issued', certificate_serial = ? where id = ? and status = 'approved'",
      ).run(certificate.serial, condition.requestId);
      if (r.changes !== 1) throw new ApprovalAlreadyIssued();
      return;
    }
    case "factory": {
      // Racing enrollments with one bundle: the row's primary key lets exactly one through.
      const r = preparedStatement<[string, string, string, string]>(
        native,
        "insert into factory_enrollments (device_id, factory_serial, certificate_serial, enrolled_at) values (?, ?, ?, ?) " +
          "on conflict (device_id) do nothing",
      ).run(condition.deviceId, condition.factorySerial, certificate.serial, condition.at);
      if (r.changes !== 1) throw factoryAlreadyEnrolled(condition.deviceId);
      return;
    }
  }
}

export function factoryAlreadyEnrolled(deviceId: string): NotPermitted {
  return new NotPermitted(
    "factory-already-enrolled",
    `device "${deviceId}" already enrolled with a factory certificate; ` +
      `an operator must run \`fleetpki device reprovision ${deviceId}\` to allow another`,
  );
}
