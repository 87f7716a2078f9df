// Following the audit log: every process (serve, serve --only status, several of them) learns of
// changes made by any other process on the same database (e.g. `fleetpki device revoke` from a
// shell) by polling the audit head, a one-row read, a few times a second. Rows are decoded once
// (events.ts) and listeners get typed events.
import type { FleetStore } from "../../store/operations.js";
import { decodeAuditRow, type FleetEvent } from "./events.js";

export type ChangeListener = (events: readonly FleetEvent[]) => void;

const DEFAULT_INTERVAL_MS = 200;
const PAGE = 500;

export class ChangeFeed {
  private lastSeq = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<ChangeListener>();
  private polling: Promise<void> | undefined;

  constructor(
    private readonly store: FleetStore,
    private readonly intervalMs = DEFAULT_INTERVAL_MS,
    private readonly onError: (e: unknown) => void = () => {},
  ) {}

  /** Starts after the current head: only changes made from now on are reported. */
  async start(): Promise<void> {
    this.lastSeq = await this.store.ops.changes.headSeq();
    this.timer = setInterval(() => void this.poll(), this.intervalMs);
    this.timer.unref();
  }

  /** The sequence number of the last event delivered (or of the head at start). */
  get position(): number {
    return this.lastSeq;
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

  private async read(): Promise<void> {
    try {
      for (;;) {
        const head = await this.store.ops.changes.headSeq();
        if (head <= this.lastSeq) return;
        const rows = await this.store.ops.changes.rowsAfter(this.lastSeq, PAGE);
        if (rows.length === 0) return;
        this.lastSeq = rows[rows.length - 1]!.seq;
        const events = rows.map(decodeAuditRow);
        for (const listener of this.listeners) {
          try {
            listener(events);
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
