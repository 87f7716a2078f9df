// The `ros2` section of the fleet policy (docs/policy.md, "ROS 2"): which enclaves each device runs
// and what their nodes may do on DDS. Parsed and validated with the rest of policy.yaml (one
// PolicyError for the whole file), then, per (device, enclave), derived into the SROS2 policy model
// that src/ros2/permissions.ts renders as permissions.xml, and evaluated exactly as DDS evaluates
// that document: the grant's deny_rule first, then its allow_rule, each topic an fnmatch pattern
// with * and ?, else <default>DENY</default>. `policy test` answers from the same derived model.
import { isMap, isScalar, isSeq, type Node, type Pair } from "yaml";
import { InvalidArgument } from "../authority/errors.js";
import { enclavePathProblem, nodeNameProblem, profileNamespaceProblem, topicNameProblem } from "../ros2/names.js";
import { resolveName } from "../ros2/permissions.js";
import type { Profile, ProfileRule, Qualifier, Sros2Policy } from "../ros2/policy-model.js";
import type { AccessDecision, AccessIdentity } from "./identity.js";
import { selectsDevice, splitPlaceholders, type AccessPolicy, type DeviceSelector, type Part, type PolicyParseContext } from "./policy.js";

type DeviceIdentity = AccessIdentity & { kind: "device" };

/** Bounds that keep a generated policy from generating unbounded permissions (the file itself is at most 1 MiB). */
export const MAX_ROS2_ENCLAVES = 256;
export const MAX_ROS2_NODES = 256;
export const MAX_ROS2_RULES = 1000;
export const MAX_ROS2_NAMES = 1000;
/** DDS topics one grant may list (an upper bound computed when the file loads: over it, the file is refused). */
export const MAX_GRANT_TOPICS = 20_000;

export type Ros2Action = "publish" | "subscribe" | "request" | "reply" | "call" | "execute";
export const ROS2_ACTIONS: readonly Ros2Action[] = ["publish", "subscribe", "request", "reply", "call", "execute"];
type Kind = "topics" | "services" | "actions";
const VERBS: Record<Kind, readonly [Ros2Action, Ros2Action]> = {
  topics: ["publish", "subscribe"],
  services: ["request", "reply"],
  actions: ["call", "execute"],
};
/** DDS topics per name per verb (an action is three services and two topics). */
const TOPICS_PER_NAME: Record<Kind, number> = { topics: 1, services: 2, actions: 8 };

interface NameTemplate {
  text: string;
  parts: Part[];
  literal: boolean;
}

interface Ros2Node {
  ns: NameTemplate;
  node: NameTemplate;
}

interface EnclaveDecl {
  /** "ros2.enclaves[i]" */
  label: string;
  line: number;
  path: NameTemplate;
  devices: DeviceSelector | "all";
  nodes: Ros2Node[];
  nodeDefaults: boolean;
}

interface Ros2Rule {
  /** Its name, or "ros2.rules[i]" when unnamed. */
  label: string;
  line: number;
  effect: "allow" | "deny";
  devices: DeviceSelector | "all";
  /** The enclave path templates (as written in ros2.enclaves) it applies to; undefined: all of the device's. */
  enclaves: ReadonlySet<string> | undefined;
  names: { kind: Kind; verb: Ros2Action; templates: NameTemplate[] }[];
}

export interface Ros2Section {
  enclaves: readonly EnclaveDecl[];
  rules: readonly Ros2Rule[];
}

const ENCLAVE_KEYS = ["path", "devices", "nodes", "node_defaults", "description"];
const NODE_KEYS = ["ns", "node"];
const RULE_KEYS = ["name", "description", "effect", "mode", "devices", "enclaves", "topics", "services", "actions"];

// ---------------------------------------------------------------------------------------------
// ROS 2 names: src/ros2/names.ts checks them (as the SROS2 policy reader does); here only what
// `policy test` asks about, a concrete fully qualified name.

/** A fully qualified name without wildcards, as `policy test` asks about it. */
export function ros2FullNameProblem(name: string): string | undefined {
  const problem = topicNameProblem(name);
  if (problem) return problem;
  if (!name.startsWith("/")) return 'must be fully qualified (start with "/")';
  if (/[*?]/.test(name)) return "contains a wildcard: ask about a name a node would use";
  return undefined;
}

