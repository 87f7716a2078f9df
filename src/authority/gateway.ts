// Gateway actions an operator takes through the audit log: the admin API may run in another process
// than the gateways (serve --only admin), so a kick is recorded (`gateway.kick`) and every gateway
// following the change feed closes that client id's sessions (src/gateway/server.ts). A kick is not
// a revocation: the client may connect again; revoke or hold the device to keep it out.
import { InvalidArgument, UnknownGatewaySession } from "./errors.js";
import type { FleetServices } from "./services.js";

/** MQTT client ids as the gateway admits them: printable ASCII without spaces (device ids, `<name>-<suffix>`). */
export const CLIENT_ID_PATTERN = /^[\x21-\x7e]{1,256}$/;

export interface KickRequest {
  clientId: string;
  actor: string;
  /** Whether a session with this client id is open now, as the caller sees the gateways' sessions. */
  open: boolean;
}

export async function kickGatewaySession(fleet: FleetServices, req: KickRequest): Promise<{ clientId: string; seq: number }> {
  if (!CLIENT_ID_PATTERN.test(req.clientId)) throw new InvalidArgument(`invalid client id ${JSON.stringify(req.clientId)}`);
  if (!req.open) throw new UnknownGatewaySession(req.clientId);
  const at = fleet.clock.now();
  const [row] = await fleet.store.transaction((tx) =>
    tx.audit.append([
      { actor: req.actor, action: "gateway.kick", subject: `session:${req.clientId}`, details: { client_id: req.clientId }, at },
    ]),
  );
  return { clientId: req.clientId, seq: row!.seq };
}
