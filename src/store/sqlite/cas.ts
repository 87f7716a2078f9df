// CaOperations on SQLite (Kysely).
import type { CaOperations } from "../operations/cas.js";
import type { CaTable, CertificateTable } from "../schema.js";
import type { Tx } from "./connection.js";

export class SqliteCaOperations implements CaOperations {
  constructor(private readonly db: Tx) {}

  get(id: string): Promise<CaTable | undefined> {
    return this.db.selectFrom("cas").selectAll().where("id", "=", id).executeTakeFirst();
  }

  list(): Promise<CaTable[]> {
    return this.db.selectFrom("cas").selectAll().execute();
  }

  async create(ca: CaTable, certificate: CertificateTable): Promise<void> {
    await this.db.insertInto("cas").values(ca).execute();
    await this.db.insertInto("certificates").values(certificate).execute();
  }

  async setStatus(id: string, status: CaTable["status"]): Promise<void> {
    await this.db.updateTable("cas").set({ status }).where("id", "=", id).execute();
  }

  async recordOwnCertificate(certificate: CertificateTable): Promise<void> {
    await this.db.insertInto("certificates").values(certificate).execute();
  }

  async kindsIssued(kinds: readonly CertificateTable["kind"][]): Promise<CertificateTable["kind"][]> {
    if (kinds.length === 0) return [];
    const rows = await this.db.selectFrom("certificates").select("kind").distinct().where("kind", "in", kinds).execute();
    return rows.map((r) => r.kind);
  }
}