/** The DDS topics one verb on one fully qualified name touches, as sros2's permissions.xsl writes them. */
export function ddsTopics(kind: Kind, verb: Ros2Action, fqn: string): { publish: string[]; subscribe: string[] } {
  const rq = (s: string) => `rq${fqn}${s}Request`;
  const rr = (s: string) => `rr${fqn}${s}Reply`;
  const actionRq = ["/_action/cancel_goal", "/_action/get_result", "/_action/send_goal"].map(rq);
  const actionRr = ["/_action/cancel_goal", "/_action/get_result", "/_action/send_goal"].map(rr);
  const actionRt = [`rt${fqn}/_action/feedback`, `rt${fqn}/_action/status`];
  switch (`${kind}:${verb}`) {
    case "topics:publish":
      return { publish: [`rt${fqn}`], subscribe: [] };
    case "topics:subscribe":
      return { publish: [], subscribe: [`rt${fqn}`] };
    case "services:request":
      return { publish: [rq("")], subscribe: [rr("")] };
    case "services:reply":
      return { publish: [rr("")], subscribe: [rq("")] };
    case "actions:call":
      return { publish: actionRq, subscribe: [...actionRr, ...actionRt] };
    case "actions:execute":
      return { publish: [...actionRr, ...actionRt], subscribe: actionRq };
    default:
      throw new Error(`no ${verb} for ${kind}`);
  }
}

const kindOf = (verb: Ros2Action): Kind =>
  verb === "publish" || verb === "subscribe" ? "topics" : verb === "request" || verb === "reply" ? "services" : "actions";

// ---------------------------------------------------------------------------------------------
// Parsing (called by the policy file's parser: problems go into the same list, with line and field).

/** Replaces each placeholder with `value` (parse-time checks use a plain token; deny widening uses "*"). */
const sample = (parts: Part[], value: string) => parts.map((p) => (typeof p === "string" ? p : value)).join("");

function template(
  ctx: PolicyParseContext,
  node: unknown,
  field: string,
  what: string,
  check: (s: string) => string | undefined,
): NameTemplate | undefined {
  const text = ctx.string(node, field, `${what} (a string)`);
  if (text === undefined) return undefined;
  const parts = splitPlaceholders(text, (m) => ctx.problem(node, field, m));
  if (!parts) return undefined;
  const problem = check(sample(parts, "x"));
  if (problem) {
    ctx.problem(node, field, `${what} "${text}": ${problem}`);
    return undefined;
  }
  return { text, parts, literal: parts.every((p) => typeof p === "string") };
}

function noPlaceholders(ctx: PolicyParseContext, node: unknown, field: string, text: string | undefined): void {
  if (text?.includes("${"))
    ctx.problem(node, field, "placeholders are only filled in enclave paths, node namespaces and names, and rule names");
}

/** `devices` as in MQTT rules, plus: no "${" where nothing is substituted (it would be taken literally). */
function devices(ctx: PolicyParseContext, pair: Pair<unknown, Node | null> | undefined, path: string, owner: unknown) {
  if (!pair) {
    ctx.problem(owner, path, "names no devices: add devices (all, or ids, groups, labels)");
    return undefined;
  }
  const sel = ctx.devices(pair.value, `${path}.devices`);
  if (sel && sel !== "all") {
    const values = [...(sel.ids ?? []), ...(sel.groups ?? []), ...(sel.labels ?? []).flatMap(([, v]) => v)];
    if (values.some((v) => v.includes("${"))) noPlaceholders(ctx, pair.value, `${path}.devices`, "${");
  }
  return sel;
}

function list(ctx: PolicyParseContext, node: unknown, field: string, max: number, what: string): unknown[] | undefined {
  if (!isSeq(node) || node.items.length === 0) {
    ctx.problem(node, field, `must be a non-empty list of ${what}`);
    return undefined;
  }
  if (node.items.length > max) {
    ctx.problem(node, field, `lists ${node.items.length} ${what}; at most ${max}`);
    return undefined;
  }
  return node.items;
}

