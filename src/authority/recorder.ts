// Group commit for issuance: certificates issued concurrently are recorded in one write
// transaction (device check, certificate rows, audit rows). Each caller's promise settles only
// after the transaction that holds its certificate has committed, so nothing is handed out
// unrecorded, and the per-transaction cost is shared by everything that arrived meanwhile.
import { appendAudit, type AuditEvent } from "../audit/log.js";
import type { CertificateTable } from "../store/schema.js";
import type { Store, Tx } from "../store/store.js";
import { AuthorityError, DeviceNotActive, UnknownDevice } from "./errors.js";

/**
 * A condition checked and consumed inside the recording transaction (a one-time token, a
 * renewal nonce, an approved request). It throws an AuthorityError to refuse its certificate,
 * and must do so before writing anything, so a refusal leaves no trace.
 */
export type Claim = (tx: Tx, certificate: CertificateTable) => Promise<void>;

interface Pending {
  row: CertificateTable;
  audit: AuditEvent;
  claim?: Claim;
  resolve: () => void;
  reject: (e: unknown) => void;
}

const MAX_BATCH = 256;

export class IssuanceRecorder {
  private queue: Pending[] = [];
  private flushing = false;

  constructor(private readonly store: Store) {}

  /** Resolves once the row and its audit event are committed; rejects for unknown or inactive devices. */
  record(row: CertificateTable, audit: AuditEvent, claim?: Claim): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ row, audit, claim, resolve, reject });
      if (!this.flushing) {
        this.flushing = true;
        // Deferred to the check phase so every completion of this event-loop turn joins the batch.
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, MAX_BATCH);
        const refused = new Map<Pending, Error>();
        try {
          await this.store.transaction(async (tx) => {
            const ids = [...new Set(batch.map((p) => p.row.device_id).filter((id): id is string => id !== null))];
            const status = new Map<string, string>();
            if (ids.length > 0)
              for (const d of await tx.selectFrom("devices").select(["id", "status"]).where("id", "in", ids).execute()) status.set(d.id, d.status);
            const accepted: Pending[] = [];
            for (const p of batch) {
              const id = p.row.device_id;
              const s = id === null ? "active" : status.get(id);
              if (s === undefined) refused.set(p, new UnknownDevice(id!));
              else if (s !== "active") refused.set(p, new DeviceNotActive(id!, s));
              else if (p.claim) {
                try {
                  await p.claim(tx, p.row);
                  accepted.push(p);
                } catch (e) {
                  if (!(e instanceof AuthorityError)) throw e;
                  refused.set(p, e);
                }
              } else accepted.push(p);
            }
            if (accepted.length === 0) return;
            await tx.insertInto("certificates").values(accepted.map((p) => p.row)).execute();
            await appendAudit(tx, accepted.map((p) => p.audit));
          });
        } catch (e) {
          for (const p of batch) p.reject(e);
          continue;
        }
        for (const p of batch) {
          const why = refused.get(p);
          if (why) p.reject(why);
          else p.resolve();
        }
      }
    } finally {
      this.flushing = false;
    }
  }
}
