// HTTPS to the registration server. Every request trusts exactly the pinned fleet root (`ca`),
// verifies the chain and the host name, and has no switch to turn that off. The one exception
// is fetchCacertsUnverified(), the bootstrap that downloads the CA certificates so that the
// caller can find the pinned root among them by fingerprint; nothing else is sent on it.
import { X509Certificate } from "node:crypto";
import https from "node:https";
import type { IncomingHttpHeaders } from "node:http";
import { Base64Error, Pkcs7Error, fromBase64Body, parseCertsOnly } from "../x509/pkcs7.js";
import { toPem } from "../x509/pem.js";
import { AgentError, ServerError, TransportError } from "./errors.js";
import { fingerprintOf } from "./fingerprint.js";

export const DEFAULT_TIMEOUT_MS = 30_000;
/** Largest response body accepted; the server's answers are a few KiB. */
const MAX_BODY = 1 << 20;

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A TLS client identity: certificate (+ chain) PEM and the PEM private key, held in memory. */
export interface ClientIdentity {
  certChainPem: string;
  keyPem: string;
}

/** https://host[:port][/prefix]; the prefix (if any) is kept and paths are appended to it. */
export function parseServerUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new AgentError(`invalid server URL "${text}" (expected https://HOST:PORT)`);
  }
  if (url.protocol !== "https:") throw new AgentError(`server URL "${text}" must use https://`);
  if (url.username || url.password) throw new AgentError(`server URL "${text}" must not contain credentials`);
  if (url.search || url.hash) throw new AgentError(`server URL "${text}" must not have a query or fragment`);
  url.pathname = url.pathname.replace(/\/+$/, "");
  return url;
}

export function endpoint(server: URL, path: string): URL {
  const url = new URL(server.href);
  url.pathname = server.pathname.replace(/\/+$/, "") + path;
  return url;
}

/** Certificate checks of the server that failed on our side: the server is not who it should be (also the MQTT client's). */
export const SERVER_TLS_CODES: ReadonlySet<string> = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_SIGNATURE_FAILURE",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "HOSTNAME_MISMATCH",
]);

function transportError(url: URL, e: unknown): TransportError {
  const err = e as NodeJS.ErrnoException;
  const code = typeof err?.code === "string" ? err.code : undefined;
  const where = `${url.origin}`;
  if (code && SERVER_TLS_CODES.has(code))
    return new TransportError(
      `TLS verification of ${where} failed (${code}): ${err.message}; ` +
        `the server's certificate must chain to the pinned fleet root and name this host`,
      code,
    );
  return new TransportError(`cannot reach ${where}: ${err?.message ?? String(e)}`, code);
}

interface RawRequest {
  method: string;
  url: URL;
  agent: https.Agent | false;
  headers?: Record<string, string>;
  body?: Buffer;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Only for the bootstrap fetch. */
  unverified?: boolean;
}

