// Operators added through the admin API: no private key crosses the API, so the operator is
// registered with a role and no certificate, and gets a one-time login link (browser session) from
// createLoginLink. A certificate bundle (PEM + PKCS#12) is `fleetpki operator add` on the CA machine.
import type { OperatorRole } from "../../access/identity.js";
import { operatorSpiffeId } from "../../x509/profiles.js";
import { NotPermitted, OperatorExists } from "../errors.js";
import type { FleetServices } from "../services.js";
import { createLoginLink, loginUrl } from "./operator-sessions.js";
import { assertOperatorName, assertOperatorRole } from "./operators.js";

export interface InvitedOperator {
  name: string;
  role: OperatorRole;
  identity: string;
  /** The one-time login URL (valid 10 minutes): give it to the operator, never log it. */
  loginUrl: string;
  loginExpiresAt: Date;
}

/**
 * Registers an operator (`operator.add`, serial null) or makes a removed one active again with
 * `role`, then makes its first login link. An active operator is OperatorExists.
 */
export async function inviteOperator(
  fleet: FleetServices,
  req: { name: string; role: OperatorRole; actor: string },
): Promise<InvitedOperator> {
  assertOperatorName(req.name);
  assertOperatorRole(req.role);
  const now = fleet.clock.now();
  const at = now.toISOString();
  const identity = operatorSpiffeId(fleet.domain, req.name);
  await fleet.store.transaction(async (tx) => {
    const row = await tx.operators.get(req.name);
    if (row?.status === "active") throw new OperatorExists(req.name);
    await tx.operators.put({ name: req.name, role: req.role, status: "active", created_at: row?.created_at ?? at, updated_at: at });
    await tx.audit.append([
      {
        actor: req.actor,
        action: "operator.add",
        subject: `operator:${req.name}`,
        details: { role: req.role, serial: null, identity, renew: false, previous: [], via: "admin-api" },
        at: now,
      },
    ]);
  });
  const link = await createLoginLink(fleet, { name: req.name, actor: req.actor });
  return { name: req.name, role: req.role, identity, loginUrl: loginUrl(fleet, link.token), loginExpiresAt: link.expiresAt };
}

/** A new one-time login link for an active operator. */
export async function operatorLoginLink(
  fleet: FleetServices,
  req: { name: string; actor: string; /** The operator asking through the admin API. */ by?: string },
): Promise<{ loginUrl: string; expiresAt: Date }> {
  assertOperatorName(req.name);
  // A link is a session as its operator: one admin minting one for another admin could act, and be
  // audited, as that admin. Another admin's link comes from the CA machine (`fleetpki operator login`).
  const target = await fleet.store.ops.operators.get(req.name);
  if (req.by !== undefined && target?.role === "admin" && target.status === "active" && req.name !== req.by)
    throw new NotPermitted(
      "other-admin",
      `a login link for another admin ("${req.name}") is made on the CA machine (fleetpki operator login), not through the API`,
    );
  const link = await createLoginLink(fleet, { name: req.name, actor: req.actor });
  return { loginUrl: loginUrl(fleet, link.token), expiresAt: link.expiresAt };
}
