// Live gateway sessions: list them (this process's gateway, or the sessions files every gateway on
// this fleet directory writes) and kick one. A kick is recorded in the audit log and carried out by
// every gateway following it, so it works when the admin API runs apart from the gateways.
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { kickGatewaySession } from "../../authority/gateway.js";
import { listGatewaySessions, type SessionInfo } from "../../gateway/sessions.js";
import { actorOf } from "../auth.js";
import type { AdminContext } from "../context.js";
import { PROBLEMS, Strict } from "./schemas.js";

const Session = Type.Object({
  id: Type.String({ description: "the MQTT client id" }),
  kind: Type.String(),
  name: Type.String(),
  address: Type.String(),
  since: Type.String(),
  messagesIn: Type.Integer(),
  messagesOut: Type.Integer(),
  subscriptions: Type.Integer(),
  gateway: Type.Integer({ description: "process id of the gateway holding it" }),
});

function sessions(ctx: AdminContext): (SessionInfo & { gateway: number })[] {
  const own = ctx.gateway ? ctx.gateway.sessions().map((s) => ({ ...s, gateway: process.pid })) : [];
  // Other gateways on this directory (serve --only gateway elsewhere); this process's file is its own list, read above.
  const others = listGatewaySessions(ctx.fleet.dir)
    .filter((f) => !(ctx.gateway && f.pid === process.pid))
    .flatMap((f) => f.sessions.map((s) => ({ ...s, gateway: f.pid })));
  return [...own, ...others];
}

export function registerGatewayRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get(
    "/api/gateway/sessions",
    {
      config: { role: "viewer" },
      schema: {
        summary: "Sessions open on the fleet's gateways now",
        tags: ["gateway"],
        response: { 200: Type.Array(Session), ...PROBLEMS },
      },
    },
    async () => sessions(ctx),
  );

  app.delete<{ Params: { clientId: string } }>(
    "/api/gateway/sessions/:clientId",
    {
      config: { role: "operator" },
      schema: {
        summary: "Close the sessions of this client id on every gateway (it may connect again: revoke or hold a device to keep it out)",
        tags: ["gateway"],
        params: Strict({ clientId: Type.String({ pattern: "^[\\x21-\\x7e]{1,256}$" }) }),
        response: { 202: Type.Object({ clientId: Type.String(), seq: Type.Integer() }), ...PROBLEMS },
      },
    },
    async (request, reply) => {
      const { clientId } = request.params;
      const open = sessions(ctx).some((s) => s.id === clientId);
      const kicked = await kickGatewaySession(ctx.fleet, { clientId, open, actor: actorOf(request) });
      // This process's gateway reads the feed now instead of at its next poll.
      if (ctx.gateway) void ctx.changes.poll();
      return reply.code(202).send(kicked);
    },
  );
}
