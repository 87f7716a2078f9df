// First enrollment: bootstrap trust from the pinned fingerprint, make the key on the device,
// get it certified (token, factory certificate or operator approval), check the answer, and
// only then create the agent directory and write everything in one commit.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { existsSync, readFileSync, readdirSync, rmdirSync, unlinkSync } from "node:fs";
import { ensurePrivateDir, writeFileAtomic } from "../keys/files.js";
import { publicSpki } from "../keys/keys.js";
import { join, resolve } from "node:path";
import { parseCertificate } from "../x509/certificate.js";
import { DEVICE_ID_PATTERN } from "../x509/profiles.js";
import { PemError, parsePemBlocks } from "../x509/pem.js";
import { systemClock, type Clock } from "./clock.js";
import { RegistrationClient, bootstrapRoot, parseServerUrl, type ClientIdentity, type PinnedRoot } from "./client.js";
import { AgentError, EnrollmentRefused, ServerError, TransportError } from "./errors.js";
import { fingerprintOf, parseFingerprint } from "./fingerprint.js";
import { silentLogger, type Logger } from "./log.js";
import { csrForKey, newKeyAndCsr, type AgentKeyType, type KeyAndCsr } from "./request.js";
import { AGENT_FILES, commitState, isEnrolled, lockAgentDir, type AgentConfig } from "./state.js";
import { deviceIdentityOf, sameKey, validateIssued, type IssuedBundle } from "./verify.js";

export type EnrollMode = { kind: "token"; token: string } | { kind: "factory"; dir: string } | { kind: "approval" };

export interface EnrollOptions {
  server: string;
  /** "sha256:HEX" (any case, colons allowed). */
  rootFingerprint: string;
  deviceId: string;
  mode: EnrollMode;
  /** The agent directory; created (0700) only once a valid certificate is in hand. */
  dir: string;
  keyType?: AgentKeyType;
  /** How long to keep polling while an approval is pending (default 10 minutes). */
  waitMs?: number;
  /** Replace an existing enrollment in dir. */
  force?: boolean;
  timeoutMs?: number;
  log?: Logger;
  clock?: Clock;
  signal?: AbortSignal;
}

export interface EnrollResult {
  dir: string;
  deviceId: string;
  spiffeId: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  server: string;
  rootFingerprint: string;
}

export const ENROLL_PATH = "/api/v1/enroll";
const DEFAULT_WAIT_MS = 10 * 60_000;
const MIN_POLL_MS = 1_000;
const MAX_POLL_MS = 60_000;

export function assertDeviceId(id: string): void {
  if (!DEVICE_ID_PATTERN.test(id))
    throw new AgentError(`invalid device id "${id}": use 1-63 characters a-z 0-9 . _ - starting with a letter or digit`);
}

export interface FactoryBundle {
  identity: ClientIdentity;
  certificate: X509Certificate;
  /** ca.pem of the bundle, when present. */
  rootDer?: Buffer;
}

function readBundleFile(dir: string, name: string, required: boolean): string | undefined {
  const path = join(dir, name);
  if (!existsSync(path)) {
    if (required)
      throw new AgentError(`factory bundle ${dir} has no ${name} (expected key.pem, cert.pem, chain.pem, ca.pem from \`ca issue-batch\`)`);
    return undefined;
  }
  try {
    return readFileSync(path, "utf8");
  } catch {
    throw new AgentError(`cannot read ${path}`);
  }
}

function pemCertificates(text: string, path: string): X509Certificate[] {
  try {
    return parsePemBlocks(text)
      .filter((b) => b.label === "CERTIFICATE")
      .map((b) => new X509Certificate(b.der));
  } catch (e) {
    throw new AgentError(`${path}: ${e instanceof PemError ? e.message : "a certificate cannot be parsed"}`);
  }
}

/** The issue-batch bundle as a TLS client identity, checked to be this device's. */
export function readFactoryBundle(dirPath: string, deviceId: string): FactoryBundle {
  const dir = resolve(dirPath);
  const keyPem = readBundleFile(dir, "key.pem", true)!;
  const certPem = readBundleFile(dir, "cert.pem", true)!;
  const chainPem = readBundleFile(dir, "chain.pem", true)!;
  const caPem = readBundleFile(dir, "ca.pem", false);
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    throw new AgentError(`${join(dir, "key.pem")} is not a readable unencrypted private key`);
  }
  const certificate = pemCertificates(certPem, join(dir, "cert.pem"))[0];
  if (!certificate) throw new AgentError(`${join(dir, "cert.pem")} holds no certificate`);
  if (!sameKey(certificate.publicKey, key)) throw new AgentError(`factory bundle ${dir}: key.pem does not match cert.pem`);
  const identity = deviceIdentityOf(parseCertificate(Buffer.from(certificate.raw)));
  if (identity?.deviceId !== deviceId)
    throw new AgentError(`factory certificate in ${dir} is for ${identity?.spiffeId ?? "no device identity"}, not device ${deviceId}`);
  pemCertificates(chainPem, join(dir, "chain.pem"));
  const roots = caPem === undefined ? [] : pemCertificates(caPem, join(dir, "ca.pem"));
  const certChainPem = certPem.replace(/\s*$/, "\n") + chainPem;
  return { identity: { certChainPem, keyPem }, certificate, rootDer: roots[0] ? Buffer.from(roots[0].raw) : undefined };
}

