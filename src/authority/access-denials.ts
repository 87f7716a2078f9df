// Access denials as the audit log records them: one `access.deny` row per identity, topic and
// minute (aggregated by src/access/denials.ts), written by the gateway's DenialLog through here.
import { DENY_ACTION, type DenialRow } from "../access/denials.js";
import type { FleetServices } from "./services.js";

export const GATEWAY_ACTOR = "gateway";

export async function recordAccessDenials(fleet: FleetServices, rows: readonly DenialRow[]): Promise<void> {
  const at = fleet.clock.now();
  await fleet.store.transaction(async (tx) => {
    await tx.audit.append(
      rows.map((r) => ({
        actor: GATEWAY_ACTOR,
        action: DENY_ACTION,
        subject: r.subject,
        details: { action: r.action, topic: r.topic, minute: r.minute, count: r.count, outcome: r.outcome, rule: r.rule ?? null },
        at,
      })),
    );
  });
}
