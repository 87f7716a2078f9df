// `fleetpki policy`: check the gateway's access policy, ask it for a decision, write the default.
import { join } from "node:path";
import type { Command } from "commander";
import { writeDefaultPolicy } from "../../access/default-policy.js";
import type { AccessAction, AccessDecision, AccessIdentity, OperatorRole } from "../../access/identity.js";
import { loadPolicyFile } from "../../access/policy-file.js";
import { formatProblem, PolicyError, type PolicyProblem } from "../../access/policy.js";
import { deviceAccessIdentity, deviceIdentityOf, registeredDeviceIds } from "../../access/registry.js";
import { compileEnclave, ROS2_ACTIONS, type Ros2Action } from "../../access/ros2-policy.js";
import type { Device } from "../../authority/devices.js";
import { InvalidArgument } from "../../authority/errors.js";
import { layout } from "../../authority/layout.js";
import { dirOption, withFleet } from "../context.js";
import { printJson, say } from "../output.js";
import { localOnly, remoteOptions, remoteTarget, viaHere } from "../remote.js";

/** What `policy test` prints (--json), whether decided here or by the admin API's POST /api/policy/test. */
interface PolicyTestAnswer extends AccessDecision {
  policy: string;
  mode: string;
  identity: AccessIdentity;
  deviceStatus?: string;
  /** MQTT: publish, subscribe, receive; ROS 2: ros2-publish ... ros2-execute (with enclave and name instead of topic). */
  action: AccessAction | "receive" | `ros2-${Ros2Action}`;
  topic?: string;
  enclave?: string;
  name?: string;
}

const testAnswerOf = (a: PolicyTestAnswer): PolicyTestAnswer => ({
  policy: a.policy,
  mode: a.mode,
  identity: a.identity,
  ...(a.deviceStatus ? { deviceStatus: a.deviceStatus } : {}),
  action: a.action,
  ...(a.enclave !== undefined ? { enclave: a.enclave, name: a.name } : { topic: a.topic }),
  allowed: a.allowed,
  outcome: a.outcome,
  // The API sends null for the default deny; the local decision leaves the rule out.
  rule: a.rule ?? undefined,
  reason: a.reason,
});

/** --dir, or --server and --operator. */
const fleetOption = (cmd: Command): Command => remoteOptions(dirOption(cmd));

const ROLES = ["viewer", "operator", "admin"];

const ROS2_OPTIONS = ROS2_ACTIONS.map((a) => `ros2${a[0]!.toUpperCase()}${a.slice(1)}`);
const optionName = (n: string) => n.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

function exactlyOne(opts: Record<string, unknown>, names: readonly string[], what: string): string {
  const given = names.filter((n) => opts[n] !== undefined);
  if (given.length !== 1) throw new InvalidArgument(`give exactly one of ${names.map((n) => `--${optionName(n)}`).join(", ")} (${what})`);
  return given[0]!;
}

