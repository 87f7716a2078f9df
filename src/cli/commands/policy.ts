// `fleetpki policy`: check the gateway's access policy, ask it for a decision, write the default.
import { join } from "node:path";
import type { Command } from "commander";
import { writeDefaultPolicy } from "../../access/default-policy.js";
import type { AccessAction, AccessIdentity, OperatorRole } from "../../access/identity.js";
import { loadPolicyFile } from "../../access/policy-file.js";
import { formatProblem, PolicyError } from "../../access/policy.js";
import { deviceAccessIdentity } from "../../access/registry.js";
import { InvalidArgument } from "../../authority/errors.js";
import { layout } from "../../authority/layout.js";
import { dirOption, withFleet } from "../context.js";
import { printJson, say } from "../output.js";

const ROLES = ["viewer", "operator", "admin"];

function exactlyOne(opts: Record<string, unknown>, names: readonly string[], what: string): string {
  const given = names.filter((n) => opts[n] !== undefined);
  if (given.length !== 1) throw new InvalidArgument(`give exactly one of ${names.map((n) => `--${n}`).join(", ")} (${what})`);
  return given[0]!;
}

export function registerPolicy(program: Command): void {
  const policy = program.command("policy").description("the MQTT gateway's access policy (<dir>/policy.yaml, docs/policy.md)");

  dirOption(policy.command("check").description("validate a policy file (default: <dir>/policy.yaml); exit 1 on errors"))
    .argument("[file]", "policy file to check instead of the fleet's")
    .action((file: string | undefined, opts) => {
      const path = file ?? join(opts.dir, layout.policy);
      try {
        const p = loadPolicyFile(path);
        say(`ok: ${path}: ${p.ruleCount} rule${p.ruleCount === 1 ? "" : "s"}, mode ${p.mode}`);
      } catch (e) {
        if (!(e instanceof PolicyError)) throw e;
        // Every problem, one line each, so that one run shows all that needs fixing.
        for (const problem of e.problems) process.stderr.write(`fleetpki: ${formatProblem(e.file, problem)}\n`);
        process.exitCode = 1;
      }
    });

  dirOption(
    policy
      .command("test")
      .description("print what the policy decides for one identity and topic (allow, deny or audit-deny) and the rule that decided"),
  )
    .option("--device <id>", "a registered device (its group and labels come from the registry)")
    .option("--service <name>", "a service identity")
    .option("--operator <name>", "an operator (with --role)")
    .option("--role <role>", `the operator's role: ${ROLES.join(" | ")}`)
    .option("--publish <topic>", "PUBLISH to this topic name (also a will message or a retained message)")
    .option("--subscribe <filter>", "SUBSCRIBE with this topic filter")
    .option("--receive <topic>", "delivery of a message on this topic to the identity")
    .option("--file <file>", "policy file to use instead of <dir>/policy.yaml")
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      const kind = exactlyOne(opts, ["device", "service", "operator"], "who asks");
      const action = exactlyOne(opts, ["publish", "subscribe", "receive"], "what is asked") as AccessAction | "receive";
      const topic: string = opts[action];
      if (kind !== "operator" && opts.role !== undefined) throw new InvalidArgument("--role goes with --operator");
      const p = loadPolicyFile(opts.file ?? join(opts.dir, layout.policy));
      let identity: AccessIdentity;
      let status: string | undefined;
      if (kind === "device") {
        const found = await withFleet(opts.dir, (fleet) => deviceAccessIdentity(fleet, opts.device));
        identity = found.identity;
        status = found.status;
      } else if (kind === "service") identity = { kind: "service", name: opts.service };
      else {
        if (!ROLES.includes(opts.role)) throw new InvalidArgument(`--operator needs --role ${ROLES.join(" | ")}`);
        identity = { kind: "operator", name: opts.operator, role: opts.role as OperatorRole };
      }
      const grants = p.grantsFor(identity);
      const decision =
        action === "publish" ? grants.publish(topic) : action === "subscribe" ? grants.subscribe(topic) : grants.receive(topic);
      if (opts.json)
        return printJson({
          policy: p.file,
          mode: p.mode,
          identity,
          ...(status ? { deviceStatus: status } : {}),
          action,
          topic,
          ...decision,
        });
      say(`${decision.outcome}  ${decision.rule ? `rule ${decision.rule}` : "(default deny: no rule allows it)"}`);
      say(`  ${decision.reason}`);
      if (status && status !== "active") say(`  note: the device is ${status}; the gateway refuses it at CONNECT whatever the policy says`);
    });

  dirOption(policy.command("init").description("write the default policy into a fleet that has none (fleets made before policies)")).action(
    (opts) => {
      const path = writeDefaultPolicy(opts.dir);
      say(`wrote the default policy to ${path}; check a change with \`fleetpki policy check\``);
    },
  );
}
