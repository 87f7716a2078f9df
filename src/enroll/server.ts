// The registration server: EST (RFC 7030) and a JSON API over HTTPS. It decides nothing itself:
// it reads what the request presents (Basic credentials, JSON fields, the TLS client certificate,
// the CSR), hands it to the authority's Enrollment (which picks the provisioner, applies the
// configuration and the failure limits), and maps the outcome or the typed error to HTTP.
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import {
  Enrollment,
  type ClientCertificate,
  type EnrollmentOutcome,
  type EnrollmentRequest,
  type RequestSource,
} from "../authority/enroll/enrollment.js";
import type { FleetServices } from "../authority/services.js";
import { renewDeviceEnclave, renewEnclaveForCsr } from "../authority/enroll/ros2-renewal.js";
import type { DeviceCertificate } from "../authority/issue/issuance.js";
import type { Logger } from "../log.js";
import { fromBase64Body, toBase64Body } from "../x509/base64.js";
import { fleetCsrAttrs } from "../x509/csrattrs.js";
import { fromPem } from "../x509/pem.js";
import { certsOnly } from "../x509/pkcs7.js";
import { BASIC_CHALLENGE, toProblem } from "./errors.js";
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
  /** Told of every refused or failed request, with its problem type (the metrics count them). */
  onFailure?: (reason: string) => void;
}

export interface RunningServer {
  server: Server;
  address: AddressInfo;
  /**
   * Runs options.refreshTls now instead of at the next tick (e.g. right after the server
   * certificate was renewed); new handshakes get what it returns, open connections keep theirs.
   */
  refreshTls(): Promise<void>;
  close(): Promise<void>;
}

const EST = "/.well-known/est/";
/** The agent's renewal of a device's SROS2 enclave (src/agent/ros2.ts). */
const ROS2_RENEW_PATH = "/api/v1/ros2/enclaves/renew";
const PKCS7_HEADERS = { "content-transfer-encoding": "base64" };
const PKCS7_TYPE = "application/pkcs7-mime; smime-type=certs-only";
class Handler {
  private cacertsBody: string | undefined;

