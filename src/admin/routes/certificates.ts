// One certificate by serial, and revoking it. (The certificate list and expiry belong to another module.)
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { showCertificate } from "../../authority/certificates.js";
import { REVOKE_REASONS, revokeCertificate } from "../../authority/status/revocation.js";
import { actorOf } from "../auth.js";
import type { AdminContext } from "../context.js";
import { PROBLEMS, SerialParams, StatusChange, Strict } from "./schemas.js";

const Certificate = Type.Object({
  serial: Type.String(),
  issuer: Type.String({ description: "the issuing CA's id" }),
  kind: Type.String(),
  subjectId: Type.String(),
  deviceId: Type.Union([Type.String(), Type.Null()]),
  subject: Type.String(),
  issuerName: Type.String(),
  notBefore: Type.String(),
  notAfter: Type.String(),
  status: Type.String({ description: "valid | revoked | hold | expired" }),
  revokedAt: Type.Union([Type.String(), Type.Null()]),
  revocationReason: Type.Union([Type.String(), Type.Null()]),
  fingerprintSha256: Type.String(),
  pem: Type.String(),
});

export function registerCertificateRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get<{ Params: { serial: string } }>(
    "/api/certificates/:serial",
    {
      config: { role: "viewer" },
      schema: {
        summary: "One certificate this fleet issued",
        tags: ["certificates"],
        params: SerialParams,
        response: { 200: Certificate, ...PROBLEMS },
      },
    },
    async (request) => showCertificate(ctx.fleet, request.params.serial),
  );

  app.post<{ Params: { serial: string }; Body: { reason?: (typeof REVOKE_REASONS)[number] } }>(
    "/api/certificates/:serial/revoke",
    {
      config: { role: "operator" },
      schema: {
        summary: "Revoke one certificate (CRLs, OCSP and the gateway follow within a second)",
        description: "Role operator may revoke devices' certificates; operators', services' and servers' need role admin.",
        tags: ["certificates"],
        params: SerialParams,
        body: Strict({ reason: Type.Optional(Type.Union(REVOKE_REASONS.map((r) => Type.Literal(r)))) }),
        response: {
          200: Type.Intersect([StatusChange, Type.Object({ kind: Type.String(), subjectId: Type.String() })]),
          ...PROBLEMS,
        },
      },
    },
    async (request) =>
      revokeCertificate(ctx.fleet, {
        serial: request.params.serial,
        reason: request.body.reason,
        actor: actorOf(request),
        role: request.principal!.role,
      }),
  );
}
