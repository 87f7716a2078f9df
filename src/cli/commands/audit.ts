import type { Command } from "commander";
import { AuditBroken } from "../../audit/log.js";
import { exportCheckpoint, listAuditEvents, verifyFleetAudit } from "../../authority/audit-checkpoints.js";
import { CLI_ACTOR, dirOption, withFleet } from "../context.js";
import { printJson, printTable, say } from "../output.js";

export { AuditBroken };

export function registerAudit(program: Command): void {
  const audit = program.command("audit").description("the tamper-evident audit log");

  dirOption(
    audit
      .command("verify")
      .description("check the hash chain, the checkpoints kept outside (--checkpoints) and the state tables against the log"),
  )
    .option("--checkpoints <dir>", "directory of checkpoint files exported with `audit checkpoint --out` and kept outside the fleet")
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const report = await verifyFleetAudit(fleet, { checkpointsDir: opts.checkpoints });
        if (opts.json) printJson(report);
        else {
          for (const p of report.problems) say(`problem: ${p}`);
          for (const n of report.notes) say(`note: ${n}`);
        }
        if (!report.ok) {
          const more = report.problems.length > 1 ? ` (and ${report.problems.length - 1} more problem(s), listed on stdout)` : "";
          throw new AuditBroken(`${report.problems[0]}${more}`);
        }
        if (!opts.json) {
          const outside = report.checkpoints.newestOutside;
          say(
            `audit log intact: ${report.rows} rows, head ${report.headHash}; the state tables agree with it; ` +
              `${report.checkpoints.stored} stored checkpoint(s) verified` +
              (outside ? `; ${report.checkpoints.outside} kept outside verified, the newest at row ${outside.seq} (${outside.at})` : ""),
          );
        }
      });
    });

  dirOption(audit.command("checkpoint").description("export the newest signed checkpoint of the audit log (a new one if it moved on)"))
    .requiredOption("--out <file>", "file to write, or an existing directory (then checkpoint-<seq>-<hash>.json in it)")
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const cp = await exportCheckpoint(fleet, opts.out, CLI_ACTOR);
        if (opts.json) return printJson({ seq: cp.seq, hash: cp.hash, at: cp.at, file: cp.file, created: cp.created });
        say(`checkpoint of row ${cp.seq} (hash ${cp.hash}, signed ${cp.at}) written to ${cp.file}; keep it outside this machine`);
      });
    });

  dirOption(audit.command("list").description("show audit events"))
    .option("--since <time>", "only events at or after this RFC 3339 time (with Z or offset), date (00:00 UTC) or duration ago (1h)")
    .option("--limit <n>", "at most this many events")
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const rows = await listAuditEvents(fleet, { since: opts.since, limit: opts.limit });
        if (opts.json) return printJson(rows.map((r) => ({ ...r, details: JSON.parse(r.details) })));
        printTable(
          rows.map((r) => ({ seq: String(r.seq), at: r.at, actor: r.actor, action: r.action, subject: r.subject, details: r.details })),
          ["seq", "at", "actor", "action", "subject", "details"],
        );
      });
    });
}
