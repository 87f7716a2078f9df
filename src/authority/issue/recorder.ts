// Group commit for issuance: certificates issued concurrently are recorded in one write
// transaction (device check, conditions, certificate rows, audit rows: the store's
// certificates.record). Each caller's promise settles only after the transaction that holds its
// certificate is durable, so nothing is handed out unrecorded, and the per-transaction cost is
// shared by everything that arrived meanwhile. In a server the disk sync runs off the event loop,
// once for every commit made while the previous one ran (Store group sync), and the next batch
// commits while the previous one syncs.
import type { AuditEvent } from "../../audit/log.js";
import type { CertificateTable } from "../../store/schema.js";
import type { RecordItem, RecordRefusal } from "../../store/operations/certificates.js";
import type { Operations } from "../../store/operations.js";
import { refusalError, type IssueCondition } from "./conditions.js";

const MAX_BATCH = 256;

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
  /** Committed batches waiting for their sync. */
  private readonly syncing = new Set<Promise<void>>();

  /** `store`: the fleet's Store (its operations, and durable() that waits for commits to reach the disk). */
  constructor(private readonly store: { ops: Operations; durable(): Promise<void> }) {}

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
    await Promise.allSettled([...this.syncing]);
  }

  /**
   * One transaction at a time, each holding everything queued when it starts. A committed batch
   * waits for its sync on the side: the next batch commits meanwhile (a sync that starts after a
   * commit covers it), so the transactions, run on the recording thread in a server, never wait
   * for the disk, and the disk never waits for the next transaction.
   */
  private async flush(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, MAX_BATCH);
        let outcomes: (RecordRefusal | undefined)[];
        try {
          outcomes = await this.store.ops.certificates.record(batch);
        } catch (e) {
          for (const p of batch) p.reject(e);
          continue;
        }
        const settled = this.store.durable().then(
          () => settle(batch, outcomes),
          (e: unknown) => batch.forEach((p) => p.reject(e)),
        );
        this.syncing.add(settled);
        void settled.finally(() => this.syncing.delete(settled));
      }
    } finally {
      this.flushing = undefined;
    }
  }
}

/** Once the batch is durable: each certificate recorded, or refused (nothing was written for it). */
function settle(batch: readonly Pending[], outcomes: readonly (RecordRefusal | undefined)[]): void {
  for (const [i, p] of batch.entries()) {
    const refused = outcomes[i];
    if (refused) p.reject(refusalError(p.row.device_id, p.condition, refused));
    else p.resolve();
  }
}
