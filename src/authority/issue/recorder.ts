// Group commit for issuance: certificates issued concurrently are recorded in one write
// transaction (device check, conditions, certificate rows, audit rows: the store's
// certificates.record). Each caller's promise settles only after the transaction that holds its
// certificate is durable, so nothing is handed out unrecorded, and the per-transaction cost is
// shared by everything that arrived meanwhile. In a server the disk sync runs off the event loop,
// once for every commit made while the previous one ran (Store group sync).
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

  /** `store`: the fleet's Store (its operations, and durable() that waits for commits to reach the disk). */
  constructor(private readonly store: { ops: Operations; durable(): Promise<void> }) {}

  private async commit(batch: readonly RecordItem[]): Promise<(RecordRefusal | undefined)[]> {
    const outcomes = await this.store.ops.certificates.record(batch);
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
        let outcomes: (RecordRefusal | undefined)[];
        try {
          outcomes = await this.commit(batch);
        } catch (e) {
          for (const p of batch) p.reject(e);
          continue;
        }
        for (const [i, p] of batch.entries()) {
          const refused = outcomes[i];
          if (refused) p.reject(refusalError(p.row.device_id, p.condition, refused));
          else p.resolve();
        }
      }
    } finally {
      this.flushing = undefined;
    }
  }
}
