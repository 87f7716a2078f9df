// The device side of the MQTT gateway: an MQTT 3.1.1 client over mutual TLS built from the
// agent's files (or any fleet identity's cert/key/ca files, e.g. a service's).
//
// Trust is the same as for enrollment: the fleet root in ca.pem is the only trust anchor, the
// gateway's certificate must chain to it and name the host we dialled (or `servername`), and
// there is no switch to turn that off. The client id is the identity's name from its SAN URI
// (the gateway refuses anything else). No automatic reconnect: a refusal or a closed session is
// reported to the caller, who decides (a revoked robot must not hammer the gateway).
import { X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { parseCertificate } from "../x509/certificate.js";
import { PemError, parsePemBlocks, toPem } from "../x509/pem.js";
import { SERVER_TLS_CODES } from "./client.js";
import { AgentError } from "./errors.js";
import { AGENT_FILES, loadState } from "./state.js";
import { chainToRoot, sameKey, uriSans } from "./verify.js";

export const DEFAULT_MQTT_PORT = 8883;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_KEEPALIVE_S = 30;

/** Paths of a fleet identity's PEM files (`fleetpki service add --out DIR` writes these names). */
export interface TelemetryFiles {
  cert: string;
  key: string;
  /** The fleet root: the only trust anchor for the gateway's certificate. */
  ca: string;
  /** Intermediates to send after the certificate (the issuing CA); optional. */
  chain?: string;
}

/** The files of a directory laid out like the agent's or a service's (cert.pem, key.pem, ca.pem, chain.pem). */
export function identityFilesIn(dir: string): TelemetryFiles {
  return { cert: join(dir, "cert.pem"), key: join(dir, "key.pem"), ca: join(dir, "ca.pem"), chain: join(dir, "chain.pem") };
}

export interface TelemetryOptions {
  /** An enrolled agent directory (checked like `fleetpki agent status` does). */
  agentDir?: string;
  /** Or explicit files (a service identity, a factory bundle, ...). */
  files?: TelemetryFiles;
  /** mqtts://HOST[:PORT] (default port 8883). */
  url: string;
  /** Name the gateway's certificate must carry, when it differs from the URL's host. */
  servername?: string;
  /** Default: the identity's name (device id, service or operator name), which the gateway requires. */
  clientId?: string;
  connectTimeoutMs?: number;
  keepaliveSeconds?: number;
  /** Last will, published by the gateway if this client goes away without DISCONNECT. */
  will?: { topic: string; payload: string | Buffer; qos?: 0 | 1; retain?: boolean };
}

export interface FleetIdentity {
  kind: "device" | "service" | "operator";
  name: string;
  spiffeId: string;
}

export interface TelemetryMessage {
  topic: string;
  payload: Buffer;
  qos: number;
  retain: boolean;
}

export interface TelemetryClosed {
  /** True when close() ended the session; false when the gateway or the network did. */
  byUs: boolean;
  /** What the gateway or the network said, if anything. */
  error?: AgentError;
  at: Date;
}

export interface TelemetryClient {
  readonly identity: FleetIdentity;
  readonly clientId: string;
  readonly url: string;
  readonly connected: boolean;
  /** Resolves once the message is written (QoS 0) or acknowledged (QoS 1). */
  publish(topic: string, payload: string | Buffer, qos?: 0 | 1, options?: { retain?: boolean }): Promise<void>;
  /** Resolves with the granted QoS; throws MqttSubscribeDenied when the gateway answers 0x80. */
  subscribe(filter: string, qos?: 0 | 1): Promise<0 | 1>;
  /** Calls handler for every message received; returns a function that removes it. */
  onMessage(handler: (message: TelemetryMessage) => void): () => void;
  /** The next message matching `match`, or an MqttError after timeoutMs or when the session ends. */
  nextMessage(match?: (message: TelemetryMessage) => boolean, timeoutMs?: number): Promise<TelemetryMessage>;
  /** Settles once when the session ends, whoever ended it. */
  readonly closed: Promise<TelemetryClosed>;
  close(): Promise<void>;
}

/** Any MQTT-side failure: connection, TLS, refusal, subscription, a session that ended. */
export class MqttError extends AgentError {
  constructor(
    message: string,
    /** A TLS/socket error code ("CERT_HAS_EXPIRED", "ECONNRESET", ...) when there is one. */
    readonly code?: string,
  ) {
    super(message);
    this.name = "AgentError";
  }
}

/** CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3), in words. */
export const CONNACK_REASONS: Readonly<Record<number, string>> = {
  1: "unacceptable protocol version",
  2: "identifier rejected",
  3: "server unavailable",
  4: "bad user name or password",
  5: "not authorized",
};

const CONNACK_HINTS: Readonly<Record<number, string>> = {
  2: "the client id must be the device id (a service or operator may use NAME or NAME-<suffix>)",
  5: "the identity is unknown, inactive, revoked or held, or its will topic is not allowed",
};

/** The gateway refused the CONNECT with a CONNACK return code. */
export class MqttConnectRefused extends MqttError {
  readonly reason: string;
  constructor(
    url: string,
    readonly returnCode: number,
  ) {
    const reason = CONNACK_REASONS[returnCode] ?? `return code ${returnCode}`;
    const hint = CONNACK_HINTS[returnCode];
    super(`MQTT connection to ${url} refused: ${reason} (CONNACK ${returnCode})${hint ? `; ${hint}` : ""}`);
    this.reason = reason;
  }
}

/** SUBACK 0x80: the policy does not let this identity read that filter. */
export class MqttSubscribeDenied extends MqttError {
  constructor(readonly filter: string) {
    super(`subscription to "${filter}" refused by the gateway (SUBACK 0x80): the access policy does not grant it`);
  }
}

/** mqtts://host[:port] only: the gateway speaks nothing else, and a plain mqtt:// would skip TLS. */
export function parseGatewayUrl(text: string): { host: string; port: number; href: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new MqttError(`invalid gateway URL "${text}" (expected mqtts://HOST:PORT)`);
  }
  if (url.protocol !== "mqtts:") throw new MqttError(`gateway URL "${text}" must use mqtts:// (MQTT over TLS)`);
  if (url.username || url.password) throw new MqttError(`gateway URL "${text}" must not contain credentials`);
  if ((url.pathname && url.pathname !== "/") || url.search || url.hash)
    throw new MqttError(`gateway URL "${text}" must not have a path, query or fragment`);
  if (!url.hostname) throw new MqttError(`gateway URL "${text}" has no host`);
  const port = url.port ? Number(url.port) : DEFAULT_MQTT_PORT;
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  return { host, port, href: `mqtts://${url.host}${url.port ? "" : `:${port}`}` };
}

