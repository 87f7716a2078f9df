// Operators: list, add (answered with a one-time login link, never a key: a certificate bundle is
// `fleetpki operator add` on the CA machine), remove (revokes its certificates, ends its sessions),
// and a new login link.
import { Type } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import type { OperatorRole as Role } from "../../access/identity.js";
import { inviteOperator, operatorLoginLink } from "../../authority/identities/operator-invite.js";
import { listOperators, removeOperator } from "../../authority/identities/operators.js";
import { actorOf } from "../auth.js";
import type { AdminContext } from "../context.js";
import { Name, NameParams, OperatorRole, PROBLEMS, StatusChange, Strict } from "./schemas.js";

const Operator = Type.Object({
  name: Type.String(),
  role: Type.String(),
  status: Type.String(),
  identity: Type.String(),
  serial: Type.Union([Type.String(), Type.Null()]),
  notAfter: Type.Union([Type.String(), Type.Null()]),
  certificateStatus: Type.String(),
});
const Link = Type.Object({
  loginUrl: Type.String({ description: "one-time, valid 10 minutes: give it to the operator only" }),
  expiresAt: Type.String(),
});

export function registerOperatorRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get(
    "/api/operators",
    {
      config: { role: "admin" },
      schema: {
        summary: "Every operator, removed ones included",
        tags: ["operators"],
        response: { 200: Type.Array(Operator), ...PROBLEMS },
      },
    },
    async () => listOperators(ctx.fleet),
  );

  app.post<{ Body: { name: string; role: Role } }>(
    "/api/operators",
    {
      config: { role: "admin" },
      schema: {
        summary: "Add an operator with a role; answers a one-time login link (no key or certificate over the API)",
        tags: ["operators"],
        body: Strict({ name: Name, role: OperatorRole }),
        response: {
          201: Type.Object({
            name: Type.String(),
            role: Type.String(),
            identity: Type.String(),
            loginUrl: Type.String(),
            expiresAt: Type.String(),
          }),
          ...PROBLEMS,
        },
      },
    },
    async (request, reply) => {
      const invited = await inviteOperator(ctx.fleet, { name: request.body.name, role: request.body.role, actor: actorOf(request) });
      const { loginExpiresAt, ...rest } = invited;
      return reply.code(201).send({ ...rest, expiresAt: loginExpiresAt.toISOString() });
    },
  );

  app.delete<{ Params: { name: string } }>(
    "/api/operators/:name",
    {
      config: { role: "admin" },
      schema: {
        summary: "Remove an operator: its certificates revoked, its browser sessions ended (never the last admin)",
        tags: ["operators"],
        params: NameParams,
        response: { 200: StatusChange, ...PROBLEMS },
      },
    },
    async (request) => removeOperator(ctx.fleet, { name: request.params.name, actor: actorOf(request) }),
  );

  app.post<{ Params: { name: string } }>(
    "/api/operators/:name/login-link",
    {
      config: { role: "admin" },
      schema: {
        summary: "A new one-time login link for an operator",
        tags: ["operators"],
        params: NameParams,
        body: Strict({}),
        response: { 201: Link, ...PROBLEMS },
      },
    },
    async (request, reply) => {
      const link = await operatorLoginLink(ctx.fleet, {
        name: request.params.name,
        actor: actorOf(request),
        by: request.principal!.name,
      });
      return reply.code(201).send({ loginUrl: link.loginUrl, expiresAt: link.expiresAt.toISOString() });
    },
  );
}
