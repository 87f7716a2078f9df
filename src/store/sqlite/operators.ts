// OperatorOperations on SQLite (Kysely).
import type { OperatorOperations } from "../operations/operators.js";
import type { OperatorLoginTable, OperatorSessionTable, OperatorTable } from "../schema.js";
import type { Tx } from "./connection.js";

export class SqliteOperatorOperations implements OperatorOperations {
  constructor(private readonly db: Tx) {}

  get(name: string): Promise<OperatorTable | undefined> {
    return this.db.selectFrom("operators").selectAll().where("name", "=", name).executeTakeFirst();
  }

  list(): Promise<OperatorTable[]> {
    return this.db.selectFrom("operators").selectAll().orderBy("name").execute();
  }

  async put(row: OperatorTable): Promise<void> {
    await this.db
      .insertInto("operators")
      .values(row)
      .onConflict((oc) => oc.column("name").doUpdateSet({ role: row.role, status: row.status, updated_at: row.updated_at }))
      .execute();
  }

  async update(name: string, change: Partial<Pick<OperatorTable, "role" | "status">> & { updated_at: string }): Promise<boolean> {
    const r = await this.db.updateTable("operators").set(change).where("name", "=", name).executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  async activeAdmins(): Promise<number> {
    const r = await this.db
      .selectFrom("operators")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .where("role", "=", "admin")
      .where("status", "=", "active")
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  async addLogin(row: OperatorLoginTable): Promise<void> {
    await this.db.insertInto("operator_logins").values(row).execute();
  }

  getLogin(tokenHash: string): Promise<OperatorLoginTable | undefined> {
    return this.db.selectFrom("operator_logins").selectAll().where("token_hash", "=", tokenHash).executeTakeFirst();
  }

  spendLogin(tokenHash: string, now: string): Promise<OperatorLoginTable | undefined> {
    return this.db
      .updateTable("operator_logins")
      .set({ used_at: now })
      .where("token_hash", "=", tokenHash)
      .where("used_at", "is", null)
      .where("expires_at", ">", now)
      .returningAll()
      .executeTakeFirst();
  }

  async spendLoginsOf(operator: string, now: string): Promise<number> {
    const r = await this.db
      .updateTable("operator_logins")
      .set({ used_at: now })
      .where("operator", "=", operator)
      .where("used_at", "is", null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows);
  }

  async addSession(row: OperatorSessionTable): Promise<void> {
    await this.db.insertInto("operator_sessions").values(row).execute();
  }

  getSession(secretHash: string): Promise<OperatorSessionTable | undefined> {
    return this.db.selectFrom("operator_sessions").selectAll().where("secret_hash", "=", secretHash).executeTakeFirst();
  }

  async endSession(secretHash: string, at: string): Promise<boolean> {
    const r = await this.db
      .updateTable("operator_sessions")
      .set({ ended_at: at })
      .where("secret_hash", "=", secretHash)
      .where("ended_at", "is", null)
      .executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  async endSessionsOf(operator: string, at: string): Promise<number> {
    const r = await this.db
      .updateTable("operator_sessions")
      .set({ ended_at: at })
      .where("operator", "=", operator)
      .where("ended_at", "is", null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows);
  }

  async purgeExpired(before: string): Promise<void> {
    await this.db.deleteFrom("operator_logins").where("expires_at", "<", before).execute();
    await this.db.deleteFrom("operator_sessions").where("expires_at", "<", before).execute();
  }
}
