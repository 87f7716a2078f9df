// Enrollment requests waiting for an operator: list, approve (naming the key by its fingerprint,
// compared out of band with the one the robot prints), deny.
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { decideRequest, denyEnrollment, listPendingRequests } from "../../authority/enroll/approval-requests.js";
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

  app.post<{ Params: { id: string }; Body: { fingerprint?: string; request?: string } }>(
    "/api/approvals/:id/approve",
    {
      config: { role: "operator" },
      schema: {
        summary:
          "Approve the device's waiting request named by `request` or by its key's `fingerprint` (one of them); " +
          "its other requests are denied",
        tags: ["approvals"],
        params: DeviceIdParams,
        body: Strict({ fingerprint: Type.Optional(Fingerprint), request: Type.Optional(RequestId) }),
        response: { 200: Type.Object({ request: Pending, alsoDenied: Type.Array(Pending) }), ...PROBLEMS },
      },
    },
    async (request) =>
      decideRequest(ctx.fleet, {
        deviceId: request.params.id,
        fingerprint: request.body.fingerprint,
        requestId: request.body.request,
        approve: true,
        actor: actorOf(request),
      }),
  );

  app.post<{ Params: { id: string }; Body: { reason?: string; request?: string; fingerprint?: string; all?: boolean } }>(
    "/api/approvals/:id/deny",
    {
      config: { role: "operator" },
      schema: {
        summary:
          "Deny the device's waiting requests: the one named by `request` or `fingerprint`; with neither, all of them, " +
          "or with `all: false` the only one waiting",
        tags: ["approvals"],
        params: DeviceIdParams,
        body: Strict({
          reason: Type.Optional(Type.String({ maxLength: 500 })),
          request: Type.Optional(RequestId),
          fingerprint: Type.Optional(Fingerprint),
          all: Type.Optional(Type.Boolean()),
        }),
        response: { 200: Type.Object({ denied: Type.Array(Pending), bulk: Type.Boolean() }), ...PROBLEMS },
      },
    },
    async (request) => {
      const { reason, request: requestId, fingerprint, all } = request.body;
      // Without a request named, the default stays "all of the device's requests" (what the dashboard asks).
      return denyEnrollment(ctx.fleet, {
        deviceId: request.params.id,
        requestId,
        fingerprint,
        all: all ?? (requestId === undefined && fingerprint === undefined),
        reason,
        actor: actorOf(request),
      });
    },
  );
}
