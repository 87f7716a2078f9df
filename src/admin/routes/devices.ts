// Devices: show, revoke, hold, unhold (the lead's first routes; list, add, remove, tokens and
// approvals join them).
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { showDevice } from "../../authority/devices.js";
import { holdDevice, REVOKE_REASONS, revokeDevice, unholdDevice } from "../../authority/status/revocation.js";
import { actorOf } from "../auth.js";
import type { AdminContext } from "../context.js";
import { CertificateSummary, Device, DeviceIdParams, PROBLEMS, StatusChange, Strict } from "./schemas.js";

const RevokeBody = Strict({ reason: Type.Optional(Type.Union(REVOKE_REASONS.map((r) => Type.Literal(r)))) });

export function registerDeviceRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get<{ Params: { id: string } }>(
    "/api/devices/:id",
    {
      config: { role: "viewer" },
      schema: {
        summary: "A device with its certificates",
        tags: ["devices"],
        params: DeviceIdParams,
        response: { 200: Type.Intersect([Device, Type.Object({ certificates: Type.Array(CertificateSummary) })]), ...PROBLEMS },
      },
    },
    async (request) => showDevice(ctx.fleet, request.params.id),
  );

  app.post<{ Params: { id: string }; Body: { reason?: (typeof REVOKE_REASONS)[number] } }>(
    "/api/devices/:id/revoke",
    {
      config: { role: "operator" },
      schema: {
        summary: "Revoke every certificate of the device; it never enrolls again",
        tags: ["devices"],
        params: DeviceIdParams,
        body: RevokeBody,
        response: { 200: StatusChange, ...PROBLEMS },
      },
    },
    async (request) => revokeDevice(ctx.fleet, { deviceId: request.params.id, reason: request.body.reason, actor: actorOf(request) }),
  );

  for (const [verb, change, summary] of [
    ["hold", holdDevice, "Put the device's certificates on hold"],
    ["unhold", unholdDevice, "Release a held device"],
  ] as const)
    app.post<{ Params: { id: string } }>(
      `/api/devices/:id/${verb}`,
      {
        config: { role: "operator" },
        schema: { summary, tags: ["devices"], params: DeviceIdParams, response: { 200: StatusChange, ...PROBLEMS } },
      },
      async (request) => change(ctx.fleet, { deviceId: request.params.id, actor: actorOf(request) }),
    );
}
