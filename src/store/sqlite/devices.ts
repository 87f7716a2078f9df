// DeviceOperations on SQLite (Kysely).
import type { DeviceOperations } from "../operations/devices.js";
import type { DeviceTable, FactoryEnrollmentTable } from "../schema.js";
import type { Tx } from "./connection.js";

/** Rows per statement: SQLite allows 32,766 bound parameters, a device row binds 6. */
const CHUNK = 500;

export class SqliteDeviceOperations implements DeviceOperations {
  constructor(private readonly db: Tx) {}

  async add(rows: readonly DeviceTable[]): Promise<string[]> {
    const added = new Set<string>();
    for (let i = 0; i < rows.length; i += CHUNK) {
      const inserted = await this.db
        .insertInto("devices")
        .values(rows.slice(i, i + CHUNK))
        .onConflict((oc) => oc.column("id").doNothing())
        .returning("id")
        .execute();
      for (const r of inserted) added.add(r.id);
    }
    return rows.filter((r) => !added.has(r.id)).map((r) => r.id);
  }

  get(id: string): Promise<DeviceTable | undefined> {
    return this.db.selectFrom("devices").selectAll().where("id", "=", id).executeTakeFirst();
  }

  list(filter: { group?: string; includeRemoved?: boolean } = {}): Promise<DeviceTable[]> {
    let q = this.db.selectFrom("devices").selectAll().orderBy("id");
    if (filter.group) q = q.where("group_name", "=", filter.group);
    if (!filter.includeRemoved) q = q.where("status", "!=", "removed");
    return q.execute();
  }

  async update(id: string, change: Pick<DeviceTable, "group_name" | "labels" | "updated_at">): Promise<boolean> {
    const r = await this.db.updateTable("devices").set(change).where("id", "=", id).executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  async existing(ids: readonly string[]): Promise<string[]> {
    const found: string[] = [];
    for (let i = 0; i < ids.length; i += CHUNK) {
      const rows = await this.db
        .selectFrom("devices")
        .select("id")
        .where("id", "in", ids.slice(i, i + CHUNK))
        .execute();
      for (const r of rows) found.push(r.id);
    }
    return found;
  }

  takeFactoryEnrollment(deviceId: string): Promise<FactoryEnrollmentTable | undefined> {
    return this.db.deleteFrom("factory_enrollments").where("device_id", "=", deviceId).returningAll().executeTakeFirst();
  }
}
