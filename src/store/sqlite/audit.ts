// AuditOperations on SQLite (Kysely).
import { sql } from "kysely";
import { chainAudit, type AuditEvent, type AuditRecord } from "../../audit/log.js";
import type { AuditOperations, AuditPageQuery, AuditStateSource } from "../operations/audit.js";
import type { Tx } from "./connection.js";

export class SqliteAuditOperations implements AuditOperations {
  constructor(private readonly db: Tx) {}

  async append(events: readonly AuditEvent[]): Promise<AuditRecord[]> {
    if (events.length === 0) return [];
    const head = await this.head();
    const chained = chainAudit(head, events);
    await this.db.insertInto("audit_log").values(chained.rows).execute();
    if (head) await this.db.updateTable("audit_head").set(chained.head).where("id", "=", 1).execute();
    else
      await this.db
        .insertInto("audit_head")
        .values({ id: 1, ...chained.head })
        .execute();
    return chained.rows;
  }

  head() {
    return this.db.selectFrom("audit_head").select(["seq", "hash"]).where("id", "=", 1).executeTakeFirst();
  }

  rows(afterSeq: number, limit: number, throughSeq?: number): Promise<AuditRecord[]> {
    let q = this.db.selectFrom("audit_log").selectAll().where("seq", ">", afterSeq);
    if (throughSeq !== undefined) q = q.where("seq", "<=", throughSeq);
    return q.orderBy("seq").limit(limit).execute();
  }

  row(seq: number): Promise<AuditRecord | undefined> {
    return this.db.selectFrom("audit_log").selectAll().where("seq", "=", seq).executeTakeFirst();
  }

  async lowestSeq(): Promise<number | undefined> {
    return (await this.db.selectFrom("audit_log").select("seq").orderBy("seq").limit(1).executeTakeFirst())?.seq;
  }

  async countBefore(seq: number): Promise<number> {
    const { n } = await this.db
      .selectFrom("audit_log")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("seq", "<", seq)
      .executeTakeFirstOrThrow();
    return Number(n);
  }

  list(query: { since?: string; limit?: number }): Promise<AuditRecord[]> {
    let q = this.db.selectFrom("audit_log").selectAll().where("seq", ">", 0).orderBy("seq");
    if (query.since !== undefined) q = q.where("at", ">=", query.since);
    if (query.limit !== undefined) q = q.limit(query.limit);
    return q.execute();
  }

  async page(query: AuditPageQuery): Promise<AuditRecord[]> {
    let byTime = false;
    if (query.from !== undefined || query.to !== undefined) {
      // A time window with few rows is read through the at index and sorted; a wide one is read
      // newest first, filtered (its rows are dense there). The count is of index entries, capped.
      const { n } = await sql<{ n: number }>`select count(*) as n from (select 1 from audit_log where at >= ${query.from ?? ""}
        and at < ${query.to ?? "~"} limit ${TIME_INDEX_ROWS + 1})`
        .execute(this.db)
        .then((r) => r.rows[0]!);
      byTime = n <= TIME_INDEX_ROWS;
    }
    return auditPageQuery(this.db, query, byTime).execute();
  }

  ofSubject(subject: string, limit: number): Promise<AuditRecord[]> {
    return this.db
      .selectFrom("audit_log")
      .selectAll()
      .where("subject", "=", subject)
      .where("seq", ">", 0)
      .orderBy("seq", "desc")
      .limit(limit)
      .execute();
  }

  get state(): AuditStateSource {
    return new SqliteAuditState(this.db);
  }
}

class SqliteAuditState implements AuditStateSource {
  constructor(private readonly db: Tx) {}

  certificates(afterSerial: string, limit: number) {
    return this.db
      .selectFrom("certificates")
      .select(["serial", "kind", "subject_id", "status", "revocation_reason", "fingerprint_sha256", "not_after", "der"])
      .where("serial", ">", afterSerial)
      .orderBy("serial")
      .limit(limit)
      .execute();
  }

  cas() {
    return this.db.selectFrom("cas").select(["id", "status", "serial"]).execute();
  }

  devices(afterId: string, limit: number) {
    return this.db
      .selectFrom("devices")
      .select(["id", "status", "group_name", "labels"])
      .where("id", ">", afterId)
      .orderBy("id")
      .limit(limit)
      .execute();
  }

  tokens() {
    return this.db
      .selectFrom("enrollment_tokens")
      .select(["id", "device_id", "token_hash", "expires_at", "used_at"])
      .orderBy("created_at")
      .execute();
  }

  requests() {
    return this.db.selectFrom("enrollment_requests").select(["id", "device_id", "status", "certificate_serial", "created_at"]).execute();
  }

  factoryEnrollments() {
    return this.db.selectFrom("factory_enrollments").selectAll().execute();
  }

  renewals() {
    return this.db.selectFrom("renewals").selectAll().execute();
  }

  async migrationTimes(): Promise<{ name: string; timestamp: string }[]> {
    try {
      const rows = await sql<{ name: string; timestamp: string }>`select name, timestamp from kysely_migration`.execute(this.db);
      return rows.rows;
    } catch {
      return [];
    }
  }
}

/** Up to this many rows in a time window are read through the at index and sorted. */
export const TIME_INDEX_ROWS = 5_000;

/**
 * The page query, unexecuted: tests and the admin bench check its plan (EXPLAIN QUERY PLAN).
 * byTime: through the at index (`+seq` keeps the planner off the seq order and range), else in seq order
 * with `+at` keeping it off the at index (SQLite's estimate of a range's size is a guess).
 */
export function auditPageQuery(db: Tx, query: AuditPageQuery, byTime = false) {
  const seq = byTime ? sql<number>`+seq` : sql<number>`seq`;
  let q = db.selectFrom("audit_log").selectAll().where(seq, ">", 0);
  if (query.beforeSeq !== undefined) q = q.where(seq, "<", query.beforeSeq);
  if (query.actor !== undefined) q = q.where("actor", "=", query.actor);
  if (query.action !== undefined) q = q.where("action", "=", query.action);
  if (query.subject !== undefined) q = q.where("subject", "=", query.subject);
  const at = byTime ? sql<string>`at` : sql<string>`+at`;
  if (query.from !== undefined) q = q.where(at, ">=", query.from);
  if (query.to !== undefined) q = q.where(at, "<", query.to);
  return q.orderBy(seq, "desc").limit(query.limit);
}
