// The access policy file as operators see and change it through the admin API: show it (with its
// problems), replace it (validated first, audited `policy.replace` with SHA-256 of the old and new
// text, written atomically; every gateway on the directory reloads it), dry-run a replacement (which
// decisions for the active devices would change), and ask it for one decision (`policy test`).
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { AccessPolicy, MAX_POLICY_BYTES, PolicyError, type PolicyProblem } from "../access/policy.js";
import type { AccessAction, AccessDecision, AccessIdentity, OperatorRole } from "../access/identity.js";
import { deviceAccessIdentity, deviceIdentityOf, registeredDeviceIds } from "../access/registry.js";
import { compileEnclave, type Ros2Action } from "../access/ros2-policy.js";
import { writeFileAtomic } from "../keys/files.js";
import { InvalidArgument } from "./errors.js";
import { layout } from "./layout.js";
import type { FleetServices } from "./services.js";

/** How many changed decisions a dry run lists (it counts them all). */
export const MAX_LISTED_CHANGES = 1000;

const sha256 = (text: string | undefined) => (text === undefined ? null : createHash("sha256").update(text, "utf8").digest("hex"));

export interface PolicyView {
  /** The file's text; "" when there is none. */
  yaml: string;
  valid: boolean;
  /** Every problem, each with its line (0: the whole file). */
  errors: PolicyProblem[];
  sha256: string | null;
  mode: string | null;
  rules: number | null;
}

/** The current file's text, or undefined when there is none; a file too large or unreadable is a PolicyError. */
function readCurrent(fleet: FleetServices): string | undefined {
  const path = fleet.path(layout.policy);
  let size: number;
  try {
    size = statSync(path).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new PolicyError(layout.policy, [{ line: 0, field: "", message: `cannot be read (${(e as NodeJS.ErrnoException).code})` }]);
  }
  if (size > MAX_POLICY_BYTES)
    throw new PolicyError(layout.policy, [{ line: 0, field: "", message: `larger than ${MAX_POLICY_BYTES} bytes` }]);
  return readFileSync(path, "utf8");
}

function tryParse(text: string | undefined): { policy?: AccessPolicy; errors: PolicyProblem[] } {
  if (text === undefined)
    return { errors: [{ line: 0, field: "", message: "not found (`fleetpki policy init` writes the default policy)" }] };
  try {
    return { policy: AccessPolicy.parse(text, layout.policy), errors: [] };
  } catch (e) {
    if (e instanceof PolicyError) return { errors: [...e.problems] };
    throw e;
  }
}

export function showPolicy(fleet: FleetServices): PolicyView {
  let text: string | undefined;
  let parsed: { policy?: AccessPolicy; errors: PolicyProblem[] };
  try {
    text = readCurrent(fleet);
    parsed = tryParse(text);
  } catch (e) {
    if (!(e instanceof PolicyError)) throw e;
    parsed = { errors: [...e.problems] };
  }
  const p = parsed.policy;
  return {
    yaml: text ?? "",
    valid: p !== undefined,
    errors: parsed.errors,
    sha256: sha256(text),
    mode: p?.mode ?? null,
    rules: p?.ruleCount ?? null,
  };
}

export interface DecisionChange {
  device: string;
  action: AccessAction;
  /** A topic name (publish) or filter (subscribe) one of the two policies names for the device. */
  topic: string;
  before: { outcome: AccessDecision["outcome"]; rule: string | null };
  after: { outcome: AccessDecision["outcome"]; rule: string | null };
}

export interface PolicyReplacement {
  dryRun: boolean;
  /** SHA-256 of the text in force before, and of the new text. */
  previousSha256: string | null;
  sha256: string;
  mode: string;
  rules: number;
  /** Active devices whose decisions were compared. */
  devices: number;
  /** Decisions that differ, in all. */
  changed: number;
  /** The first MAX_LISTED_CHANGES of them. */
  changes: DecisionChange[];
}

const brief = (d: AccessDecision | undefined) =>
  d ? { outcome: d.outcome, rule: d.rule ?? null } : { outcome: "deny" as const, rule: null };

/**
 * For every active device, the topics either policy's rules name for it (placeholders filled), asked
 * of both: a decision whose outcome or deciding rule differs is a change. Publish filters with
 * wildcards name no topic and are left out; subscribe filters are asked as they are. Without a
 * valid policy in force, everything was denied.
 */
