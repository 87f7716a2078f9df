// DDS permissions.xml from an SROS2 policy: the same bytes as
// `xsltproc --xinclude --stringparam not_valid_before .. permissions.xsl policy.xml` (sros2's
// templates/dds/permissions.xsl), done in TypeScript. The stylesheet, step by step:
//  - one <grant name=PATH> per <profiles> of each enclave, subject CN=PATH, the validity parameters;
//  - a <deny_rule> if some rule of the grant has a DENY qualifier, then an <allow_rule> if some has
//    ALLOW, each listing, profile by profile and rule by rule, the blocks TranslatePermissions makes
//    (publish, subscribe, request, reply, call, execute, in that order), and an extra allow_rule for
//    ros_discovery_info when allow_ros_discovery_topic is set; <default>DENY</default>;
//  - "sort" mode: in each rule, all <publish> blocks become one whose <topics> blocks are sorted by
//    their FIRST topic (libxslt: byte order, stable) and concatenated; the same for <subscribe>;
//  - "prune" mode: a <topic> equal to any preceding sibling is dropped;
//  - output with indent="yes", no XML declaration: libxml2's 2-space indentation, trailing newline.
// DDS rule order matters (the first matching rule decides), which is why the order is kept exactly.
import type { Enclave, Profile, ProfileRule, Qualifier, Sros2Policy, PermissionsParameters } from "./policy-model.js";
import { InvalidArgument } from "../authority/errors.js";
import { UnknownEnclave } from "./errors.js";

export const SROS2_TEMPLATE_PARAMETERS: PermissionsParameters = {
  notBefore: "2020-05-01T00:00:00",
  notAfter: "2030-05-01T00:00:00",
  allowRosDiscoveryTopic: false,
  domainId: 0,
};

/** An output element: text content, or element children. */
interface Out {
  name: string;
  attrs?: string;
  text?: string;
  children?: Out[];
}

/** Name resolution of the stylesheet's "topic | service | action" template. */
export function resolveName(profile: Pick<Profile, "ns" | "node">, name: string): string {
  if (name.startsWith("/")) return name;
  const ns = profile.ns.endsWith("/") ? profile.ns : `${profile.ns}/`;
  if (name.startsWith("~")) return ns + profile.node + name.slice(1);
  return ns + name;
}

type Block = { mode: "publish" | "subscribe"; topics: string[] };

function translate(profile: Profile, rule: ProfileRule, q: Qualifier): Block[] {
  const fqns = rule.names.map((n) => resolveName(profile, n));
  const blocks: Block[] = [];
  const each = (f: (fqn: string) => string[]) => fqns.flatMap(f);
  const call = (fqn: string) => [
    `rq${fqn}/_action/cancel_goalRequest`,
    `rq${fqn}/_action/get_resultRequest`,
    `rq${fqn}/_action/send_goalRequest`,
  ];
  const exec = (fqn: string) => [
    `rr${fqn}/_action/cancel_goalReply`,
    `rr${fqn}/_action/get_resultReply`,
    `rr${fqn}/_action/send_goalReply`,
    `rt${fqn}/_action/feedback`,
    `rt${fqn}/_action/status`,
  ];
  if (rule.kind === "topics") {
    if (rule.publish === q) blocks.push({ mode: "publish", topics: each((f) => [`rt${f}`]) });
    if (rule.subscribe === q) blocks.push({ mode: "subscribe", topics: each((f) => [`rt${f}`]) });
  } else if (rule.kind === "services") {
    if (rule.request === q)
      blocks.push({ mode: "publish", topics: each((f) => [`rq${f}Request`]) }, { mode: "subscribe", topics: each((f) => [`rr${f}Reply`]) });
    if (rule.reply === q)
      blocks.push({ mode: "publish", topics: each((f) => [`rr${f}Reply`]) }, { mode: "subscribe", topics: each((f) => [`rq${f}Request`]) });
  } else {
    if (rule.call === q) blocks.push({ mode: "publish", topics: each(call) }, { mode: "subscribe", topics: each(exec) });
    if (rule.execute === q) blocks.push({ mode: "publish", topics: each(exec) }, { mode: "subscribe", topics: each(call) });
  }
  return blocks;
}

function hasQualifier(rule: ProfileRule, q: Qualifier): boolean {
  switch (rule.kind) {
    case "topics":
      return rule.publish === q || rule.subscribe === q;
    case "services":
      return rule.request === q || rule.reply === q;
    default:
      return rule.call === q || rule.execute === q;
  }
}

/** Byte order of the UTF-8 encodings, i.e. code point order (JS compares UTF-16 code units). */
function compareBytes(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x < 0xd800 && y < 0xd800) return x - y;
    return a.codePointAt(i)! - b.codePointAt(i)!;
  }
  return a.length - b.length;
}

