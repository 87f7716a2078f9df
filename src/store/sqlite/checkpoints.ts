// CheckpointOperations on SQLite (Kysely).
import type { CheckpointOperations, SignerRecord } from "../operations/checkpoints.js";
import type { AuditCheckpointTable, CertificateTable } from "../schema.js";
import type { Tx } from "./connection.js";

export class SqliteCheckpointOperations implements CheckpointOperations {
  constructor(private readonly db: Tx) {}

  latest(): Promise<AuditCheckpointTable | undefined> {
    return this.db.selectFrom("audit_checkpoints").selectAll().orderBy("seq", "desc").limit(1).executeTakeFirst();
  }

  at(seq: number): Promise<AuditCheckpointTable | undefined> {
    return this.db.selectFrom("audit_checkpoints").selectAll().where("seq", "=", seq).executeTakeFirst();
  }

  list(): Promise<AuditCheckpointTable[]> {
    return this.db.selectFrom("audit_checkpoints").selectAll().orderBy("seq").execute();
  }

  async store(checkpoint: AuditCheckpointTable): Promise<void> {
    await this.db
      .insertInto("audit_checkpoints")
      .values(checkpoint)
      .onConflict((oc) => oc.column("seq").doNothing())
      .execute();
  }

  currentSigner(now: string): Promise<Pick<CertificateTable, "serial" | "der"> | undefined> {
    return this.db
      .selectFrom("certificates")
      .select(["serial", "der"])
      .where("kind", "=", "audit")
      .where("status", "=", "valid")
      .where("not_before", "<=", now)
      .where("not_after", ">", now)
      .orderBy("not_after", "desc")
      .limit(1)
      .executeTakeFirst();
  }

  signer(serial: string): Promise<SignerRecord | undefined> {
    return this.db
      .selectFrom("certificates")
      .select(["kind", "status", "revoked_at", "revocation_reason"])
      .where("serial", "=", serial)
      .executeTakeFirst();
  }
}