export function parseRos2Section(node: unknown, ctx: PolicyParseContext): Ros2Section | undefined {
  if (!isMap(node)) {
    ctx.problem(node, "ros2", "must be a mapping with enclaves and rules");
    return undefined;
  }
  const top = ctx.entries(node.items, "ros2", ["enclaves", "rules"]);
  const enclaves: EnclaveDecl[] = [];
  const rules: Ros2Rule[] = [];
  // Every enclave path as written, also of enclaves with other problems: rules name them by it.
  const templates = new Map<string, number>();
  let ok = true;
  const enclavesPair = top.get("enclaves");
  if (!enclavesPair) {
    ctx.problem(node, "ros2.enclaves", "missing (the enclaves devices run, each with its nodes)");
    ok = false;
  } else {
    const items = list(ctx, enclavesPair.value, "ros2.enclaves", MAX_ROS2_ENCLAVES, "enclaves");
    if (!items) ok = false;
    items?.forEach((item, i) => {
      const e = enclave(ctx, item, i, templates);
      if (e) enclaves.push(e);
      else ok = false;
    });
  }
  const rulesPair = top.get("rules");
  if (rulesPair && !(isScalar(rulesPair.value) && rulesPair.value.value === null)) {
    const items = isSeq(rulesPair.value) ? rulesPair.value.items : undefined;
    if (!items) {
      ctx.problem(rulesPair.value, "ros2.rules", "must be a list of rules");
      ok = false;
    } else if (items.length > MAX_ROS2_RULES) {
      ctx.problem(rulesPair.value, "ros2.rules", `lists ${items.length} rules; at most ${MAX_ROS2_RULES}`);
      ok = false;
    } else
      items.forEach((item, i) => {
        const r = rule(ctx, item, i, templates);
        if (r) rules.push(r);
        else ok = false;
      });
  }
  if (!ok) return undefined;
  // An upper bound of each grant's size, whatever devices the registry holds: refused now, not when deriving.
  for (const e of enclaves) {
    // node_defaults: 4 absolute topics, and 6 private services each requested and replied (4 topics) per node.
    let bound = e.nodeDefaults ? 4 + 24 * e.nodes.length : 0;
    for (const r of rules) {
      if (r.enclaves && !r.enclaves.has(e.path.text)) continue;
      for (const n of r.names)
        for (const t of n.templates) bound += TOPICS_PER_NAME[n.kind] * (t.text.startsWith("/") ? 1 : e.nodes.length);
    }
    if (bound > MAX_GRANT_TOPICS) {
      ctx.problem(undefined, `${e.label}`, `the enclave's permissions could list ${bound} DDS topics; at most ${MAX_GRANT_TOPICS}`);
      return undefined;
    }
  }
  return { enclaves, rules };
}

function enclave(ctx: PolicyParseContext, node: unknown, index: number, templates: Map<string, number>): EnclaveDecl | undefined {
  const label = `ros2.enclaves[${index}]`;
  if (!isMap(node)) {
    ctx.problem(node, label, "must be a mapping (path, devices, nodes, node_defaults)");
    return undefined;
  }
  const e = ctx.entries(node.items, label, ENCLAVE_KEYS);
  let ok = true;
  const pathPair = e.get("path");
  let path: NameTemplate | undefined;
  if (!pathPair) ctx.problem(node, `${label}.path`, 'missing (the enclave path, e.g. "/${device}/base")');
  else path = template(ctx, pathPair.value, `${label}.path`, "enclave path", enclavePathProblem);
  if (path) {
    const seen = templates.get(path.text);
    if (seen !== undefined) {
      ctx.problem(pathPair!.value, `${label}.path`, `enclave path "${path.text}" is already declared on line ${seen}`);
      return undefined;
    }
    templates.set(path.text, ctx.lineOf(pathPair!.value));
  }
  const description = e.get("description");
  if (description) ctx.string(description.value, `${label}.description`);
  const sel = devices(ctx, e.get("devices"), label, node);
  const nodes: Ros2Node[] = [];
  const nodesPair = e.get("nodes");
  if (!nodesPair) {
    ctx.problem(node, `${label}.nodes`, "missing (the nodes the enclave runs: a list of { ns, node })");
    ok = false;
  } else {
    const items = list(ctx, nodesPair.value, `${label}.nodes`, MAX_ROS2_NODES, "nodes");
    if (!items) ok = false;
    items?.forEach((item, i) => {
      const field = `${label}.nodes[${i}]`;
      if (!isMap(item)) {
        ctx.problem(item, field, "must be a mapping { ns, node }");
        ok = false;
        return;
      }
      const n = ctx.entries(item.items, field, NODE_KEYS);
      const nsPair = n.get("ns");
      const namePair = n.get("node");
      if (!nsPair) ctx.problem(item, `${field}.ns`, 'missing (the node\'s namespace, e.g. "/" or "/${device}")');
      if (!namePair) ctx.problem(item, `${field}.node`, "missing (the node's name)");
      const ns = nsPair && template(ctx, nsPair.value, `${field}.ns`, "namespace", profileNamespaceProblem);
      const name = namePair && template(ctx, namePair.value, `${field}.node`, "node name", nodeNameProblem);
      if (ns && name && n.size === item.items.length) nodes.push({ ns, node: name });
      else ok = false;
    });
  }
  let nodeDefaults = true;
  const defaultsPair = e.get("node_defaults");
  if (defaultsPair) {
    const v = isScalar(defaultsPair.value) ? defaultsPair.value.value : undefined;
    if (typeof v === "boolean") nodeDefaults = v;
    else {
      ctx.problem(defaultsPair.value, `${label}.node_defaults`, "must be true or false");
      ok = false;
    }
  }
  if (!ok || !path || !sel || e.size !== node.items.length) return undefined;
  return { label, line: ctx.lineOf(node), path, devices: sel, nodes, nodeDefaults };
}

