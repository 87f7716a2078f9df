// AuditOperations on SQLite (Kysely).
import { sql } from "kysely";
import { chainAudit, type AuditEvent, type AuditRecord } from "../../audit/log.js";
import type { AuditOperations, AuditStateSource } from "../operations/audit.js";
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
