// The policy `fleetpki init` (and `policy init`) writes to <dir>/policy.yaml (layout.policy): each
// device publishes under its own prefix and reads its own commands, the `telemetry` service reads
// what devices send, nothing more.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { InvalidArgument } from "../authority/errors.js";
import { layout } from "../authority/layout.js";
import { CONFIG_FILE } from "../config/config.js";
import { writeFileAtomic } from "../keys/files.js";

export const DEFAULT_POLICY = `# fleetpki access policy: who may publish and subscribe to what on the MQTT gateway.
# Schema, semantics and examples: docs/policy.md. \`fleetpki serve\` reloads this file within a second
# of a change; a file with errors is refused (the previous policy stays in force) and the errors are logged.
#   fleetpki policy check                                     validate (errors name their line)
#   fleetpki policy test --device ID --publish TOPIC          what the gateway would decide, and why
#
# Nothing is allowed unless a rule allows it, and a rule with "effect: deny" wins over every allow.
# Subjects: devices (all, or by ids, groups, labels), services (by name) and operators (by roles).
# Placeholders in topic filters: \${device} (the device's id), \${group}, \${label:KEY}. An allow rule whose
# placeholder has no value for a device (no group, no such label) does not apply to it; in a deny rule, only that filter is left out.
# Quote every topic filter: "#" would otherwise start a YAML comment.

version: 1
mode: enforce          # enforce | audit (audit: a denial is logged but let through; for rolling out changes)

rules:
  - name: devices-publish-own
    description: a device publishes under its own prefix, nowhere else
    devices: all
    publish:
      - "fleet/\${device}/#"

  - name: devices-read-own-commands
    description: a device reads the commands sent to it, and nobody else's
    devices: all
    subscribe:
      - "fleet/\${device}/cmd/#"

  - name: telemetry-reads-fleet
    description: the telemetry backend (fleetpki service add telemetry) reads what every device sends
    services: [telemetry]
    subscribe:
      - "fleet/+/#"

  # More examples (docs/policy.md):
  #
  # - name: control-sends-commands
  #   services: [control]
  #   publish:
  #     - "fleet/+/cmd/#"
  #
  # - name: lab-robots-share-a-channel
  #   devices: { groups: [lab] }
  #   publish: ["lab/\${group}/chat"]
  #   subscribe: ["lab/\${group}/chat"]
  #
  # - name: admins-read-broker-state
  #   operators: { roles: [admin] }   # or by name: { names: [admin] }
  #   subscribe: ["$SYS/#"]
  #
  # - name: no-motion-commands-from-devices
  #   effect: deny
  #   mode: audit          # log what this deny would refuse before enforcing it
  #   devices: all
  #   publish: ["fleet/+/cmd/cmd_vel"]

# ROS 2 (DDS) permissions from the same policy: \`fleetpki ros2 permissions --from-fleet-policy\` and
# \`ros2 enclave create KEYSTORE PATH --device ID --from-fleet-policy\` derive each enclave's permissions.xml
# from this section (docs/policy.md, "ROS 2"). Names are ROS 2 names (relative ones resolve in each
# node's namespace); DDS wildcards * and ? only. DDS has no audit mode: these rules are always enforced.
#
# ros2:
#   enclaves:
#     - path: "/\${device}/base"          # one enclave per device (\${device} writes "-" and "." as "_":
#       devices: { groups: [amr] }       #   robot-0001 gives /robot_0001/base; or a label, "/\${label:ros_ns}/base")
#       nodes:
#         - { ns: "/\${device}", node: base_controller }
#   rules:
#     - name: amr-drive
#       devices: { groups: [amr] }
#       topics: { publish: [cmd_vel], subscribe: [odom] }
#       services: { reply: ["~/reset"] }
#     - name: no-map-writes
#       effect: deny
#       devices: all
#       services: { request: ["/map_server/save*"] }
`;

/**
 * Writes the default policy into a fleet made before policies existed (`fleetpki policy init`);
 * an existing policy is never overwritten. Returns the path written.
 */
export function writeDefaultPolicy(dir: string): string {
  const path = join(dir, layout.policy);
  if (!existsSync(join(dir, CONFIG_FILE))) throw new InvalidArgument(`no fleet at ${dir} (${CONFIG_FILE} not found)`);
  if (existsSync(path)) throw new InvalidArgument(`${path} already exists; edit it, or delete it first to start from the default`);
  writeFileAtomic(path, DEFAULT_POLICY); // 0644: no secret in it
  return path;
}