/** The fleet identity (spiffe://<domain>/<device|service|operator>/<name>) a certificate carries. */
export function fleetIdentityOf(certificate: X509Certificate): FleetIdentity | undefined {
  for (const uri of uriSans(parseCertificate(Buffer.from(certificate.raw)))) {
    const m = /^spiffe:\/\/[^/]+\/(device|service|operator)\/([^/]+)$/.exec(uri);
    if (m) return { kind: m[1] as FleetIdentity["kind"], name: m[2]!, spiffeId: uri };
  }
  return undefined;
}

interface LoadedIdentity {
  identity: FleetIdentity;
  certChainPem: string;
  keyPem: string;
  rootPem: string;
}

function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new MqttError(`cannot read the ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function pemCertificates(text: string, path: string): X509Certificate[] {
  try {
    return parsePemBlocks(text)
      .filter((b) => b.label === "CERTIFICATE")
      .map((b) => new X509Certificate(b.der));
  } catch (e) {
    throw new MqttError(`${path}: ${e instanceof PemError ? e.message : "a certificate cannot be parsed"}`);
  }
}

function loadFiles(files: TelemetryFiles): LoadedIdentity {
  const certPem = readPem(files.cert, "certificate");
  const keyPem = readPem(files.key, "private key");
  const caPem = readPem(files.ca, "fleet root");
  const chainPem = files.chain === undefined ? "" : readPem(files.chain, "chain");
  const leaf = pemCertificates(certPem, files.cert)[0];
  if (!leaf) throw new MqttError(`${files.cert} holds no certificate`);
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    throw new MqttError(`${files.key} is not a readable unencrypted private key`);
  }
  if (!sameKey(leaf.publicKey, key)) throw new MqttError(`${files.key} does not match ${files.cert}`);
  const roots = pemCertificates(caPem, files.ca);
  const root = roots[0];
  if (!root) throw new MqttError(`${files.ca} holds no certificate (it must be the fleet root)`);
  if (roots.length !== 1 || !root.ca || !root.checkIssued(root))
    throw new MqttError(`${files.ca} must hold exactly the fleet root certificate (self-signed CA), the gateway's only trust anchor`);
  const intermediates = pemCertificates(chainPem, files.chain ?? "chain");
  // Only what links the leaf to the root is sent: the gateway needs the issuing CA, nothing else.
  const path = chainToRoot(leaf, [...pemCertificates(certPem, files.cert).slice(1), ...intermediates], root);
  const identity = fleetIdentityOf(leaf);
  if (!identity) throw new MqttError(`${files.cert} carries no spiffe://<domain>/(device|service|operator)/<name> URI`);
  const certChainPem = [leaf, ...path].map((c) => toPem("CERTIFICATE", Buffer.from(c.raw))).join("");
  return { identity, certChainPem, keyPem, rootPem: toPem("CERTIFICATE", Buffer.from(root.raw)) };
}

