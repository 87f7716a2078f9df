// SROS2 permissions.xml rendering: byte-identical to sros2's expected files and to xsltproc running
// sros2's permissions.xsl (the independent peer), valid against sros2's permissions.xsd (xmllint).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { PermissionsParameters, Profile, ProfileRule, Qualifier, Sros2Policy } from "../src/ros2/policy-model.js";
import { readSros2PolicyFile } from "../src/ros2/policy-xml/index.js";
import { renderPermissions, SROS2_TEMPLATE_PARAMETERS } from "../src/ros2/permissions.js";
import { UnknownEnclave } from "../src/ros2/errors.js";
import { InvalidArgument } from "../src/authority/errors.js";
import { assertOk, cli, tempDir, vectorPath } from "./helpers.js";

const SROS2 = vectorPath("sros2", "sros2");
const POLICIES = join(SROS2, "test", "policies");
const XSL = join(SROS2, "sros2", "policy", "templates", "dds", "permissions.xsl");
const PERMISSIONS_XSD = join(SROS2, "sros2", "policy", "schemas", "dds", "permissions.xsd");
const CATALOG = join(SROS2, "xml_cache", "xhtml-cache.xml");
const VECTORS = ["sample", "single_context", "minimal_action", "talker_listener", "add_two_ints"];

function run(cmd: string, args: readonly string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, XML_CATALOG_FILES: CATALOG }, timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** sros2's way: xsltproc --xinclude permissions.xsl with the template's parameters. */
function xsltproc(policyFile: string, p: PermissionsParameters): string {
  const r = run("xsltproc", [
    "--nonet",
    "--xinclude",
    "--stringparam",
    "not_valid_before",
    p.notBefore,
    "--stringparam",
    "not_valid_after",
    p.notAfter,
    "--param",
    "allow_ros_discovery_topic",
    p.allowRosDiscoveryTopic ? "1" : "0",
    XSL,
    policyFile,
  ]);
  assert.equal(r.status, 0, `xsltproc failed: ${r.stderr}`);
  return r.stdout;
}

function xmllintValidates(file: string): { ok: boolean; stderr: string } {
  const r = run("xmllint", ["--nonet", "--noout", "--schema", PERMISSIONS_XSD, file]);
  return { ok: r.status === 0, stderr: r.stderr };
}

test("each of sros2's test policies gives its expected permissions.xml, byte for byte, valid against permissions.xsd", (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  for (const name of VECTORS) {
    const got = renderPermissions(readSros2PolicyFile(join(POLICIES, `${name}.policy.xml`)), SROS2_TEMPLATE_PARAMETERS);
    assert.equal(got, readFileSync(join(POLICIES, "permissions", name, "permissions.xml"), "utf8"), name);
    const out = join(dir.path, `${name}.xml`);
    writeFileSync(out, got);
    const v = xmllintValidates(out);
    assert.ok(v.ok, `${name}: ${v.stderr}`);
  }
});

test("other parameters and sros2's default policy match xsltproc on the real stylesheet", () => {
  const params = { notBefore: "2026-12-05T01:02:03", notAfter: "2027-01-01T00:00:00", allowRosDiscoveryTopic: true, domainId: 0 };
  const files = [...VECTORS.map((n) => join(POLICIES, `${n}.policy.xml`)), join(SROS2, "sros2", "policy", "defaults", "policy.xml")];
  for (const file of files) assert.equal(renderPermissions(readSros2PolicyFile(file), params), xsltproc(file, params), file);
});

test("--domain-id replaces only the 0 of <domains><id>; 0 gives sros2's bytes", () => {
  const policy = readSros2PolicyFile(join(POLICIES, "sample.policy.xml"));
  const zero = renderPermissions(policy, SROS2_TEMPLATE_PARAMETERS);
  const seven = renderPermissions(policy, { ...SROS2_TEMPLATE_PARAMETERS, domainId: 7 });
  assert.ok(zero.includes("<id>0</id>"));
  assert.equal(seven, zero.replaceAll("<id>0</id>", "<id>7</id>"));
  assert.throws(() => renderPermissions(policy, { ...SROS2_TEMPLATE_PARAMETERS, domainId: 233 }), InvalidArgument);
});

