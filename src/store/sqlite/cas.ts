// CaOperations on SQLite (Kysely).
import type { CaOperations, RevokedEntry } from "../operations/cas.js";
import type { CaTable, CertificateTable, CrlTable } from "../schema.js";
import type { Tx } from "../store.js";

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

  revokedIssuedBy(caId: string, now: string): Promise<RevokedEntry[]> {
    return this.db
      .selectFrom("certificates")
      .select(["serial", "revoked_at", "revocation_reason"])
      .where("issuer_ca", "=", caId)
      .where("status", "in", ["revoked", "hold"])
      .where("not_after", ">", now)
      .orderBy("serial")
      .execute();
  }

  async crlNumber(caId: string): Promise<number | undefined> {
    return (await this.db.selectFrom("crls").select("crl_number").where("ca_id", "=", caId).executeTakeFirst())?.crl_number;
  }

  async saveCrl(crl: CrlTable): Promise<void> {
    const { ca_id, ...rest } = crl;
    const updated = await this.db.updateTable("crls").set(rest).where("ca_id", "=", ca_id).executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 0) await this.db.insertInto("crls").values(crl).execute();
  }
}
