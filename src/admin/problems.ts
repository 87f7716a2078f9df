// Errors -> RFC 9457 problem bodies for the admin API. Domain errors keep their `code` as the
// problem type; fastify's own errors (validation, body size, media type, bad JSON) are named.
import type { FastifyError, FastifyInstance, FastifyReply } from "fastify";
import { PolicyError } from "../access/policy.js";
import {
  AuthenticationFailed,
  AuthorityError,
  CaExists,
  CaKeyOffline,
  CaNotActive,
  DeviceExists,
  DeviceNotActive,
  NotPermitted,
  OperatorExists,
  ServiceExists,
  TooManyRequests,
  UnknownCa,
  UnknownCertificate,
  UnknownDevice,
  UnknownGatewaySession,
  UnknownOperator,
  UnknownService,
} from "../authority/errors.js";
import { HttpProblem, PROBLEM_BASE, TITLES } from "../http/http.js";
import type { Logger } from "../log.js";

/** Extra members of a problem body (e.g. the list of policy errors). */
export class AdminProblem extends HttpProblem {
  constructor(
    status: number,
    type: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
    headers: Record<string, string> = {},
  ) {
    super(status, type, message, headers);
  }
}

function fromFastify(e: FastifyError): HttpProblem | undefined {
  if (e.validation) return new HttpProblem(400, "invalid-request", `${e.validationContext ?? "request"}: ${e.message}`);
  switch (e.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new HttpProblem(413, "body-too-large", e.message);
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new HttpProblem(415, "unsupported-media-type", "Content-Type must be application/json");
    case "FST_ERR_CTP_INVALID_JSON_BODY":
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new HttpProblem(400, "invalid-json", "the request body is not valid JSON");
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return new HttpProblem(400, "invalid-content-length", e.message);
  }
  if (typeof e.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500)
    return new HttpProblem(e.statusCode, "bad-request", e.message);
  return undefined;
}

/** Maps an error to the problem to send; unknown errors become a 500 without internals. */
export function adminProblem(e: unknown): HttpProblem {
  if (e instanceof HttpProblem) return e;
  if (e instanceof PolicyError) return new AdminProblem(400, "policy-invalid", e.message, { errors: e.problems.map((p) => ({ ...p })) });
  if (
    e instanceof UnknownDevice ||
    e instanceof UnknownService ||
    e instanceof UnknownCa ||
    e instanceof UnknownCertificate ||
    e instanceof UnknownOperator ||
    e instanceof UnknownGatewaySession
  )
    return new HttpProblem(404, e.code, e.message);
  if (e instanceof DeviceExists || e instanceof ServiceExists || e instanceof CaExists || e instanceof OperatorExists)
    return new HttpProblem(409, e.code, e.message);
  if (e instanceof DeviceNotActive) return new HttpProblem(409, e.code, e.message);
  if (e instanceof AuthenticationFailed) return new HttpProblem(401, e.reason, e.message);
  if (e instanceof NotPermitted) return new HttpProblem(403, e.reason, e.message);
  if (e instanceof TooManyRequests) return new HttpProblem(429, e.code, e.message, { "retry-after": String(e.retryAfterSeconds) });
  if (e instanceof CaNotActive || e instanceof CaKeyOffline) return new HttpProblem(503, e.code, e.message);
  if (e instanceof AuthorityError) return new HttpProblem(400, e.code, e.message);
  if (e && typeof e === "object" && "code" in e && typeof (e as FastifyError).code === "string") {
    const p = fromFastify(e as FastifyError);
    if (p) return p;
  }
  return new HttpProblem(500, "internal-error", "internal error (see the server log)");
}

export function sendProblem(reply: FastifyReply, problem: HttpProblem): FastifyReply {
  const extra = problem instanceof AdminProblem ? problem.extra : {};
  return reply
    .code(problem.status)
    .headers(problem.headers)
    .type("application/problem+json")
    .send({
      type: PROBLEM_BASE + problem.type,
      title: TITLES[problem.status] ?? "Error",
      status: problem.status,
      detail: problem.message,
      ...extra,
    });
}

export function installProblemHandlers(app: FastifyInstance, logger: Logger): void {
  app.setErrorHandler((error, request, reply) => {
    const problem = adminProblem(error);
    if (problem.status >= 500)
      logger.error({ err: (error as Error).message, method: request.method, url: request.routeOptions.url }, "admin request failed");
    return sendProblem(reply, problem);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, new HttpProblem(404, "not-found", `no such resource: ${request.method} ${request.url.split("?")[0]}`)),
  );
}
