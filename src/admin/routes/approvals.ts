// Enrollment requests waiting for an operator: list, approve (naming the key by its fingerprint,
// compared out of band with the one the robot prints), deny.
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { decideRequest, denyRequests, listPendingRequests } from "../../authority/enroll/approval-requests.js";
import { actorOf } from "../auth.js";
import type { AdminContext } from "../context.js";
import { DeviceIdParams, PROBLEMS, Strict } from "./schemas.js";

const Pending = Type.Object({
  id: Type.String(),
  deviceId: Type.String(),
  keyFingerprint: Type.Union([Type.String(), Type.Null()]),
  source: Type.String(),
  address: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String(),
  expiresAt: Type.String(),
});
const Fingerprint = Type.String({ minLength: 1, maxLength: 200, description: "sha256:<64 hex digits>, as the robot prints it" });
const RequestId = Type.String({ pattern: "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$" });

export function registerApprovalRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get(
    "/api/approvals",
    {
      config: { role: "viewer" },
      schema: {
        summary: "Enrollment requests waiting for an operator",
        tags: ["approvals"],
        response: { 200: Type.Array(Pending), ...PROBLEMS },
      },
    },
    async () => listPendingRequests(ctx.fleet),
  );

  app.post<{ Params: { id: string }; Body: { fingerprint: string } }>(
    "/api/approvals/:id/approve",
    {
      config: { role: "operator" },
      schema: {
        summary: "Approve the device's waiting request for the key with this fingerprint (its other requests are denied)",
        tags: ["approvals"],
        params: DeviceIdParams,
        body: Strict({ fingerprint: Fingerprint }),
        response: { 200: Type.Object({ request: Pending, alsoDenied: Type.Array(Pending) }), ...PROBLEMS },
      },
    },
    async (request) =>
      decideRequest(ctx.fleet, {
        deviceId: request.params.id,
        fingerprint: request.body.fingerprint,
        approve: true,
        actor: actorOf(request),
      }),
  );

  app.post<{ Params: { id: string }; Body: { reason?: string; request?: string } }>(
    "/api/approvals/:id/deny",
    {
      config: { role: "operator" },
      schema: {
        summary: "Deny the device's waiting requests (all of them, or the one named by `request`)",
        tags: ["approvals"],
        params: DeviceIdParams,
        body: Strict({ reason: Type.Optional(Type.String({ maxLength: 500 })), request: Type.Optional(RequestId) }),
        response: { 200: Type.Object({ denied: Type.Array(Pending) }), ...PROBLEMS },
      },
    },
    async (request) => {
      const actor = actorOf(request);
      const { reason, request: requestId } = request.body;
      if (requestId !== undefined) {
        const d = await decideRequest(ctx.fleet, { deviceId: request.params.id, requestId, approve: false, actor });
        return { denied: [d.request] };
      }
      const denied = await denyRequests(ctx.fleet, { deviceId: request.params.id, reason, actor });
      return { denied };
    },
  );
}
