// Group commit for issuance: certificates issued concurrently are recorded in one write
// transaction (device check, conditions, certificate rows, audit rows). Each caller's promise settles
// only after the transaction that holds its certificate is durable, so nothing is handed out
// unrecorded, and the per-transaction cost is shared by everything that arrived meanwhile.
//
// The transaction is synchronous prepared statements on the store's connection (a few tens of
// microseconds per certificate); in a server the disk sync then runs on the thread pool (Store
// group sync). A recording thread was tried and measured slower: each batch crossed threads
// twice, and the hops cost more event-loop time than the statements themselves.
import { appendAuditNative, type AuditEvent } from "../../audit/log.js";
import type { CertificateTable } from "../../store/schema.js";
import type { Transaction as SqliteTransaction } from "better-sqlite3";
import { preparedStatement, type NativeDb, type Store } from "../../store/store.js";
import { applyCondition, type IssueCondition } from "./conditions.js";
import { AuthorityError, DeviceNotActive, UnknownDevice } from "../errors.js";

export interface RecordItem {
  row: CertificateTable;
  audit: AuditEvent;
  condition?: IssueCondition;
}

/** Per item: undefined when recorded, or the AuthorityError that refused it (nothing written for it). */
export type RecordOutcome = AuthorityError | undefined;

const MAX_BATCH = 256;

const INSERT_CERTIFICATE =
  "insert into certificates (serial, issuer_ca, kind, subject_id, device_id, not_before, not_after, fingerprint_sha256, der, status, " +
  "revoked_at, revocation_reason, created_at) " +
  "values (@serial, @issuer_ca, @kind, @subject_id, @device_id, @not_before, @not_after, @fingerprint_sha256, @der, @status, " +
  "@revoked_at, @revocation_reason, @created_at)";

/**
 * Records a batch in one write transaction (BEGIN IMMEDIATE) on a better-sqlite3 connection,
 * synchronously: with Kysely the same transaction cost 3-5x the CPU (measured with 1-4
 * certificates per batch, the registration server's usual size). Items refused by a device check
 * or their condition get their error in the result; anything else (a database error, a serial
 * collision) rolls back the whole transaction and is thrown.
 */
export function recordBatch(native: NativeDb, batch: readonly RecordItem[]): RecordOutcome[] {
  let record = batchTransactions.get(native);
  if (!record) batchTransactions.set(native, (record = native.transaction(recordInTransaction)));
  return record.immediate(native, batch);
}

// better-sqlite3's transaction() builds a new wrapper function with several properties on each
// call; building it once per connection keeps that off the hot path.
const batchTransactions = new WeakMap<NativeDb, SqliteTransaction<(native: NativeDb, batch: readonly RecordItem[]) => RecordOutcome[]>>();

function recordInTransaction(native: NativeDb, batch: readonly RecordItem[]): RecordOutcome[] {
  const outcomes: RecordOutcome[] = batch.map(() => undefined);
  const deviceStatus = preparedStatement<[string], { status: string }>(native, "select status from devices where id = ?");
  const accepted: RecordItem[] = [];
  for (const [i, p] of batch.entries()) {
    const id = p.row.device_id;
    const status = id === null ? "active" : deviceStatus.get(id)?.status;
    if (status === undefined) outcomes[i] = new UnknownDevice(id!);
    else if (status !== "active") outcomes[i] = new DeviceNotActive(id!, status);
    else {
      try {
        if (p.condition) applyCondition(native, p.condition, p.row);
        accepted.push(p);
      } catch (e) {
        if (!(e instanceof AuthorityError)) throw e;
        outcomes[i] = e;
      }
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

export interface IssuanceRecorder {
  /** Resolves once the row and its audit event are committed; rejects for unknown or inactive devices and refused conditions. */
  record(row: CertificateTable, audit: AuditEvent, condition?: IssueCondition): Promise<void>;
  /** Waits for queued records, then releases what the recorder holds. */
  close(): Promise<void>;
}

interface Pending extends RecordItem {
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class GroupCommitRecorder implements IssuanceRecorder {
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;

  constructor(private readonly store: Store) {}

  private async commit(batch: readonly RecordItem[]): Promise<RecordOutcome[]> {
    const outcomes = await this.store.withNative((native) => recordBatch(native, batch));
    await this.store.durable();
    return outcomes;
  }

  record(row: CertificateTable, audit: AuditEvent, condition?: IssueCondition): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ row, audit, condition, resolve, reject });
      if (!this.flushing) {
        // Deferred to the check phase so every completion of this event-loop turn joins the batch.
        this.flushing = new Promise((done) => setImmediate(() => void this.flush().finally(done)));
      }
    });
  }

  async close(): Promise<void> {
    await this.flushing;
  }

  private async flush(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, MAX_BATCH);
        let outcomes: RecordOutcome[];
        try {
          outcomes = await this.commit(batch);
        } catch (e) {
          for (const p of batch) p.reject(e);
          continue;
        }
        for (const [i, p] of batch.entries()) {
          const refused = outcomes[i];
          if (refused) p.reject(refused);
          else p.resolve();
        }
      }
    } finally {
      this.flushing = undefined;
    }
  }
}
