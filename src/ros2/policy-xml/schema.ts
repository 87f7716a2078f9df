// sros2's policy.xsd (version 0.2.0) as an explicit validator. There is no maintained pure-JS XML
// Schema validator (xmllint's libxml2 would be a native dependency or a subprocess), and this schema
// is small: test/ros2-policy-input.test.ts holds that every fixture is judged as
// `xmllint --noout --xinclude --schema policy.xsd` judges it. What the schema says, in order:
//   policy[@version fixed "0.2.0"] > enclaves (1) > enclave[@path] (1..n) > profiles[@type?] (1..n) >
//   profile[@ns,@node,@xml:base?] (1..n) then metadata (0..1, xs:anyType: anything, validated laxly)
//   profile > (topics|services|actions)[@xml:base?] (0..n), each with its two optional qualifiers
//   (ALLOW|DENY) and 1..n topic|service|action of type xs:string (text only, no attributes).
// Elements are in no namespace (no targetNamespace); whitespace between elements is ignorable,
// other text is not. xsi:schemaLocation hints are ignored as libxml2 does; xsi:type and xsi:nil
// are refused (nothing in an SROS2 policy needs them). Stricter than the schema on purpose: names
// (src/ros2/names.ts) and an xml:base of "ALLOW"/"DENY" on a rule (see rule()).
import type { Enclave, Profile, ProfileRule, Qualifier, Sros2Policy } from "../policy-model.js";
import { Sros2PolicyError } from "../errors.js";
import { enclavePathProblem, nodeNameProblem, profileNamespaceProblem, topicNameProblem } from "../names.js";
import { XML_NS, type XAttr, type XElement } from "./tree.js";

const XSI_NS = "http://www.w3.org/2001/XMLSchema-instance";

function fail(el: { file: string; line?: number }, why: string): never {
  throw new Sros2PolicyError(why, el.file, el.line);
}

const show = (s: string) => JSON.stringify(s.length > 60 ? `${s.slice(0, 57)}...` : s);

function elementName(el: XElement): string {
  return el.ns === null ? `<${el.local}>` : `<${el.qname}> (namespace ${el.ns})`;
}

const isWhite = (s: string) => /^[ \t\r\n]*$/.test(s);

/** Element-only content: the element children, after refusing non-whitespace text. */
function elementChildren(el: XElement): XElement[] {
  const out: XElement[] = [];
  for (const c of el.children) {
    if (c.kind === "element") out.push(c);
    else if (!isWhite(c.text)) fail(c.line === undefined ? el : c, `text ${show(c.text.trim())} is not allowed inside <${el.local}>`);
  }
  return out;
}

function isXsiHint(a: XAttr): boolean {
  return a.ns === XSI_NS && (a.local === "schemaLocation" || a.local === "noNamespaceSchemaLocation");
}

/** Checks the attributes: `allowed` are unqualified names; xml:base where the schema references it. */
function attributes(el: XElement, allowed: readonly string[], required: readonly string[], xmlBase: boolean): Map<string, string> {
  const values = new Map<string, string>();
  for (const a of el.attrs) {
    if (a.ns === null && allowed.includes(a.local)) values.set(a.local, a.value);
    else if (xmlBase && a.ns === XML_NS && a.local === "base") continue;
    else if (isXsiHint(a)) continue;
    else if (a.ns === XML_NS && a.local === "base")
      fail(
        el,
        `attribute xml:base is not allowed on <${el.local}>` +
          " (an xi:include from another directory adds it; include this element from a file in the same directory)",
      );
    else fail(el, `attribute ${a.qname} is not allowed on <${el.local}>` + (allowed.length ? ` (allowed: ${allowed.join(", ")})` : ""));
  }
  for (const r of required) if (!values.has(r)) fail(el, `<${el.local}> needs the attribute ${r}`);
  return values;
}

function expect(el: XElement | undefined, parent: XElement, name: string): XElement {
  if (!el) fail(parent, `<${parent.local}> is missing its <${name}> element`);
  if (el.ns !== null || el.local !== name) fail(el, `element ${elementName(el)} is not expected here; expected <${name}>`);
  return el;
}

function qualifier(el: XElement, values: Map<string, string>, name: string): Qualifier | undefined {
  const v = values.get(name);
  if (v === undefined) return undefined;
  if (v !== "ALLOW" && v !== "DENY") fail(el, `<${el.local} ${name}=${show(v)}>: the qualifier must be ALLOW or DENY`);
  return v;
}

export function validatePolicy(root: XElement): Sros2Policy {
  if (root.ns !== null || root.local !== "policy")
    fail(root, `the root element is ${elementName(root)}; an SROS2 policy starts with <policy>`);
  return policy(root);
}

function policy(el: XElement): Sros2Policy {
  const attrs = attributes(el, ["version"], ["version"], false);
  if (attrs.get("version") !== "0.2.0")
    fail(el, `<policy version=${show(attrs.get("version")!)}> is not supported; the SROS2 policy format version is "0.2.0"`);
  const kids = elementChildren(el);
  const enclaves = expect(kids[0], el, "enclaves");
  if (kids.length > 1) fail(kids[1]!, `element ${elementName(kids[1]!)} is not expected after <enclaves>`);
  attributes(enclaves, [], [], false);
  const list = elementChildren(enclaves);
  if (list.length === 0) fail(enclaves, "<enclaves> needs at least one <enclave>");
  return { enclaves: list.map((e) => enclave(expect(e, enclaves, "enclave"))) };
}

