// The fleet's CAs with their expiry.
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { listCas } from "../../authority/ca/cas.js";
import type { AdminContext } from "../context.js";
import { PROBLEMS } from "./schemas.js";

const Ca = Type.Object({
  id: Type.String(),
  role: Type.String(),
  subject: Type.String(),
  issuer: Type.String(),
  serial: Type.String(),
  fingerprintSha256: Type.String(),
  notBefore: Type.String(),
  notAfter: Type.String(),
  keyType: Type.String(),
  status: Type.String(),
  keyOnline: Type.Boolean({ description: "whether the CA's key is on this machine (an offline root's is not)" }),
});

export function registerCaRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get(
    "/api/cas",
    {
      config: { role: "viewer" },
      schema: { summary: "The CA hierarchy with expiry", tags: ["cas"], response: { 200: Type.Array(Ca), ...PROBLEMS } },
    },
    async () => listCas(ctx.fleet),
  );
}
