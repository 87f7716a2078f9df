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
  /** Distinct keys recorded per subject in the current minute (across flushes). */
  private topics = new Map<string, { minute: string; keys: number }>();
  private timer: NodeJS.Timeout | undefined;
  /** Set while a flush for a new row is due (only once start() ran). */
  private soon: NodeJS.Timeout | undefined;
  private soonMs = 0;
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
    let key = JSON.stringify([denial.subject, denial.action, denial.topic, minute, denial.outcome]);
    let row = this.pending.get(key);
    if (!row) {
      let seen = this.topics.get(denial.subject);
      if (seen?.minute !== minute) this.topics.set(denial.subject, (seen = { minute, keys: 0 }));
      if (seen.keys >= MAX_TOPICS_PER_IDENTITY) {
        denial = { ...denial, topic: OTHER_TOPICS };
        key = JSON.stringify([denial.subject, denial.action, denial.topic, minute, denial.outcome]);
        row = this.pending.get(key);
      } else seen.keys++;
    }
    if (row) row.count++;
    else {
      this.pending.set(key, { ...denial, minute, count: 1 });
      if (this.pending.size >= MAX_PENDING) void this.flush();
      else if (this.timer && !this.soon) {
        this.soon = setTimeout(() => void this.flush(), this.soonMs);
        this.soon.unref();
      }
    }
  }

  /** Appends what is pending; never rejects (errors go to onError, the rows are dropped with them). */
  flush(): Promise<void> {
    clearTimeout(this.soon);
    this.soon = undefined;
    if (this.pending.size === 0) return this.flushing;
    const rows = [...this.pending.values()];
    this.pending = new Map();
    const t = this.now().getTime();
    const minute = new Date(t - (t % 60_000)).toISOString();
    for (const [subject, seen] of this.topics) if (seen.minute !== minute) this.topics.delete(subject);
    this.flushing = this.flushing.then(() => this.sink(rows)).catch((e: unknown) => this.onError(e));
    return this.flushing;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
