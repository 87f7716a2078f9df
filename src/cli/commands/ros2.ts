// ROS 2 security: `ros2 keystore init`, `ros2 enclave create|renew|revoke`. The domain is src/ros2/keystore/.
import type { Command } from "commander";
import {
  createEnclave,
  initKeystore,
  KeystoreAlreadyInitialised,
  parseDomainId,
  renewEnclaveInKeystore,
  revokeEnclave,
} from "../../ros2/keystore/index.js";
import { CLI_ACTOR, dirOption, withFleet } from "../context.js";
import { printJson, say } from "../output.js";
import { registerRos2RefreshCrlCommand } from "./ros2-refresh-crl.js";
import { registerRos2VerifyCommand } from "./ros2-verify.js";

export interface Ros2Commands {
  ros2: Command;
  keystore: Command;
  enclave: Command;
}

/** The `ros2` group with its `keystore` and `enclave` subgroups (other ROS 2 commands attach to them). */
export function registerRos2(program: Command): Ros2Commands {
  const ros2 = program.command("ros2").description("ROS 2 security: SROS2 keystores and enclaves from the fleet's CAs");
  const keystore = ros2.command("keystore").description("SROS2 keystores");
  const enclave = ros2.command("enclave").description("enclaves of a keystore: identity, permissions, revocation");

  dirOption(
    keystore
      .command("init <keystore>")
      .description("create an SROS2 keystore: the fleet's ROS 2 CAs (made on first use), signed governance, the identity CA's CRL"),
  )
    .option("--domain-id <n>", "DDS domain id written into the default governance (0-232; default 0)")
    .option("--governance <file>", "sign this governance.xml instead of sros2's default")
    .option("--json", "machine-readable output")
    .action(async (dir: string, opts) => {
      const domainId = opts.domainId === undefined ? undefined : parseDomainId(opts.domainId);
      await withFleet(opts.dir, async (fleet) => {
        let r;
        try {
          r = await initKeystore(fleet, { dir, domainId, governanceFile: opts.governance, actor: CLI_ACTOR });
        } catch (e) {
          if (!(e instanceof KeystoreAlreadyInitialised)) throw e;
          if (opts.json) return printJson({ dir, keystoreId: e.keystoreId, created: false });
          return say(e.message);
        }
        if (opts.json) return printJson(r);
        say(`keystore ${r.keystoreId} created in ${r.dir} (DDS domain ${r.domainId})`);
        say(`identity CA ${r.identityCaFingerprint}`);
        say(`permissions CA ${r.permissionsCaFingerprint}`);
        say("the CA keys stay in the fleet directory (encrypted); private/ is empty");
      });
    });

  dirOption(
    enclave.command("create <keystore> <path>").description("create an enclave: P-256 key, identity certificate, signed permissions"),
  )
    .option("--device <id>", "the robot that runs it (its agent keeps it renewed)")
    .option("--policy <file>", "an SROS2 policy file naming the enclave: its permissions")
    .option("--allow-all", "sros2's default permissions: every topic, service and action")
    .option("--from-fleet-policy", "permissions from the ros2 section of <dir>/policy.yaml for --device (re-derived at each renewal)")
    .option("--validity <duration>", "certificate and permissions validity, kept for renewals (default validity.ros2_enclave)")
    .option("--json", "machine-readable output")
    .action(async (dir: string, path: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const r = await createEnclave(fleet, {
          dir,
          path,
          deviceId: opts.device,
          policyFile: opts.policy,
          allowAll: opts.allowAll === true,
          fromFleetPolicy: opts.fromFleetPolicy === true,
          validity: opts.validity,
          actor: CLI_ACTOR,
        });
        if (opts.json) return printJson(r);
        say(`enclave ${r.path} created in ${r.dir}: certificate ${r.serial}, valid until ${r.notAfter.toISOString()}`);
        say(`permissions from ${r.source}${r.deviceId ? `; device ${r.deviceId}` : ""}`);
      });
    });

  dirOption(enclave.command("renew <keystore> <path>").description("a new key and certificate; permissions re-rendered and re-signed"))
    .option("--validity <duration>", "this certificate's validity (default: the enclave's own, else validity.ros2_enclave)")
    .option("--json", "machine-readable output")
    .action(async (dir: string, path: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const r = await renewEnclaveInKeystore(fleet, { dir, path, validity: opts.validity, actor: CLI_ACTOR });
        if (opts.json) return printJson(r);
        say(`enclave ${r.path} renewed: certificate ${r.serial}, valid until ${r.notAfter.toISOString()} (the previous one is superseded)`);
        say("ROS nodes read their enclave at start: restart the nodes of this enclave");
      });
    });

  dirOption(
    enclave.command("revoke <keystore> <path>").description("revoke an enclave; the new CRL goes into every enclave of the keystore"),
  )
    .option("--reason <reason>", "keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn, unspecified")
    .option("--json", "machine-readable output")
    .action(async (dir: string, path: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const r = await revokeEnclave(fleet, { dir, path, reason: opts.reason, actor: CLI_ACTOR });
        if (opts.json) return printJson({ ...r, crlNumber: r.crlNumber.toString() });
        say(
          `enclave ${path} revoked (certificate ${r.serial}); CRL ${r.crlNumber} written to public/ and ${r.updated.length} ` +
            `enclave${r.updated.length === 1 ? "" : "s"}`,
        );
      });
    });

  registerRos2VerifyCommand(keystore);
  registerRos2RefreshCrlCommand(keystore);
  return { ros2, keystore, enclave };
}
