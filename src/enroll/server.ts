// The registration server: EST (RFC 7030) and a JSON API over HTTPS. It decides nothing
// itself: it authenticates the transport (Basic credentials, TLS client certificates), calls
// the authority, and maps results to HTTP.
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { AuthFailureLog } from "../authority/enroll/auth-failures.js";
import {
  enrollByApproval,
  enrollWithFactoryCertificate,
  enrollWithToken,
  renewExpired,
  renewWithCertificate,
  renewalChallenge,
  requestedDeviceId,
  FactoryRefusal,
  type ClientCertificate,
  type RequestSource,
} from "../authority/enroll/enrollment.js";
import { AuthenticationFailed } from "../authority/errors.js";
import type { FleetServices } from "../authority/services.js";
import type { DeviceCertificate } from "../authority/issue/issuance.js";
import type { Logger } from "../log.js";
import { fromBase64Body, toBase64Body } from "../x509/base64.js";
import { fleetCsrAttrs } from "../x509/csrattrs.js";
import { fromPem } from "../x509/pem.js";
import { certsOnly } from "../x509/pkcs7.js";
import { BASIC_CHALLENGE, isAuthFailure, toProblem } from "./errors.js";
import {
  HttpProblem,
  closeGracefully,
  listen,
  methodNotAllowed,
  readBody,
  readJson,
  requireMediaType,
  sendJson,
  sendProblem,
  sendText,
  stringField,
} from "../http/http.js";
import { timeoutOptions, type ListenerTimeouts } from "../http/http.js";
import { FailureLimiter, sourceKey } from "./rate-limit.js";

export interface RegistrationTls {
  /** Unencrypted PEM, held in memory only. */
  key: string;
  /** Server certificate followed by its issuing CA. */
  cert: string;
  /** Trust anchors and intermediates for client certificates (root, devices CA, local CAs). */
  ca: string[];
}

export interface RegistrationServerOptions {
  fleet: FleetServices;
  logger: Logger;
  tls: RegistrationTls;
  host: string;
  port: number;
  /**
   * Called periodically; returns new TLS material when the CA set changed (e.g. a local CA
   * created by the CLI while the server runs), or undefined when nothing changed.
   */
  refreshTls?: () => Promise<RegistrationTls | undefined>;
  refreshIntervalMs?: number;
  /** Defaults: headers 10 s, request 30 s, keep-alive 5 s. */
  timeouts?: Partial<ListenerTimeouts>;
}

export interface RunningServer {
  server: Server;
  address: AddressInfo;
  close(): Promise<void>;
}

const EST = "/.well-known/est/";
const PKCS7_HEADERS = { "content-transfer-encoding": "base64" };
const PKCS7_TYPE = "application/pkcs7-mime; smime-type=certs-only";
/**
 * Renewal challenges per source address and minute. A challenge is unauthenticated and may cost a
 * write; a device needs one per renewal after expiry, so this leaves room for a fleet behind one NAT.
 */
const CHALLENGES_PER_MINUTE = 60;

class Handler {
  private readonly limiter: FailureLimiter;
  private readonly challenges = new FailureLimiter(CHALLENGES_PER_MINUTE);
  readonly failures: AuthFailureLog;
  private cacertsBody: string | undefined;

