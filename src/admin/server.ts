// The admin listener: the operator API (/api/...), its OpenAPI document, and (later) the dashboard
// and /metrics. HTTPS with the fleet's server certificate; clients may present an operator
// certificate (requested, not required: browsers log in with a session instead).
import type { AddressInfo } from "node:net";
import type { Server as HttpsServer } from "node:https";
import swagger from "@fastify/swagger";
import Fastify, { type FastifyInstance } from "fastify";
import { installAuth } from "./auth.js";
import type { AdminContext } from "./context.js";
import { installProblemHandlers } from "./problems.js";
import { ADMIN_ROUTES } from "./routes/index.js";

/** Bodies of the admin API are small JSON (a policy file is the largest: 1 MiB, MAX_POLICY_BYTES). */
export const ADMIN_BODY_LIMIT = 1024 * 1024 + 4096;

export interface AdminTls {
  key: string;
  /** The server certificate and its chain (PEM). */
  cert: string;
  /** CAs whose certificates may authenticate: the root and the operators CA (PEM). */
  ca: string[];
}

export interface AdminServerOptions extends AdminContext {
  host: string;
  port: number;
  tls: AdminTls;
}

export interface RunningAdmin {
  address: AddressInfo;
  app: FastifyInstance;
  /** Serves a new certificate or trust list to new connections; open ones keep theirs. */
  setTls(tls: AdminTls): void;
  close(): Promise<void>;
}

const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "strict-transport-security": "max-age=31536000",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

function httpsOptions(tls: AdminTls) {
  return { key: tls.key, cert: tls.cert, ca: tls.ca, requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.2" as const };
}

/** Builds the fastify app (routes, auth, problems, OpenAPI) without listening: tests and the OpenAPI export use it too. */
export async function buildAdminApp(ctx: AdminContext, tls: AdminTls): Promise<FastifyInstance> {
  const app = Fastify({
    https: httpsOptions(tls),
    logger: false,
    bodyLimit: ADMIN_BODY_LIMIT,
    // Unknown fields are refused (schemas say additionalProperties: false), never silently dropped,
    // and a wrong type is an error, never coerced: querystrings are strings and say so.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false } },
    connectionTimeout: 30_000,
    requestTimeout: 30_000,
    keepAliveTimeout: 30_000,
    return503OnClosing: true,
    forceCloseConnections: "idle",
  });
  // JSON only: a text/plain body would otherwise reach a handler as a string.
  app.removeContentTypeParser("text/plain");
  installProblemHandlers(app, ctx.logger);
  installAuth(app, ctx);
  app.addHook("onSend", async (request, reply) => {
    reply.headers(SECURITY_HEADERS);
    if (request.url.startsWith("/api/")) reply.header("cache-control", "no-store");
  });
  await app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: {
        title: "fleetpki admin API",
        version: "1",
        description:
          "Operate a fleetpki fleet: devices, certificates, CAs, audit, policy, gateway. Authenticate with an operator " +
          "certificate (mutual TLS, operators CA) or a browser session from `fleetpki operator login`.",
      },
      components: {
        securitySchemes: {
          session: {
            type: "apiKey",
            in: "cookie",
            name: "__Host-fleetpki-session",
            description: "fleetpki operator login; unsafe methods also send x-csrf-token",
          },
        },
      },
    },
  });
  app.get("/api/openapi.json", { config: { role: "public" }, schema: { hide: true } }, async () => app.swagger());
  for (const register of ADMIN_ROUTES) await app.register(async (scope) => register(scope, ctx));
  await app.ready();
  return app;
}

export async function startAdminServer(options: AdminServerOptions): Promise<RunningAdmin> {
  const app = await buildAdminApp(options, options.tls);
  await app.listen({ host: options.host, port: options.port });
  const server = app.server as HttpsServer;
  return {
    address: server.address() as AddressInfo,
    app,
    setTls: (tls) => server.setSecureContext(httpsOptions(tls)),
    close: () => app.close(),
  };
}
