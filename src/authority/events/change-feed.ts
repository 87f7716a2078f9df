// Following the audit log: every process (serve, serve --only status, several of them) learns of
// changes made by any other process on the same database (e.g. `fleetpki device revoke` from a
// shell) by polling the audit head, a one-row read, a few times a second.
import type { AuditRecord } from "../../audit/log.js";
import { preparedStatement, type Store } from "../../store/store.js";

export type ChangeListener = (events: readonly AuditRecord[]) => void;

const DEFAULT_INTERVAL_MS = 200;
const PAGE = 500;

export class ChangeFeed {
  private lastSeq = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<ChangeListener>();
  private polling: Promise<void> | undefined;

  constructor(
    private readonly store: Store,
    private readonly intervalMs = DEFAULT_INTERVAL_MS,
    private readonly onError: (e: unknown) => void = () => {},
  ) {}

  /** Starts after the current head: only changes made from now on are reported. */
  async start(): Promise<void> {
    this.lastSeq = await this.headSeq();
    this.timer = setInterval(() => void this.poll(), this.intervalMs);
    this.timer.unref();
  }

  subscribe(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reads and reports what is new now (also called by the interval); concurrent calls share one read. */
  poll(): Promise<void> {
    this.polling ??= this.read().finally(() => (this.polling = undefined));
    return this.polling;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.polling;
  }

  private headSeq(): Promise<number> {
    return this.store.withNative(
      (native) => preparedStatement<[], { seq: number }>(native, "select seq from audit_head where id = 1").get()?.seq ?? 0,
    );
  }

  private async read(): Promise<void> {
    try {
      for (;;) {
        const head = await this.headSeq();
        if (head <= this.lastSeq) return;
        const rows = await this.store.withNative((native) =>
          preparedStatement<[number, number], AuditRecord>(native, "select * from audit_log where seq > ? order by seq limit ?").all(
            this.lastSeq,
            PAGE,
          ),
        );
        if (rows.length === 0) return;
        this.lastSeq = rows[rows.length - 1]!.seq;
        for (const listener of this.listeners) {
          try {
            listener(rows);
          } catch (e) {
            this.onError(e);
          }
        }
      }
    } catch (e) {
      this.onError(e);
    }
  }
}
