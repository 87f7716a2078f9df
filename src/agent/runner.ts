// The renewal loop of `fleetpki agent run`: renew at 2/3 of the lifetime (with jitter), right
// away if that point has passed (also after a restart: the schedule is derived from cert.pem
// alone), back off exponentially on failure, stop when the signal aborts. Renewal after expiry
// uses the signed-challenge path; a 403 re-enroll-required ends the loop with ReEnrollRequired.
import { systemClock, type Clock } from "./clock.js";
import { AgentError, ReEnrollRequired, ServerError, TransportError } from "./errors.js";
import { runHook } from "./hook.js";
import { silentLogger, type Logger } from "./log.js";
import { dropStaleRenewalKeys, renew, type RenewOptions, type RenewResult } from "./renew.js";
import { Ros2Keeper, openKeystore, type EnclaveRenewal } from "./ros2.js";
import { backoffDelay, renewalTime, type BackoffOptions } from "./schedule.js";
import { isEnrolled, loadState, lockAgentDir, recoverState, type AgentState } from "./state.js";

export interface RunOptions {
  dir: string;
  /** Abort to stop; runAgent then resolves. */
  signal?: AbortSignal;
  /** Shell command run after each renewal (see hook.ts). */
  onRenew?: string;
  log?: Logger;
  clock?: Clock;
  /** Uniform in [0, 1): jitter of the schedule and the backoff. */
  random?: () => number;
  backoff?: BackoffOptions;
  /** Longest single sleep before the wall clock is read again (default 10 min; copes with suspend and clock steps). */
  maxSleepMs?: number;
  /** Per-request timeout. */
  timeoutMs?: number;
  hookTimeoutMs?: number;
  /** Called after each successful renewal and hook. */
  onRenewed?: (result: RenewResult) => void | Promise<void>;
  /** Replaces renew() (tests). */
  renewFn?: (state: AgentState, options: RenewOptions) => Promise<RenewResult>;
  /** An SROS2 keystore whose enclaves (those of this device) are kept renewed, with their CRLs (ros2.ts). */
  ros2Keystore?: string;
  /** Where the ros2-identity CRL is fetched; default next to the device certificate's CRL. */
  ros2CrlUrl?: URL;
  ros2CrlIntervalMs?: number;
  /** Called after each enclave renewal and hook (tests). */
  onEnclaveRenewed?: (renewal: EnclaveRenewal) => void | Promise<void>;
}

const DEFAULT_MAX_SLEEP_MS = 10 * 60_000;

function describe(e: unknown): Record<string, unknown> {
  if (e instanceof ServerError)
    return { error: e.message, status: e.status, problem_type: e.type, kind: e.transient ? "server-unavailable" : "refused" };
  if (e instanceof TransportError) return { error: e.message, code: e.code, kind: "network" };
  if (e instanceof AgentError) return { error: e.message, kind: "agent" };
  return { error: e instanceof Error ? e.message : String(e), kind: "internal" };
}

/**
 * Runs until options.signal aborts (resolves) or renewal becomes impossible
 * (rejects with ReEnrollRequired). Holds the directory lock meanwhile.
 */
