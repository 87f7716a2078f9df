// Browser sessions: the dashboard's /login page trades a one-time login token (from `fleetpki
// operator login`) for a session cookie; GET tells the page who it is and the CSRF token its unsafe
// calls must echo; DELETE logs out. Decisions live in authority/identities/operator-sessions.ts.
import { Type } from "@sinclair/typebox";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { endOperatorSession, redeemLoginLink } from "../../authority/identities/operator-sessions.js";
import { actorOf, cookieValue, SESSION_COOKIE } from "../auth.js";
import type { AdminContext } from "../context.js";
import { Problem, PROBLEMS, Strict } from "./schemas.js";

const SessionAnswer = Type.Object({
  operator: Type.String(),
  role: Type.String({ description: "viewer | operator | admin" }),
  via: Type.String({ description: "session | certificate" }),
  csrf: Type.Union([Type.String(), Type.Null()], {
    description: "send as x-csrf-token with POST/PUT/PATCH/DELETE; null with a certificate",
  }),
  expiresAt: Type.Union([Type.String(), Type.Null()]),
});

/** __Host-: only over HTTPS, for this host and path /, so no subdomain or other path can plant or read it. */
function sessionCookie(value: string, maxAgeSeconds: number): string {
  return `${SESSION_COOKIE}=${value}; Path=/; Max-Age=${maxAgeSeconds}; HttpOnly; Secure; SameSite=Strict`;
}

function clearCookie(reply: FastifyReply): void {
  reply.header("set-cookie", sessionCookie("", 0));
}

export function registerSessionRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.post<{ Body: { token: string } }>(
    "/api/session",
    {
      config: { role: "public" },
      // The one POST anyone may send: a token is 43 characters, so no 1 MiB body is parsed for a stranger.
      bodyLimit: 4096,
      schema: {
        summary: "Start a browser session with a one-time login token (fleetpki operator login)",
        tags: ["session"],
        // The token's exact form is checked by the domain, which answers every bad token alike.
        body: Strict({ token: Type.String({ minLength: 1, maxLength: 256 }) }),
        response: { 200: SessionAnswer, 400: Problem, 401: Problem, 413: Problem, 415: Problem },
      },
    },
    async (request, reply) => {
      const started = await redeemLoginLink(ctx.fleet, { token: request.body.token, address: request.ip });
      const maxAge = Math.max(0, Math.round((started.expiresAt.getTime() - ctx.fleet.clock.now().getTime()) / 1000));
      reply.header("set-cookie", sessionCookie(started.secret, maxAge));
      return {
        operator: started.operator,
        role: started.role,
        via: "session",
        csrf: started.csrf,
        expiresAt: started.expiresAt.toISOString(),
      };
    },
  );

  app.get(
    "/api/session",
    {
      config: { role: "viewer" },
      schema: {
        summary: "Who this session or certificate is, and its CSRF token",
        tags: ["session"],
        response: { 200: SessionAnswer, ...PROBLEMS },
      },
    },
    async (request) => {
      const principal = request.principal!;
      const secret = principal.via === "session" ? cookieValue(request.headers.cookie, SESSION_COOKIE) : undefined;
      const session = secret !== undefined ? await ctx.sessions?.lookup(secret) : undefined;
      return {
        operator: principal.name,
        role: principal.role,
        via: principal.via,
        csrf: session?.csrf ?? null,
        expiresAt: session?.expiresAt.toISOString() ?? null,
      };
    },
  );

  app.delete(
    "/api/session",
    {
      config: { role: "viewer" },
      schema: { summary: "Log out: end this browser session", tags: ["session"], response: { 204: Type.Null(), ...PROBLEMS } },
    },
    async (request: FastifyRequest, reply: FastifyReply) => {
      const secret = request.principal!.via === "session" ? cookieValue(request.headers.cookie, SESSION_COOKIE) : undefined;
      if (secret !== undefined) await endOperatorSession(ctx.fleet, secret, actorOf(request));
      clearCookie(reply);
      return reply.code(204).send();
    },
  );
}
