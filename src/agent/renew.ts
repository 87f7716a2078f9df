// Renewal with a new key per certificate: over mTLS with the current certificate while it is
// valid, or, once it has expired, with a signed challenge (docs/enrollment.md). The new
// key/cert pair replaces the old one in one commit (state.ts). The server renews a certificate
// once and re-delivers that renewal only to the same key, so the new key is kept on disk before
// the request is sent and reused until its certificate is committed: a lost answer (connection
// cut after the server's commit, or a crash anywhere) is fetched again by the next attempt.
import { createPrivateKey, type KeyObject } from "node:crypto";
import { describeKey } from "../x509/algorithms.js";
import { systemClock, type Clock } from "./clock.js";
import { RegistrationClient, parseServerUrl } from "./client.js";
import { AgentError, RE_ENROLL_PROBLEM_SUFFIX, ReEnrollRequired, ServerError } from "./errors.js";
import { silentLogger, type Logger } from "./log.js";
import { csrForKey, newKeyAndCsr, signExpiredRenewal, type KeyAndCsr } from "./request.js";
import { commitState, dropRenewalKeys, keepRenewalKey, readRenewalKey, renewalKeyFile } from "./state.js";
import type { AgentState, CommitOptions } from "./state.js";
import { sameKey, validateIssued } from "./verify.js";

export const RENEW_PATH = "/api/v1/renew";
export const CHALLENGE_PATH = "/api/v1/renew/challenge";
export const RENEW_EXPIRED_PATH = "/api/v1/renew/expired";

export interface RenewOptions {
  log?: Logger;
  clock?: Clock;
  timeoutMs?: number;
  /** Aborts requests in flight (nothing is committed then). */
  signal?: AbortSignal;
  /** Passed to commitState (tests). */
  commit?: CommitOptions;
  /**
   * Test hook, called after "key kept" (the renewal key is on disk, nothing sent yet) and
   * "answered" (the new certificate checked, not yet committed); throwing simulates a crash there.
   */
  onStep?: (step: "key kept" | "answered") => void;
}

export interface RenewResult {
  deviceId: string;
  spiffeId: string;
  serial: string;
  previousSerial: string;
  notBefore: Date;
  notAfter: Date;
  /** True when the expired-certificate path was used. */
  afterExpiry: boolean;
}

/** Turns a 403 `.../re-enroll-required` problem into ReEnrollRequired. */
function reEnrollCheck(e: unknown): never {
  if (e instanceof ServerError && e.status === 403 && e.type?.endsWith(RE_ENROLL_PROBLEM_SUFFIX))
    throw new ReEnrollRequired(
      `${e.message.replace(/^POST \S+: HTTP 403: /, "")}; run \`fleetpki agent enroll ... --force\` for this directory`,
    );
  throw e;
}

function stringField(body: Record<string, unknown>, field: string, path: string): string {
  const v = body[field];
  if (typeof v !== "string" || v.length === 0) throw new AgentError(`POST ${path}: answer has no "${field}"`);
  return v;
}

/** "rsa" for any RSA size (a renewal makes RSA-3072 for every RSA key), else describeKey(). */
function keyFamily(key: KeyObject): string {
  const type = describeKey(key);
  return type.startsWith("rsa") ? "rsa" : type;
}

/** The kept key, when it can renew `state`'s certificate; else why not. */
function checkKeptKey(pem: string, state: AgentState): { reason: string } | { key: KeyObject } {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    return { reason: "not a readable unencrypted private key" };
  }
  if (keyFamily(key) !== keyFamily(state.key))
    return { reason: `a ${describeKey(key)} key, the certificate has a ${describeKey(state.key)} key` };
  if (sameKey(key, state.key)) return { reason: "the current certificate's own key" };
  return { key };
}

/**
 * Removes keys kept for renewing other certificates than the current one: their renewal was
 * committed (the current key is that key) or the directory was enrolled again.
 */
export function dropStaleRenewalKeys(state: AgentState, log: Logger): void {
  for (const name of dropRenewalKeys(state.dir, { except: state.serial }))
    log.info("removed the key of a finished renewal", { key_file: name });
}

/**
 * The key and CSR for renewing `state`'s certificate: the key an earlier attempt kept for this
 * certificate, or a new one of the same type, kept (durably) before anything is sent. Keys kept
 * for other certificates are stale and removed.
 */