  constructor(
    private readonly fleet: FleetServices,
    readonly enrollment: Enrollment,
    private readonly logger: Logger,
    private readonly onFailure: (reason: string) => void = () => {},
  ) {}

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const path = (req.url ?? "/").split("?")[0]!;
    const source: RequestSource = { via: path.startsWith(EST) ? "est" : "api", address: req.socket.remoteAddress };
    let device: string | undefined;
    try {
      device = await this.route(req, res, path, source);
    } catch (e) {
      const problem = toProblem(e);
      this.onFailure(problem.type);
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
      case ROS2_RENEW_PATH:
        return this.apiRos2Renew(req, res, source);
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

  private async estCsr(req: IncomingMessage): Promise<Buffer> {
    if (req.method !== "POST") throw methodNotAllowed(["POST"]);
    requireMediaType(req, "application/pkcs10");
    return fromBase64Body(await readBody(req));
  }

  private sendPkcs7(res: ServerResponse, cert: DeviceCertificate): void {
    sendText(res, 200, PKCS7_TYPE, toBase64Body(certsOnly([cert.der])), PKCS7_HEADERS);
  }

  /** Answers an enrollment: the certificate, or 202 with Retry-After while an operator decides. */
  private async answer(
    res: ServerResponse,
    request: EnrollmentRequest,
    send: (res: ServerResponse, outcome: EnrollmentOutcome) => void,
  ): Promise<string> {
    const outcome = await this.enrollment.enroll(request);
    send(res, outcome);
    return outcome.status === "issued" ? outcome.certificate.deviceId : outcome.deviceId;
  }

  private readonly sendEst = (res: ServerResponse, outcome: EnrollmentOutcome): void => {
    if (outcome.status === "issued") return this.sendPkcs7(res, outcome.certificate);
    res.writeHead(202, { "retry-after": String(outcome.retryAfterSeconds), "content-length": 0 });
    res.end();
  };

  private readonly sendApi = (res: ServerResponse, outcome: EnrollmentOutcome): void => {
    if (outcome.status === "issued") return sendJson(res, 200, certificateJson(outcome.certificate));
    const retry = outcome.retryAfterSeconds;
    sendJson(res, 202, { status: "pending", request_id: outcome.requestId, retry_after: retry }, { "retry-after": String(retry) });
  };

  private async estEnroll(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    const csr = await this.estCsr(req);
    const basic = basicCredentials(req);
    const request: EnrollmentRequest = {
      operation: "enroll",
      csr,
      source,
      deviceId: basic?.user,
      token: basic?.password,
      clientCertificate: clientCertificate(req),
      // EST has no field for the device id: a request without credentials names it in the CSR.
      deviceIdInCsr: true,
    };
    return this.answer(res, request, this.sendEst);
  }

  private async estReenroll(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    const csr = await this.estCsr(req);
    return this.answer(res, { operation: "renew", csr, source, clientCertificate: clientCertificate(req) }, this.sendEst);
  }

  private async apiEnroll(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    if (req.method !== "POST") throw methodNotAllowed(["POST"]);
    const body = await readJson(req);
    const csr = stringField(body, "csr")!;
    const deviceId = stringField(body, "device_id", false);
    const token = stringField(body, "token", false) || undefined;
    if (token && !deviceId) throw new HttpProblem(400, "missing-field", 'field "device_id" is required with a token');
    const request: EnrollmentRequest = { operation: "enroll", csr, source, deviceId, token, clientCertificate: clientCertificate(req) };
    return this.answer(res, request, this.sendApi);
  }

  private async apiRenew(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    if (req.method !== "POST") throw methodNotAllowed(["POST"]);
    const csr = stringField(await readJson(req), "csr")!;
    return this.answer(res, { operation: "renew", csr, source, clientCertificate: clientCertificate(req) }, this.sendApi);
  }

  private async apiRos2Renew(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    if (req.method !== "POST") throw methodNotAllowed(["POST"]);
    const body = ros2RenewBody(await readJson(req));
    const request = { clientCertificate: clientCertificate(req), keystoreId: body.keystore, enclave: body.enclave, csr: body.csr, source };
    const a = await renewDeviceEnclave(this.fleet, request, renewEnclaveForCsr);
    sendJson(res, 200, {
      certificate: a.certificatePem,
      permissions_xml: a.permissionsXml,
      permissions_p7s: a.permissionsP7s,
      governance_p7s: a.governanceP7s,
      identity_ca: a.identityCaPem,
      permissions_ca: a.permissionsCaPem,
      crl: a.crlPem,
    });
    return a.deviceId;
  }

  private async apiChallenge(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    if (req.method !== "POST") throw methodNotAllowed(["POST"]);
    const deviceId = stringField(await readJson(req), "device_id")!;
    const { nonce, expiresAt } = await this.enrollment.challenge(deviceId, source);
    sendJson(res, 200, { nonce, expires_at: expiresAt.toISOString() });
    return deviceId;
  }

  private async apiRenewExpired(req: IncomingMessage, res: ServerResponse, source: RequestSource): Promise<string | undefined> {
    if (req.method !== "POST") throw methodNotAllowed(["POST"]);
    const body = await readJson(req);
    // Read in this order, so a request missing several fields is told the same first one as before.
    const certificate = stringField(body, "certificate")!;
    const csr = stringField(body, "csr")!;
    const proof = { certificate, nonce: stringField(body, "nonce")!, signature: stringField(body, "signature")! };
    return this.answer(res, { operation: "renew-expired", csr, source, proof }, this.sendApi);
  }
}

/** Body of POST /api/v1/ros2/enclaves/renew: exactly these fields, strings of bounded size. */
const ROS2_RENEW_FIELDS: Record<string, number> = { keystore: 36, enclave: 256, csr: 4096 };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function ros2RenewBody(body: Record<string, unknown>): { keystore: string; enclave: string; csr: Buffer } {
  for (const name of Object.keys(body))
    // Own keys only: "constructor" or "__proto__" must not pass for a known field.
    if (!Object.hasOwn(ROS2_RENEW_FIELDS, name))
      throw new HttpProblem(400, "unknown-field", `unknown field "${name.slice(0, 64)}" (expected keystore, enclave, csr)`);
  for (const [name, max] of Object.entries(ROS2_RENEW_FIELDS)) {
    const v = stringField(body, name)!;
    if (v.length > max) throw new HttpProblem(400, "invalid-field", `field "${name}" is longer than ${max} characters`);
  }
  const keystore = body.keystore as string;
  if (!UUID.test(keystore)) throw new HttpProblem(400, "invalid-field", 'field "keystore" must be the keystore\'s UUID (lower-case)');
  if (!BASE64.test(body.csr as string))
    throw new HttpProblem(400, "invalid-base64", 'field "csr" must be base64 (DER PKCS#10, no PEM armour)');
  return { keystore, enclave: body.enclave as string, csr: Buffer.from(body.csr as string, "base64") };
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
  const handler = new Handler(options.fleet, new Enrollment(options.fleet), options.logger, options.onFailure);
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
  // One refresh at a time; a call during one waits for it and runs once more (it may have read the files too early).
  let refreshing: Promise<void> = Promise.resolve();
  let queued: Promise<void> | undefined;
  let busy = false;
  const refreshOnce = async (): Promise<void> => {
    if (!options.refreshTls) return;
    busy = true;
    try {
      const tls = await options.refreshTls();
      if (!tls) return;
      // New handshakes use the new trust set and certificate; established connections keep theirs.
      server.setSecureContext({ key: tls.key, cert: tls.cert, ca: tls.ca, minVersion: "TLSv1.2" });
      options.logger.info({ cas: tls.ca.length }, "TLS context refreshed (client CA set or server certificate changed)");
    } catch (e) {
      options.logger.warn({ err: (e as Error).message }, "refreshing the TLS context failed");
    } finally {
      busy = false;
    }
  };
  const refreshTls = (): Promise<void> =>
    (queued ??= refreshing.then(() => {
      queued = undefined;
      refreshing = refreshOnce();
      return refreshing;
    }));
  if (options.refreshTls) {
    refreshTimer = setInterval(() => void (busy || queued || refreshTls()), options.refreshIntervalMs ?? 1_000);
    refreshTimer.unref();
  }
  await listen(server, options.port, options.host);
  return {
    server,
    address: server.address() as AddressInfo,
    refreshTls,
    async close() {
      clearInterval(refreshTimer);
      await queued;
      await closeGracefully(server);
      // Bounded: a handler stuck on a dead socket must not hold the shutdown.
      await Promise.race([Promise.allSettled([...inFlight]), new Promise((resolve) => setTimeout(resolve, 10_000).unref())]);
      await handler.enrollment.close();
    },
  };
}