export async function runAgent(options: RunOptions): Promise<void> {
  const log = options.log ?? silentLogger;
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const signal = options.signal;
  const maxSleep = Math.max(1, options.maxSleepMs ?? DEFAULT_MAX_SLEEP_MS);
  const renewFn = options.renewFn ?? renew;
  if (!isEnrolled(options.dir)) loadState(options.dir); // throws the "not enrolled" error; never creates the dir

  const release = lockAgentDir(options.dir);
  // The enclave loop runs beside the device renewal; it stops with it (also when re-enrollment is required).
  const ros2Stop = new AbortController();
  const stopRos2 = () => ros2Stop.abort();
  signal?.addEventListener("abort", stopRos2, { once: true });
  let ros2: Promise<void> | undefined;
  // One writer at a time: an enclave renewal presents the device certificate that a device renewal replaces.
  let turn: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(fn: () => Promise<T>): Promise<T> => {
    const mine = turn.then(fn, fn);
    turn = mine.catch(() => {});
    return mine;
  };
  try {
    const recovery = recoverState(options.dir);
    if (recovery !== "clean") log.warn("finished an interrupted certificate update", { recovery });
    let state = loadState(options.dir);
    dropStaleRenewalKeys(state, log);
    log.info("agent started", {
      device_id: state.deviceId,
      identity: state.spiffeId,
      serial: state.serial,
      not_after: state.notAfter,
      server: state.config.server,
    });

    if (options.ros2Keystore !== undefined) {
      // A wrong directory or another fleet's keystore is a configuration error: say so now, not every cycle.
      openKeystore(options.ros2Keystore, state.root);
      const keeper = new Ros2Keeper({
        keystoreDir: options.ros2Keystore,
        crlUrl: options.ros2CrlUrl,
        crlIntervalMs: options.ros2CrlIntervalMs,
        log,
        clock,
        random,
        backoff: options.backoff,
        timeoutMs: options.timeoutMs,
        signal: ros2Stop.signal,
        loadState: () => loadState(options.dir),
        exclusive,
        onRenewed: async (r, enclaveDir) => {
          if (options.onRenew) {
            const extra = {
              FLEETPKI_ROS2_EVENT: "renew",
              FLEETPKI_ROS2_ENCLAVE: r.path,
              FLEETPKI_ROS2_ENCLAVE_DIR: enclaveDir,
              FLEETPKI_ROS2_KEYSTORE: options.ros2Keystore!,
            };
            await runHook(options.onRenew, state.dir, state.deviceId, log, options.hookTimeoutMs, extra);
          }
          await options.onEnclaveRenewed?.(r);
        },
        // DDS reads crl.pem only at node start: the hook may restart the nodes of these enclaves so a revocation bites now.
        onCrlWritten: async (w) => {
          if (options.onRenew) {
            const extra = {
              FLEETPKI_ROS2_EVENT: "crl",
              FLEETPKI_ROS2_ENCLAVES: w.enclaves.join(" "),
              FLEETPKI_ROS2_CRL: w.publicPath,
              FLEETPKI_ROS2_CRL_NUMBER: w.crl.crlNumber?.toString() ?? "",
              FLEETPKI_ROS2_KEYSTORE: options.ros2Keystore!,
            };
            await runHook(options.onRenew, state.dir, state.deviceId, log, options.hookTimeoutMs, extra);
          }
        },
      });
      ros2 = keeper.run(maxSleep);
    }

    const sleepUntil = async (at: number) => {
      for (let left = at - clock.now(); left > 0 && !signal?.aborted; left = at - clock.now())
        await clock.sleep(Math.min(left, maxSleep), signal);
    };

    while (!signal?.aborted) {
      const renewAt = renewalTime(state.notBefore.getTime(), state.notAfter.getTime(), random);
      const wait = renewAt - clock.now();
      log.info(wait > 0 ? "renewal scheduled" : "renewal due now", {
        serial: state.serial,
        not_after: state.notAfter,
        renew_at: new Date(renewAt),
        in_ms: Math.max(0, Math.round(wait)),
      });
      await sleepUntil(renewAt);

      for (let attempt = 0; !signal?.aborted; attempt++) {
        const lifetime = state.notAfter.getTime() - state.notBefore.getTime();
        try {
          state = loadState(options.dir);
          const afterExpiry = clock.now() >= state.notAfter.getTime();
          log.info("renewing", { serial: state.serial, attempt: attempt + 1, after_expiry: afterExpiry });
          const current = state;
          const result = await exclusive(() => renewFn(current, { log, clock, timeoutMs: options.timeoutMs, signal }));
          log.info("renewed", {
            serial: result.serial,
            previous_serial: result.previousSerial,
            not_before: result.notBefore,
            not_after: result.notAfter,
            after_expiry: result.afterExpiry,
            identity: result.spiffeId,
          });
          state = loadState(options.dir);
          if (options.onRenew) await runHook(options.onRenew, state.dir, state.deviceId, log, options.hookTimeoutMs);
          await options.onRenewed?.(result);
          break;
        } catch (e) {
          if (e instanceof ReEnrollRequired) {
            log.error("renewal impossible; the device must re-enroll", { error: e.message, serial: state.serial });
            throw e;
          }
          if (signal?.aborted) break;
          const retryAfter = e instanceof ServerError ? e.retryAfterMs : undefined;
          const delay = Math.round(backoffDelay(attempt, lifetime, random, retryAfter, options.backoff));
          const fields = { ...describe(e), serial: state.serial, attempt: attempt + 1, retry_in_ms: delay };
          // 5xx/429 and the network are expected now and then; a refusal needs a human.
          if (e instanceof TransportError || (e instanceof ServerError && e.transient)) log.warn("renewal failed; retrying", fields);
          else log.error("renewal refused; retrying", fields);
          await clock.sleep(delay, signal);
        }
      }
    }
    log.info("agent stopped", { serial: state.serial });
  } finally {
    ros2Stop.abort();
    signal?.removeEventListener("abort", stopRos2);
    await ros2;
    release();
  }
}