/** Parses and checks everything that needs no network; throws before anything is sent. */
function preflight(options: EnrollOptions): { server: URL; fingerprint: string; dir: string; factory?: FactoryBundle } {
  assertDeviceId(options.deviceId);
  const server = parseServerUrl(options.server);
  const fingerprint = parseFingerprint(options.rootFingerprint);
  const dir = resolve(options.dir);
  if (!options.force && isEnrolled(dir))
    throw new AgentError(`${dir} already holds an enrollment (${AGENT_FILES.config}); use another --dir, or --force to replace it`);
  if (options.mode.kind === "token" && options.mode.token.length === 0) throw new AgentError("the enrollment token is empty");
  const factory = options.mode.kind === "factory" ? readFactoryBundle(options.mode.dir, options.deviceId) : undefined;
  return { server, fingerprint, dir, factory };
}

/**
 * Approval: the key of a request that went pending. The operator approves that request, and the
 * server issues only for its key, so an agent restarted before the approval (reboot, --wait ran
 * out) asks again with the same key instead of a new one. Removed once enrolled or denied.
 */
export function pendingKeyFile(deviceId: string): string {
  return `pending-${deviceId}.key.pem`;
}

function pendingKeyAndCsr(path: string, deviceId: string): KeyAndCsr | undefined {
  if (!existsSync(path)) return undefined;
  let key;
  try {
    key = createPrivateKey(readFileSync(path, "utf8"));
  } catch {
    throw new AgentError(`${path} (the key of a pending approval request) cannot be read; delete it to start a new request`);
  }
  return csrForKey(deviceId, key);
}

/** POSTs the enrollment and polls while it is pending; returns the 2xx body. */
async function requestCertificate(
  client: RegistrationClient,
  payload: Record<string, string>,
  options: EnrollOptions,
  clock: Clock,
  log: Logger,
  onPending: (requestId: string | undefined) => void,
  keyFingerprint: string,
): Promise<Record<string, unknown>> {
  const waitMs = options.waitMs ?? DEFAULT_WAIT_MS;
  const deadline = clock.now() + waitMs;
  let pendingSeen = false;
  for (;;) {
    let answer;
    try {
      answer = await client.postJson(ENROLL_PATH, payload);
    } catch (e) {
      // Once a request is pending, ride out blips until the deadline; before that, fail fast.
      const retryable = e instanceof TransportError || (e instanceof ServerError && e.transient);
      if (!pendingSeen || !retryable) {
        if (e instanceof ServerError && e.status === 403) throw new EnrollmentRefused(e.message, e.type);
        throw e;
      }
      const delay = Math.min(Math.max((e as ServerError).retryAfterMs ?? 5_000, MIN_POLL_MS), MAX_POLL_MS);
      if (clock.now() + delay > deadline) throw e;
      log.warn("enrollment poll failed; retrying", { error: (e as Error).message, retry_in_ms: delay });
      await clock.sleep(delay, options.signal);
      if (options.signal?.aborted) throw new AgentError("enrollment interrupted");
      continue;
    }
    if (answer.status !== 202) return answer.body;
    const requestId = typeof answer.body.request_id === "string" ? answer.body.request_id : undefined;
    if (!pendingSeen) onPending(requestId);
    pendingSeen = true;
    const bodyRetry = typeof answer.body.retry_after === "number" ? answer.body.retry_after * 1000 : undefined;
    const delay = Math.min(Math.max(answer.retryAfterMs ?? bodyRetry ?? 5_000, MIN_POLL_MS), MAX_POLL_MS);
    if (clock.now() + delay > deadline)
      throw new AgentError(
        `enrollment of ${options.deviceId} is still pending approval after ${Math.round(waitMs / 1000)} s` +
          `${requestId ? ` (request ${requestId})` : ""}; ` +
          `approve it with \`fleetpki device approve ${options.deviceId} --fingerprint ${keyFingerprint}\` ` +
          `and run this command again (or pass a longer --wait)`,
      );
    log.info("enrollment pending approval", { device_id: options.deviceId, request_id: requestId, retry_in_ms: delay });
    await clock.sleep(delay, options.signal);
    if (options.signal?.aborted) throw new AgentError("enrollment interrupted");
  }
}

/**
 * Enrolls this device. Nothing is written, and the directory is not created, unless the
 * server returned a certificate that passed every check in verify.ts, or (approval) the pinned
 * server put the request on pending: then only the request's key is kept (pendingKeyFile).
 */
