// `fleetpki agent`: the device side. Runs on the robot; imports only src/agent (no server code).
// --dir is the AGENT directory here (key, certificate, agent.json), not the fleet directory.
import type { Command } from "commander";
import { enroll, type EnrollMode } from "../../agent/enroll.js";
import { AgentError } from "../../agent/errors.js";
import { createLogger, type LogLevel } from "../../agent/log.js";
import { AGENT_KEY_TYPES, parseKeyType } from "../../agent/request.js";
import { runAgent } from "../../agent/runner.js";
import { parseCrlUrl } from "../../agent/ros2.js";
import { parseDuration } from "../../agent/schedule.js";
import { agentStatus } from "../../agent/status.js";
import { printJson, say, selfCommand, shellWord } from "../output.js";

const LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

function logLevel(text: string): LogLevel {
  if ((LEVELS as readonly string[]).includes(text)) return text as LogLevel;
  throw new AgentError(`invalid --log-level "${text}" (choose ${LEVELS.join(", ")})`);
}

function enrollMode(opts: { token?: string; factoryDir?: string; approval?: boolean }): EnrollMode {
  const given = [opts.token !== undefined, opts.factoryDir !== undefined, !!opts.approval].filter(Boolean).length;
  if (given > 1) throw new AgentError("give only one of --token, --factory-dir and --approval");
  if (opts.factoryDir !== undefined) return { kind: "factory", dir: opts.factoryDir };
  if (opts.approval) return { kind: "approval" };
  const token = opts.token ?? process.env.FLEETPKI_TOKEN;
  if (token === undefined) throw new AgentError("give one of --token (or env FLEETPKI_TOKEN), --factory-dir or --approval");
  return { kind: "token", token };
}

