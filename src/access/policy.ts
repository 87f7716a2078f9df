// The access policy (<dir>/policy.yaml; schema and semantics in docs/policy.md): parsed and
// validated once, then compiled per identity into AccessGrants whose checks cost a few microseconds.
// Default deny; an explicit deny wins; audit mode (file-wide or per deny rule) turns denials into
// logged allows, for rolling a policy out.
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Node, type Pair } from "yaml";
import type { AccessDecision, AccessGrants, AccessIdentity, OperatorRole } from "./identity.js";
import { parseRos2Section, type Ros2Section } from "./ros2-policy.js";
import { filterCovers, filterMatches, filtersIntersect, MAX_TOPIC_BYTES, topicFilterProblem, topicNameProblem } from "./topics.js";

export const POLICY_VERSION = 1;
export type PolicyMode = "enforce" | "audit";

export interface PolicyProblem {
  /** 1-based; 0 when the problem concerns the whole file. */
  line: number;
  /** Where in the document, e.g. "rules[2].publish[0]"; "" for the whole file. */
  field: string;
  message: string;
}

/** A policy file that cannot be used. `line` and `field` are those of the first problem; `problems` lists all. */
export class PolicyError extends Error {
  readonly line: number;
  readonly field: string;
  constructor(
    readonly file: string,
    readonly problems: readonly PolicyProblem[],
  ) {
    const first = problems[0] ?? { line: 0, field: "", message: "invalid policy" };
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? "s" : ""})` : "";
    super(formatProblem(file, first) + more);
    this.name = "PolicyError";
    this.line = first.line;
    this.field = first.field;
  }
}

/** "policy.yaml line 7: rules[0].publish[1]: ..." */
export function formatProblem(file: string, p: PolicyProblem): string {
  return `${file}${p.line > 0 ? ` line ${p.line}` : ""}: ${p.field ? `${p.field}: ` : ""}${p.message}`;
}

export type Placeholder = { kind: "device" } | { kind: "group" } | { kind: "label"; key: string };
export type Part = string | Placeholder;

interface FilterTemplate {
  text: string;
  /** Levels, each a list of literal text and placeholders; literal-only templates are pre-split. */
  levels: Part[][];
  literal: readonly string[] | undefined;
}

export interface DeviceSelector {
  ids?: ReadonlySet<string>;
  groups?: ReadonlySet<string>;
  labels?: ReadonlyArray<readonly [string, readonly string[]]>;
}

interface Rule {
  /** Its name, or "rules[i]" (0-based) when unnamed. */
  label: string;
  line: number;
  effect: "allow" | "deny";
  /** A deny rule in audit mode: its denials are logged, not enforced. */
  audit: boolean;
  devices?: DeviceSelector | "all";
  services?: ReadonlySet<string> | "all";
  operators?: { roles?: ReadonlySet<OperatorRole>; names?: ReadonlySet<string> } | "all";
  publish: FilterTemplate[];
  subscribe: FilterTemplate[];
}

// Device label keys, as the registry accepts them (authority/devices.ts).
const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,62})$/;
// No "$" or "{" inside: a run of unclosed "${" is scanned once, not once per "${" (quadratic).
const PLACEHOLDER = /\$\{([^\${}]*)\}/g;
const ROLES: readonly OperatorRole[] = ["viewer", "operator", "admin"];
const RULE_KEYS = ["name", "description", "effect", "mode", "devices", "services", "operators", "publish", "subscribe"];
const TOP_KEYS = ["version", "mode", "rules", "ros2"];
/** A policy larger than this is refused before parsing (a runaway generator, not a policy). */
export const MAX_POLICY_BYTES = 1 << 20;

/**
 * Splits a template into literal text and placeholders (a label key may itself contain "/");
 * undefined (after reporting) when a "${" is not a known placeholder. Shared with the ros2 section.
 */
export function splitPlaceholders(text: string, problem: (m: string) => void): Part[] | undefined {
  let ok = true;
  const parts: Part[] = [];
  let last = 0;
  for (const m of text.matchAll(PLACEHOLDER)) {
    if (m.index! > last) parts.push(text.slice(last, m.index));
    const inner = m[1]!;
    if (inner === "device") parts.push({ kind: "device" });
    else if (inner === "group") parts.push({ kind: "group" });
    else if (inner.startsWith("label:") && LABEL_KEY.test(inner.slice(6))) parts.push({ kind: "label", key: inner.slice(6) });
    else {
      problem(`unknown placeholder "\${${inner}}" (use \${device}, \${group} or \${label:KEY})`);
      ok = false;
    }
    last = m.index! + m[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  if (!ok) return undefined;
  const rest = parts.filter((p): p is string => typeof p === "string").join("");
  if (rest.includes("${")) {
    problem(`"\${" that does not start a placeholder (use \${device}, \${group} or \${label:KEY})`);
    return undefined;
  }
  return parts;
}

/** Parses a filter template: MQTT syntax checked with each placeholder standing for a plain value. */
function parseTemplate(text: string, problem: (m: string) => void): FilterTemplate | undefined {
  const levels: Part[][] = [];
  const parts = splitPlaceholders(text, problem);
  if (!parts) return undefined;
  const sample = parts.map((p) => (typeof p === "string" ? p : "x")).join("");
  const syntax = topicFilterProblem(sample);
  if (syntax) {
    problem(`topic filter "${text}": ${syntax}`);
    return undefined;
  }
  let level: Part[] = [];
  for (const p of parts) {
    if (typeof p !== "string") {
      level.push(p);
      continue;
    }
    const pieces = p.split("/");
    pieces.forEach((piece, i) => {
      if (i > 0) {
        levels.push(level);
        level = [];
      }
      if (piece !== "") level.push(piece);
    });
  }
  levels.push(level);
  const placeholders = parts.some((p) => typeof p !== "string");
  return { text, levels, literal: placeholders ? undefined : text.split("/") };
}

/** A value that may stand in a topic level: never one that changes the filter's shape or reaches "$" topics. */
function safeValue(v: string | null | undefined): "missing" | "unsafe" | string {
  if (v === undefined || v === null) return "missing";
  if (v === "" || v.startsWith("$") || /[/+#\0]/.test(v) || Buffer.byteLength(v, "utf8") > MAX_TOPIC_BYTES) return "unsafe";
  return v;
}

/**
 * The template's levels for this identity; undefined when it has none (a value is missing, or
 * unsafe in an allow rule). In a deny rule an unsafe value makes its level "+":
 * a hostile label must not let a device slip past a deny written for it.
 */
function instantiate(t: FilterTemplate, id: AccessIdentity, effect: Rule["effect"]): string[] | undefined {
  if (t.literal) return t.literal as string[];
  const out: string[] = [];
  for (const level of t.levels) {
    let text = "";
    let widen = false;
    for (const p of level) {
      if (typeof p === "string") {
        text += p;
        continue;
      }
      if (id.kind !== "device") return undefined;
      // Own labels only: "constructor" would otherwise read Object.prototype's (a function).
      const label = p.kind === "label" && Object.hasOwn(id.labels, p.key) ? id.labels[p.key] : undefined;
      const v = safeValue(p.kind === "device" ? id.id : p.kind === "group" ? id.group : label);
      if (v === "missing") return undefined;
      if (v === "unsafe") {
        if (effect === "allow") return undefined;
        widen = true;
      } else text += v;
    }
    out.push(widen ? "+" : text);
  }
  if (Buffer.byteLength(out.join("/"), "utf8") > MAX_TOPIC_BYTES) return effect === "allow" ? undefined : out.map(() => "+");
  return out;
}

/** Does a rule's `devices` selector take this device? (Shared with the ros2 section.) */
export function selectsDevice(d: DeviceSelector | "all" | undefined, id: AccessIdentity & { kind: "device" }): boolean {
  if (!d) return false;
  if (d === "all") return true;
  if (d.ids && !d.ids.has(id.id)) return false;
  if (d.groups && (id.group === null || !d.groups.has(id.group))) return false;
  if (d.labels && !d.labels.every(([k, values]) => Object.hasOwn(id.labels, k) && values.includes(id.labels[k]!))) return false;
  return true;
}

function selects(rule: Rule, id: AccessIdentity): boolean {
  switch (id.kind) {
    case "device":
      return selectsDevice(rule.devices, id);
    case "service":
      return rule.services === "all" || (rule.services?.has(id.name) ?? false);
    case "operator": {
      const o = rule.operators;
      if (!o) return false;
      if (o === "all") return true;
      return (!o.roles || (id.role !== null && o.roles.has(id.role))) && (!o.names || o.names.has(id.name));
    }
  }
}

interface Compiled {
  levels: string[];
  rule: Rule;
}

function describe(id: AccessIdentity): string {
  return id.kind === "device"
    ? `device ${id.id}`
    : id.kind === "service"
      ? `service ${id.name}`
      : `operator ${id.name} (${id.role ?? "no role"})`;
}

class CompiledGrants implements AccessGrants {
  constructor(
    private readonly who: string,
    private readonly fileAudit: boolean,
    private readonly pubAllow: Compiled[],
    private readonly pubDeny: Compiled[],
    private readonly subAllow: Compiled[],
    private readonly subDeny: Compiled[],
  ) {}

  publish(topic: string): AccessDecision {
    const problem = topicNameProblem(topic);
    if (problem) return invalid("publish", topic, problem);
    return this.decide("publish", topic, topic.split("/"), this.pubAllow, this.pubDeny, filterMatches, filterMatches);
  }

  receive(topic: string): AccessDecision {
    const problem = topicNameProblem(topic);
    if (problem) return invalid("receive", topic, problem);
    return this.decide("receive", topic, topic.split("/"), this.subAllow, this.subDeny, filterMatches, filterMatches);
  }

  subscribe(filter: string): AccessDecision {
    const problem = topicFilterProblem(filter);
    if (problem) return invalid("subscribe", filter, problem);
    return this.decide("subscribe", filter, filter.split("/"), this.subAllow, this.subDeny, filterCovers, filtersIntersect);
  }

  private decide(
    action: string,
    topic: string,
    levels: string[],
    allows: Compiled[],
    denies: Compiled[],
    grants: (rule: readonly string[], asked: readonly string[]) => boolean,
    hits: (rule: readonly string[], asked: readonly string[]) => boolean,
  ): AccessDecision {
    let auditDeny: Rule | undefined;
    for (const d of denies) {
      if (!hits(d.levels, levels)) continue;
      if (!d.rule.audit && !this.fileAudit) return decision(false, "deny", d.rule, `${this.who}: ${action} ${shown(topic)} denied`);
      auditDeny ??= d.rule;
    }
    let allow: Rule | undefined;
    for (const a of allows)
      if (grants(a.levels, levels)) {
        allow = a.rule;
        break;
      }
    // An audited deny rule names itself when it is what would refuse the request.
    if (auditDeny && (allow || this.fileAudit))
      return decision(true, "audit-deny", auditDeny, `${this.who}: ${action} ${shown(topic)} would be denied (audit mode)`);
    if (!allow) {
      if (this.fileAudit)
        return decision(
          true,
          "audit-deny",
          undefined,
          `${this.who}: ${action} ${shown(topic)} would be denied: no rule allows it (audit mode)`,
        );
      return {
        allowed: false,
        outcome: "deny",
        rule: undefined,
        reason: `${this.who}: ${action} ${shown(topic)} denied: no rule allows it`,
      };
    }
    return decision(true, "allow", allow, `${this.who}: ${action} ${shown(topic)} allowed`);
  }
}

/** A topic as it appears in a reason: quoted and escaped (MQTT allows control characters; a log line must stay one line), cut at 200. */
function shown(topic: string): string {
  return JSON.stringify(topic.length > 200 ? `${topic.slice(0, 200)}...` : topic);
}

function decision(allowed: boolean, outcome: AccessDecision["outcome"], rule: Rule | undefined, text: string): AccessDecision {
  return { allowed, outcome, rule: rule?.label, reason: rule ? `${text} by rule "${rule.label}" (line ${rule.line})` : text };
}

/** Malformed requests are refused even in audit mode: the broker could not carry them out anyway. */
function invalid(action: string, topic: string, problem: string): AccessDecision {
  return { allowed: false, outcome: "deny", rule: undefined, reason: `${action} ${shown(topic)} refused: the topic ${problem}` };
}

export class AccessPolicy {
  private constructor(
    readonly file: string,
    readonly mode: PolicyMode,
    private readonly rules: readonly Rule[],
    /** The `ros2` section (src/access/ros2-policy.ts), when the file has one. */
    readonly ros2: Ros2Section | undefined,
  ) {}

  get ruleCount(): number {
    return this.rules.length;
  }

  /** Validates the whole file; throws a PolicyError listing every problem, each with its line and field. */
  static parse(text: string, file: string): AccessPolicy {
    const { mode, rules, ros2 } = new Parser(text, file).run();
    return new AccessPolicy(file, mode, rules, ros2);
  }

  /** This identity's grants, substitutions done: compile once per identity and policy, check per message. */
  grantsFor(id: AccessIdentity): AccessGrants {
    const lists = { pubAllow: [] as Compiled[], pubDeny: [] as Compiled[], subAllow: [] as Compiled[], subDeny: [] as Compiled[] };
    for (const rule of this.rules) {
      if (!selects(rule, id)) continue;
      const pub: Compiled[] = [];
      const sub: Compiled[] = [];
      let applies = true;
      for (const [templates, into] of [
        [rule.publish, pub],
        [rule.subscribe, sub],
      ] as const)
        for (const t of templates) {
          const levels = instantiate(t, id, rule.effect);
          if (levels) into.push({ levels, rule });
          else if (rule.effect === "allow") applies = false;
        }
      // A placeholder that cannot be filled takes a whole allow rule out; in a deny rule only that
      // filter, so that a missing label (or a service named beside devices) cannot switch off the rest.
      if (!applies) continue;
      if (rule.effect === "allow") (lists.pubAllow.push(...pub), lists.subAllow.push(...sub));
      else (lists.pubDeny.push(...pub), lists.subDeny.push(...sub));
    }
    return new CompiledGrants(describe(id), this.mode === "audit", lists.pubAllow, lists.pubDeny, lists.subAllow, lists.subDeny);
  }

  /**
   * The topic filters this policy's rules name for the identity, placeholders filled (for a dry run
   * of a replacement: what to ask both policies). Filters a placeholder cannot fill are left out.
   */
  namedFilters(id: AccessIdentity): { publish: string[]; subscribe: string[] } {
    const publish = new Set<string>();
    const subscribe = new Set<string>();
    for (const rule of this.rules) {
      if (!selects(rule, id)) continue;
      for (const [templates, into] of [
        [rule.publish, publish],
        [rule.subscribe, subscribe],
      ] as const)
        for (const t of templates) {
          const levels = instantiate(t, id, "allow");
          if (levels) into.add(levels.join("/"));
        }
    }
    return { publish: [...publish], subscribe: [...subscribe] };
  }
}

export interface PolicyParseContext {
  problem(node: unknown, field: string, message: string): void;
  lineOf(node: unknown): number;
  entries(items: readonly Pair[], path: string, known: readonly string[]): Map<string, Pair<unknown, Node | null>>;
  string(node: unknown, field: string, what?: string): string | undefined;
  strings(node: unknown, field: string): string[] | undefined;
  devices(node: unknown, path: string): DeviceSelector | "all" | undefined;
}

/** Walks the YAML tree (not its JS value) so that every problem can name its line. */
class Parser {
  private readonly lines = new LineCounter();
  private readonly problems: PolicyProblem[] = [];
  /** Unknown keys seen so far: a misspelt "publish" should not also be reported as "grants nothing". */
  private unknownKeys = 0;

  constructor(
    private readonly text: string,
    private readonly file: string,
  ) {}

  private lineOf(node: unknown): number {
    const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
    return range ? this.lines.linePos(range[0]).line : 0;
  }

  private problem(node: unknown, field: string, message: string): void {
    this.problems.push({ line: this.lineOf(node), field, message });
  }

  /** The helpers the ros2 section's parser shares, so that its problems read and sort like these. */
  private context(): PolicyParseContext {
    return {
      problem: (node, field, message) => this.problem(node, field, message),
      lineOf: (node) => this.lineOf(node),
      entries: (items, path, known) => this.entries(items, path, known),
      string: (node, field, what) => this.string(node, field, what),
      strings: (node, field) => this.strings(node, field),
      devices: (node, path) => this.devices(node, path),
    };
  }

  run(): { mode: PolicyMode; rules: Rule[]; ros2: Ros2Section | undefined } {
    if (Buffer.byteLength(this.text, "utf8") > MAX_POLICY_BYTES)
      throw new PolicyError(this.file, [{ line: 0, field: "", message: `larger than ${MAX_POLICY_BYTES} bytes` }]);
    const doc = parseDocument(this.text, { lineCounter: this.lines, prettyErrors: false, uniqueKeys: true });
    if (doc.errors.length > 0)
      throw new PolicyError(
        this.file,
        doc.errors.map((e) => ({
          line: this.lines.linePos(e.pos[0]).line,
          field: "",
          message: `not valid YAML: ${e.message.split("\n")[0]}`,
        })),
      );
    const root = doc.contents;
    if (!isMap(root)) {
      this.problem(root, "", "expected a mapping with version, mode and rules");
      throw new PolicyError(this.file, this.problems);
    }
    const top = this.entries(root.items, "", TOP_KEYS);
    const version = top.get("version");
    if (!version) this.problem(root, "version", `missing (add "version: ${POLICY_VERSION}")`);
    else if (!isScalar(version.value) || version.value.value !== POLICY_VERSION)
      this.problem(version.value ?? version.key, "version", `must be ${POLICY_VERSION}`);
    const mode = this.mode(top.get("mode"), "mode") ?? "enforce";
    const rulesPair = top.get("rules");
    const rules: Rule[] = [];
    if (!rulesPair) this.problem(root, "rules", "missing (a list of rules; an empty list denies everything)");
    else if (rulesPair.value === null || (isScalar(rulesPair.value) && rulesPair.value.value === null)) {
      // "rules:" with nothing under it: no rules, everything denied
    } else if (!isSeq(rulesPair.value)) this.problem(rulesPair.value, "rules", "must be a list of rules");
    else
      rulesPair.value.items.forEach((item, i) => {
        const rule = this.rule(item, i);
        if (rule) rules.push(rule);
      });
    const ros2Pair = top.get("ros2");
    const ros2 = ros2Pair ? parseRos2Section(ros2Pair.value, this.context()) : undefined;
    const names = new Map<string, number>();
    // One name space for MQTT and ros2 rules: a decision's rule name must say which rule it was.
    for (const r of [...rules, ...(ros2?.rules ?? [])]) {
      const seen = names.get(r.label);
      if (seen !== undefined)
        this.problems.push({ line: r.line, field: `${r.label}.name`, message: `rule name "${r.label}" is already used on line ${seen}` });
      else names.set(r.label, r.line);
    }
    if (this.problems.length > 0)
      throw new PolicyError(
        this.file,
        this.problems.sort((a, b) => a.line - b.line),
      );
    return { mode, rules, ros2 };
  }

  /** The pairs of a mapping by key; unknown or non-string keys are problems. */
  private entries(items: readonly Pair[], path: string, known: readonly string[]): Map<string, Pair<unknown, Node | null>> {
    const out = new Map<string, Pair<unknown, Node | null>>();
    for (const pair of items as Pair<unknown, Node | null>[]) {
      const key = isScalar(pair.key) ? pair.key.value : undefined;
      const field = path ? `${path}.${String(key)}` : String(key);
      if (typeof key !== "string") this.problem(pair.key, path || "", `keys must be plain names, not ${String(key)}`);
      else if (!known.includes(key)) {
        this.problem(pair.key, field, `unknown key "${key}" (known: ${known.join(", ")})`);
        this.unknownKeys++;
      } else if (isAlias(pair.value)) this.problem(pair.value, field, "YAML aliases are not supported in a policy");
      else out.set(key, pair);
    }
    return out;
  }

  private mode(pair: Pair<unknown, Node | null> | undefined, field: string): PolicyMode | undefined {
    if (!pair) return undefined;
    const v = isScalar(pair.value) ? pair.value.value : undefined;
    if (v === "enforce" || v === "audit") return v;
    this.problem(pair.value ?? pair.key, field, "must be enforce or audit");
    return undefined;
  }

  private string(node: unknown, field: string, what = "a string"): string | undefined {
    if (isScalar(node) && typeof node.value === "string" && node.value !== "") return node.value;
    this.problem(node, field, `must be ${what}${isScalar(node) && typeof node.value === "number" ? " (quote it)" : ""}`);
    return undefined;
  }

  /** A string or a list of strings. */
  private strings(node: unknown, field: string): string[] | undefined {
    if (isScalar(node)) {
      const s = this.string(node, field);
      return s === undefined ? undefined : [s];
    }
    if (!isSeq(node) || node.items.length === 0) {
      this.problem(node, field, "must be a string or a non-empty list of strings");
      return undefined;
    }
    const out: string[] = [];
    let ok = true;
    node.items.forEach((item, i) => {
      const s = this.string(item, `${field}[${i}]`);
      if (s === undefined) ok = false;
      else out.push(s);
    });
    return ok ? out : undefined;
  }

  private isAll(node: unknown): boolean {
    return isScalar(node) && (node.value === "all" || node.value === "*");
  }

  private rule(node: unknown, index: number): Rule | undefined {
    const path = `rules[${index}]`;
    if (!isMap(node)) {
      this.problem(node, path, "must be a mapping (name, effect, devices/services/operators, publish/subscribe)");
      return undefined;
    }
    const before = this.problems.length;
    const unknownBefore = this.unknownKeys;
    const e = this.entries(node.items, path, RULE_KEYS);
    const misspelt = this.unknownKeys > unknownBefore;
    const namePair = e.get("name");
    const name = namePair ? this.string(namePair.value, `${path}.name`) : undefined;
    const label = name ?? path;
    const effectPair = e.get("effect");
    let effect: Rule["effect"] = "allow";
    if (effectPair) {
      const v = isScalar(effectPair.value) ? effectPair.value.value : undefined;
      if (v === "allow" || v === "deny") effect = v;
      else this.problem(effectPair.value ?? effectPair.key, `${path}.effect`, "must be allow or deny");
    }
    const description = e.get("description");
    if (description) this.string(description.value, `${path}.description`);
    const modePair = e.get("mode");
    const mode = this.mode(modePair, `${path}.mode`);
    if (mode === "audit" && effect === "allow")
      this.problem(
        modePair!.value,
        `${path}.mode`,
        "audit applies to deny rules only (set mode: audit at the top of the file to audit the default deny)",
      );

    const devicesPair = e.get("devices");
    const servicesPair = e.get("services");
    const operatorsPair = e.get("operators");
    const devices = devicesPair ? this.devices(devicesPair.value, `${path}.devices`) : undefined;
    const services = servicesPair ? this.services(servicesPair.value, `${path}.services`) : undefined;
    const operators = operatorsPair ? this.operators(operatorsPair.value, `${path}.operators`) : undefined;
    if (!devicesPair && !servicesPair && !operatorsPair && !misspelt)
      this.problem(node, path, "names no subject: add devices, services or operators");

    const publish: FilterTemplate[] = [];
    const subscribe: FilterTemplate[] = [];
    for (const [key, into] of [
      ["publish", publish],
      ["subscribe", subscribe],
    ] as const) {
      const pair = e.get(key);
      if (!pair) continue;
      const field = `${path}.${key}`;
      const items = isSeq(pair.value) ? pair.value.items : [pair.value];
      if (items.length === 0) this.problem(pair.value, field, "must list at least one topic filter");
      items.forEach((item, i) => {
        const f = isSeq(pair.value) ? `${field}[${i}]` : field;
        const text = this.string(item, f, "a topic filter (a string; quote one that starts with # or contains {)");
        if (text === undefined) return;
        const t = parseTemplate(text, (m) => this.problem(item, f, m));
        if (t) into.push(t);
      });
    }
    if (!e.has("publish") && !e.has("subscribe") && !misspelt) this.problem(node, path, "grants nothing: add publish and/or subscribe");
    const usesDevice = [...publish, ...subscribe].some((t) => !t.literal);
    if (usesDevice && !devicesPair)
      this.problem(node, path, "uses ${device}, ${group} or ${label:...}, which only devices have, but names no devices");
    if (this.problems.length > before) return undefined;
    return {
      label,
      line: this.lineOf(node),
      effect,
      audit: mode === "audit",
      ...(devices ? { devices } : {}),
      ...(services ? { services } : {}),
      ...(operators ? { operators } : {}),
      publish,
      subscribe,
    };
  }

  private devices(node: unknown, path: string): Rule["devices"] {
    if (this.isAll(node)) return "all";
    if (!isMap(node)) {
      this.problem(node, path, "must be all, or a mapping with ids, groups and/or labels");
      return undefined;
    }
    const e = this.entries(node.items, path, ["ids", "groups", "labels"]);
    const out: DeviceSelector = {};
    const ids = e.get("ids");
    if (ids) out.ids = new Set(this.strings(ids.value, `${path}.ids`) ?? []);
    const groups = e.get("groups");
    if (groups) out.groups = new Set(this.strings(groups.value, `${path}.groups`) ?? []);
    const labels = e.get("labels");
    if (labels) {
      if (!isMap(labels.value) || labels.value.items.length === 0)
        this.problem(labels.value ?? labels.key, `${path}.labels`, "must be a mapping of label keys to a value or a list of values");
      else {
        const list: [string, string[]][] = [];
        for (const pair of labels.value.items as Pair<unknown, Node | null>[]) {
          const key = isScalar(pair.key) ? pair.key.value : undefined;
          if (typeof key !== "string" || !LABEL_KEY.test(key)) {
            this.problem(pair.key, `${path}.labels`, `invalid label key "${String(key)}" (1-63 characters a-z 0-9 . _ / -)`);
            continue;
          }
          const values = this.strings(pair.value, `${path}.labels.${key}`);
          if (values) list.push([key, values]);
        }
        out.labels = list;
      }
    }
    if (e.size === 0) this.problem(node, path, "selects nothing: give ids, groups or labels (or write devices: all)");
    return out;
  }

  private services(node: unknown, path: string): Rule["services"] {
    if (this.isAll(node)) return "all";
    const names = this.strings(node, path);
    if (!names) return undefined;
    return names.includes("*") ? "all" : new Set(names);
  }

  private operators(node: unknown, path: string): Rule["operators"] {
    if (this.isAll(node)) return "all";
    if (!isMap(node)) {
      this.problem(node, path, "must be all, or a mapping with roles and/or names");
      return undefined;
    }
    const e = this.entries(node.items, path, ["roles", "names"]);
    const out: { roles?: Set<OperatorRole>; names?: Set<string> } = {};
    const roles = e.get("roles");
    if (roles) {
      const list = this.strings(roles.value, `${path}.roles`) ?? [];
      const bad = list.find((r) => !(ROLES as readonly string[]).includes(r));
      if (bad) this.problem(roles.value, `${path}.roles`, `unknown role "${bad}" (roles: ${ROLES.join(", ")})`);
      out.roles = new Set(list as OperatorRole[]);
    }
    const names = e.get("names");
    if (names) out.names = new Set(this.strings(names.value, `${path}.names`) ?? []);
    if (e.size === 0) this.problem(node, path, "selects nothing: give roles or names (or write operators: all)");
    return out;
  }
}
