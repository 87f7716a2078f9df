// Who is asking the admin API, and may they. Two credentials: an operator certificate (mutual TLS,
// verified by OpenSSL against the root and operators CA, then vouched for by the fleet's status in
// memory) or a browser session cookie (then unsafe methods must echo the session's CSRF token).
// Role checks compare with the route's declared `config.role`: 401 without a credential, 403 below.
import { timingSafeEqual } from "node:crypto";
import type { TLSSocket } from "node:tls";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { certifiedIdentity, PeerCertificates } from "../access/admission.js";
import type { OperatorRole } from "../access/identity.js";
import { roleAtLeast } from "../authority/identities/operators.js";
import { HttpProblem } from "../http/http.js";
import type { AdminContext } from "./context.js";

export type RouteRole = "public" | OperatorRole;

export interface Principal {
  name: string;
  role: OperatorRole;
  via: "certificate" | "session";
}

declare module "fastify" {
  interface FastifyContextConfig {
    /** Who may call the route: "public" (no credential), or the least operator role. */
    role?: RouteRole;
  }
  interface FastifyRequest {
    principal?: Principal;
  }
}

export const SESSION_COOKIE = "__Host-fleetpki-session";
export const CSRF_HEADER = "x-csrf-token";

/** The audit actor for what the request does. */
export function actorOf(request: FastifyRequest): string {
  if (!request.principal) throw new Error("actorOf: the route is public");
  return `operator:${request.principal.name}`;
}

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

const unauthorized = (detail: string) =>
  new HttpProblem(401, "unauthenticated", detail, { "www-authenticate": 'Cookie realm="fleetpki-admin"' });

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Authenticates from the client certificate or the session cookie. A certificate the TLS layer
 * could not verify, or one the fleet no longer vouches for, is refused outright (401) rather than
 * falling back to a cookie: a client that presents a credential gets the answer for that credential.
 */
async function authenticate(request: FastifyRequest, ctx: AdminContext, peers: PeerCertificates): Promise<Principal> {
  const socket = request.raw.socket as TLSSocket;
  const der = typeof socket.getPeerX509Certificate === "function" ? socket.getPeerX509Certificate()?.raw : undefined;
  if (der && der.length > 0) {
    if (!socket.authorized) throw unauthorized(`client certificate not trusted: ${String(socket.authorizationError ?? "unverified")}`);
    const certified = certifiedIdentity(peers.get(der), ctx.certificateStatus, false);
    if ("admitted" in certified) throw unauthorized(certified.refusal.reason);
    if (certified.kind !== "operator") throw unauthorized(`${certified.subject} is not an operator`);
    const role = ctx.operators.role(certified.name);
    if (!role) throw unauthorized(`operator "${certified.name}" has no active role`);
    return { name: certified.name, role, via: "certificate" };
  }
  const secret = cookieValue(request.headers.cookie, SESSION_COOKIE);
  if (secret === undefined) throw unauthorized("an operator certificate or a session (fleetpki operator login) is required");
  const session = ctx.sessions && /^[A-Za-z0-9_-]{16,128}$/.test(secret) ? await ctx.sessions.lookup(secret) : undefined;
  if (!session) throw unauthorized("the session is unknown, expired or ended; log in again");
  if (UNSAFE.has(request.method)) {
    const sent = request.headers[CSRF_HEADER];
    if (typeof sent !== "string" || sent === "")
      throw new HttpProblem(403, "csrf-missing", `${CSRF_HEADER} header is required with a session`);
    if (!sameSecret(sent, session.csrf)) throw new HttpProblem(403, "csrf-invalid", `${CSRF_HEADER} does not match the session`);
  }
  return { name: session.operator, role: session.role, via: "session" };
}

/** Every route must declare its role; a route without one is refused at start, not left open. */
export function installAuth(app: FastifyInstance, ctx: AdminContext): void {
  const peers = new PeerCertificates(ctx.fleet.domain, 1_000);
  app.addHook("onRoute", (route) => {
    if (route.config?.role === undefined && !route.url.startsWith("/documentation"))
      throw new Error(`admin route ${route.method} ${route.url} declares no config.role`);
    // Published in the OpenAPI document, so clients (and the RBAC test) know who may call what.
    if (route.config?.role !== undefined && route.schema)
      route.schema = { ...route.schema, ["x-fleetpki-role" as string]: route.config.role };
  });
  app.addHook("onRequest", async (request) => {
    const need = request.routeOptions.config?.role;
    if (need === "public" || need === undefined) return; // undefined: the not-found handler
    const principal = await authenticate(request, ctx, peers);
    if (!roleAtLeast(principal.role, need))
      throw new HttpProblem(
        403,
        "role-too-weak",
        `${request.method} ${request.routeOptions.url} needs role ${need}; ${principal.name} is ${principal.role}`,
      );
    request.principal = principal;
  });
}

/** Used by the session routes: the principal a cookie names, without the CSRF check (for GET). */
export { cookieValue };