export function registerAgent(program: Command): void {
  const agent = program.command("agent").description("device agent: enroll this device and keep its certificate renewed");

  agent
    .command("enroll")
    .description("get this device's first certificate (the key is generated here and never leaves the device)")
    .requiredOption("--server <url>", "registration server, https://HOST:8443")
    .requiredOption("--root-fingerprint <sha256:hex>", "SHA-256 fingerprint of the fleet root, as `fleetpki init` printed it")
    .requiredOption("--id <id>", "device id")
    .requiredOption("--dir <dir>", "agent directory to create (0700)")
    .option("--token <token>", "one-time enrollment token (or env FLEETPKI_TOKEN, which keeps it out of the process list)")
    .option("--factory-dir <dir>", "factory bundle from `ca issue-batch` (key.pem, cert.pem, chain.pem, ca.pem)")
    .option("--approval", "no credentials: wait for an operator to run `fleetpki device approve ID`")
    .option("--key-type <type>", `key type: ${AGENT_KEY_TYPES.join(", ")}`, "p256")
    .option("--wait <duration>", "how long to wait for an approval, e.g. 10m, 1h", "10m")
    .option("--force", "replace an existing enrollment in --dir")
    .option("--log-level <level>", `stderr log level: ${LEVELS.join(", ")}`, "warn")
    .action(async (opts) => {
      const mode = enrollMode(opts);
      const waitMs = parseDuration(opts.wait);
      if (waitMs === undefined) throw new AgentError(`invalid --wait "${opts.wait}" (e.g. 90s, 10m, 1h)`);
      const result = await enroll({
        server: opts.server,
        rootFingerprint: opts.rootFingerprint,
        deviceId: opts.id,
        mode,
        dir: opts.dir,
        keyType: parseKeyType(opts.keyType),
        waitMs,
        force: !!opts.force,
        log: createLogger({ level: logLevel(opts.logLevel) }),
      });
      say(`enrolled ${result.deviceId} as ${result.spiffeId}`);
      say(`certificate ${result.serial}, valid until ${result.notAfter.toISOString()}`);
      say(`files in ${result.dir}; keep it renewed with: ${selfCommand()} agent run --dir ${shellWord(opts.dir)}`);
    });

  agent
    .command("run")
    .description("renew the certificate at 2/3 of its lifetime, until SIGTERM/SIGINT (JSON logs on stderr)")
    .requiredOption("--dir <dir>", "agent directory")
    .option(
      "--on-renew <cmd>",
      "run `/bin/sh -c CMD` after each renewal (env FLEETPKI_CERT, FLEETPKI_KEY, FLEETPKI_CHAIN, FLEETPKI_CA; " +
        "after an enclave renewal also FLEETPKI_ROS2_EVENT=renew, FLEETPKI_ROS2_ENCLAVE, FLEETPKI_ROS2_ENCLAVE_DIR: restart the nodes " +
        "of that enclave; after a new CRL in the enclaves FLEETPKI_ROS2_EVENT=crl, FLEETPKI_ROS2_ENCLAVES (space-separated))",
    )
    .option("--ros2-keystore <dir>", "also keep this device's SROS2 enclaves in this fleetpki keystore renewed, and their CRLs fresh")
    .option("--ros2-crl-url <url>", "where the ros2-identity CRL is (default: beside the device certificate's CRL, /crl/ros2-identity.pem)")
    .option("--ros2-crl-interval <duration>", "how often the CRL is fetched, e.g. 10m", "10m")
    .option("--log-level <level>", `log level: ${LEVELS.join(", ")}`, "info")
    .action(async (opts) => {
      const log = createLogger({ level: logLevel(opts.logLevel) });
      const ros2CrlIntervalMs = parseDuration(opts.ros2CrlInterval);
      if (ros2CrlIntervalMs === undefined || ros2CrlIntervalMs < 1000)
        throw new AgentError(`invalid --ros2-crl-interval "${opts.ros2CrlInterval}" (at least 1s, e.g. 10m)`);
      if (opts.ros2CrlUrl !== undefined && opts.ros2Keystore === undefined) throw new AgentError("--ros2-crl-url needs --ros2-keystore");
      const ros2CrlUrl = opts.ros2CrlUrl === undefined ? undefined : parseCrlUrl(opts.ros2CrlUrl);
      const controller = new AbortController();
      const stop = (signal: NodeJS.Signals) => {
        if (controller.signal.aborted) process.exit(130); // a second signal: give up waiting
        log.info("stopping", { signal });
        controller.abort();
      };
      process.on("SIGTERM", stop);
      process.on("SIGINT", stop);
      try {
        await runAgent({
          dir: opts.dir,
          onRenew: opts.onRenew,
          log,
          signal: controller.signal,
          ros2Keystore: opts.ros2Keystore,
          ros2CrlUrl,
          ros2CrlIntervalMs,
        });
      } finally {
        process.off("SIGTERM", stop);
        process.off("SIGINT", stop);
      }
    });

  agent
    .command("status")
    .description("identity, certificate validity and next renewal of this device")
    .requiredOption("--dir <dir>", "agent directory")
    .option("--json", "machine-readable output")
    .action((opts) => {
      const s = agentStatus(opts.dir);
      if (opts.json) return printJson(s);
      say(`device:     ${s.device_id}`);
      say(`identity:   ${s.identity ?? "-"}`);
      say(`server:     ${s.server}`);
      say(`root:       ${s.root_fingerprint}`);
      say(`serial:     ${s.serial}`);
      say(`key:        ${s.key_type}`);
      say(`not before: ${s.not_before}`);
      say(`not after:  ${s.not_after}${s.expired ? "  (EXPIRED)" : ""}`);
      say(`expired:    ${s.expired ? "yes" : "no"}`);
      say(`renews at:  ${s.renew_at} (between ${s.renew_window.from} and ${s.renew_window.to})${s.renewal_due ? "  (due)" : ""}`);
      if (s.update_pending) say("note:       an interrupted certificate update will be finished by the next `agent run`");
    });
}