test("one enclave's grants, and a specific error for an enclave the policy does not have", () => {
  const policy = readSros2PolicyFile(join(POLICIES, "sample.policy.xml"));
  const one = renderPermissions(policy, SROS2_TEMPLATE_PARAMETERS, "/talker_listener/talker");
  const grants = [...one.matchAll(/<grant name="([^"]*)">/g)].map((m) => m[1]);
  assert.deepEqual(grants, ["/talker_listener/talker"]);
  // The grant is the same text as in the whole document.
  const all = renderPermissions(policy, SROS2_TEMPLATE_PARAMETERS);
  const grant = /    <grant name="\/talker_listener\/talker">[\s\S]*?<\/grant>\n/.exec(all)![0];
  assert.ok(one.includes(grant));
  assert.throws(
    () => renderPermissions(policy, SROS2_TEMPLATE_PARAMETERS, "/nope"),
    (e) => e instanceof UnknownEnclave && /no enclave "\/nope".*\/talker_listener\/talker/.test(e.message),
  );
});

// ---- differential test against xsltproc on random policies ----

/** mulberry32: a small seeded PRNG, so a failure can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMES = ["chatter", "/clock", "~", "~/priv", "a/b", "/*", "/a?", "rosout", "/chatter", "Chatter", "b_2", "/ns/x", "~/a/b", "_x"];
const HOSTILE = ["a&b", "x<y>", 'q"t', "it's", "tab\tx", "ünï", "日本", "𝄞clef", "\uE000pua", "]]>", "&amp;"];

function randomPolicy(rand: () => number, hostile: boolean): Sros2Policy {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const n = (max: number, min = 1) => min + Math.floor(rand() * (max - min + 1));
  const names = hostile ? [...NAMES, ...HOSTILE] : NAMES;
  const qual = (): Qualifier | undefined => pick([undefined, "ALLOW", "ALLOW", "DENY"] as const);
  const rule = (): ProfileRule => {
    const list = Array.from({ length: n(4) }, () => pick(names));
    const [a, b] = [qual(), qual()];
    const kind = pick(["topics", "services", "actions"] as const);
    if (kind === "topics") return { kind, ...(a && { publish: a }), ...(b && { subscribe: b }), names: list };
    if (kind === "services") return { kind, ...(a && { request: a }), ...(b && { reply: b }), names: list };
    return { kind, ...(a && { call: a }), ...(b && { execute: b }), names: list };
  };
  const profile = (): Profile => ({
    ns: pick(["/", "/a", "/a/", "/ns/sub", ...(hostile ? ["/ü&<"] : [])]),
    node: pick(["talker", "n1", "_node", ...(hostile ? ['n"&'] : [])]),
    rules: Array.from({ length: n(5, 0) }, rule),
  });
  return {
    enclaves: Array.from({ length: n(3) }, () => ({
      path: pick(["/", "/a", "/a/b", "/robot_1/cam", ...(hostile ? ['/x"y&<z\t'] : [])]),
      profileSets: Array.from({ length: n(3) }, () => Array.from({ length: n(3) }, profile)),
    })),
  };
}

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/\t/g, "&#9;");

function policyXml(p: Sros2Policy): string {
  const out = ['<?xml version="1.0" encoding="UTF-8"?>\n<policy version="0.2.0">\n  <enclaves>\n'];
  for (const e of p.enclaves) {
    out.push(`    <enclave path="${esc(e.path)}">\n`);
    for (const set of e.profileSets) {
      out.push("      <profiles>\n");
      for (const pr of set) {
        out.push(`        <profile ns="${esc(pr.ns)}" node="${esc(pr.node)}">\n`);
        for (const r of pr.rules) {
          const [q1, q2, item] =
            r.kind === "topics"
              ? ["publish", "subscribe", "topic"]
              : r.kind === "services"
                ? ["request", "reply", "service"]
                : ["call", "execute", "action"];
          const rec = r as unknown as Record<string, string | undefined>;
          const attrs = [q1, q2]
            .filter((q) => rec[q!])
            .map((q) => ` ${q}="${rec[q!]}"`)
            .join("");
          out.push(`          <${r.kind}${attrs}>\n`);
          for (const name of r.names) out.push(`            <${item}>${esc(name)}</${item}>\n`);
          out.push(`          </${r.kind}>\n`);
        }
        out.push("        </profile>\n");
      }
      out.push("      </profiles>\n");
    }
    out.push("    </enclave>\n");
  }
  out.push("  </enclaves>\n</policy>\n");
  return out.join("");
}

test("differential: 300 random policies, read from XML and rendered, are byte-identical to xsltproc --xinclude permissions.xsl", (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const seed = Number(process.env.ROS2_DIFF_SEED ?? 20261205);
  const rand = prng(seed);
  for (let i = 0; i < 300; i++) {
    const policy = randomPolicy(rand, false);
    const params = {
      notBefore: `2026-0${1 + (i % 9)}-01T00:00:00`,
      notAfter: "2030-05-01T00:00:00",
      allowRosDiscoveryTopic: i % 3 === 0,
      domainId: 0,
    };
    const file = join(dir.path, `p${i}.xml`);
    writeFileSync(file, policyXml(policy));
    const read = readSros2PolicyFile(file);
    assert.deepEqual(read, policy, `seed ${seed} policy ${i}: the reader gives back the model written`);
    assert.equal(renderPermissions(read, params), xsltproc(file, params), `seed ${seed} policy ${i} (${file})`);
  }
});

test("differential: hostile names (XML specials, tabs, non-ASCII, astral characters) are escaped and sorted as libxslt does", (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const rand = prng(7);
  for (let i = 0; i < 60; i++) {
    // The reader refuses these names; the renderer must still never let one inject XML (the fleet policy feeds it too).
    const policy = randomPolicy(rand, true);
    const file = join(dir.path, `h${i}.xml`);
    writeFileSync(file, policyXml(policy));
    const got = renderPermissions(policy, SROS2_TEMPLATE_PARAMETERS);
    assert.equal(got, xsltproc(file, SROS2_TEMPLATE_PARAMETERS), `hostile policy ${i} (${file})`);
  }
});

test("an injected name cannot add elements: the output stays one well-formed document with only the grants asked for", (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const evil = "</topic></topics></publish></allow_rule><allow_rule><domains><id>0</id></domains><publish><topics><topic>*";
  const policy: Sros2Policy = {
    enclaves: [
      { path: '/a"><grant name="x', profileSets: [[{ ns: "/", node: "n", rules: [{ kind: "topics", publish: "ALLOW", names: [evil] }] }]] },
    ],
  };
  const xml = renderPermissions(policy, SROS2_TEMPLATE_PARAMETERS);
  assert.equal((xml.match(/<grant /g) ?? []).length, 1);
  assert.equal((xml.match(/<allow_rule>/g) ?? []).length, 1);
  assert.equal((xml.match(/<topic>/g) ?? []).length, 1);
  const file = join(dir.path, "evil.xml");
  writeFileSync(file, xml);
  assert.equal(run("xmllint", ["--noout", file]).status, 0, "well-formed");
});

test("fleetpki ros2 permissions prints the document, or one error line and nothing on stdout", (t) => {
  const dir = tempDir();
  t.after(dir.cleanup);
  const sample = join(POLICIES, "sample.policy.xml");
  const ok = cli(["ros2", "permissions", sample]);
  assertOk(ok, "ros2 permissions");
  assert.equal(ok.stdout, readFileSync(join(POLICIES, "permissions", "sample", "permissions.xml"), "utf8"));
  const params = cli([
    "ros2",
    "permissions",
    sample,
    "--enclave",
    "/sample_policy/admin",
    "--not-before",
    "2026-12-05T10:00:00+02:00",
    "--not-after",
    "2027-12-05",
    "--allow-ros-discovery-topic",
    "--domain-id",
    "42",
  ]);
  assertOk(params, "ros2 permissions with parameters");
  assert.match(params.stdout, /<not_before>2026-12-05T08:00:00<\/not_before>\n\s*<not_after>2027-12-05T00:00:00<\/not_after>/);
  assert.match(params.stdout, /<id>42<\/id>/);
  assert.match(params.stdout, /ros_discovery_info/);
  assert.equal((params.stdout.match(/<grant /g) ?? []).length, 1);

  for (const [args, pattern, status] of [
    [["--not-before", "yesterday"], /"yesterday" is not an ISO 8601 date-time/, 2],
    [["--not-before", "2026-02-30"], /"2026-02-30" is not a valid date-time/, 2],
    [["--not-before", "2031-01-01"], /--not-before .* must be before --not-after/, 2],
    [["--domain-id", "300"], /"300" is not a DDS domain id/, 2],
    [["--enclave", "relative/x"], /enclave path "relative\/x" must start with "\/"/, 2],
    [["--enclave", "/nope"], /^fleetpki: the policy has no enclave "\/nope"/, 1],
  ] as const) {
    const r = cli(["ros2", "permissions", sample, ...args]);
    assert.equal(r.status, status, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stdout, "", `${args.join(" ")}: nothing on stdout`);
    assert.match(r.stderr, pattern);
  }
});