function renewalKey(state: AgentState, log: Logger): KeyAndCsr {
  dropStaleRenewalKeys(state, log);
  const keptPem = readRenewalKey(state.dir, state.serial);
  if (keptPem !== undefined) {
    const kept = checkKeptKey(keptPem, state);
    if ("key" in kept) {
      log.info("renewing again with the key kept for this renewal", { serial: state.serial, key_file: renewalKeyFile(state.serial) });
      return csrForKey(state.deviceId, kept.key);
    }
    // This agent never keeps such a key for this certificate (a damaged or hand-made file): replace it.
    const fields = { serial: state.serial, key_file: renewalKeyFile(state.serial), reason: kept.reason };
    log.warn("replacing an unusable kept renewal key", fields);
  }
  const fresh = newKeyAndCsr(state.deviceId, state.key);
  keepRenewalKey(state.dir, state.serial, fresh.keyPem);
  return fresh;
}

function dropKeptKeys(state: AgentState, log: Logger, why: string): void {
  try {
    dropRenewalKeys(state.dir);
  } catch (e) {
    // Harmless: a stale kept key is recognised by its name and removed by the next renewal.
    log.warn("could not remove the kept renewal key", { key_file: renewalKeyFile(state.serial), why, error: (e as Error).message });
  }
}

/** Renews the certificate in `state` and commits the new pair to state.dir. */
export async function renew(state: AgentState, options: RenewOptions = {}): Promise<RenewResult> {
  const log = options.log ?? silentLogger;
  const clock = options.clock ?? systemClock;
  const server = parseServerUrl(state.config.server);
  const afterExpiry = clock.now() >= state.notAfter.getTime();
  const fresh = renewalKey(state, log);
  options.onStep?.("key kept");

  let body: Record<string, unknown>;
  try {
    body = await requestRenewal(state, fresh, { ...options, log, server, afterExpiry });
  } catch (e) {
    // Final: this certificate cannot renew, for this key or any other; a new enrollment makes a new key.
    if (e instanceof ReEnrollRequired) dropKeptKeys(state, log, "renewal refused for good");
    throw e;
  }

  const issued = validateIssued(body, { key: fresh.key, deviceId: state.deviceId, root: state.root });
  options.onStep?.("answered");
  commitState(state.dir, { key: fresh.keyPem, cert: issued.certPem, chain: issued.chainPem }, options.commit);
  dropKeptKeys(state, log, "renewal committed");
  return {
    deviceId: state.deviceId,
    spiffeId: issued.spiffeId,
    serial: issued.serial,
    previousSerial: state.serial,
    notBefore: issued.notBefore,
    notAfter: issued.notAfter,
    afterExpiry,
  };
}

/** Sends the renewal request for `fresh` (mTLS, or the challenge/proof exchange after expiry); returns the 2xx body. */
async function requestRenewal(
  state: AgentState,
  fresh: KeyAndCsr,
  options: RenewOptions & { log: Logger; server: URL; afterExpiry: boolean },
): Promise<Record<string, unknown>> {
  const { log, server } = options;
  if (!options.afterExpiry) {
    const client = new RegistrationClient(server, {
      rootPem: state.root.pem,
      identity: { certChainPem: state.certPem.replace(/\s*$/, "\n") + state.chainPem, keyPem: state.keyPem },
      timeoutMs: options.timeoutMs,
      signal: options.signal,
    });
    try {
      return (await client.postJson(RENEW_PATH, { csr: fresh.csrPem }).catch(reEnrollCheck)).body;
    } finally {
      client.close();
    }
  }
  // The expired certificate is not presented in TLS; possession of its key is proven by
  // signing the challenge instead.
  log.info("certificate expired; renewing with a signed challenge", { serial: state.serial, not_after: state.notAfter });
  const client = new RegistrationClient(server, { rootPem: state.root.pem, timeoutMs: options.timeoutMs, signal: options.signal });
  try {
    const challenge = await client.postJson(CHALLENGE_PATH, { device_id: state.deviceId }).catch(reEnrollCheck);
    const nonce = stringField(challenge.body, "nonce", CHALLENGE_PATH);
    const signature = signExpiredRenewal(state.key, state.deviceId, nonce, fresh.csrDer);
    const payload = { certificate: state.certPem, csr: fresh.csrPem, nonce, signature };
    return (await client.postJson(RENEW_EXPIRED_PATH, payload).catch(reEnrollCheck)).body;
  } finally {
    client.close();
  }
}
