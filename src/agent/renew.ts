// Renewal with a fresh key each time: over mTLS with the current certificate while it is
// valid, or, once it has expired, with a signed challenge (docs/enrollment.md). The new
// key/cert pair replaces the old one in one commit (state.ts).
import { systemClock, type Clock } from "./clock.js";
import { RegistrationClient, parseServerUrl } from "./client.js";
import { AgentError, RE_ENROLL_PROBLEM_SUFFIX, ReEnrollRequired, ServerError } from "./errors.js";
import { silentLogger, type Logger } from "./log.js";
import { newKeyAndCsr, signExpiredRenewal } from "./request.js";
import { commitState, type AgentState, type CommitOptions } from "./state.js";
import { validateIssued } from "./verify.js";

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
    throw new ReEnrollRequired(`${e.message.replace(/^POST \S+: HTTP 403: /, "")}; run \`fleetpki agent enroll ... --force\` for this directory`);
  throw e;
}

function stringField(body: Record<string, unknown>, field: string, path: string): string {
  const v = body[field];
  if (typeof v !== "string" || v.length === 0) throw new AgentError(`POST ${path}: answer has no "${field}"`);
  return v;
}

/** Renews the certificate in `state` and commits the new pair to state.dir. */
export async function renew(state: AgentState, options: RenewOptions = {}): Promise<RenewResult> {
  const log = options.log ?? silentLogger;
  const clock = options.clock ?? systemClock;
  const server = parseServerUrl(state.config.server);
  const afterExpiry = clock.now() >= state.notAfter.getTime();
  const fresh = newKeyAndCsr(state.deviceId, state.key);

  let body: Record<string, unknown>;
  if (!afterExpiry) {
    const client = new RegistrationClient(server, {
      rootPem: state.root.pem,
      identity: { certChainPem: state.certPem.replace(/\s*$/, "\n") + state.chainPem, keyPem: state.keyPem },
      timeoutMs: options.timeoutMs,
      signal: options.signal,
    });
    try {
      body = (await client.postJson(RENEW_PATH, { csr: fresh.csrPem }).catch(reEnrollCheck)).body;
    } finally {
      client.close();
    }
  } else {
    // The expired certificate is not presented in TLS; possession of its key is proven by
    // signing the challenge instead.
    log.info("certificate expired; renewing with a signed challenge", { serial: state.serial, not_after: state.notAfter });
    const client = new RegistrationClient(server, { rootPem: state.root.pem, timeoutMs: options.timeoutMs, signal: options.signal });
    try {
      const challenge = await client.postJson(CHALLENGE_PATH, { device_id: state.deviceId }).catch(reEnrollCheck);
      const nonce = stringField(challenge.body, "nonce", CHALLENGE_PATH);
      const signature = signExpiredRenewal(state.key, state.deviceId, nonce, fresh.csrDer);
      body = (await client.postJson(RENEW_EXPIRED_PATH, { certificate: state.certPem, csr: fresh.csrPem, nonce, signature }).catch(reEnrollCheck)).body;
    } finally {
      client.close();
    }
  }

  const issued = validateIssued(body, { key: fresh.key, deviceId: state.deviceId, root: state.root });
  commitState(state.dir, { key: fresh.keyPem, cert: issued.certPem, chain: issued.chainPem }, options.commit);
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
