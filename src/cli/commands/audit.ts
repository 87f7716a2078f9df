import type { Command } from "commander";
import { AuditBroken, GENESIS_HASH, canonicalJson, type AuditRecord } from "../../audit/log.js";
import {
  auditListFilter,
  exportCheckpoint,
  listAuditEvents,
  verifyFleetAudit,
  type AuditReport,
} from "../../authority/audit-checkpoints.js";
import { systemClock } from "../../authority/clock.js";
import { InvalidArgument } from "../../authority/errors.js";
import { CLI_ACTOR, dirOption } from "../context.js";
import { printJson, printTable, say } from "../output.js";
import { allPages, localOnly, remoteOptions, via, type AdminClient } from "../remote.js";

/** --dir, or --server and --operator. */
const fleetOption = (cmd: Command): Command => remoteOptions(dirOption(cmd));

/** An audit row as printed, from the store or the admin API (details as the stored canonical JSON text). */
type ApiAuditRow = Omit<AuditRecord, "details" | "prev_hash"> & { details: unknown; prev_hash?: string; prevHash?: string };
const auditRowOf = (r: ApiAuditRow): AuditRecord => ({
  seq: r.seq,
  at: r.at,
  actor: r.actor,
  action: r.action,
  subject: r.subject,
  details: typeof r.details === "string" ? r.details : canonicalJson(r.details),
  prev_hash: r.prev_hash ?? r.prevHash ?? "",
  hash: r.hash,
});

/**
 * `audit list` through the admin API: its pages run newest first, the command prints oldest first
 * from --since and stops after --limit, so every page from --since is read.
 */
async function remoteAudit(api: AdminClient, req: { since?: string; limit?: string }): Promise<AuditRecord[]> {
  const { since, limit } = auditListFilter(req, systemClock.now());
  const from = since?.toISOString();
  const rows = (await allPages<ApiAuditRow>(api, "GET /api/audit", { from })).filter((r) => r.seq > 0).sort((a, b) => a.seq - b.seq);
  const kept = limit === undefined ? rows : rows.slice(0, limit);
  // The API's rows carry no prev_hash, which the local list prints: it is the hash of the row
  // before (the row just before --since for the first one; the genesis hash before row 1).
  let prev = GENESIS_HASH;
  if (kept.length > 0 && kept[0]!.seq > 1 && from !== undefined) {
    const before = await api.call<{ items: ApiAuditRow[] }>("GET /api/audit", {}, undefined, { to: from, limit: "1" });
    prev = before.items[0]?.hash ?? "";
  }
  return kept.map((r) => {
    const row = auditRowOf({ prev_hash: prev, ...r });
    prev = r.hash;
    return row;
  });
}

export { AuditBroken };

export function registerAudit(program: Command): void {
  const audit = program.command("audit").description("the tamper-evident audit log");

  fleetOption(
    audit
      .command("verify")
      .description("check the hash chain, the checkpoints kept outside (--checkpoints) and the state tables against the log"),
  )
    .option("--checkpoints <dir>", "directory of checkpoint files exported with `audit checkpoint --out` and kept outside the fleet")
    .option("--json", "machine-readable output")
    .action(async (opts, cmd: Command) => {
      const report = await via(
        cmd,
        (fleet) => verifyFleetAudit(fleet, { checkpointsDir: opts.checkpoints }),
        async (api) => {
          if (opts.checkpoints !== undefined)
            throw new InvalidArgument("--checkpoints reads files on this machine: verify them on the CA machine with --dir");
          return api.call<AuditReport>("GET /api/audit/verify");
        },
      );
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

  fleetOption(audit.command("checkpoint").description("export the newest signed checkpoint of the audit log (a new one if it moved on)"))
    .requiredOption("--out <file>", "file to write, or an existing directory (then checkpoint-<seq>-<hash>.json in it)")
    .option("--json", "machine-readable output")
    .action(async (opts, cmd: Command) => {
      await via(
        cmd,
        async (fleet) => {
          const cp = await exportCheckpoint(fleet, opts.out, CLI_ACTOR);
          if (opts.json) return printJson({ seq: cp.seq, hash: cp.hash, at: cp.at, file: cp.file, created: cp.created });
          say(`checkpoint of row ${cp.seq} (hash ${cp.hash}, signed ${cp.at}) written to ${cp.file}; keep it outside this machine`);
        },
        localOnly("audit checkpoint", "the admin API has no checkpoint export"),
      );
    });

  fleetOption(audit.command("list").description("show audit events"))
    .option("--since <time>", "only events at or after this RFC 3339 time (with Z or offset), date (00:00 UTC) or duration ago (1h)")
    .option("--limit <n>", "at most this many events")
    .option("--json", "machine-readable output")
    .action(async (opts, cmd: Command) => {
      const req = { since: opts.since as string | undefined, limit: opts.limit as string | undefined };
      const rows = await via(
        cmd,
        async (fleet) => (await listAuditEvents(fleet, req)).map(auditRowOf),
        (api) => remoteAudit(api, req),
      );
      if (opts.json) return printJson(rows.map((r) => ({ ...r, details: JSON.parse(r.details) })));
      printTable(
        rows.map((r) => ({ seq: String(r.seq), at: r.at, actor: r.actor, action: r.action, subject: r.subject, details: r.details })),
        ["seq", "at", "actor", "action", "subject", "details"],
      );
    });
}
