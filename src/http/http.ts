// Small HTTP mechanics shared by the listeners: bounded bodies, problem details, JSON, timeouts.
import type { IncomingMessage, Server, ServerOptions, ServerResponse } from "node:http";

export const MAX_BODY_BYTES = 64 * 1024;

export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpProblem";
  }
}

/**
 * The request ended before its body did: the client closed the connection, or was so slow that
 * the listener's request timeout closed it (Node has answered 408 then). There is no one left to
 * answer, and it is the client's doing: log it as such, never as a server error. 499 is nginx's
 * "client closed request"; neither status reaches the client.
 */
export class ClientAborted extends HttpProblem {
  constructor(readonly timedOut: boolean) {
    super(
      timedOut ? 408 : 499,
      timedOut ? "request-timeout" : "client-aborted",
      timedOut
        ? "the request body did not arrive within the request timeout"
        : "the client closed the connection before the request body was complete",
    );
    this.name = "ClientAborted";
  }
}

export const PROBLEM_BASE = "https://fleetpki.dev/problems/";

/** RFC 9110's reason phrases, the `title` of a problem body. */
export const TITLES: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  409: "Conflict",
  413: "Content Too Large",
  414: "URI Too Long",
  415: "Unsupported Media Type",
  429: "Too Many Requests",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** RFC 9457 problem details. */
export function sendProblem(res: ServerResponse, problem: HttpProblem): void {
  const body = JSON.stringify({
    type: PROBLEM_BASE + problem.type,
    title: TITLES[problem.status] ?? "Error",
    status: problem.status,
    detail: problem.message,
  });
  res.writeHead(problem.status, {
    "content-type": "application/problem+json",
    "content-length": Buffer.byteLength(body),
    ...problem.headers,
  });
  res.end(body);
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers });
  res.end(body);
}

export function sendText(
  res: ServerResponse,
  status: number,
  contentType: string,
  body: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(body), ...headers });
  res.end(body);
}

/**
 * Reads the body, refusing more than `limit` bytes (413) before buffering it all. A connection
 * that ends before the body is complete rejects with ClientAborted.
 */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit)
    return Promise.reject(new HttpProblem(413, "body-too-large", `request body of ${declared} bytes exceeds the ${limit}-byte limit`));
  return new Promise((resolve, reject) => {
    const timedOut = () => (req.socket?.errored as NodeJS.ErrnoException | null)?.code === "ERR_HTTP_REQUEST_TIMEOUT";
    const aborted = () => reject(new ClientAborted(timedOut()));
    if (req.destroyed && !req.complete) return aborted(); // already gone: no event will come
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new HttpProblem(413, "body-too-large", `request body exceeds the ${limit}-byte limit`, { connection: "close" }));
        req.removeAllListeners("data");
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    // Node reports a connection closed mid-body as an "aborted" error (ECONNRESET), or only closes.
    req.on("error", (e) => (req.complete ? reject(e) : aborted()));
    req.on("close", () => req.complete || aborted());
  });
}

/** The media type without parameters, lower-cased ("application/pkcs10"). */
export function mediaType(req: IncomingMessage): string {
  return (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
}

export function requireMediaType(req: IncomingMessage, ...accepted: string[]): void {
  const type = mediaType(req);
  if (!accepted.includes(type))
    throw new HttpProblem(415, "unsupported-media-type", `Content-Type must be ${accepted.join(" or ")}${type ? `, not ${type}` : ""}`);
}

export function methodNotAllowed(allowed: string[]): HttpProblem {
  return new HttpProblem(405, "method-not-allowed", `use ${allowed.join(" or ")}`, { allow: allowed.join(", ") });
}

export async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  requireMediaType(req, "application/json");
  const body = await readBody(req);
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    throw new HttpProblem(400, "invalid-json", "the request body is not valid JSON");
  }
  if (!value || typeof value !== "object" || Array.isArray(value))
    throw new HttpProblem(400, "invalid-json", "the request body must be a JSON object");
  return value as Record<string, unknown>;
}

export function stringField(body: Record<string, unknown>, name: string, required = true): string | undefined {
  const v = body[name];
  if (v === undefined || v === null) {
    if (required) throw new HttpProblem(400, "missing-field", `field "${name}" is required`);
    return undefined;
  }
  if (typeof v !== "string" || v === "") throw new HttpProblem(400, "invalid-field", `field "${name}" must be a non-empty string`);
  return v;
}

/** How long a listener waits for a client. */
export interface ListenerTimeouts {
  /** For the request line and headers, from the connection or the request's first byte on. */
  headersMs: number;
  /** For the whole request, body included (at least headersMs). */
  requestMs: number;
  /** For the next request on an idle keep-alive connection. */
  keepAliveMs: number;
}

/**
 * createServer options that enforce the timeouts promptly. Node closes connections past
 * headersTimeout or requestTimeout only when its connection check runs, by default every 30 s,
 * so a slow client could hold one up to 30 s longer than configured. Checking 20 times per
 * timeout (at most every 500 ms) closes it at most 5 % (or 0.5 s) late.
 */
export function timeoutOptions(
  t: ListenerTimeouts,
): Pick<ServerOptions, "headersTimeout" | "requestTimeout" | "keepAliveTimeout" | "connectionsCheckingInterval"> {
  const check = Math.min(500, Math.max(10, Math.floor(Math.min(t.headersMs, t.requestMs) / 20)));
  return { headersTimeout: t.headersMs, requestTimeout: t.requestMs, keepAliveTimeout: t.keepAliveMs, connectionsCheckingInterval: check };
}

/** Listens on host:port; resolves once listening, rejects if the address cannot be bound. */
export function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/** Stops accepting, lets idle keep-alive connections go at once and cuts the rest after 2 s. */
export function closeGracefully(server: Server & { closeIdleConnections(): void; closeAllConnections(): void }): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), 2_000).unref();
  });
}
