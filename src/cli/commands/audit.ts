import type { Command } from "commander";
import { listAudit, verifyAudit } from "../../audit/log.js";
import { InvalidArgument } from "../../authority/errors.js";
import { parseDuration } from "../../config/duration.js";
import { parseRfc3339 } from "../../x509/time.js";
import { dirOption, withFleet } from "../context.js";
import { printJson, printTable, say } from "../output.js";

export class AuditBroken extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AuditBroken";
  }
}

export function registerAudit(program: Command): void {
  const audit = program.command("audit").description("the tamper-evident audit log");

  dirOption(audit.command("verify").description("recompute the hash chain; exit non-zero naming the first bad row"))
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const verdict = await verifyAudit(fleet.store.db);
        if (opts.json) printJson(verdict);
        if (!verdict.ok) throw new AuditBroken(`audit log broken at sequence number ${verdict.firstBadSeq}: ${verdict.problem}`);
        if (!opts.json) say(`audit log intact: ${verdict.rows} rows, head ${verdict.headHash}`);
      });
    });

  dirOption(audit.command("list").description("show audit events"))
    .option("--since <time>", "only events at or after this RFC 3339 time (with Z or offset), date (00:00 UTC) or duration ago (1h)")
    .option("--limit <n>", "at most this many events")
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      let since: Date | undefined;
      if (opts.since) {
        // Absolute times through the one strict parser: `new Date()` took "2026-02-30" as March 1 and "1" as 2001.
        try {
          since = /^\d+[smhdwy]$/.test(opts.since) ? new Date(Date.now() - parseDuration(opts.since)) : parseRfc3339(opts.since);
        } catch (e) {
          throw new InvalidArgument(`--since ${(e as Error).message}; use a time like 2026-05-01T12:00:00Z, a date, or a duration like 1h`);
        }
      }
      const limit = opts.limit ? Number(opts.limit) : undefined;
      if (limit !== undefined && (!Number.isInteger(limit) || limit <= 0)) throw new InvalidArgument("--limit must be a positive integer");
      await withFleet(opts.dir, async (fleet) => {
        const rows = await listAudit(fleet.store, { since, limit });
        if (opts.json) return printJson(rows.map((r) => ({ ...r, details: JSON.parse(r.details) })));
        printTable(
          rows.map((r) => ({ seq: String(r.seq), at: r.at, actor: r.actor, action: r.action, subject: r.subject, details: r.details })),
          ["seq", "at", "actor", "action", "subject", "details"],
        );
      });
    });
}