function enclave(el: XElement): Enclave {
  const attrs = attributes(el, ["path"], ["path"], false);
  const kids = elementChildren(el);
  if (kids.length === 0) fail(el, "<enclave> needs at least one <profiles>");
  const why = enclavePathProblem(attrs.get("path")!);
  if (why) fail(el, `enclave path ${show(attrs.get("path")!)} ${why}`);
  return { path: attrs.get("path")!, profileSets: kids.map((k) => profiles(expect(k, el, "profiles"))) };
}

function profiles(el: XElement): Profile[] {
  attributes(el, ["type"], [], false);
  const kids = elementChildren(el);
  const out: Profile[] = [];
  let i = 0;
  for (; i < kids.length && kids[i]!.ns === null && kids[i]!.local === "profile"; i++) out.push(profile(kids[i]!));
  if (out.length === 0)
    fail(
      kids[0] ?? el,
      kids[0]
        ? `element ${elementName(kids[0])} is not expected; <profiles> starts with a <profile>`
        : "<profiles> needs at least one <profile>",
    );
  if (i < kids.length && kids[i]!.ns === null && kids[i]!.local === "metadata") metadata(kids[i++]!);
  if (i < kids.length)
    fail(
      kids[i]!,
      `element ${elementName(kids[i]!)} is not expected here; <profiles> holds <profile> elements and then one optional <metadata>`,
    );
  return out;
}

function profile(el: XElement): Profile {
  const attrs = attributes(el, ["ns", "node"], ["ns", "node"], true);
  const rules: ProfileRule[] = [];
  for (const k of elementChildren(el)) {
    if (k.ns !== null || !["topics", "services", "actions"].includes(k.local))
      fail(k, `element ${elementName(k)} is not expected in <profile>; expected <topics>, <services> or <actions>`);
    rules.push(rule(k));
  }
  const nsWhy = profileNamespaceProblem(attrs.get("ns")!);
  if (nsWhy) fail(el, `<profile ns=${show(attrs.get("ns")!)}>: the namespace ${nsWhy}`);
  const nodeWhy = nodeNameProblem(attrs.get("node")!);
  if (nodeWhy) fail(el, `<profile node=${show(attrs.get("node")!)}>: the node name ${nodeWhy}`);
  return { ns: attrs.get("ns")!, node: attrs.get("node")!, rules };
}

const RULES = {
  topics: { item: "topic", qualifiers: ["publish", "subscribe"] },
  services: { item: "service", qualifiers: ["request", "reply"] },
  actions: { item: "action", qualifiers: ["call", "execute"] },
} as const;

function rule(el: XElement): ProfileRule {
  const spec = RULES[el.local as keyof typeof RULES];
  const attrs = attributes(el, spec.qualifiers, [], true);
  // permissions.xsl tests `@* = 'DENY'` (any attribute): an xml:base of "DENY" or "ALLOW" would make
  // sros2 write an empty rule. The schema allows it; we refuse it rather than copy that.
  const base = el.attrs.find((a) => a.ns === XML_NS && a.local === "base");
  if (base && (base.value === "ALLOW" || base.value === "DENY"))
    fail(el, `<${el.local} xml:base="${base.value}"> is refused: sros2's permissions.xsl would read it as a qualifier`);
  const kids = elementChildren(el);
  if (kids.length === 0) fail(el, `<${el.local}> needs at least one <${spec.item}>`);
  const names = kids.map((k) => expression(expect(k, el, spec.item)));
  const [a, b] = spec.qualifiers.map((q) => qualifier(el, attrs, q));
  switch (el.local) {
    case "topics":
      return { kind: "topics", ...(a && { publish: a }), ...(b && { subscribe: b }), names };
    case "services":
      return { kind: "services", ...(a && { request: a }), ...(b && { reply: b }), names };
    default:
      return { kind: "actions", ...(a && { call: a }), ...(b && { execute: b }), names };
  }
}

/** xs:string content: text only, no attributes. */
function expression(el: XElement): string {
  attributes(el, [], [], false);
  let text = "";
  for (const c of el.children) {
    if (c.kind === "element") fail(c, `element ${elementName(c)} is not allowed inside <${el.local}> (text only)`);
    text += c.text;
  }
  const why = topicNameProblem(text);
  if (why) fail(el, `<${el.local}>${show(text)}</${el.local}>: the name ${why}`);
  return text;
}

const LANGUAGE = /^[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*$/;

/** xs:anyType, validated laxly as libxml2 does: declared global elements (policy) and xml:* attributes are checked. */
function metadata(el: XElement): void {
  for (const a of el.attrs) {
    if (a.ns === XML_NS && a.local === "lang" && !LANGUAGE.test(a.value.replace(/[ \t\r\n]+/g, " ").trim()))
      fail(el, `attribute xml:lang=${show(a.value)} on <${el.local}> is not a language tag`);
    if (a.ns === XML_NS && a.local === "space" && a.value !== "default" && a.value !== "preserve")
      fail(el, `attribute xml:space=${show(a.value)} on <${el.local}> must be "default" or "preserve"`);
    if (a.ns === XSI_NS && !isXsiHint(a)) fail(el, `attribute ${a.qname} is not supported`);
  }
  for (const c of el.children) {
    if (c.kind !== "element") continue;
    if (c.ns === null && c.local === "policy") policy(c);
    else metadata(c);
  }
}
