// Service identities: list, add from a CSR (no private key crosses the API), remove.
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { addServiceFromCsr, listServices, removeService } from "../../authority/identities/services.js";
import { actorOf } from "../auth.js";
import type { AdminContext } from "../context.js";
import { Name, NameParams, Pem, PROBLEMS, StatusChange, Strict } from "./schemas.js";

const Service = Type.Object({
  name: Type.String(),
  identity: Type.String(),
  serial: Type.String(),
  notAfter: Type.String(),
  status: Type.String(),
  certificates: Type.Integer(),
});

export function registerServiceRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get(
    "/api/services",
    {
      config: { role: "viewer" },
      schema: {
        summary: "Every service identity with its newest certificate",
        tags: ["services"],
        response: { 200: Type.Array(Service), ...PROBLEMS },
      },
    },
    async () => listServices(ctx.fleet),
  );

  app.post<{ Body: { name: string; csr: string; renew?: boolean } }>(
    "/api/services",
    {
      config: { role: "admin" },
      schema: {
        summary: "Issue a service certificate (services CA) for the key of a PKCS#10 CSR; answers the certificate and chain",
        description:
          "The CSR's signature is verified and its key must pass the fleet's key policy; only the key is used. " +
          "`fleetpki service add NAME --out DIR` makes the key on the CA machine instead.",
        tags: ["services"],
        body: Strict({ name: Name, csr: Pem, renew: Type.Optional(Type.Boolean()) }),
        response: {
          201: Type.Object({
            name: Type.String(),
            identity: Type.String(),
            serial: Type.String(),
            notAfter: Type.String(),
            certificatePem: Type.String(),
            chainPem: Type.String(),
            caPem: Type.String(),
          }),
          ...PROBLEMS,
        },
      },
    },
    async (request, reply) => {
      const { name, csr, renew } = request.body;
      const issued = await addServiceFromCsr(ctx.fleet, { name, csr, renew, actor: actorOf(request) });
      return reply.code(201).send({ ...issued, notAfter: issued.notAfter.toISOString() });
    },
  );

  app.delete<{ Params: { name: string } }>(
    "/api/services/:name",
    {
      config: { role: "admin" },
      schema: {
        summary: "Remove a service: every certificate of it revoked",
        tags: ["services"],
        params: NameParams,
        response: { 200: StatusChange, ...PROBLEMS },
      },
    },
    async (request) => removeService(ctx.fleet, { name: request.params.name, actor: actorOf(request) }),
  );
}