function rule(ctx: PolicyParseContext, node: unknown, index: number, templates: ReadonlyMap<string, number>): Ros2Rule | undefined {
  const path = `ros2.rules[${index}]`;
  if (!isMap(node)) {
    ctx.problem(node, path, "must be a mapping (name, effect, devices, enclaves, topics/services/actions)");
    return undefined;
  }
  const e = ctx.entries(node.items, path, RULE_KEYS);
  let ok = e.size === node.items.length;
  const namePair = e.get("name");
  const name = namePair ? ctx.string(namePair.value, `${path}.name`) : undefined;
  if (namePair && name === undefined) ok = false;
  noPlaceholders(ctx, namePair?.value, `${path}.name`, name);
  const description = e.get("description");
  if (description && ctx.string(description.value, `${path}.description`) === undefined) ok = false;
  let effect: Ros2Rule["effect"] = "allow";
  const effectPair = e.get("effect");
  if (effectPair) {
    const v = isScalar(effectPair.value) ? effectPair.value.value : undefined;
    if (v === "allow" || v === "deny") effect = v;
    else {
      ctx.problem(effectPair.value ?? effectPair.key, `${path}.effect`, "must be allow or deny");
      ok = false;
    }
  }
  const modePair = e.get("mode");
  if (modePair) {
    ctx.problem(
      modePair.key,
      `${path}.mode`,
      "ros2 rules have no audit mode: every DDS participant enforces its permissions.xml (docs/policy.md, ROS 2 and audit mode)",
    );
    ok = false;
  }
  const sel = devices(ctx, e.get("devices"), path, node);
  let enclaves: Set<string> | undefined;
  const enclavesPair = e.get("enclaves");
  if (enclavesPair) {
    const texts = ctx.strings(enclavesPair.value, `${path}.enclaves`);
    if (!texts) ok = false;
    for (const t of texts ?? [])
      if (!templates.has(t)) {
        ctx.problem(
          enclavesPair.value,
          `${path}.enclaves`,
          `"${t}" is not the path of an enclave in ros2.enclaves (give it as written there)`,
        );
        ok = false;
      }
    enclaves = new Set(texts ?? []);
  }
  const names: Ros2Rule["names"] = [];
  for (const kind of ["topics", "services", "actions"] as const) {
    const pair = e.get(kind);
    if (!pair) continue;
    const field = `${path}.${kind}`;
    const verbs = VERBS[kind];
    if (!isMap(pair.value)) {
      ctx.problem(pair.value ?? pair.key, field, `must be a mapping of ${verbs.join(" and/or ")} to lists of names`);
      ok = false;
      continue;
    }
    const m = ctx.entries(pair.value.items, field, verbs);
    if (m.size !== pair.value.items.length) ok = false;
    if (pair.value.items.length === 0) {
      ctx.problem(pair.value, field, `grants nothing: give ${verbs.join(" and/or ")}`);
      ok = false;
    }
    for (const verb of verbs) {
      const vp = m.get(verb);
      if (!vp) continue;
      const items = isSeq(vp.value) ? vp.value.items : [vp.value];
      if (items.length > MAX_ROS2_NAMES) {
        ctx.problem(vp.value, `${field}.${verb}`, `lists ${items.length} names; at most ${MAX_ROS2_NAMES}`);
        ok = false;
        continue;
      }
      if (items.length === 0) {
        ctx.problem(vp.value, `${field}.${verb}`, "must list at least one name");
        ok = false;
      }
      const ts: NameTemplate[] = [];
      items.forEach((item, i) => {
        const f = isSeq(vp.value) ? `${field}.${verb}[${i}]` : `${field}.${verb}`;
        const t = template(ctx, item, f, kind.slice(0, -1), topicNameProblem);
        if (t) ts.push(t);
        else ok = false;
      });
      names.push({ kind, verb, templates: ts });
    }
  }
  if (!e.has("topics") && !e.has("services") && !e.has("actions")) {
    ctx.problem(node, path, "grants nothing: add topics, services and/or actions");
    ok = false;
  }
  if (!ok || !sel) return undefined;
  return { label: name ?? path, line: ctx.lineOf(node), effect, devices: sel, enclaves, names };
}

