// MetricOperations on SQLite: one statement, so the counts and the head come from one snapshot.
import { sql } from "kysely";
import type { MetricOperations, MetricTotals } from "../operations/metrics.js";
import type { Tx } from "./connection.js";

const byKind = (json: string | null): Record<string, number> => (json ? (JSON.parse(json) as Record<string, number>) : {});

export class SqliteMetricOperations implements MetricOperations {
  constructor(private readonly db: Tx) {}

  async totals(): Promise<MetricTotals> {
    // "status in ('revoked', 'hold')" repeats the partial index's condition so the planner may use it.
    const { rows } = await sql<{ seq: number | null; issued: string | null; revoked: string | null; renewed: string | null }>`
      select
        (select seq from audit_head where id = 1) as seq,
        (select json_group_object(kind, n) from (select kind, count(*) as n from certificates group by kind)) as issued,
        (select json_group_object(kind, n) from (select kind, count(*) as n from certificates
           where status in ('revoked', 'hold') and status = 'revoked' group by kind)) as revoked,
        (select json_group_object(kind, n) from (select c.kind as kind, count(*) as n from renewals r
           join certificates c on c.serial = r.serial group by c.kind)) as renewed`.execute(this.db);
    const row = rows[0]!;
    return { seq: row.seq ?? 0, issued: byKind(row.issued), revoked: byKind(row.revoked), renewed: byKind(row.renewed) };
  }
}
