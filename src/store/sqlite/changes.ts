// ChangeOperations on SQLite (Kysely): a one-row read of the head a few times a second, then the new rows.
import type { ChangeOperations } from "../operations/changes.js";
import type { AuditLogTable } from "../schema.js";
import type { Tx } from "./connection.js";

export class SqliteChangeOperations implements ChangeOperations {
  constructor(private readonly db: Tx) {}

  async headSeq(): Promise<number> {
    return (await this.db.selectFrom("audit_head").select("seq").where("id", "=", 1).executeTakeFirst())?.seq ?? 0;
  }

  rowsAfter(seq: number, limit: number): Promise<AuditLogTable[]> {
    return this.db.selectFrom("audit_log").selectAll().where("seq", ">", seq).orderBy("seq").limit(limit).execute();
  }
}