// ---------------------------------------------------------------------------------------------
// Substitution per device.

type Filled = { ok: true; text: string } | { ok: false; why: string };

/** A value that may stand in a ROS 2 name: it must stay inside one level and add no wildcard. */
const ROS_VALUE = /^[A-Za-z0-9_]+$/;

/**
 * `${device}` in a ROS 2 name: the id with "-" and "." written as "_" (robot-0001 -> robot_0001), the
 * only characters of a device id ([a-z0-9][a-z0-9._-]*) that ROS 2 names do not take.
 */
export function ros2DeviceToken(id: string): string {
  return id.replace(/[-.]/g, "_");
}

/** The other registered devices whose ids are written like `id` in ROS 2 names (robot-1, robot_1, robot.1). */
export function ros2NameTwins(id: string, registered: readonly string[]): string[] {
  const token = ros2DeviceToken(id);
  return [...new Set(registered)].filter((other) => other !== id && ros2DeviceToken(other) === token).sort();
}

function fill(t: NameTemplate, id: DeviceIdentity, check: (s: string) => string | undefined, widen: boolean): Filled | undefined {
  if (t.literal) return { ok: true, text: t.text };
  let text = "";
  let unsafe: string | undefined;
  let device: string | undefined;
  for (const p of t.parts) {
    if (typeof p === "string") {
      text += p;
      continue;
    }
    // Own labels only: "constructor" would otherwise read Object.prototype's (a function).
    const label = p.kind === "label" && Object.hasOwn(id.labels, p.key) ? id.labels[p.key] : undefined;
    const v = p.kind === "device" ? (device = ros2DeviceToken(id.id)) : p.kind === "group" ? id.group : label;
    const what = p.kind === "device" ? "its id" : p.kind === "group" ? "its group" : `its label ${p.key}`;
    if (v === undefined || v === null) return undefined;
    if (!ROS_VALUE.test(v)) unsafe ??= `${what} ${JSON.stringify(v)} is not a ROS 2 name (A-Z a-z 0-9 _ only)`;
    text += v;
  }
  const problem = unsafe ?? check(text);
  if (!problem) return { ok: true, text };
  // A deny rule must not be switched off by a hostile value: every placeholder of the name becomes "*".
  if (widen) return { ok: true, text: sample(t.parts, "*") };
  if (unsafe) return { ok: false, why: unsafe };
  // Only the id can start a token with a digit here (labels and groups are checked as they are).
  if (device !== undefined && /^[0-9]/.test(device))
    return {
      ok: false,
      why:
        `its id "${id.id}" starts with a digit, which a ROS 2 name token may not (${t.text} becomes "${text}"): ` +
        `give the device a label (fleetpki device set ${id.id} --label ros_ns=r_${device}) and write \${label:ros_ns}`,
    };
  return { ok: false, why: `${t.text} becomes "${text}", which ${problem}` };
}

export interface DeviceEnclave {
  /** The enclave path for this device (the identity certificate's CN). */
  path: string;
  decl: EnclaveDecl;
  nodes: { ns: string; node: string }[];
}

export interface SkippedEnclave {
  template: string;
  reason: string;
}

function section(policy: AccessPolicy): Ros2Section {
  if (!policy.ros2) throw new InvalidArgument(`${policy.file} has no ros2 section (docs/policy.md, ROS 2)`);
  return policy.ros2;
}

const hasDevice = (t: NameTemplate) => t.parts.some((p) => typeof p !== "string" && p.kind === "device");

/** Whether the id goes into any name of this enclave: its path, its nodes, or a rule that may apply to it. */
function namesUseDevice(ros2: Ros2Section, decl: EnclaveDecl): boolean {
  if (hasDevice(decl.path) || decl.nodes.some((n) => hasDevice(n.ns) || hasDevice(n.node))) return true;
  return ros2.rules.some((r) => (!r.enclaves || r.enclaves.has(decl.path.text)) && r.names.some((n) => n.templates.some(hasDevice)));
}

