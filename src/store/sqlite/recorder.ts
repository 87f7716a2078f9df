// The issuance group commit's transaction on SQLite: a batch of certificates recorded in one write
// transaction (BEGIN IMMEDIATE) of synchronous prepared statements on a better-sqlite3
// connection. With Kysely the same transaction cost 3-5x the CPU (measured with 1-4 certificates
// per batch).
//
// Where it runs: the CLI runs it on its own connection, on the event loop. A server (group sync)
// hands it to a recording thread (RecordingThread, record-worker.ts) with a connection of its own:
// at 32 clients the transaction was the largest share of the event loop's time beyond the bare
// server (~100 us of CPU per certificate: statements, index pages, WAL frames, checkpoints), and a
// batch of ~15 certificates crosses threads for ~50-100 us. (An earlier recording thread, one
// message per certificate, measured slower: its hops cost more than the statements.)
//
// Each item's device is checked and its condition spent before anything is written for it; a
// refusal is returned as data and leaves no trace. Anything else (a database error, a serial
// collision) rolls back the whole transaction and is thrown.
import { Worker } from "node:worker_threads";
import type { Transaction as SqliteTransaction } from "better-sqlite3";
import { chainAudit, type AuditEvent, type AuditHead, type AuditRecord } from "../../audit/log.js";
import type { RecordCondition, RecordItem, RecordRefusal } from "../operations/certificates.js";
import type { CertificateTable, DeviceTable, EnrollmentTokenTable } from "../schema.js";
import { StoreError } from "../errors.js";
import { preparedStatement, type NativeDb } from "../store.js";

type Outcome = RecordRefusal | undefined;

const INSERT_CERTIFICATE =
  "insert into certificates (serial, issuer_ca, kind, subject_id, device_id, not_before, not_after, fingerprint_sha256, der, status, " +
  "revoked_at, revocation_reason, created_at) " +
  "values (@serial, @issuer_ca, @kind, @subject_id, @device_id, @not_before, @not_after, @fingerprint_sha256, @der, @status, " +
  "@revoked_at, @revocation_reason, @created_at)";

/**
 * A batch for the recording thread (record-worker.ts), and its answer. The certificates' DER
 * travel packed in one ArrayBuffer that is moved, not copied: a Buffer from Node's pool would
 * be cloned with its whole pool (8 KiB), which made posting a batch cost more than recording it.
 */
export interface RecordRequest {
  id: number;
  batch: (Omit<RecordItem, "row"> & { row: Omit<CertificateTable, "der"> & { der: { offset: number; length: number } } })[];
  ders: ArrayBuffer;
}
export type RecordReply =
  | { id: number; outcomes: Outcome[]; error?: undefined }
  | { id: number; error: { message: string; code?: string; name?: string } };

/**
 * The recording thread of a server's connection: recordBatch on a connection of its own, in a
 * worker thread, so the event loop only sends each batch and reads the outcomes. Batches run in
 * the order sent. If the thread dies, what it had not answered is rejected and later batches
 * are recorded on the event loop again.
 */
export class RecordingThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (o: Outcome[]) => void; reject: (e: unknown) => void }>();
  private nextId = 0;
  private dead: Error | undefined;
  private readonly exited: Promise<void>;

  /** `path`: the database file the caller's connection has open (WAL mode). */
  constructor(path: string) {
    this.worker = new Worker(workerEntry(), { workerData: { path } });
    // Referenced only while a batch is out: an idle thread must not keep a process alive.
    this.worker.unref();
    this.worker.on("message", (reply: RecordReply) => {
      const waiting = this.pending.get(reply.id);
      if (!waiting) return;
      this.forget(reply.id);
      if (reply.error === undefined) waiting.resolve(reply.outcomes);
      else waiting.reject(Object.assign(new StoreError(reply.error.message), { code: reply.error.code }));
    });
    this.worker.on("error", (e) => this.fail(e));
    this.exited = new Promise((resolve) =>
      this.worker.once("exit", (code) => {
        this.fail(new StoreError(`the recording thread exited (code ${code})`));
        resolve();
      }),
    );
  }

  /** False once the thread died: record on the event loop instead. */
  get usable(): boolean {
    return this.dead === undefined;
  }

  record(batch: readonly RecordItem[]): Promise<Outcome[]> {
    if (this.dead) return Promise.reject(this.dead);
    const id = ++this.nextId;
    const ders = new Uint8Array(batch.reduce((n, item) => n + item.row.der.length, 0));
    let offset = 0;
    // Only the data crosses (a caller's item may carry its own callbacks).
    const items: RecordRequest["batch"] = batch.map(({ row, audit, condition }) => {
      ders.set(row.der, offset);
      const der = { offset, length: row.der.length };
      offset += der.length;
      return { row: { ...row, der }, audit, ...(condition && { condition }) };
    });
    return new Promise((resolve, reject) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, batch: items, ders: ders.buffer } satisfies RecordRequest, [ders.buffer]);
    });
  }

  /** After the batches sent so far are answered: closes the thread's connection and ends it. */
  async close(): Promise<void> {
    if (!this.dead) {
      this.worker.ref();
      this.worker.postMessage("close");
    }
    await this.exited;
  }

  private forget(id: number): void {
    this.pending.delete(id);
    if (this.pending.size === 0) this.worker.unref();
  }

  private fail(e: Error): void {
    this.dead ??= e;
    for (const [id, waiting] of this.pending) {
      this.forget(id);
      waiting.reject(e);
    }
  }
}

/**
 * The worker's module: the compiled record-worker.js next to this file, or, when this file runs
 * as TypeScript under tsx (tests, benchmarks), a bootstrap that registers tsx in the worker first
 * (a worker does not inherit the loader) and then imports record-worker.ts.
 */
function workerEntry(): URL {
  if (!import.meta.url.endsWith(".ts")) return new URL("./record-worker.js", import.meta.url);
  const tsx = import.meta.resolve("tsx/esm/api");
  const entry = new URL("./record-worker.ts", import.meta.url).href;
  const code = `import { register } from ${JSON.stringify(tsx)}; register(); await import(${JSON.stringify(entry)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(code)}`);
}

/** The recording thread serving a connection (Store.useGroupSync starts it; Store.close ends it). */
const recordingThreads = new WeakMap<NativeDb, RecordingThread>();

export function startRecordingThread(native: NativeDb): RecordingThread {
  let thread = recordingThreads.get(native);
  if (!thread) recordingThreads.set(native, (thread = new RecordingThread(native.name)));
  return thread;
}

export async function stopRecordingThread(native: NativeDb): Promise<void> {
  const thread = recordingThreads.get(native);
  recordingThreads.delete(native);
  await thread?.close();
}

/**
 * Records a batch in one write transaction: on the connection's recording thread when it has one
 * (and is not inside a transaction of its own, whose uncommitted rows only it can see), otherwise
 * synchronously here.
 */
export function recordBatchOn(native: NativeDb, batch: readonly RecordItem[]): Outcome[] | Promise<Outcome[]> {
  const thread = native.inTransaction ? undefined : recordingThreads.get(native);
  return thread?.usable ? thread.record(batch) : recordBatch(native, batch);
}

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
