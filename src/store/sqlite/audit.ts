// AuditOperations on SQLite (Kysely).
import { chainAudit, type AuditEvent, type AuditRecord } from "../../audit/log.js";
import type { AuditOperations } from "../operations/audit.js";
import type { Tx } from "../store.js";

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
}