/**
 * The enclaves the policy gives this device, and those it selects but cannot fill (a missing or
 * unusable value). `registered`: the ids of every registered device (the registry's list, which
 * leaves out removed devices only: a disabled or revoked one can come back). An enclave whose names
 * use the id is not given to a device whose id is written in ROS 2 names like another's (robot-1,
 * robot_1): neither may get names the other's permissions also grant.
 */
export function deviceEnclaves(
  policy: AccessPolicy,
  id: DeviceIdentity,
  registered: readonly string[],
): { enclaves: DeviceEnclave[]; skipped: SkippedEnclave[] } {
  const ros2 = section(policy);
  const enclaves: DeviceEnclave[] = [];
  const skipped: SkippedEnclave[] = [];
  const twins = ros2NameTwins(id.id, registered);
  for (const decl of ros2.enclaves) {
    if (!selectsDevice(decl.devices, id)) continue;
    if (twins.length > 0 && namesUseDevice(ros2, decl)) {
      skipped.push({
        template: decl.path.text,
        reason:
          `device ${id.id} and registered device${twins.length > 1 ? "s" : ""} ${twins.join(", ")} are both written ` +
          `${ros2DeviceToken(id.id)} in ROS 2 names, ` +
          "so neither is given an enclave whose names use ${device}; write ${label:KEY} with a distinct label in the enclave and its rules",
      });
      continue;
    }
    const reasons: string[] = [];
    const get = (t: NameTemplate, check: (s: string) => string | undefined): string | undefined => {
      const f = fill(t, id, check, false);
      if (f?.ok) return f.text;
      reasons.push(f ? f.why : `${t.text}: device ${id.id} has no value for its placeholder`);
      return undefined;
    };
    const path = get(decl.path, enclavePathProblem);
    const nodes = decl.nodes.map((n) => ({ ns: get(n.ns, profileNamespaceProblem), node: get(n.node, nodeNameProblem) }));
    if (path === undefined || reasons.length > 0) {
      skipped.push({ template: decl.path.text, reason: reasons[0]! });
      continue;
    }
    const seen = enclaves.find((e) => e.path === path);
    if (seen)
      throw new InvalidArgument(
        `device ${id.id}: enclaves "${seen.decl.path.text}" and "${decl.path.text}" are both ${path}: an enclave path names one identity`,
      );
    enclaves.push({ path, decl, nodes: nodes as { ns: string; node: string }[] });
  }
  return { enclaves, skipped };
}

/** Every (device, enclave) pair for these devices; two devices given one enclave path is an error (a path names one identity). */
export function fleetEnclaves(
  policy: AccessPolicy,
  ids: readonly DeviceIdentity[],
  registered: readonly string[],
): { pairs: { device: DeviceIdentity; enclave: DeviceEnclave }[]; skipped: (SkippedEnclave & { device: string })[] } {
  const pairs: { device: DeviceIdentity; enclave: DeviceEnclave }[] = [];
  const skipped: (SkippedEnclave & { device: string })[] = [];
  const owner = new Map<string, string>();
  for (const id of ids) {
    const d = deviceEnclaves(policy, id, registered);
    for (const s of d.skipped) skipped.push({ ...s, device: id.id });
    for (const e of d.enclaves) {
      const other = owner.get(e.path);
      if (other !== undefined)
        throw new InvalidArgument(
          `devices ${other} and ${id.id} are both given enclave ${e.path} ("${e.decl.path.text}"): ` +
            "an enclave path names one identity; put ${device} (or a per-device label) in it",
        );
      owner.set(e.path, id.id);
      pairs.push({ device: id, enclave: e });
    }
  }
  return { pairs, skipped };
}

// ---------------------------------------------------------------------------------------------
// Derivation and evaluation.

/** Where each derived ProfileRule came from: the fleet rule, or the node defaults. */
interface Origin {
  label: string;
  line: number;
  /** File order of its rule; the node defaults come after every rule. */
  order: number;
}

interface Entry {
  pattern: RegExp;
  topic: string;
  origin: Origin;
}

/** sros2's common/node.xml, with rosout absolute (rcl publishes /rosout whatever the node's namespace). */
function nodeDefaults(): ProfileRule[] {
  return [
    { kind: "topics", publish: "ALLOW", names: ["/rosout"] },
    { kind: "topics", publish: "ALLOW", subscribe: "ALLOW", names: ["/parameter_events"] },
    { kind: "topics", subscribe: "ALLOW", names: ["/clock"] },
    {
      kind: "services",
      reply: "ALLOW",
      request: "ALLOW",
      names: [
        "~/describe_parameters",
        "~/get_parameter_types",
        "~/get_parameters",
        "~/list_parameters",
        "~/set_parameters",
        "~/set_parameters_atomically",
      ],
    },
  ];
}