/** The sort and prune modes for one mode's blocks: stable sort by first topic, concatenate, drop repeats. */
function merged(blocks: Block[]): Out {
  const sorted = blocks.map((b, i) => ({ b, i })).sort((x, y) => compareBytes(x.b.topics[0] ?? "", y.b.topics[0] ?? "") || x.i - y.i);
  const seen = new Set<string>();
  const topics: Out[] = [];
  for (const { b } of sorted)
    for (const t of b.topics) {
      if (seen.has(t)) continue;
      seen.add(t);
      topics.push({ name: "topic", text: t });
    }
  return { name: blocks[0]!.mode, children: [{ name: "topics", children: topics }] };
}

function ruleElement(name: "allow_rule" | "deny_rule", domainId: number, blocks: Block[]): Out {
  const children: Out[] = [{ name: "domains", children: [{ name: "id", text: String(domainId) }] }];
  const pub = blocks.filter((b) => b.mode === "publish");
  const sub = blocks.filter((b) => b.mode === "subscribe");
  if (pub.length > 0) children.push(merged(pub));
  if (sub.length > 0) children.push(merged(sub));
  return { name, children };
}

function grant(path: string, profiles: Profile[], p: PermissionsParameters): Out {
  const children: Out[] = [
    { name: "subject_name", text: `CN=${path}` },
    {
      name: "validity",
      children: [
        { name: "not_before", text: p.notBefore },
        { name: "not_after", text: p.notAfter },
      ],
    },
  ];
  for (const [q, name] of [
    ["DENY", "deny_rule"],
    ["ALLOW", "allow_rule"],
  ] as const) {
    if (!profiles.some((pr) => pr.rules.some((r) => hasQualifier(r, q)))) continue;
    const blocks = profiles.flatMap((pr) => pr.rules.flatMap((r) => translate(pr, r, q)));
    children.push(ruleElement(name, p.domainId, blocks));
  }
  if (p.allowRosDiscoveryTopic)
    children.push(
      ruleElement("allow_rule", p.domainId, [
        { mode: "publish", topics: ["ros_discovery_info"] },
        { mode: "subscribe", topics: ["ros_discovery_info"] },
      ]),
    );
  children.push({ name: "default", text: "DENY" });
  return { name: "grant", attrs: ` name="${escapeAttribute(path)}"`, children };
}

/** As libxml2 escapes text content: & < > and CR. */
function escapeText(s: string): string {
  return s.replace(/[&<>\r]/g, (c) => (c === "&" ? "&amp;" : c === "<" ? "&lt;" : c === ">" ? "&gt;" : "&#13;"));
}

/** As libxml2 escapes attribute values: & < > " and TAB, LF, CR as character references. */
function escapeAttribute(s: string): string {
  const map: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;" };
  return s.replace(/[&<>"\t\n\r]/g, (c) => map[c]!);
}

function serialize(el: Out, depth: number, out: string[]): void {
  const pad = "  ".repeat(depth);
  const open = `${pad}<${el.name}${el.attrs ?? ""}`;
  if (el.children && el.children.length > 0) {
    out.push(`${open}>\n`);
    for (const c of el.children) serialize(c, depth + 1, out);
    out.push(`${pad}</${el.name}>\n`);
  } else if (el.text) out.push(`${open}>${escapeText(el.text)}</${el.name}>\n`);
  else out.push(`${open}/>\n`);
}

/**
 * permissions.xml for every enclave of the policy (sros2's layout: all grants in one file), or for the
 * one named by `enclave` (what an enclave directory holds).
 */
export function renderPermissions(policy: Sros2Policy, params: PermissionsParameters, enclave?: string): string {
  let enclaves: Enclave[] = policy.enclaves;
  if (enclave !== undefined) {
    enclaves = enclaves.filter((e) => e.path === enclave);
    if (enclaves.length === 0)
      throw new UnknownEnclave(
        enclave,
        policy.enclaves.map((e) => e.path),
      );
  }
  if (!Number.isSafeInteger(params.domainId) || params.domainId < 0 || params.domainId > 232)
    throw new InvalidArgument(`DDS domain id ${params.domainId} is outside 0..232`);
  const grants = enclaves.flatMap((e) => e.profileSets.map((ps) => grant(e.path, ps, params)));
  const dds: Out = {
    name: "dds",
    attrs:
      ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"' +
      ' xsi:noNamespaceSchemaLocation="http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_permissions.xsd"',
    children: [{ name: "permissions", children: grants }],
  };
  const out: string[] = [];
  serialize(dds, 0, out);
  return out.join("");
}