  constructor(
    private readonly fleet: FleetServices,
    private readonly logger: Logger,
  ) {
    this.limiter = new FailureLimiter(fleet.config.enrollment.failed_auth_per_minute);
    this.failures = new AuthFailureLog(fleet);
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const path = (req.url ?? "/").split("?")[0]!;
    const source: RequestSource = { via: path.startsWith(EST) ? "est" : "api", address: req.socket.remoteAddress };
    let device: string | undefined;
    try {
      device = await this.route(req, res, path, source);
    } catch (e) {
      const problem = toProblem(e);
      if (problem.status >= 500)
        this.logger.error(
          { err: { name: (e as Error)?.name, message: (e as Error)?.message, stack: (e as Error)?.stack }, path },
          "request failed",
        );
      if (!res.headersSent) sendProblem(res, problem);
      else res.destroy();
    } finally {
      this.logger.info(
        {
          method: req.method,
          path,
          status: res.statusCode,
          ms: Math.round((performance.now() - started) * 10) / 10,
          address: source.address,
          device,
        },
        "request",
      );
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse, path: string, source: RequestSource): Promise<string | undefined> {
    switch (path) {
      case "/healthz":
        if (req.method !== "GET" && req.method !== "HEAD") throw methodNotAllowed(["GET"]);
        sendJson(res, 200, { status: "ok" });
        return;
      case `${EST}cacerts`:
        if (req.method !== "GET") throw methodNotAllowed(["GET"]);
        sendText(res, 200, PKCS7_TYPE, await this.cacerts(), PKCS7_HEADERS);
        return;
      case `${EST}csrattrs`:
        if (req.method !== "GET") throw methodNotAllowed(["GET"]);
        sendText(res, 200, "application/csrattrs", toBase64Body(fleetCsrAttrs()), PKCS7_HEADERS);
        return;
      case `${EST}simpleenroll`:
        return this.estEnroll(req, res, source);
      case `${EST}simplereenroll`:
        return this.estReenroll(req, res, source);
      case "/api/v1/enroll":
        return this.apiEnroll(req, res, source);
      case "/api/v1/renew":
        return this.apiRenew(req, res, source);
      case "/api/v1/renew/challenge":
        return this.apiChallenge(req, res, source);
      case "/api/v1/renew/expired":
        return this.apiRenewExpired(req, res, source);
      default:
        throw new HttpProblem(404, "not-found", `no such resource: ${path}`);
    }
  }

  private async cacerts(): Promise<string> {
    if (!this.cacertsBody) {
      const { chain, root } = await this.fleet.chainPem("devices");
      this.cacertsBody = toBase64Body(certsOnly([fromPem(chain, ["CERTIFICATE"]), fromPem(root, ["CERTIFICATE"])]));
    }
    return this.cacertsBody;
  }

  /**
   * Runs an operation that checks a presented credential (token, factory certificate, proof of
   * possession), counting and auditing its failures per source address. A source over its limit is
   * not locked out: a valid credential still succeeds (`limited` asks the authority to check it
   * before costlier work), and only failures are answered 429 instead of 401.
   */
  private async authenticated<T>(
    source: RequestSource,
    deviceId: string | undefined,
    reasonVia: string,
    op: (limited: boolean) => Promise<T>,
  ): Promise<T> {
    const key = sourceKey(source.address);
    const limited = this.limiter.blockedFor(key) > 0;
    try {
      return await op(limited);
    } catch (e) {
      // A refused second enrollment with a factory bundle is counted like a failed login: a copied
      // bundle is a credential someone should not be using.
      const refusal = e instanceof FactoryRefusal;
      if (!isAuthFailure(e) && !refusal) throw e;
      this.limiter.fail(key);
      if (refusal) this.recordRefusal(source, reasonVia, e);
      else this.recordFailure(source, deviceId, reasonVia, e);
      const wait = this.limiter.blockedFor(key);
      if (limited && wait > 0) throw tooManyRequests(`too many failed attempts from this address; retry in ${wait} s`, wait);
      throw e;
    }
  }

  /**
   * Renewal over mTLS: the TLS handshake proved possession of the certificate's key, so failed
   * logins from the same address (every robot behind one NAT) never refuse it, and its own
   * failures are audited but not counted against the address.
   */
  private async mtlsRenewal<T>(source: RequestSource, reasonVia: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (e) {
      if (isAuthFailure(e)) this.recordFailure(source, undefined, reasonVia, e);
      throw e;
    }
  }

  private recordFailure(source: RequestSource, deviceId: string | undefined, via: string, e: unknown): void {
    const reason = (e as AuthenticationFailed).reason ?? "unknown-device";
    this.failures.record({ address: source.address ?? "unknown", source: sourceKey(source.address), deviceId, reason, via });
  }

  private recordRefusal(source: RequestSource, via: string, e: FactoryRefusal): void {
    this.failures.record({
      address: source.address ?? "unknown",
      source: sourceKey(source.address),
      deviceId: e.deviceId,
      reason: e.reason,
      via,
      action: "enrollment.refuse",
      details: { provisioner: "factory", ...e.details },
    });
  }

  private async estCsr(req: IncomingMessage): Promise<Buffer> {
    if (req.method !== "POST") throw methodNotAllowed(["POST"]);
    requireMediaType(req, "application/pkcs10");
    return fromBase64Body(await readBody(req));
  }

  private sendPkcs7(res: ServerResponse, cert: DeviceCertificate): void {
    sendText(res, 200, PKCS7_TYPE, toBase64Body(certsOnly([cert.der])), PKCS7_HEADERS);
  }

  private async estEnroll(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    const csr = await this.estCsr(req);
    const basic = basicCredentials(req);
    const client = clientCertificate(req);
    if (basic) {
      const cert = await this.authenticated(source, basic.user, "est-basic", (limited) =>
        enrollWithToken(this.fleet, { deviceId: basic.user, token: basic.password, csr, source, credentialFirst: limited }),
      );
      this.sendPkcs7(res, cert);
      return cert.deviceId;
    }
    if (client) {
      const cert = await this.authenticated(source, undefined, "est-factory", () =>
        enrollWithFactoryCertificate(this.fleet, { clientCertificate: client, csr, source }),
      );
      this.sendPkcs7(res, cert);
      return cert.deviceId;
    }
    if (this.fleet.config.enrollment.approval) {
      const deviceId = requestedDeviceId(csr);
      const outcome = await enrollByApproval(this.fleet, { deviceId, csr, source });
      if (outcome.status === "pending") {
        res.writeHead(202, { "retry-after": String(outcome.retryAfterSeconds), "content-length": 0 });
        res.end();
      } else this.sendPkcs7(res, outcome.certificate);
      return deviceId;
    }
    throw new HttpProblem(
      401,
      "credentials-required",
      "authenticate with HTTP Basic (device id and one-time token) or a factory client certificate",
      BASIC_CHALLENGE,
    );
  }

  private async estReenroll(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    const csr = await this.estCsr(req);
    const client = clientCertificate(req);
    if (!client)
      throw new HttpProblem(
        401,
        "certificate-required",
        "simplereenroll needs the current device certificate as TLS client certificate",
        BASIC_CHALLENGE,
      );
    const cert = await this.mtlsRenewal(source, "est-reenroll", () =>
      renewWithCertificate(this.fleet, { clientCertificate: client, csr, source }),
    );
    this.sendPkcs7(res, cert);
    return cert.deviceId;
  }

  private async apiEnroll(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    if (req.method !== "POST") throw methodNotAllowed(["POST"]);
    const body = await readJson(req);
    const csr = stringField(body, "csr")!;
    const deviceId = stringField(body, "device_id", false);
    const token = stringField(body, "token", false);
    const client = clientCertificate(req);
    if (token) {
      if (!deviceId) throw new HttpProblem(400, "missing-field", 'field "device_id" is required with a token');
      const cert = await this.authenticated(source, deviceId, "api-token", (limited) =>
        enrollWithToken(this.fleet, { deviceId, token, csr, source, credentialFirst: limited }),
      );
      sendJson(res, 200, certificateJson(cert));
      return cert.deviceId;
    }
    if (client) {
      const cert = await this.authenticated(source, deviceId, "api-factory", () =>
        enrollWithFactoryCertificate(this.fleet, { clientCertificate: client, deviceId, csr, source }),
      );
      sendJson(res, 200, certificateJson(cert));
      return cert.deviceId;
    }
    if (this.fleet.config.enrollment.approval && deviceId) {
      const outcome = await enrollByApproval(this.fleet, { deviceId, csr, source });
      if (outcome.status === "pending")
        sendJson(
          res,
          202,
          { status: "pending", request_id: outcome.requestId, retry_after: outcome.retryAfterSeconds },
          { "retry-after": String(outcome.retryAfterSeconds) },
        );
      else sendJson(res, 200, certificateJson(outcome.certificate));
      return deviceId;
    }
    throw new HttpProblem(
      401,
      "credentials-required",
      'give "device_id" and "token", or present a factory client certificate',
      BASIC_CHALLENGE,
    );
  }

  private async apiRenew(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    if (req.method !== "POST") throw methodNotAllowed(["POST"]);
    const body = await readJson(req);
    const csr = stringField(body, "csr")!;
    const client = clientCertificate(req);
    if (!client)
      throw new HttpProblem(
        401,
        "certificate-required",
        "renewal needs the current device certificate as TLS client certificate",
        BASIC_CHALLENGE,
      );
    const cert = await this.mtlsRenewal(source, "api-renew", () =>
      renewWithCertificate(this.fleet, { clientCertificate: client, csr, source }),
    );
    sendJson(res, 200, certificateJson(cert));
    return cert.deviceId;
  }

  private async apiChallenge(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    if (req.method !== "POST") throw methodNotAllowed(["POST"]);
    const wait = this.challenges.take(sourceKey(source.address));
    if (wait > 0) throw tooManyRequests(`too many renewal challenges from this address; retry in ${wait} s`, wait);
    const deviceId = stringField(await readJson(req), "device_id")!;
    const { nonce, expiresAt } = await renewalChallenge(this.fleet, deviceId);
    sendJson(res, 200, { nonce, expires_at: expiresAt.toISOString() });
    return deviceId;
  }

  private async apiRenewExpired(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    if (req.method !== "POST") throw methodNotAllowed(["POST"]);
    const body = await readJson(req);
    const fields = {
      certificate: stringField(body, "certificate")!,
      csr: stringField(body, "csr")!,
      nonce: stringField(body, "nonce")!,
      signature: stringField(body, "signature")!,
    };
    const cert = await this.authenticated(source, undefined, "api-renew-expired", () => renewExpired(this.fleet, { ...fields, source }));
    sendJson(res, 200, certificateJson(cert));
    return cert.deviceId;
  }
}

function tooManyRequests(detail: string, retryAfterSeconds: number): HttpProblem {
  return new HttpProblem(429, "too-many-requests", detail, { "retry-after": String(retryAfterSeconds) });
}

function certificateJson(cert: DeviceCertificate): Record<string, string> {
  return {
    certificate: cert.certificatePem,
    chain: cert.chainPem,
    ca_bundle: cert.caPem,
    not_after: cert.notAfter.toISOString(),
    serial: cert.serial,
  };
}

function basicCredentials(req: IncomingMessage): { user: string; password: string } | undefined {
  const header = req.headers.authorization;
  if (!header) return undefined;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) throw new HttpProblem(401, "credentials-invalid", "Authorization must be HTTP Basic", BASIC_CHALLENGE);
  const decoded = Buffer.from(m[1]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon <= 0) throw new HttpProblem(401, "credentials-invalid", "HTTP Basic credentials must be device-id:token", BASIC_CHALLENGE);
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function clientCertificate(req: IncomingMessage): ClientCertificate | undefined {
  const socket = req.socket as TLSSocket;
  const peer = socket.getPeerCertificate?.();
  if (!peer || !peer.raw) return undefined;
  return { der: peer.raw, verificationError: socket.authorized ? undefined : String(socket.authorizationError ?? "UNVERIFIED") };
}

export async function startRegistrationServer(options: RegistrationServerOptions): Promise<RunningServer> {
  const handler = new Handler(options.fleet, options.logger);
  // Requests still being handled when the server closes: they finish (their certificates are
  // recorded and answered, or refused) before the database may close.
  const inFlight = new Set<Promise<void>>();
  const server = createServer(
    {
      key: options.tls.key,
      cert: options.tls.cert,
      ca: options.tls.ca,
      // Ask for a client certificate (factory enrollment, renewal) without requiring one (tokens).
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: "TLSv1.2",
      handshakeTimeout: 10_000,
      // Slow or silent clients must not hold connections open past the timeouts.
      ...timeoutOptions({ headersMs: 10_000, requestMs: 30_000, keepAliveMs: 5_000, ...options.timeouts }),
    },
    (req, res) => {
      const handled = handler.handle(req, res);
      inFlight.add(handled);
      void handled.finally(() => inFlight.delete(handled));
    },
  );
  server.maxHeadersCount = 64;
  server.on("tlsClientError", (err, socket) =>
    options.logger.debug({ err: err.message, address: socket.remoteAddress }, "TLS handshake failed"),
  );
  let refreshTimer: NodeJS.Timeout | undefined;
  if (options.refreshTls) {
    const refresh = options.refreshTls;
    let running = false;
    refreshTimer = setInterval(() => {
      if (running) return;
      running = true;
      refresh()
        .then((tls) => {
          if (!tls) return;
          // New handshakes use the new trust set; established connections keep theirs.
          server.setSecureContext({ key: tls.key, cert: tls.cert, ca: tls.ca, minVersion: "TLSv1.2" });
          options.logger.info({ cas: tls.ca.length }, "client CA set changed; TLS context refreshed");
        })
        .catch((e) => options.logger.warn({ err: (e as Error).message }, "refreshing the TLS context failed"))
        .finally(() => (running = false));
    }, options.refreshIntervalMs ?? 1_000);
    refreshTimer.unref();
  }
  await listen(server, options.port, options.host);
  return {
    server,
    address: server.address() as AddressInfo,
    async close() {
      clearInterval(refreshTimer);
      await closeGracefully(server);
      // Bounded: a handler stuck on a dead socket must not hold the shutdown.
      await Promise.race([Promise.allSettled([...inFlight]), new Promise((resolve) => setTimeout(resolve, 10_000).unref())]);
      await handler.failures.close();
    },
  };
}
