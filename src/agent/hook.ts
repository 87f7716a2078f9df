// The --on-renew hook: `/bin/sh -c CMD` after each successful renewal, told where the files are
// through FLEETPKI_CERT, FLEETPKI_KEY, FLEETPKI_CHAIN and FLEETPKI_CA. A failing hook is logged,
// never fatal: the new certificate is already in place.
import { spawn } from "node:child_process";
import { join } from "node:path";
import type { Logger } from "./log.js";
import { redactText } from "./log.js";
import { AGENT_FILES } from "./state.js";

export const HOOK_TIMEOUT_MS = 5 * 60_000;
const OUTPUT_TAIL = 2_000;

export interface HookOutcome {
  ok: boolean;
  code: number | null;
  signal: string | null;
  durationMs: number;
}

export function hookEnv(dir: string, deviceId: string): Record<string, string> {
  return {
    FLEETPKI_CERT: join(dir, AGENT_FILES.cert),
    FLEETPKI_KEY: join(dir, AGENT_FILES.key),
    FLEETPKI_CHAIN: join(dir, AGENT_FILES.chain),
    FLEETPKI_CA: join(dir, AGENT_FILES.ca),
    FLEETPKI_DEVICE_ID: deviceId,
  };
}

export function runHook(
  command: string,
  dir: string,
  deviceId: string,
  log: Logger,
  timeoutMs = HOOK_TIMEOUT_MS,
  /** Told on top of hookEnv (e.g. FLEETPKI_ROS2_ENCLAVE after an enclave renewal). */
  extraEnv: Record<string, string> = {},
): Promise<HookOutcome> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn("/bin/sh", ["-c", command], {
      env: { ...process.env, ...hookEnv(dir, deviceId), ...extraEnv },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let tail = "";
    const keep = (chunk: Buffer) => {
      tail = (tail + chunk.toString("utf8")).slice(-OUTPUT_TAIL);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const timer = setTimeout(() => {
      log.warn("renew hook timed out; killing it", { timeout_ms: timeoutMs });
      child.kill("SIGKILL");
    }, timeoutMs);
    let finished = false;
    const finish = (code: number | null, signal: string | null, error?: Error) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      const outcome = { ok: code === 0 && !error, code, signal, durationMs: Date.now() - started };
      if (outcome.ok) log.info("renew hook succeeded", { duration_ms: outcome.durationMs });
      else
        log.error("renew hook failed", {
          exit_code: code,
          exit_signal: signal ?? undefined,
          error: error?.message,
          output: redactText(tail.trim()) || undefined,
          duration_ms: outcome.durationMs,
        });
      resolve(outcome);
    };
    child.on("error", (e) => finish(null, null, e));
    child.on("close", (code, signal) => finish(code, signal));
  });
}
