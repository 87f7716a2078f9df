// Denied requests go into the audit log aggregated per identity, action, topic and minute: a
// device stuck in a loop publishing where it may not writes a few rows a minute per topic, with
// counts, not one row per message. A denial of a new kind is appended within about a second (an
// operator watching the log sees an attack start); repeats are added up and appended on a timer
// and at close.
import type { AccessAction } from "./identity.js";

export const DENY_ACTION = "access.deny";

export interface DenialRow {
  /** The audit subject: "device:<id>", "service:<name>" or "operator:<name>". */
  subject: string;
  action: AccessAction;
  topic: string;
  /** Start of the minute (UTC, ISO) the denials fell in. */
  minute: string;
  count: number;
  /** "deny", or "audit-deny" for would-denies that audit mode let through. */
  outcome: "deny" | "audit-deny";
  rule: string | undefined;
}

/** Writes rows to the audit log (one transaction per flush). */
export type DenialSink = (rows: readonly DenialRow[]) => Promise<void>;

/** Distinct (identity, action, topic) keys kept per minute before older keys are flushed early. */
const MAX_PENDING = 10_000;

/**
 * Distinct topics audited per identity and minute. The denials budget closes a connection, not an
 * identity: one reconnecting in a loop with a new topic each time would write a row per topic. Past
 * this, its denials of that minute share one row whose topic is OTHER_TOPICS (the counts still add up).
 */
export const MAX_TOPICS_PER_IDENTITY = 100;
export const OTHER_TOPICS = "(other topics)";

export class DenialLog {
  private pending = new Map<string, DenialRow>();
  private timer: NodeJS.Timeout | undefined;
  /** Set while a flush for a new row is due (only once start() ran). */
  private soon: NodeJS.Timeout | undefined;
  private soonMs = 0;
  /**
   * What was recorded in `seenMinute` (across flushes): the first denial of a key asks for a prompt
   * flush, and an identity's distinct topics are counted against MAX_TOPICS_PER_IDENTITY.
   */
  private seen = new Set<string>();
  private topicsPerSubject = new Map<string, number>();
  private seenMinute = "";
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly sink: DenialSink,
    private readonly now: () => Date,
    private readonly onError: (e: unknown) => void = () => {},
  ) {}

  /** Flushes every intervalMs (default 10 s), and newMs (default 1 s) after a denial of a new kind. */
  start(intervalMs = 10_000, newMs = 1_000): void {
    this.timer = setInterval(() => void this.flush(), intervalMs);
    this.timer.unref();
    this.soonMs = newMs;
  }

  record(denial: Omit<DenialRow, "minute" | "count">): void {
    const t = this.now().getTime();
    const minute = new Date(t - (t % 60_000)).toISOString();
    if (minute !== this.seenMinute) {
      this.seen.clear();
      this.topicsPerSubject.clear();
      this.seenMinute = minute;
    }
    let key = denialKey(denial, minute);
    if (!this.seen.has(key)) {
      const topics = this.topicsPerSubject.get(denial.subject) ?? 0;
      if (topics >= MAX_TOPICS_PER_IDENTITY) {
        denial = { ...denial, topic: OTHER_TOPICS };
        key = denialKey(denial, minute);
      } else this.topicsPerSubject.set(denial.subject, topics + 1);
    }
    const first = !this.seen.has(key);
    this.seen.add(key);
    const row = this.pending.get(key);
    if (row) {
      row.count++;
      return;
    }
    this.pending.set(key, { ...denial, minute, count: 1 });
    if (this.pending.size >= MAX_PENDING) void this.flush();
    else if (first && this.timer && !this.soon) {
      this.soon = setTimeout(() => void this.flush(), this.soonMs);
      this.soon.unref();
    }
  }

  /** Appends what is pending; never rejects (errors go to onError, the rows are dropped with them). */
  flush(): Promise<void> {
    clearTimeout(this.soon);
    this.soon = undefined;
    if (this.pending.size === 0) return this.flushing;
    const rows = [...this.pending.values()];
    this.pending = new Map();
    this.flushing = this.flushing.then(() => this.sink(rows)).catch((e: unknown) => this.onError(e));
    return this.flushing;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}

function denialKey(d: Omit<DenialRow, "minute" | "count">, minute: string): string {
  return JSON.stringify([d.subject, d.action, d.topic, minute, d.outcome]);
}
