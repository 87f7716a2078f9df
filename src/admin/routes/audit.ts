// The audit log's integrity, as `fleetpki audit verify` reports it (the dashboard shows it). The
// log's query route belongs to another module.
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { verifyFleetAudit } from "../../authority/audit-checkpoints.js";
import type { AdminContext } from "../context.js";
import { PROBLEMS } from "./schemas.js";

const Report = Type.Object({
  ok: Type.Boolean(),
  rows: Type.Integer(),
  headHash: Type.Optional(Type.String()),
  problems: Type.Array(Type.String()),
  notes: Type.Array(Type.String()),
  checkpoints: Type.Object({ stored: Type.Integer() }),
});

export function registerAuditRoutes(app: FastifyInstance, ctx: AdminContext): void {
  // It reads the whole log: concurrent requests share one verification instead of each starting one.
  let running: ReturnType<typeof verifyFleetAudit> | undefined;
  app.get(
    "/api/audit/verify",
    {
      config: { role: "viewer" },
      schema: {
        summary: "Verify the audit chain, the stored checkpoints and the state tables against the log",
        description: "Checkpoints kept outside the fleet are checked by `fleetpki audit verify --checkpoints DIR`, not here.",
        tags: ["audit"],
        response: { 200: Report, ...PROBLEMS },
      },
    },
    async () => {
      const r = await (running ??= verifyFleetAudit(ctx.fleet).finally(() => (running = undefined)));
      return {
        ok: r.ok,
        rows: r.rows,
        headHash: r.headHash,
        problems: r.problems,
        notes: r.notes,
        checkpoints: { stored: r.checkpoints.stored },
      };
    },
  );
}
