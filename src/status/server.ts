// The status listener (plain HTTP, as RFC 5280 CRL distribution points and RFC 6960 OCSP
// expect): /crl/<ca>.crl (DER), /crl/<ca>.pem, /ocsp (POST, and GET with the request in the path,
// RFC 6960 A.1), /healthz. It only reads; signing happens in the domain services it is given.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { crlPem, type CrlPublisher } from "../authority/status/crls.js";
import type { OcspService } from "../authority/status/ocsp-responder.js";
import {
  ClientAborted,
  HttpProblem,
  closeGracefully,
  listen,
  methodNotAllowed,
  readBody,
  requireMediaType,
  sendProblem,
  sendText,
  timeoutOptions,
  type ListenerTimeouts,
} from "../http/http.js";
import type { Logger } from "../log.js";
import { Base64Error, fromBase64Body } from "../x509/base64.js";
import { DEFAULT_MAX_REQUEST_BYTES } from "../x509/ocsp-request.js";

export interface StatusServerOptions {
  crls: CrlPublisher;
  ocsp: OcspService;
  logger: Logger;
  host: string;
  port: number;
  /** Defaults: STATUS_TIMEOUTS. */
  timeouts?: Partial<ListenerTimeouts>;
  /** Told of every OCSP request: its response status, or "http-<problem>" when refused before one (metrics). */
  onOcsp?: (outcome: string) => void;
}

/** Answers are small and quick: a client that has not sent its request by now never will. */
export const STATUS_TIMEOUTS: ListenerTimeouts = { headersMs: 10_000, requestMs: 15_000, keepAliveMs: 5_000 };

export interface RunningStatusServer {
  server: Server;
  address: AddressInfo;
  close(): Promise<void>;
}

const CA_NAME = /^[a-z0-9][a-z0-9._-]{0,80}$/;

class StatusHandler {
  constructor(private readonly options: StatusServerOptions) {}

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0]!;
    try {
      if (path === "/ocsp" || path.startsWith("/ocsp/")) return await this.ocsp(req, res, path);
      if (path.startsWith("/crl/")) return await this.crl(req, res, path.slice("/crl/".length));
      if (path === "/healthz") {
        if (req.method !== "GET" && req.method !== "HEAD") throw methodNotAllowed(["GET"]);
        return sendText(res, 200, "text/plain", "ok\n");
      }
      throw new HttpProblem(404, "not-found", `no such resource: ${path}`);
    } catch (e) {
      if (e instanceof ClientAborted) {
        // Nobody is left to answer, and it is not our fault.
        this.options.logger.info({ method: req.method, path, address: req.socket.remoteAddress, reason: e.type }, e.message);
        return;
      }
      if (e instanceof HttpProblem && /^\/ocsp(\/|$)/.test(path)) this.options.onOcsp?.(`http-${e.type}`);
      if (e instanceof HttpProblem) return sendProblem(res, e);
      this.options.logger.error({ err: (e as Error).message }, "status request failed");
      sendProblem(res, new HttpProblem(500, "internal-error", "internal error"));
    }
  }

  private async crl(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
    if (req.method !== "GET" && req.method !== "HEAD") throw methodNotAllowed(["GET"]);
    const m = /^(.+)\.(crl|pem)$/.exec(name);
    if (!m || !CA_NAME.test(m[1]!))
      throw new HttpProblem(404, "not-found", `no such CRL: /crl/${name} (use /crl/<ca>.crl or /crl/<ca>.pem)`);
    const crl = await this.options.crls.crl(m[1]!);
    if (!crl) throw new HttpProblem(404, "not-found", `no CRL for CA "${m[1]}"`);
    const headers = {
      "last-modified": crl.thisUpdate.toUTCString(),
      expires: crl.nextUpdate.toUTCString(),
      etag: `"${m[1]}-${crl.crlNumber}"`,
      // A revocation re-signs at once: caches must ask again rather than keep an old list.
      "cache-control": "no-cache",
    };
    const body = m[2] === "crl" ? crl.der : Buffer.from(crlPem(crl), "ascii");
    res.writeHead(200, {
      "content-type": m[2] === "crl" ? "application/pkix-crl" : "application/x-pem-file",
      "content-length": body.length,
      ...headers,
    });
    res.end(req.method === "HEAD" ? undefined : body);
  }

  private async ocsp(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    let request: Buffer;
    if (req.method === "POST" && path === "/ocsp") {
      requireMediaType(req, "application/ocsp-request");
      request = await readBody(req, DEFAULT_MAX_REQUEST_BYTES);
    } else if (req.method === "GET" && path.startsWith("/ocsp/")) {
      // GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}
      const encoded = path.slice("/ocsp/".length);
      if (encoded.length > DEFAULT_MAX_REQUEST_BYTES * 2)
        throw new HttpProblem(414, "uri-too-long", "the OCSP request in the URL is too long; POST it");
      request = ocspGetRequest(encoded);
    } else throw methodNotAllowed(path === "/ocsp" ? ["POST"] : ["GET"]);
    const outcome = await this.options.ocsp.respond(request);
    this.options.onOcsp?.(outcome.status);
    res.writeHead(200, { "content-type": "application/ocsp-response", "content-length": outcome.der.length, "cache-control": "no-cache" });
    res.end(outcome.der);
  }
}

/**
 * The DER request of an RFC 6960 A.1 GET: standard base64 (with its padding), percent-encoded
 * or not. Anything else (base64url, whitespace, a broken %-escape, a truncated or empty value)
 * is a 400 that names the problem, rather than a guess at what was meant.
 */
function ocspGetRequest(encoded: string): Buffer {
  let text: string;
  try {
    text = decodeURIComponent(encoded);
  } catch {
    throw new HttpProblem(400, "invalid-ocsp-get", "the OCSP request in the URL has a malformed %-escape");
  }
  try {
    return fromBase64Body(text, { whitespace: false });
  } catch (e) {
    if (e instanceof Base64Error)
      throw new HttpProblem(400, "invalid-ocsp-get", `the OCSP request in the URL must be URL-encoded standard base64: ${e.message}`);
    throw e;
  }
}

export async function startStatusServer(options: StatusServerOptions): Promise<RunningStatusServer> {
  const handler = new StatusHandler(options);
  // Slow or silent clients must not hold connections open past the timeouts.
  const server = createServer(timeoutOptions({ ...STATUS_TIMEOUTS, ...options.timeouts }), (req, res) => void handler.handle(req, res));
  server.maxHeadersCount = 64;
  await listen(server, options.port, options.host);
  return {
    server,
    address: server.address() as AddressInfo,
    async close() {
      await closeGracefully(server);
    },
  };
}