async function decisionChanges(fleet: FleetServices, before: AccessPolicy | undefined, after: AccessPolicy) {
  const rows = await fleet.store.ops.devices.list({});
  let devices = 0;
  let changed = 0;
  const changes: DecisionChange[] = [];
  for (const row of rows) {
    if (row.status !== "active") continue;
    devices++;
    const id: AccessIdentity = deviceIdentityOf(row);
    const old = before?.grantsFor(id);
    const next = after.grantsFor(id);
    const named = after.namedFilters(id);
    const was = before?.namedFilters(id) ?? { publish: [], subscribe: [] };
    const asks: [AccessAction, string][] = [
      ...[...new Set([...was.publish, ...named.publish])]
        .filter((t) => !/[+#]/.test(t))
        .map((t) => ["publish", t] as [AccessAction, string]),
      ...[...new Set([...was.subscribe, ...named.subscribe])].map((t) => ["subscribe", t] as [AccessAction, string]),
    ];
    for (const [action, topic] of asks) {
      const b = brief(old?.[action](topic));
      const a = brief(next[action](topic));
      if (a.outcome === b.outcome && a.rule === b.rule) continue;
      changed++;
      if (changes.length < MAX_LISTED_CHANGES) changes.push({ device: row.id, action, topic, before: b, after: a });
    }
  }
  return { devices, changed, changes };
}

/**
 * Validates `yaml` as a policy (a PolicyError lists every problem with its line), compares the
 * decisions, and unless `dryRun` writes it in place of <dir>/policy.yaml, audited in the same step:
 * the audit row is appended in the transaction that then replaces the file, so a failed write rolls
 * the row back, and a failed commit puts the old text back.
 */
export async function replacePolicy(
  fleet: FleetServices,
  req: { yaml: string; dryRun?: boolean; actor: string },
): Promise<PolicyReplacement> {
  if (Buffer.byteLength(req.yaml, "utf8") > MAX_POLICY_BYTES)
    throw new InvalidArgument(`the policy is larger than ${MAX_POLICY_BYTES} bytes`);
  const next = AccessPolicy.parse(req.yaml, layout.policy);
  let previousText: string | undefined;
  try {
    previousText = readCurrent(fleet);
  } catch (e) {
    if (!(e instanceof PolicyError)) throw e;
    previousText = undefined;
  }
  const previous = tryParse(previousText).policy;
  const compared = await decisionChanges(fleet, previous, next);
  const result: PolicyReplacement = {
    dryRun: req.dryRun === true,
    previousSha256: sha256(previousText),
    sha256: sha256(req.yaml)!,
    mode: next.mode,
    rules: next.ruleCount,
    ...compared,
  };
  if (result.dryRun) return result;
  const path = fleet.path(layout.policy);
  let written = false;
  try {
    await fleet.store.transaction(async (tx) => {
      await tx.audit.append([
        {
          actor: req.actor,
          action: "policy.replace",
          subject: `policy:${layout.policy}`,
          details: {
            previous_sha256: result.previousSha256,
            sha256: result.sha256,
            mode: result.mode,
            rules: result.rules,
            changed_decisions: result.changed,
          },
          at: fleet.clock.now(),
        },
      ]);
      writeFileAtomic(path, req.yaml, 0o644);
      written = true;
    });
  } catch (e) {
    if (written && previousText !== undefined) writeFileAtomic(path, previousText, 0o644);
    throw e;
  }
  return result;
}

export type PolicySubject = { device: string } | { service: string } | { operator: string; role: OperatorRole };

/** A ROS 2 request: what a participant of the device's enclave would do on DDS, as `policy test --ros2-*`. */
export interface Ros2Question {
  enclave: string;
  action: Ros2Action;
  /** A fully qualified topic, service or action name. */
  name: string;
}

/** What the policy in force decides for one identity and topic, as `fleetpki policy test`. */
export async function testPolicy(
  fleet: FleetServices,
  req: { who: PolicySubject; action: AccessAction | "receive"; topic: string },
): Promise<AccessDecision & { identity: AccessIdentity; deviceStatus?: string; mode: string }> {
  const text = readCurrent(fleet);
  if (text === undefined) throw new InvalidArgument("this fleet has no access policy (`fleetpki policy init` writes the default one)");
  const policy = AccessPolicy.parse(text, layout.policy);
  let identity: AccessIdentity;
  let deviceStatus: string | undefined;
  if ("device" in req.who) {
    const found = await deviceAccessIdentity(fleet, req.who.device);
    identity = found.identity;
    deviceStatus = found.status;
  } else if ("service" in req.who) identity = { kind: "service", name: req.who.service };
  else identity = { kind: "operator", name: req.who.operator, role: req.who.role };
  const grants = policy.grantsFor(identity);
  const decision = grants[req.action](req.topic);
  return { ...decision, identity, ...(deviceStatus ? { deviceStatus } : {}), mode: policy.mode };
}

/**
 * What the permissions derived from the policy in force let one enclave of one device do on DDS
 * (`policy test --ros2-*`). Never "audit-deny": DDS has no audit mode, whatever `mode` says.
 */
export async function testRos2Policy(
  fleet: FleetServices,
  req: { device: string } & Ros2Question,
): Promise<AccessDecision & { identity: AccessIdentity; deviceStatus: string; mode: string }> {
  const text = readCurrent(fleet);
  if (text === undefined) throw new InvalidArgument("this fleet has no access policy (`fleetpki policy init` writes the default one)");
  const policy = AccessPolicy.parse(text, layout.policy);
  const found = await deviceAccessIdentity(fleet, req.device);
  const decision = compileEnclave(policy, found.identity, req.enclave, await registeredDeviceIds(fleet)).decide(req.action, req.name);
  return { ...decision, identity: found.identity, deviceStatus: found.status, mode: policy.mode };
}