export function registerPolicy(program: Command): void {
  const policy = program.command("policy").description("the MQTT gateway's access policy (<dir>/policy.yaml, docs/policy.md)");

  fleetOption(policy.command("check").description("validate a policy file (default: <dir>/policy.yaml, or the server's); exit 1 on errors"))
    .argument("[file]", "policy file to check instead of the fleet's")
    .action(async (file: string | undefined, opts, cmd: Command) => {
      const api = remoteTarget(cmd);
      if (api && file !== undefined) {
        api.close();
        throw new InvalidArgument("with --server, policy check checks the server's policy: check a file here without --server");
      }
      let path = file ?? join(opts.dir, layout.policy);
      try {
        let p: { ruleCount: number; mode: string; ros2?: { enclaves: readonly unknown[]; rules: readonly unknown[] } | undefined };
        if (api) {
          path = `${api.base.origin}/api/policy`;
          let answer: { valid: boolean; errors?: PolicyProblem[]; rules: number | null; mode: string | null };
          try {
            answer = await api.call("GET /api/policy");
          } finally {
            api.close();
          }
          if (!answer.valid) throw new PolicyError(path, answer.errors ?? []);
          p = { ruleCount: answer.rules ?? 0, mode: answer.mode ?? "" };
        } else p = loadPolicyFile(path);
        const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;
        // A local file also says what its ros2 section holds (the API's answer has no such count).
        const ros2 = p.ros2 ? `; ros2: ${plural(p.ros2.enclaves.length, "enclave")}, ${plural(p.ros2.rules.length, "rule")}` : "";
        say(`ok: ${path}: ${plural(p.ruleCount, "rule")}, mode ${p.mode}${ros2}`);
      } catch (e) {
        if (!(e instanceof PolicyError)) throw e;
        // Every problem, one line each, so that one run shows all that needs fixing.
        for (const problem of e.problems) process.stderr.write(`fleetpki: ${formatProblem(e.file, problem)}\n`);
        process.exitCode = 1;
      }
    });

  remoteOptions(
    dirOption(
      policy
        .command("test")
        .description(
          "print what the policy decides for one identity and topic (allow, deny or audit-deny), or for one ROS 2 name in a " +
            "device's enclave (allow or deny, as DDS enforces the derived permissions.xml), and the rule that decided",
        ),
    ),
    // --operator NAME is the identity tested here; the operator bundle for --server is --operator-dir.
    { operatorDir: true },
  )
    .option("--device <id>", "a registered device (its group and labels come from the registry)")
    .option("--service <name>", "a service identity")
    .option("--operator <name>", "an operator (with --role)")
    .option("--role <role>", `the operator's role: ${ROLES.join(" | ")}`)
    .option("--publish <topic>", "PUBLISH to this topic name (also a will message or a retained message)")
    .option("--subscribe <filter>", "SUBSCRIBE with this topic filter")
    .option("--receive <topic>", "delivery of a message on this topic to the identity")
    .option("--ros2-enclave <path>", "ROS 2: the device's enclave (e.g. /robot_1/base), with one of the --ros2-* requests")
    .option("--ros2-publish <topic>", "ROS 2: publish to this fully qualified topic")
    .option("--ros2-subscribe <topic>", "ROS 2: subscribe to this topic")
    .option("--ros2-request <service>", "ROS 2: call this service (send requests, read replies)")
    .option("--ros2-reply <service>", "ROS 2: serve this service")
    .option("--ros2-call <action>", "ROS 2: send goals to this action")
    .option("--ros2-execute <action>", "ROS 2: execute this action's goals")
    .option("--file <file>", "policy file to use instead of <dir>/policy.yaml")
    .option("--json", "machine-readable output")
    .action(async (opts, cmd: Command) => {
      if (opts.ros2Enclave !== undefined || ROS2_OPTIONS.some((o) => opts[o] !== undefined)) return testRos2(opts, cmd);
      const kind = exactlyOne(opts, ["device", "service", "operator"], "who asks");
      const action = exactlyOne(opts, ["publish", "subscribe", "receive"], "what is asked") as AccessAction | "receive";
      const topic: string = opts[action];
      if (kind !== "operator" && opts.role !== undefined) throw new InvalidArgument("--role goes with --operator");
      if (kind === "operator" && !ROLES.includes(opts.role)) throw new InvalidArgument(`--operator needs --role ${ROLES.join(" | ")}`);
      const who: { device: string } | { service: string } | { operator: string; role: OperatorRole } =
        kind === "device"
          ? { device: opts.device as string }
          : kind === "service"
            ? { service: opts.service as string }
            : { operator: opts.operator as string, role: opts.role as OperatorRole };
      const answer = testAnswerOf(
        await viaHere(
          cmd,
          async (): Promise<PolicyTestAnswer> => {
            const p = loadPolicyFile(opts.file ?? join(opts.dir, layout.policy));
            let identity: AccessIdentity;
            let deviceStatus: string | undefined;
            if ("device" in who) {
              const found = await withFleet(opts.dir, (fleet) => deviceAccessIdentity(fleet, who.device));
              identity = found.identity;
              deviceStatus = found.status;
            } else if ("service" in who) identity = { kind: "service", name: who.service };
            else identity = { kind: "operator", name: who.operator, role: who.role };
            const grants = p.grantsFor(identity);
            const decision =
              action === "publish" ? grants.publish(topic) : action === "subscribe" ? grants.subscribe(topic) : grants.receive(topic);
            return { policy: p.file, mode: p.mode, identity, deviceStatus, action, topic, ...decision };
          },
          async (api) => {
            if (opts.file !== undefined) throw new InvalidArgument("--file tests a policy file here: leave out --server");
            const decided = await api.call<Omit<PolicyTestAnswer, "policy" | "identity" | "action" | "topic">>(
              "POST /api/policy/test",
              {},
              { ...who, action, topic },
            );
            // The answer names no identity: a device's is its registry entry, as the server read it.
            let identity: AccessIdentity;
            if ("device" in who) {
              const d = await api.call<Device>("GET /api/devices/:id", { id: who.device });
              identity = deviceIdentityOf({ id: d.id, group_name: d.group, labels: JSON.stringify(d.labels) });
            } else if ("service" in who) identity = { kind: "service", name: who.service };
            else identity = { kind: "operator", name: who.operator, role: who.role };
            return { ...decided, policy: `${api.base.origin}/api/policy`, identity, action, topic };
          },
        ),
      );
      const status = answer.deviceStatus;
      if (opts.json) return printJson(answer);
      say(`${answer.outcome}  ${answer.rule ? `rule ${answer.rule}` : "(default deny: no rule allows it)"}`);
      say(`  ${answer.reason}`);
      if (status && status !== "active") say(`  note: the device is ${status}; the gateway refuses it at CONNECT whatever the policy says`);
    });

  /** `policy test --device ID --ros2-enclave PATH --ros2-VERB NAME`. */
  async function testRos2(opts: Record<string, string | boolean | undefined> & { dir: string }, cmd: Command): Promise<void> {
    const verbOption = exactlyOne(opts, ROS2_OPTIONS, "what the enclave does");
    const action = ROS2_ACTIONS[ROS2_OPTIONS.indexOf(verbOption)]!;
    const name = opts[verbOption] as string;
    const given = ["service", "operator", "role", "publish", "subscribe", "receive"].filter((o) => opts[o] !== undefined);
    if (given.length > 0)
      throw new InvalidArgument(`--${given[0]} does not go with the --ros2-* options (ROS 2 enclaves belong to devices)`);
    if (typeof opts.device !== "string") throw new InvalidArgument("the --ros2-* options need --device ID (whose enclave asks)");
    if (typeof opts.ros2Enclave !== "string") throw new InvalidArgument("the --ros2-* options need --ros2-enclave PATH");
    const device = opts.device;
    const enclave = opts.ros2Enclave;
    const answer = testAnswerOf(
      await viaHere(
        cmd,
        async (): Promise<PolicyTestAnswer> => {
          const p = loadPolicyFile(typeof opts.file === "string" ? opts.file : join(opts.dir, layout.policy));
          const [found, registered] = await withFleet(opts.dir, (fleet) =>
            Promise.all([deviceAccessIdentity(fleet, device), registeredDeviceIds(fleet)]),
          );
          const decision = compileEnclave(p, found.identity, enclave, registered).decide(action, name);
          return {
            policy: p.file,
            mode: p.mode,
            identity: found.identity,
            deviceStatus: found.status,
            action: `ros2-${action}` as const,
            enclave,
            name,
            ...decision,
          };
        },
        async (api) => {
          if (opts.file !== undefined) throw new InvalidArgument("--file tests a policy file here: leave out --server");
          const decided = await api.call<Omit<PolicyTestAnswer, "policy" | "identity" | "action" | "enclave" | "name">>(
            "POST /api/policy/test",
            {},
            { device, enclave, action: `ros2-${action}`, name },
          );
          const d = await api.call<Device>("GET /api/devices/:id", { id: device });
          const identity = deviceIdentityOf({ id: d.id, group_name: d.group, labels: JSON.stringify(d.labels) });
          return { ...decided, policy: `${api.base.origin}/api/policy`, identity, action: `ros2-${action}` as const, enclave, name };
        },
      ),
    );
    if (opts.json) return printJson(answer);
    say(`${answer.outcome}  ${answer.rule ? `rule ${answer.rule}` : "(default deny: no rule allows it)"}`);
    say(`  ${answer.reason}`);
    if (answer.deviceStatus && answer.deviceStatus !== "active")
      say(`  note: the device is ${answer.deviceStatus}; its enclaves' certificates are not renewed whatever the policy says`);
  }

  fleetOption(
    policy.command("init").description("write the default policy into a fleet that has none (fleets made before policies)"),
  ).action(async (opts, cmd: Command) => {
    if (remoteTarget(cmd)) await localOnly("policy init", "it writes a file in the fleet directory")();
    const path = writeDefaultPolicy(opts.dir);
    say(`wrote the default policy to ${path}; check a change with \`fleetpki policy check\``);
  });
}