function send(r: RawRequest): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const options: https.RequestOptions = {
      method: r.method,
      headers: { ...(r.headers ?? {}), ...(r.body ? { "content-length": String(r.body.length) } : {}) },
      agent: r.agent,
      signal: r.signal,
    };
    if (r.unverified) options.rejectUnauthorized = false;
    const req = https.request(r.url, options, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY) {
          req.destroy(new AgentError(`${r.method} ${r.url.pathname}: response larger than ${MAX_BODY} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", (e) => reject(e instanceof AgentError ? e : transportError(r.url, e)));
    });
    req.setTimeout(r.timeoutMs, () => req.destroy(Object.assign(new Error(`no answer within ${r.timeoutMs} ms`), { code: "ETIMEDOUT" })));
    req.on("error", (e) => {
      if (r.signal?.aborted) reject(new AgentError(`${r.method} ${r.url.pathname}: interrupted`));
      else reject(e instanceof AgentError ? e : transportError(r.url, e));
    });
    req.end(r.body);
  });
}

/** Retry-After as milliseconds: delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || v.trim() === "") return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const date = Date.parse(v);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

interface Problem {
  type?: string;
  title?: string;
  detail?: string;
}

function problemOf(res: HttpResponse): Problem {
  try {
    const parsed = JSON.parse(res.body.toString("utf8")) as unknown;
    if (parsed && typeof parsed === "object") {
      const p = parsed as Record<string, unknown>;
      const str = (k: string) => (typeof p[k] === "string" ? (p[k] as string) : undefined);
      return { type: str("type"), title: str("title"), detail: str("detail") };
    }
  } catch {
    // not JSON: fall through to the text
  }
  const text = res.body.toString("utf8").trim().slice(0, 200);
  return { detail: text || undefined };
}

/** A ServerError describing a non-2xx answer (problem+json title/detail, Retry-After). */
export function serverError(method: string, path: string, res: HttpResponse): ServerError {
  const p = problemOf(res);
  const what = [p.title, p.detail].filter(Boolean).join(": ") || "no details";
  return new ServerError(`${method} ${path}: HTTP ${res.status}: ${what}`, res.status, p.type, parseRetryAfter(res.headers["retry-after"]));
}

export interface JsonAnswer {
  status: number;
  body: Record<string, unknown>;
  retryAfterMs: number | undefined;
}

/**
 * A client of one registration server with the pinned root as its only trust anchor and an
 * optional TLS client identity. Connections are kept alive; close() when done.
 */
export class RegistrationClient {
  readonly server: URL;
  private readonly agent: https.Agent;
  private readonly timeoutMs: number;
  private readonly signal: AbortSignal | undefined;

  constructor(server: URL | string, trust: { rootPem: string; identity?: ClientIdentity; timeoutMs?: number; signal?: AbortSignal }) {
    this.timeoutMs = trust.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.signal = trust.signal;
    this.server = typeof server === "string" ? parseServerUrl(server) : server;
    // Agent options take precedence over per-request options in node:https, so nothing a
    // request passes can weaken these.
    this.agent = new https.Agent({
      keepAlive: true,
      maxSockets: 2,
      ca: trust.rootPem,
      rejectUnauthorized: true,
      ...(trust.identity ? { cert: trust.identity.certChainPem, key: trust.identity.keyPem } : {}),
    });
  }

  async request(method: string, path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<HttpResponse> {
    return send({
      method,
      url: endpoint(this.server, path),
      agent: this.agent,
      headers,
      body,
      timeoutMs: this.timeoutMs,
      signal: this.signal,
    });
  }

  /** POSTs JSON; 2xx answers are returned (with their JSON body), anything else throws ServerError. */
  async postJson(path: string, payload: unknown): Promise<JsonAnswer> {
    const res = await this.request("POST", path, Buffer.from(JSON.stringify(payload)), {
      "content-type": "application/json",
      accept: "application/json, application/problem+json",
    });
    if (res.status < 200 || res.status > 299) throw serverError("POST", path, res);
    let body: unknown;
    try {
      body = JSON.parse(res.body.toString("utf8"));
    } catch {
      throw new ServerError(`POST ${path}: HTTP ${res.status} with a body that is not JSON`, res.status, undefined, undefined);
    }
    if (!body || typeof body !== "object" || Array.isArray(body))
      throw new ServerError(`POST ${path}: HTTP ${res.status} with a JSON body that is not an object`, res.status, undefined, undefined);
    return { status: res.status, body: body as Record<string, unknown>, retryAfterMs: parseRetryAfter(res.headers["retry-after"]) };
  }

  close(): void {
    this.agent.destroy();
  }
}

export const CACERTS_PATH = "/.well-known/est/cacerts";

/**
 * GET cacerts WITHOUT verifying the server (nothing to verify it with yet) and return the DER
 * certificates. The caller must check them against the pinned fingerprint before trusting any.
 */
export async function fetchCacertsUnverified(server: URL, timeoutMs = DEFAULT_TIMEOUT_MS, signal?: AbortSignal): Promise<Buffer[]> {
  const res = await send({
    method: "GET",
    url: endpoint(server, CACERTS_PATH),
    agent: false,
    timeoutMs,
    signal,
    unverified: true,
    headers: { accept: "application/pkcs7-mime" },
  });
  if (res.status !== 200) throw serverError("GET", CACERTS_PATH, res);
  try {
    return parseCertsOnly(fromBase64Body(res.body));
  } catch (e) {
    if (e instanceof Pkcs7Error || e instanceof Base64Error) throw new AgentError(`GET ${CACERTS_PATH}: ${e.message}`);
    throw e;
  }
}

export interface PinnedRoot {
  der: Buffer;
  pem: string;
  certificate: X509Certificate;
  fingerprint: string;
}

/** The pinned root from DER, checked to be a self-signed CA certificate. */
export function pinnedRootFrom(der: Buffer, fingerprint: string): PinnedRoot {
  if (fingerprintOf(der) !== fingerprint)
    throw new AgentError(`certificate fingerprint ${fingerprintOf(der)} is not the pinned ${fingerprint}`);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(der);
  } catch {
    throw new AgentError(`the certificate with the pinned fingerprint ${fingerprint} cannot be parsed`);
  }
  if (cert.issuer !== cert.subject || !cert.verify(cert.publicKey))
    throw new AgentError(
      `the certificate with the pinned fingerprint ${fingerprint} (${cert.subject.replace(/\n/g, ", ")}) is not a self-signed root`,
    );
  if (!cert.ca) throw new AgentError(`the certificate with the pinned fingerprint ${fingerprint} is not a CA certificate`);
  return { der, pem: toPem("CERTIFICATE", der), certificate: cert, fingerprint };
}

/**
 * Bootstrap trust: fetch cacerts unverified and keep only the certificate whose SHA-256
 * fingerprint is the pinned one. Fails, having trusted nothing, if it is not there.
 */
export async function bootstrapRoot(
  server: URL,
  fingerprint: string,
  timeoutMs = DEFAULT_TIMEOUT_MS,
  signal?: AbortSignal,
): Promise<PinnedRoot> {
  const certs = await fetchCacertsUnverified(server, timeoutMs, signal);
  const match = certs.find((der) => fingerprintOf(der) === fingerprint);
  if (!match)
    // What the server offers is exactly what an impostor controls: never suggest it as the fix.
    throw new AgentError(
      `root fingerprint mismatch: ${server.origin} offers no CA certificate with the pinned fingerprint ${fingerprint}; ` +
        "this may not be your fleet's server. Check --server, and get the root fingerprint from your fleet operator " +
        "through another channel (`fleetpki init` and `serve` print it), never from the server you are checking",
    );
  return pinnedRootFrom(match, fingerprint);
}
