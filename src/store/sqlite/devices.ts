// DeviceOperations on SQLite (Kysely).
import { sql } from "kysely";
import type { DeviceOperations, DevicePageQuery } from "../operations/devices.js";
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

  page(query: DevicePageQuery): Promise<DeviceTable[]> {
    return devicePageQuery(this.db, query).execute();
  }

  async recordLastSeen(seen: readonly { id: string; at: string }[]): Promise<void> {
    for (const s of seen)
      await this.db
        .updateTable("devices")
        .set({ last_seen_at: s.at })
        .where("id", "=", s.id)
        .where((eb) => eb.or([eb("last_seen_at", "is", null), eb("last_seen_at", "<", s.at)]))
        .execute();
  }

  takeFactoryEnrollment(deviceId: string): Promise<FactoryEnrollmentTable | undefined> {
    return this.db.deleteFrom("factory_enrollments").where("device_id", "=", deviceId).returningAll().executeTakeFirst();
  }
}

/** The page query, unexecuted: tests and the admin bench check its plan (EXPLAIN QUERY PLAN). */
export function devicePageQuery(db: Tx, query: DevicePageQuery) {
  let q = db.selectFrom("devices").selectAll();
  if (query.afterId !== undefined) q = q.where("id", ">", query.afterId);
  if (query.group !== undefined) q = q.where("group_name", "=", query.group);
  q = query.status !== undefined ? q.where("status", "=", query.status) : q.where("status", "!=", "removed");
  // instr, not LIKE: the search text may hold % and _ (ids do), which LIKE would treat as wildcards.
  if (query.search) q = q.where(sql<number>`instr(id, ${query.search})`, ">", 0);
  if (query.label) q = q.where(sql<string>`json_extract(labels, ${"$." + JSON.stringify(query.label.key)})`, "=", query.label.value);
  return q.orderBy("id").limit(query.limit);
}