/** DDS's topic match (fnmatch with * and ?; * also matches "/"), as a regular expression. */
export function ddsPattern(pattern: string): RegExp {
  const body = [...pattern].map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[\\^$.|+()[\]{}]/g, "\\$&"))).join("");
  return new RegExp(`^${body}$`, "s");
}

export interface EnclaveGrant {
  device: string;
  enclave: string;
  policy: Sros2Policy;
  decide(action: Ros2Action, name: string): AccessDecision;
}

class CompiledEnclave implements EnclaveGrant {
  constructor(
    readonly device: string,
    readonly enclave: string,
    readonly policy: Sros2Policy,
    private readonly deny: { publish: Entry[]; subscribe: Entry[] },
    private readonly allow: { publish: Entry[]; subscribe: Entry[] },
    private readonly note: string,
  ) {}

  decide(action: Ros2Action, name: string): AccessDecision {
    const who = `device ${this.device} enclave ${this.enclave}`;
    const problem = ros2FullNameProblem(name);
    if (problem)
      return {
        allowed: false,
        outcome: "deny",
        rule: undefined,
        reason: `ros2 ${action} ${JSON.stringify(name)} refused: the name ${problem}`,
      };
    const ops = ddsTopics(kindOf(action), action, name);
    let defaulted: string | undefined;
    let allowedBy: Origin | undefined;
    for (const dir of ["publish", "subscribe"] as const)
      for (const topic of ops[dir]) {
        const d = first(this.deny[dir], topic);
        if (d)
          return {
            allowed: false,
            outcome: "deny",
            rule: d.label,
            reason: `${who}: ros2 ${action} ${name} denied (DDS ${dir} ${topic}) by rule "${d.label}" (line ${d.line})${this.note}`,
          };
        const a = first(this.allow[dir], topic);
        if (!a) defaulted ??= `${dir} ${topic}`;
        else allowedBy ??= a;
      }
    if (defaulted || !allowedBy)
      return {
        allowed: false,
        outcome: "deny",
        rule: undefined,
        reason: `${who}: ros2 ${action} ${name} denied: no rule allows DDS ${defaulted}${this.note}`,
      };
    const line = allowedBy.line > 0 ? ` (line ${allowedBy.line})` : "";
    return {
      allowed: true,
      outcome: "allow",
      rule: allowedBy.label,
      reason: `${who}: ros2 ${action} ${name} allowed by rule "${allowedBy.label}"${line}${this.note}`,
    };
  }
}

/** The first entry, in rule order, whose pattern matches. */
function first(entries: Entry[], topic: string): Origin | undefined {
  return entries.find((e) => e.pattern.test(topic))?.origin;
}

/**
 * This enclave of this device, derived: its SROS2 policy (one profile per node, DENY rules before
 * ALLOW rules; renderPermissions puts them in one deny_rule before one allow_rule) and the DDS
 * evaluation of the document rendered from it. InvalidArgument when the device has no such enclave.
 */
