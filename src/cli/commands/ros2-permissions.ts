// `fleetpki ros2 permissions POLICY.xml`: an SROS2 policy file to DDS permissions.xml on stdout, the
// same bytes as sros2's permissions.xsl makes. Nothing is printed unless the whole document is made.
// The validity defaults are sros2's template parameters (2020-05-01T00:00:00 .. 2030-05-01T00:00:00),
// kept on purpose so that the output can be compared with sros2's; a permissions.xml that goes into
// an enclave gets its certificate's validity from `ros2 enclave create` instead.
import { join } from "node:path";
import { InvalidArgumentError, type Command } from "commander";
import { loadPolicyFile } from "../../access/policy-file.js";
import { activeDeviceIdentities, deviceAccessIdentity, registeredDeviceIds } from "../../access/registry.js";
import { fleetSros2Policy } from "../../access/ros2-policy.js";
import { InvalidArgument } from "../../authority/errors.js";
import { layout } from "../../authority/layout.js";
import { dirOption, withFleet } from "../context.js";
import { readSros2PolicyFile } from "../../ros2/policy-xml/index.js";
import { renderPermissions, SROS2_TEMPLATE_PARAMETERS } from "../../ros2/permissions.js";
import { enclavePathProblem } from "../../ros2/names.js";

/**
 * An ISO 8601 date-time as DDS permissions write it: UTC "YYYY-MM-DDTHH:MM:SS". Takes a date, a
 * date-time with Z or an offset (converted to UTC), or one without a zone (taken as UTC, as sros2 does).
 */
export function permissionsTime(text: string): string {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2}))?(Z|[+-]\d{2}:\d{2})?)?$/.exec(text);
  if (!m) throw new InvalidArgumentError(`"${text}" is not an ISO 8601 date-time (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM])`);
  const [, y, mo, d, h = "00", mi = "00", s = "00", zone = "Z"] = m;
  const ms = Date.parse(`${y}-${mo}-${d}T${h}:${mi}:${s}${zone}`);
  const date = new Date(ms);
  // Date.parse rolls 2026-02-30 over to March: refuse what does not read back the same.
  if (Number.isNaN(ms) || (zone === "Z" && date.toISOString().slice(0, 19) !== `${y}-${mo}-${d}T${h}:${mi}:${s}`))
    throw new InvalidArgumentError(`"${text}" is not a valid date-time`);
  return date.toISOString().slice(0, 19);
}

function domainId(text: string): number {
  if (!/^\d{1,3}$/.test(text) || Number(text) > 232) throw new InvalidArgumentError(`"${text}" is not a DDS domain id (0..232)`);
  return Number(text);
}

function enclavePath(text: string): string {
  const why = enclavePathProblem(text);
  if (why) throw new InvalidArgumentError(`enclave path "${text}" ${why}`);
  return text;
}

interface PermissionsOptions {
  enclave?: string;
  notBefore?: string;
  notAfter?: string;
  allowRosDiscoveryTopic: boolean;
  domainId?: number;
  fromFleetPolicy?: boolean;
  device?: string;
  dir: string;
}

export function registerRos2PermissionsCommand(ros2: Command): void {
  dirOption(
    ros2
      .command("permissions")
      .description(
        "print the DDS permissions.xml of an SROS2 policy file (sros2's policy.xsd, with XInclude), or with --from-fleet-policy " +
          "of the enclaves the fleet's policy.yaml gives its devices (docs/policy.md, ROS 2)",
      ),
  )
    .argument("[policy]", "SROS2 policy file (includes must stay inside its directory)")
    .option("--from-fleet-policy", "derive the permissions from the ros2 section of <dir>/policy.yaml, for every active device")
    .option("--device <id>", "with --from-fleet-policy: only this registered device's enclaves")
    .option("--enclave <path>", "only this enclave's grants (an absolute ROS 2 namespace such as /ns/node)", enclavePath)
    .option("--not-before <iso>", `validity start, UTC (default sros2's ${SROS2_TEMPLATE_PARAMETERS.notBefore})`, permissionsTime)
    .option("--not-after <iso>", `validity end, UTC (default sros2's ${SROS2_TEMPLATE_PARAMETERS.notAfter})`, permissionsTime)
    .option("--allow-ros-discovery-topic", "also allow ros_discovery_info (sros2's allow_ros_discovery_topic)", false)
    .option("--domain-id <n>", "DDS domain id of the rules (default 0, as sros2)", domainId)
    .action(async (file: string | undefined, opts: PermissionsOptions, cmd: Command) => {
      const params = {
        notBefore: opts.notBefore ?? SROS2_TEMPLATE_PARAMETERS.notBefore,
        notAfter: opts.notAfter ?? SROS2_TEMPLATE_PARAMETERS.notAfter,
        allowRosDiscoveryTopic: opts.allowRosDiscoveryTopic,
        domainId: opts.domainId ?? 0,
      };
      // The strings are UTC and fixed-width, so they compare as times.
      if (params.notBefore >= params.notAfter)
        cmd.error(`error: --not-before (${params.notBefore}) must be before --not-after (${params.notAfter})`, { exitCode: 2 });
      if (!opts.fromFleetPolicy) {
        if (file === undefined) throw new InvalidArgument("give an SROS2 policy file, or --from-fleet-policy");
        if (opts.device !== undefined) throw new InvalidArgument("--device goes with --from-fleet-policy");
        process.stdout.write(renderPermissions(readSros2PolicyFile(file), params, opts.enclave));
        return;
      }
      if (file !== undefined) throw new InvalidArgument("give either an SROS2 policy file or --from-fleet-policy, not both");
      const policy = loadPolicyFile(join(opts.dir, layout.policy));
      const device = opts.device;
      const { ids, registered } = await withFleet(opts.dir, async (fleet) => {
        if (device === undefined) {
          const { identities, registered } = await activeDeviceIdentities(fleet);
          return { ids: identities, registered };
        }
        const registered = await registeredDeviceIds(fleet);
        const found = await deviceAccessIdentity(fleet, device);
        // Asked for by name, so printed; but no enclave of it is renewed while it is not active.
        if (found.status !== "active") process.stderr.write(`fleetpki: note: device ${device} is ${found.status}\n`);
        return { ids: [found.identity], registered };
      });
      const derived = fleetSros2Policy(policy, ids, registered, opts.enclave);
      // Rendered in full before anything is written: a failure prints nothing on stdout.
      const xml = renderPermissions(derived.policy, params);
      for (const s of derived.skipped)
        process.stderr.write(`fleetpki: note: device ${s.device}: enclave ${s.template} skipped: ${s.reason}\n`);
      process.stdout.write(xml);
    });
}