function loadAgentDir(dir: string): LoadedIdentity {
  let state;
  try {
    state = loadState(dir);
  } catch (e) {
    throw e instanceof AgentError ? new MqttError(e.message) : e;
  }
  if (!state.spiffeId) throw new MqttError(`${join(state.dir, AGENT_FILES.cert)} carries no device SPIFFE ID`);
  return {
    identity: { kind: "device", name: state.deviceId, spiffeId: state.spiffeId },
    certChainPem: state.certPem.replace(/\s*$/, "\n") + state.chainPem,
    keyPem: state.keyPem,
    rootPem: toPem("CERTIFICATE", Buffer.from(state.root.certificate.raw)),
  };
}

/** A socket/TLS error, in words that say which side refused what. */
export function describeConnectionError(url: string, servername: string, e: unknown): MqttError {
  if (e instanceof MqttError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = typeof err?.code === "string" ? err.code : undefined;
  const message = err?.message ?? String(e);
  if (code && SERVER_TLS_CODES.has(code))
    return new MqttError(
      `TLS verification of the gateway ${url} failed (${code}): ${message}; ` +
        `its certificate must chain to the fleet root in ca.pem and name ${servername}`,
      code,
    );
  // The gateway's alert: it refused our certificate during (or right after) the handshake.
  const alert = /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(.+)$/.exec(code ?? "");
  if (alert)
    return new MqttError(
      `the gateway ${url} refused this client's certificate in the TLS handshake (alert: ${alert[1]!.toLowerCase().replace(/_/g, " ")})`,
      code,
    );
  if (code === "ECONNRESET" || code === "EPIPE")
    return new MqttError(`the gateway ${url} closed the connection (${code}): the certificate or the CONNECT was refused`, code);
  if (code === "ECONNREFUSED") return new MqttError(`cannot reach the gateway ${url}: connection refused`, code);
  return new MqttError(`MQTT connection to ${url} failed: ${message}`, code);
}

function connackCode(e: unknown): number | undefined {
  const c = (e as { code?: unknown })?.code;
  const message = (e as Error)?.message ?? "";
  return typeof c === "number" && c >= 1 && c <= 5 && message.startsWith("Connection refused") ? c : undefined;
}

/**
 * Connects to the gateway as the identity in `agentDir` (or `files`). Resolves once the gateway
 * accepted the CONNECT; rejects with MqttConnectRefused (CONNACK code in words) or MqttError.
 */
export async function connectTelemetry(options: TelemetryOptions): Promise<TelemetryClient> {
  if ((options.agentDir === undefined) === (options.files === undefined))
    throw new MqttError("connectTelemetry needs exactly one of agentDir or files");
  const target = parseGatewayUrl(options.url);
  const loaded = options.agentDir !== undefined ? loadAgentDir(options.agentDir) : loadFiles(options.files!);
  const clientId = options.clientId ?? loaded.identity.name;
  const servername = options.servername ?? target.host;
  const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;

  const mqttOptions: IClientOptions & { minVersion: "TLSv1.2"; checkServerIdentity?: undefined } = {
    protocol: "mqtts",
    host: target.host,
    port: target.port,
    protocolVersion: 4,
    clientId,
    clean: true,
    keepalive: options.keepaliveSeconds ?? DEFAULT_KEEPALIVE_S,
    reconnectPeriod: 0,
    connectTimeout: timeoutMs,
    // TLS: the fleet root only, the server name checked by Node's default checkServerIdentity.
    ca: [loaded.rootPem],
    cert: loaded.certChainPem,
    key: loaded.keyPem,
    rejectUnauthorized: true,
    minVersion: "TLSv1.2",
    ...(options.servername !== undefined ? { servername: options.servername } : {}),
    ...(options.will
      ? {
          will: {
            topic: options.will.topic,
            payload: Buffer.from(options.will.payload),
            qos: options.will.qos ?? 0,
            retain: options.will.retain ?? false,
          },
        }
      : {}),
  };
  const client: MqttClient = mqtt.connect(mqttOptions);

  let lastError: MqttError | undefined;
  const noteError = (e: unknown) => {
    const code = connackCode(e);
    lastError = code !== undefined ? new MqttConnectRefused(target.href, code) : describeConnectionError(target.href, servername, e);
  };
  client.on("error", noteError);

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => finish(new MqttError(`no CONNACK from the gateway ${target.href} within ${timeoutMs} ms`)), timeoutMs);
    const finish = (error?: MqttError) => {
      clearTimeout(timer);
      client.off("connect", onConnect);
      client.off("close", onClose);
      if (error) {
        client.end(true);
        reject(error);
      } else resolve();
    };
    const onConnect = () => finish();
    const onClose = () =>
      finish(
        lastError ??
          new MqttError(
            `the gateway ${target.href} closed the connection before CONNACK ` +
              `(the certificate may be unknown, revoked, held or expired, or the client id "${clientId}" refused)`,
          ),
      );
    client.on("connect", onConnect);
    client.on("close", onClose);
  });
  lastError = undefined;

  let closedByUs = false;
  let resolveClosed!: (c: TelemetryClosed) => void;
  const closed = new Promise<TelemetryClosed>((resolve) => (resolveClosed = resolve));
  client.once("close", () => resolveClosed({ byUs: closedByUs, error: closedByUs ? undefined : lastError, at: new Date() }));

  const handlers = new Set<(m: TelemetryMessage) => void>();
  client.on("message", (topic, payload, packet) => {
    const message: TelemetryMessage = { topic, payload, qos: packet.qos, retain: packet.retain };
    for (const h of [...handlers]) h(message);
  });

  const notConnected = (what: string) =>
    new MqttError(`cannot ${what}: the session with ${target.href} is closed${lastError ? ` (${lastError.message})` : ""}`);

  return {
    identity: loaded.identity,
    clientId,
    url: target.href,
    get connected() {
      return client.connected;
    },
    async publish(topic, payload, qos = 0, publishOptions = {}) {
      // MQTT.js would queue a message while disconnected, forever (no reconnect): refuse instead.
      if (!client.connected) throw notConnected(`publish to "${topic}"`);
      try {
        await client.publishAsync(topic, typeof payload === "string" ? Buffer.from(payload) : payload, {
          qos,
          retain: publishOptions.retain ?? false,
        });
      } catch (e) {
        throw client.connected ? describeConnectionError(target.href, servername, e) : notConnected(`complete the publish to "${topic}"`);
      }
    },
    async subscribe(filter, qos = 0) {
      if (!client.connected) throw notConnected(`subscribe to "${filter}"`);
      try {
        const granted = await client.subscribeAsync(filter, { qos });
        const g = granted[0]?.qos;
        if (g === 0 || g === 1) return g;
        if (g === 2) return 1;
        throw new MqttSubscribeDenied(filter);
      } catch (e) {
        if (e instanceof MqttError) throw e;
        // MQTT.js rejects a SUBACK failure (0x80) with the SUBACK packet attached.
        const granted = (e as { packet?: { granted?: unknown } }).packet?.granted;
        if (Array.isArray(granted) && granted.some((g) => typeof g === "number" && (g & 0x80) !== 0)) throw new MqttSubscribeDenied(filter);
        throw client.connected ? describeConnectionError(target.href, servername, e) : notConnected(`subscribe to "${filter}"`);
      }
    },
    onMessage(handler) {
      handlers.add(handler);
      return () => handlers.delete(handler);
    },
    nextMessage(match = () => true, waitMs = 5_000) {
      return new Promise<TelemetryMessage>((resolve, reject) => {
        const done = () => {
          clearTimeout(timer);
          handlers.delete(onMessage);
        };
        const timer = setTimeout(() => {
          done();
          reject(new MqttError(`no matching message within ${waitMs} ms`));
        }, waitMs);
        const onMessage = (m: TelemetryMessage) => {
          if (!match(m)) return;
          done();
          resolve(m);
        };
        handlers.add(onMessage);
        void closed.then(() => {
          if (!handlers.has(onMessage)) return;
          done();
          reject(notConnected("wait for a message"));
        });
      });
    },
    closed,
    async close() {
      closedByUs = true;
      if (client.connected) {
        // DISCONNECT (so no will is published), bounded: a dead gateway must not hold us.
        await Promise.race([client.endAsync(false), new Promise((r) => setTimeout(r, 2_000).unref())]);
      }
      client.end(true);
      await Promise.race([closed, new Promise((r) => setTimeout(r, 2_000).unref())]);
    },
  };
}