export function compileEnclave(policy: AccessPolicy, id: DeviceIdentity, enclavePath: string, registered: readonly string[]): EnclaveGrant {
  const ros2 = section(policy);
  const { enclaves, skipped } = deviceEnclaves(policy, id, registered);
  const enclave = enclaves.find((e) => e.path === enclavePath);
  if (!enclave) {
    const why = skipped.length > 0 ? `; skipped: ${skipped.map((s) => `${s.template} (${s.reason})`).join("; ")}` : "";
    const has = enclaves.length > 0 ? enclaves.map((e) => e.path).join(", ") : "none";
    throw new InvalidArgument(`the policy gives device ${id.id} no enclave ${enclavePath} (its enclaves: ${has}${why})`);
  }
  const origins = new Map<ProfileRule, Origin>();
  const perRule: { rule: Ros2Rule; order: number; names: { kind: Kind; verb: Ros2Action; names: string[] }[] }[] = [];
  ros2.rules.forEach((rule, order) => {
    if (!selectsDevice(rule.devices, id)) return;
    if (rule.enclaves && !rule.enclaves.has(enclave.decl.path.text)) return;
    const deny = rule.effect === "deny";
    const names: { kind: Kind; verb: Ros2Action; names: string[] }[] = [];
    for (const n of rule.names) {
      const filled: string[] = [];
      for (const t of n.templates) {
        const f = fill(t, id, topicNameProblem, deny);
        // Allow: an unfillable name takes the whole rule out. Deny: a missing value leaves only that name out.
        if (f?.ok) filled.push(f.text);
        else if (!deny) return;
      }
      if (filled.length > 0) names.push({ kind: n.kind, verb: n.verb, names: filled });
    }
    perRule.push({ rule, order, names });
  });
  // Deny rules first, in file order, then allow rules: the order DDS is given them in.
  perRule.sort((a, b) => Number(b.rule.effect === "deny") - Number(a.rule.effect === "deny") || a.order - b.order);
  const profiles: Profile[] = enclave.nodes.map(({ ns, node }) => {
    const rules: ProfileRule[] = [];
    for (const { rule, order, names } of perRule)
      for (const n of names) {
        const q: Qualifier = rule.effect === "deny" ? "DENY" : "ALLOW";
        const r = { kind: n.kind, [n.verb]: q, names: [...n.names] } as ProfileRule;
        origins.set(r, { label: rule.label, line: rule.line, order });
        rules.push(r);
      }
    if (enclave.decl.nodeDefaults)
      for (const r of nodeDefaults()) {
        origins.set(r, { label: `${enclave.decl.label}.node_defaults`, line: enclave.decl.line, order: Number.MAX_SAFE_INTEGER });
        rules.push(r);
      }
    return { ns, node, rules };
  });
  const sros2: Sros2Policy = { enclaves: [{ path: enclave.path, profileSets: [profiles] }] };
  // The evaluation reads the derived model itself, name by name as the renderer resolves it.
  const deny = { publish: [] as Entry[], subscribe: [] as Entry[] };
  const allow = { publish: [] as Entry[], subscribe: [] as Entry[] };
  for (const profile of profiles)
    for (const r of profile.rules) {
      const origin = origins.get(r)!;
      for (const verb of VERBS[r.kind]) {
        const q = (r as unknown as Record<string, Qualifier | undefined>)[verb];
        if (!q) continue;
        const into = q === "DENY" ? deny : allow;
        for (const name of r.names) {
          const topics = ddsTopics(r.kind, verb, resolveName(profile, name));
          for (const dir of ["publish", "subscribe"] as const)
            for (const topic of topics[dir]) into[dir].push({ topic, pattern: ddsPattern(topic), origin });
        }
      }
    }
  for (const lists of [deny, allow])
    for (const dir of ["publish", "subscribe"] as const) lists[dir].sort((a, b) => a.origin.order - b.origin.order);
  const note = policy.mode === "audit" ? " (enforced: DDS has no audit mode)" : "";
  return new CompiledEnclave(id.id, enclave.path, sros2, deny, allow, note);
}

/** The SROS2 policy of one enclave of one device (see compileEnclave). */
export function deriveEnclavePolicy(
  policy: AccessPolicy,
  id: DeviceIdentity,
  enclavePath: string,
  registered: readonly string[],
): Sros2Policy {
  return compileEnclave(policy, id, enclavePath, registered).policy;
}

/**
 * The SROS2 policy of every (device, enclave) pair of these devices, or of the one chosen, in device
 * order (`ros2 permissions --from-fleet-policy`): one document, one grant per pair. `skipped` lists
 * enclaves a device is selected for but cannot be given (a value that is missing or not a ROS 2 name,
 * an id written like another registered device's; `registered` as for deviceEnclaves).
 */
export function fleetSros2Policy(
  policy: AccessPolicy,
  ids: readonly DeviceIdentity[],
  registered: readonly string[],
  enclave?: string,
): { policy: Sros2Policy; skipped: (SkippedEnclave & { device: string })[] } {
  const { pairs, skipped } = fleetEnclaves(policy, ids, registered);
  const chosen = enclave === undefined ? pairs : pairs.filter((p) => p.enclave.path === enclave);
  if (chosen.length === 0) {
    const who = ids.length === 1 ? `device ${ids[0]!.id}` : `the ${ids.length} active devices`;
    const why = skipped.length > 0 ? ` (skipped: ${skipped.map((s) => `${s.device} ${s.template}: ${s.reason}`).join("; ")})` : "";
    throw new InvalidArgument(`the policy gives ${who} ${enclave === undefined ? "no enclave" : `no enclave ${enclave}`}${why}`);
  }
  return {
    policy: { enclaves: chosen.flatMap((p) => deriveEnclavePolicy(policy, p.device, p.enclave.path, registered).enclaves) },
    skipped,
  };
}
