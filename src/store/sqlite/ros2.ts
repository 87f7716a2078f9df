// Ros2Operations on SQLite (Kysely).
import type { Ros2Operations } from "../operations/ros2.js";
import type { Ros2EnclaveTable, Ros2KeystoreTable } from "../schema.js";
import type { Tx } from "./connection.js";

export class SqliteRos2Operations implements Ros2Operations {
  constructor(private readonly db: Tx) {}

  getKeystore(id: string): Promise<Ros2KeystoreTable | undefined> {
    return this.db.selectFrom("ros2_keystores").selectAll().where("id", "=", id).executeTakeFirst();
  }

  async createKeystore(row: Ros2KeystoreTable): Promise<void> {
    await this.db.insertInto("ros2_keystores").values(row).execute();
  }

  getEnclave(keystoreId: string, path: string): Promise<Ros2EnclaveTable | undefined> {
    return this.db
      .selectFrom("ros2_enclaves")
      .selectAll()
      .where("keystore_id", "=", keystoreId)
      .where("path", "=", path)
      .executeTakeFirst();
  }

  listEnclaves(keystoreId: string): Promise<Ros2EnclaveTable[]> {
    return this.db.selectFrom("ros2_enclaves").selectAll().where("keystore_id", "=", keystoreId).orderBy("path").execute();
  }

  deviceEnclaves(deviceId: string): Promise<Ros2EnclaveTable[]> {
    return this.db
      .selectFrom("ros2_enclaves")
      .selectAll()
      .where("device_id", "=", deviceId)
      .orderBy("keystore_id")
      .orderBy("path")
      .execute();
  }

  liveEnclavesWithPath(path: string, nowIso: string): Promise<Array<Ros2EnclaveTable & { keystore_dir: string }>> {
    return this.db
      .selectFrom("ros2_enclaves as e")
      .innerJoin("certificates as c", "c.serial", "e.serial")
      .innerJoin("ros2_keystores as k", "k.id", "e.keystore_id")
      .selectAll("e")
      .select("k.dir as keystore_dir")
      .where("e.path", "=", path)
      .where("e.status", "!=", "revoked")
      .where("c.not_after", ">", nowIso)
      .orderBy("e.keystore_id")
      .execute();
  }

  async createEnclave(row: Ros2EnclaveTable): Promise<void> {
    await this.db.insertInto("ros2_enclaves").values(row).execute();
  }

  async updateEnclave(keystoreId: string, path: string, change: Partial<Omit<Ros2EnclaveTable, "keystore_id" | "path">>): Promise<boolean> {
    const r = await this.db
      .updateTable("ros2_enclaves")
      .set(change)
      .where("keystore_id", "=", keystoreId)
      .where("path", "=", path)
      .executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }
}