export async function enroll(options: EnrollOptions): Promise<EnrollResult> {
  const log = options.log ?? silentLogger;
  const clock = options.clock ?? systemClock;
  const { server, fingerprint, dir, factory } = preflight(options);

  log.info("fetching CA certificates", { server: server.origin });
  const root: PinnedRoot = await bootstrapRoot(server, fingerprint, options.timeoutMs, options.signal);
  log.info("pinned root found", { root_fingerprint: fingerprint, subject: root.certificate.subject.replace(/\n/g, ", ") });
  if (factory?.rootDer && fingerprintOf(factory.rootDer) !== fingerprint)
    throw new AgentError(`the factory bundle's ca.pem (${fingerprintOf(factory.rootDer)}) is not the pinned root ${fingerprint}`);

  // A key kept by an earlier approval run; another way of enrolling makes it useless (dropped below).
  const pendingPath = join(dir, pendingKeyFile(options.deviceId));
  const resumed = options.mode.kind === "approval" ? pendingKeyAndCsr(pendingPath, options.deviceId) : undefined;
  if (resumed) log.info("asking again with the key of the pending request", { device_id: options.deviceId, key_file: pendingPath });
  const fresh = resumed ?? newKeyAndCsr(options.deviceId, options.keyType ?? "p256");
  const dirExisted = existsSync(dir);
  const keyFingerprint = fingerprintOf(publicSpki(fresh.key));
  const onPending = (requestId: string | undefined) => {
    // At warn, so it shows at the default log level: the operator approves this key only after
    // comparing its fingerprint with the one `fleetpki device requests` lists, through another
    // channel (anyone can ask for this device id; only this robot holds this key).
    log.warn("waiting for an operator to approve this key; give them its fingerprint to compare", {
      device_id: options.deviceId,
      request_id: requestId,
      key_fingerprint: keyFingerprint,
      approve_with: `fleetpki device approve ${options.deviceId} --fingerprint ${keyFingerprint}`,
    });
    keepPendingKey();
  };
  const keepPendingKey = () => {
    if (options.mode.kind !== "approval" || resumed || existsSync(pendingPath)) return;
    ensurePrivateDir(dir);
    writeFileAtomic(pendingPath, fresh.keyPem, 0o600);
  };
  const dropPendingKey = () => {
    if (!existsSync(pendingPath)) return;
    try {
      unlinkSync(pendingPath);
      if (!dirExisted && readdirSync(dir).length === 0) rmdirSync(dir);
    } catch (e) {
      log.warn("could not remove the kept key of the pending request", { key_file: pendingPath, error: (e as Error).message });
    }
  };
  const payload: Record<string, string> =
    options.mode.kind === "token"
      ? { device_id: options.deviceId, token: options.mode.token, csr: fresh.csrPem }
      : { device_id: options.deviceId, csr: fresh.csrPem };

  const client = new RegistrationClient(server, {
    rootPem: root.pem,
    identity: factory?.identity,
    timeoutMs: options.timeoutMs,
    signal: options.signal,
  });
  let issued: IssuedBundle;
  try {
    log.info("requesting certificate", { device_id: options.deviceId, mode: options.mode.kind });
    let body;
    try {
      body = await requestCertificate(client, payload, options, clock, log, onPending, keyFingerprint);
    } catch (e) {
      // A decision was made (denied, or approved for another key): the kept key is of no more use.
      // Other refusals (a held device, approval switched off) may pass; the key is kept for them.
      if (e instanceof EnrollmentRefused && e.decided) dropPendingKey();
      // Too many requests wait (junk from this NAT, say): the operator can still compare this
      // key once it gets through, so show its fingerprint and ask with the same key next run.
      if (options.mode.kind === "approval" && e instanceof ServerError && e.status === 429) {
        keepPendingKey();
        log.warn("the server refused to queue this key's request for now; give the operator its fingerprint to compare", {
          device_id: options.deviceId,
          key_fingerprint: keyFingerprint,
          key_file: pendingPath,
        });
        throw new ServerError(
          `${e.message} (this robot's key fingerprint: ${keyFingerprint}; kept for the next run)`,
          e.status,
          e.type,
          e.retryAfterMs,
        );
      }
      throw e;
    }
    issued = validateIssued(body, { key: fresh.key, deviceId: options.deviceId, root });
  } finally {
    client.close();
  }

  const config: AgentConfig = { server: server.href.replace(/\/$/, ""), root_fingerprint: fingerprint, device_id: options.deviceId };
  const release = lockAgentDir(dir);
  try {
    if (!options.force && existsSync(join(dir, AGENT_FILES.config)))
      throw new AgentError(`${dir} was enrolled meanwhile; not overwriting it`);
    commitState(dir, {
      key: fresh.keyPem,
      cert: issued.certPem,
      chain: issued.chainPem,
      ca: root.pem,
      config: JSON.stringify(config, null, 2) + "\n",
    });
    dropPendingKey();
  } finally {
    release();
  }
  log.info("enrolled", { device_id: options.deviceId, serial: issued.serial, not_after: issued.notAfter, identity: issued.spiffeId });
  return {
    dir,
    deviceId: options.deviceId,
    spiffeId: issued.spiffeId,
    serial: issued.serial,
    notBefore: issued.notBefore,
    notAfter: issued.notAfter,
    server: config.server,
    rootFingerprint: fingerprint,
  };
}
