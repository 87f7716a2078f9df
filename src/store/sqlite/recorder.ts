// The issuance group commit's transaction on SQLite: a batch of certificates recorded in one write
// transaction (BEGIN IMMEDIATE) of synchronous prepared statements on the better-sqlite3
// connection, a few tens of microseconds per certificate. With Kysely the same transaction cost
// 3-5x the CPU (measured with 1-4 certificates per batch, the registration server's usual size).
// A recording thread was tried and measured slower: each batch crossed threads twice, and the hops
// cost more event-loop time than the statements themselves.
//
// Each item's device is checked and its condition spent before anything is written for it; a
// refusal is returned as data and leaves no trace. Anything else (a database error, a serial
// collision) rolls back the whole transaction and is thrown.
import type { Transaction as SqliteTransaction } from "better-sqlite3";
import { chainAudit, type AuditEvent, type AuditHead, type AuditRecord } from "../../audit/log.js";
import type { RecordCondition, RecordItem, RecordRefusal } from "../operations/certificates.js";
import type { CertificateTable, DeviceTable, EnrollmentTokenTable } from "../schema.js";
import { preparedStatement, type NativeDb } from "./connection.js";

type Outcome = RecordRefusal | undefined;

const INSERT_CERTIFICATE =
  "insert into certificates (serial, issuer_ca, kind, subject_id, device_id, not_before, not_after, fingerprint_sha256, der, status, " +
  "revoked_at, revocation_reason, created_at) " +
  "values (@serial, @issuer_ca, @kind, @subject_id, @device_id, @not_before, @not_after, @fingerprint_sha256, @der, @status, " +
  "@revoked_at, @revocation_reason, @created_at)";

/** Records a batch synchronously in one write transaction; per item undefined (recorded) or its refusal. */
export function recordBatch(native: NativeDb, batch: readonly RecordItem[]): Outcome[] {
  let record = batchTransactions.get(native);
  if (!record) batchTransactions.set(native, (record = native.transaction(recordInTransaction)));
  return record.immediate(native, batch);
}

// better-sqlite3's transaction() builds a new wrapper function with several properties on each
// call; building it once per connection keeps that off the hot path.
const batchTransactions = new WeakMap<NativeDb, SqliteTransaction<(native: NativeDb, batch: readonly RecordItem[]) => Outcome[]>>();

function recordInTransaction(native: NativeDb, batch: readonly RecordItem[]): Outcome[] {
  const outcomes: Outcome[] = batch.map(() => undefined);
  const deviceStatus = preparedStatement<[string], { status: DeviceTable["status"] }>(native, "select status from devices where id = ?");
  const accepted: RecordItem[] = [];
  for (const [i, p] of batch.entries()) {
    const id = p.row.device_id;
    const status = id === null ? "active" : deviceStatus.get(id)?.status;
    if (status === undefined) outcomes[i] = { refused: "unknown-device" };
    else if (status !== "active") outcomes[i] = { refused: "device-not-active", status };
    else {
      const refused = p.condition && spendCondition(native, p.condition, p.row);
      if (refused) outcomes[i] = refused;
      else accepted.push(p);
    }
  }
  const insert = preparedStatement<[CertificateTable]>(native, INSERT_CERTIFICATE);
  for (const p of accepted) insert.run(p.row);
  appendAuditNative(
    native,
    accepted.map((p) => p.audit),
  );
  return outcomes;
}

/** Spends the condition for `certificate`, or returns why it cannot be spent, having written nothing. */
function spendCondition(native: NativeDb, condition: RecordCondition, certificate: CertificateTable): RecordRefusal | undefined {
  switch (condition.kind) {
    case "token": {
      // One statement when the token is still good; only a refusal reads the row to say why.
      const spent = preparedStatement<{ at: string; serial: string; id: string; device: string }>(
        native,
        "update enrollment_tokens set used_at = @at, certificate_serial = @serial " +
          "where id = @id and device_id = @device and used_at is null and expires_at > @at",
      ).run({ at: condition.at, serial: certificate.serial, id: condition.tokenId, device: condition.deviceId });
      if (spent.changes === 1) return undefined;
      const token = preparedStatement<[string, string], Pick<EnrollmentTokenTable, "used_at" | "expires_at">>(
        native,
        "select used_at, expires_at from enrollment_tokens where id = ? and device_id = ?",
      ).get(condition.tokenId, condition.deviceId);
      return { refused: "token-unusable", token };
    }
    case "renewal": {
      // Checked first: a racing request renewed it already, and then the nonce stays unspent.
      const renewed = preparedStatement<[string], { serial: string }>(native, "select serial from renewals where renewed_serial = ?").get(
        condition.renews,
      );
      if (renewed) return { refused: "already-renewed", renewal: renewed.serial };
      if (condition.nonce !== undefined) {
        const spent = preparedStatement<{ at: string; nonce: string; device: string }>(
          native,
          "update renewal_nonces set used_at = @at where nonce = @nonce and device_id = @device and used_at is null and expires_at > @at",
        ).run({ at: condition.at, nonce: condition.nonce, device: condition.deviceId });
        if (spent.changes !== 1) return { refused: "nonce-unusable" };
      }
      const insert = "insert into renewals (renewed_serial, serial, device_id, created_at) values (?, ?, ?, ?)";
      preparedStatement<[string, string, string, string]>(native, insert).run(
        condition.renews,
        certificate.serial,
        condition.deviceId,
        condition.at,
      );
      return undefined;
    }
    case "approval": {
      // The serial is recorded with the request, so a repeated poll finds what was issued.
      const r = preparedStatement<[string, string]>(
        native,
        "update enrollment_requests set status = 'issued', certificate_serial = ? where id = ? and status = 'approved'",
      ).run(certificate.serial, condition.requestId);
      return r.changes === 1 ? undefined : { refused: "approval-not-approved" };
    }
    case "factory": {
      // Racing enrollments with one bundle: the row's primary key lets exactly one through.
      const r = preparedStatement<[string, string, string, string]>(
        native,
        "insert into factory_enrollments (device_id, factory_serial, certificate_serial, enrolled_at) values (?, ?, ?, ?) " +
          "on conflict (device_id) do nothing",
      ).run(condition.deviceId, condition.factorySerial, certificate.serial, condition.at);
      return r.changes === 1 ? undefined : { refused: "factory-already-enrolled" };
    }
  }
}

/**
 * Appends audit events (AuditOperations.append, synchronously) inside the caller's transaction on
 * a better-sqlite3 connection.
 */
export function appendAuditNative(native: NativeDb, events: readonly AuditEvent[]): AuditRecord[] {
  if (events.length === 0) return [];
  const head = preparedStatement<[], AuditHead>(native, "select seq, hash from audit_head where id = 1").get();
  const chained = chainAudit(head, events);
  const insertRow = preparedStatement<[AuditRecord]>(
    native,
    "insert into audit_log (seq, at, actor, action, subject, details, prev_hash, hash) " +
      "values (@seq, @at, @actor, @action, @subject, @details, @prev_hash, @hash)",
  );
  for (const row of chained.rows) insertRow.run(row);
  const writeHead = head
    ? "update audit_head set seq = @seq, hash = @hash where id = 1"
    : "insert into audit_head (id, seq, hash) values (1, @seq, @hash)";
  preparedStatement<[AuditHead]>(native, writeHead).run(chained.head);
  return chained.rows;
}
