// One policy for MQTT and DDS: the `ros2` section of policy.yaml. On a real fleet (SQLite registry,
// the real CLI): the permissions.xml that `ros2 permissions --from-fleet-policy` derives for every
// (device, enclave) validates against sros2's permissions.xsd with xmllint, and a DDS-style evaluator
// written here (the grant's rules in document order, fnmatch with * and ?, else <default>) gives
// exactly the answer `policy test` gives, for allowed names, names denied by a rule, names denied by
// default and other devices' namespaces. Hostile input: every problem with its line and field.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { DOMParser, type Element } from "@xmldom/xmldom";
import { DEFAULT_POLICY } from "../src/access/default-policy.js";
import { PolicyFile } from "../src/access/policy-file.js";
import { AccessPolicy, PolicyError } from "../src/access/policy.js";
import { compileEnclave, deriveEnclavePolicy, fleetSros2Policy, MAX_ROS2_NAMES, type Ros2Action } from "../src/access/ros2-policy.js";
import { addDevice } from "../src/authority/devices.js";
import { testRos2Policy } from "../src/authority/policy.js";
import { removeDevice, revokeDevice } from "../src/authority/status/revocation.js";
import type { FleetServices } from "../src/authority/services.js";
import { createEnclave, initKeystore, PermissionsSourceRequired, renewEnclaveInKeystore } from "../src/ros2/keystore/index.js";
import { enclaveGrantValidity } from "../src/ros2/keystore/documents.js";
import { renderPermissions } from "../src/ros2/permissions.js";
import { assertOk, assertOneLineError, cli, tempDir, tempFleet, vectorPath } from "./helpers.js";
import { https } from "./server-helpers.js";
import { startAdminFleet } from "./support/admin-fleet.js";

const PERMISSIONS_XSD = vectorPath("sros2", "sros2", "sros2", "policy", "schemas", "dds", "permissions.xsd");

const POLICY = `version: 1
mode: audit
rules:
  - name: devices-publish-own
    devices: all
    publish: ["fleet/\${device}/#"]
ros2:
  enclaves:
    - path: "/\${device}/base"
      devices: { groups: [amr] }
      nodes:
        - { ns: "/\${device}", node: base_controller }
        - { ns: "/\${device}", node: teleop }
    - path: "/\${label:ros_ns}/arm"
      devices: all
      nodes:
        - { ns: "/\${label:ros_ns}", node: arm_driver }
      node_defaults: false
    - path: "/lab/\${device}"
      devices: { groups: [lab] }
      nodes: [{ ns: /lab, node: "\${device}" }]
  rules:
    - name: drive
      devices: { groups: [amr] }
      enclaves: ["/\${device}/base"]
      topics: { publish: [cmd_vel], subscribe: [odom, "/\${device}/scan"] }
      services: { reply: ["~/reset"] }
      actions: { execute: [navigate_to_pose] }
    - name: maps
      devices: all
      services: { request: ["/map_server/*"] }
    - name: site-chat
      devices: { labels: { site: [berlin, paris] } }
      topics: { publish: ["/sites/\${label:site}/chat"], subscribe: ["/sites/\${label:site}/chat"] }
    - name: estop-anywhere
      devices: all
      topics: { publish: ["/sites/*/estop"] }
    - name: no-map-writes
      effect: deny
      devices: all
      services: { request: ["/map_server/save*"] }
    - name: paris-no-teleop
      effect: deny
      devices: { labels: { site: paris } }
      topics: { publish: ["/\${device}/cmd_vel"] }
    - name: no-own-site-estop
      effect: deny
      devices: all
      topics: { publish: ["/sites/\${label:site}/estop"] }
    - name: arm
      devices: all
      enclaves: ["/\${label:ros_ns}/arm"]
      topics: { subscribe: [joint_states] }
      actions: { call: ["/\${label:ros_ns}/follow_joint_trajectory"] }
`;

// ---------------------------------------------------------------------------------------------
// The DDS side, written from the DDS Security spec and sros2's permissions.xsl, not from src/.

/** fnmatch with only * and ? (what Cyclone DDS supports; * also matches "/"). */
function fnmatch(p: string, s: string): boolean {
  let pi = 0;
  let si = 0;
  let star = -1;
  let mark = 0;
  while (si < s.length) {
    if (pi < p.length && (p[pi] === "?" || p[pi] === s[si])) (pi++, si++);
    else if (pi < p.length && p[pi] === "*") ((star = pi++), (mark = si));
    else if (star >= 0) ((pi = star + 1), (si = ++mark));
    else return false;
  }
  while (p[pi] === "*") pi++;
  return pi === p.length;
}

/** The DDS (direction, topic) pairs a participant needs for one ROS 2 request. */
function ddsOps(action: Ros2Action, n: string): ["publish" | "subscribe", string][] {
  const rq = ["cancel_goal", "get_result", "send_goal"].map((s) => `rq${n}/_action/${s}Request`);
  const rr = ["cancel_goal", "get_result", "send_goal"].map((s) => `rr${n}/_action/${s}Reply`);
  const rt = [`rt${n}/_action/feedback`, `rt${n}/_action/status`];
  const pub = (ts: string[]) => ts.map((t) => ["publish", t] as ["publish", string]);
  const sub = (ts: string[]) => ts.map((t) => ["subscribe", t] as ["subscribe", string]);
  switch (action) {
    case "publish":
      return pub([`rt${n}`]);
    case "subscribe":
      return sub([`rt${n}`]);
    case "request":
      return [...pub([`rq${n}Request`]), ...sub([`rr${n}Reply`])];
    case "reply":
      return [...pub([`rr${n}Reply`]), ...sub([`rq${n}Request`])];
    case "call":
      return [...pub(rq), ...sub([...rr, ...rt])];
    case "execute":
      return [...pub([...rr, ...rt]), ...sub(rq)];
  }
}

const elements = (e: Element, name?: string): Element[] =>
  Array.from(e.childNodes).filter((n): n is Element => n.nodeType === 1 && (name === undefined || (n as Element).tagName === name));

type DdsAnswer = "allow" | "deny-rule" | "deny-default";

/** What a DDS participant with this grant may do: the first rule (in document order) that matches decides, else <default>. */
function ddsDecide(doc: Element, subject: string, domain: number, action: Ros2Action, name: string): DdsAnswer {
  const grant = elements(elements(doc, "permissions")[0]!, "grant").find(
    (g) => elements(g, "subject_name")[0]?.textContent === `CN=${subject}`,
  );
  assert.ok(grant, `no grant for CN=${subject}`);
  const one = (dir: "publish" | "subscribe", topic: string): DdsAnswer => {
    for (const rule of elements(grant)) {
      if (rule.tagName === "default") return rule.textContent === "ALLOW" ? "allow" : "deny-default";
      if (rule.tagName !== "allow_rule" && rule.tagName !== "deny_rule") continue;
      const ids = elements(elements(rule, "domains")[0]!, "id").map((i) => Number(i.textContent));
      if (!ids.includes(domain)) continue;
      const patterns = elements(rule, dir).flatMap((d) =>
        elements(d, "topics").flatMap((t) => elements(t, "topic").map((x) => x.textContent!)),
      );
      if (patterns.some((p) => fnmatch(p, topic))) return rule.tagName === "allow_rule" ? "allow" : "deny-rule";
    }
    throw new Error("grant without <default>");
  };
  const answers = ddsOps(action, name).map(([dir, topic]) => one(dir, topic));
  return answers.includes("deny-rule") ? "deny-rule" : answers.includes("deny-default") ? "deny-default" : "allow";
}

const ACTIONS: Ros2Action[] = ["publish", "subscribe", "request", "reply", "call", "execute"];

function problemsOf(yaml: string): { line: number; field: string; message: string }[] {
  try {
    AccessPolicy.parse(yaml, "policy.yaml");
  } catch (e) {
    assert.ok(e instanceof PolicyError, String(e));
    return [...e.problems];
  }
  assert.fail("the policy was accepted");
}

const withRos2 = (ros2: string) => `version: 1\nrules: []\nros2:\n${ros2}`;

describe("the ros2 section of policy.yaml", () => {
  let dir: string;
  let fleet: FleetServices;
  let close: () => Promise<void>;
  const tmp = tempDir("fleetpki-ros2-fleet-");

  before(async () => {
    const f = await tempFleet();
    dir = f.dir;
    fleet = f.fleet;
    close = f.close;
    writeFileSync(join(dir, "policy.yaml"), POLICY);
    await addDevice(fleet, { id: "r1", group: "amr", labels: { site: "berlin" }, actor: "test" });
    await addDevice(fleet, { id: "r2", group: "amr", labels: { site: "paris" }, actor: "test" });
    // "-" is written "_" in ROS 2 names: /${device}/base is /robot_0001/base; its arm enclave comes from a label.
    await addDevice(fleet, { id: "robot-0001", group: "amr", labels: { ros_ns: "robot_0001" }, actor: "test" });
    // Starts with a digit, which no ROS 2 name token may: no /${device}/base (and no label for an arm).
    await addDevice(fleet, { id: "0042", group: "amr", actor: "test" });
    // A site that is not a ROS 2 name: allow rules using it do not apply, deny rules widen to "*".
    await addDevice(fleet, { id: "lab1", group: "lab", labels: { site: "x-y" }, actor: "test" });
  });
  after(async () => {
    await close();
    tmp.cleanup();
  });

  it("derived permissions validate with xmllint, and DDS grants exactly what `policy test` says", async () => {
    const out = cli([
      "ros2",
      "permissions",
      "--from-fleet-policy",
      "--dir",
      dir,
      "--not-before",
      "2026-01-01T00:00:00Z",
      "--not-after",
      "2026-02-01T00:00:00Z",
    ]);
    assertOk(out, "ros2 permissions --from-fleet-policy");
    // 0042 has no /${device}/base; r1, r2, lab1 and 0042 have no ros_ns label, so no arm enclave.
    assert.deepEqual(
      out.stderr
        .trimEnd()
        .split("\n")
        .map((l) => l.replace(/ skipped: .*/, ""))
        .sort(),
      [
        "fleetpki: note: device 0042: enclave /${device}/base",
        "fleetpki: note: device 0042: enclave /${label:ros_ns}/arm",
        "fleetpki: note: device lab1: enclave /${label:ros_ns}/arm",
        "fleetpki: note: device r1: enclave /${label:ros_ns}/arm",
        "fleetpki: note: device r2: enclave /${label:ros_ns}/arm",
      ],
    );
    assert.match(
      out.stderr,
      /device 0042: enclave \/\$\{device\}\/base skipped: its id "0042" starts with a digit, .*write \$\{label:ros_ns\}\n/,
    );
    const file = join(tmp.path, "permissions.xml");
    writeFileSync(file, out.stdout);
    const lint = spawnSync("xmllint", ["--noout", "--nonet", "--schema", PERMISSIONS_XSD, file], { encoding: "utf8" });
    assert.equal(lint.status, 0, lint.stderr);
    const doc = new DOMParser().parseFromString(out.stdout, "text/xml").documentElement!;
    const subjects = elements(elements(doc, "permissions")[0]!, "grant").map((g) => g.getAttribute("name"));
    // Registry order (by id), then the enclaves' order in the file.
    assert.deepEqual(subjects, ["/lab/lab1", "/r1/base", "/r2/base", "/robot_0001/base", "/robot_0001/arm"]);
    assert.match(out.stdout, /<not_before>2026-01-01T00:00:00<\/not_before>\n\s*<not_after>2026-02-01T00:00:00<\/not_after>/);

    const pairs: [string, string][] = [
      ["r1", "/r1/base"],
      ["r2", "/r2/base"],
      ["robot-0001", "/robot_0001/base"],
      ["robot-0001", "/robot_0001/arm"],
      ["lab1", "/lab/lab1"],
    ];
    const tokens = ["r1", "r2", "robot_0001", "robot-0001", "lab1"];
    const names = [
      ...tokens.flatMap((t) => [
        `/${t}/cmd_vel`,
        `/${t}/odom`,
        `/${t}/scan`,
        `/${t}/base_controller/reset`,
        `/${t}/teleop/reset`,
        `/${t}/navigate_to_pose`,
        `/${t}/joint_states`,
        `/${t}/follow_joint_trajectory`,
        `/${t}/base_controller/get_parameters`,
      ]),
      "/lab/lab1/get_parameters",
      "/map_server/load_map",
      "/map_server/save_map",
      "/map_server",
      "/sites/berlin/chat",
      "/sites/paris/chat",
      "/sites/berlin/estop",
      "/sites/paris/estop",
      "/rosout",
      "/parameter_events",
      "/clock",
      "/unlisted",
      "/cmd_vel",
    ];
    const seen = { allow: 0, "deny-rule": 0, "deny-default": 0 };
    const decided = new Map<string, { allowed: boolean; rule?: string }>();
    for (const [device, enclave] of pairs)
      for (const action of ACTIONS)
        for (const name of names) {
          const dds = ddsDecide(doc, enclave, 0, action, name);
          const t = await testRos2Policy(fleet, { device, enclave, action, name });
          const what = `${device} ${enclave} ${action} ${name}: policy test says ${t.outcome} (${t.reason}), DDS says ${dds}`;
          assert.equal(t.allowed, dds === "allow", what);
          assert.equal(t.rule !== undefined, dds !== "deny-default", what);
          // Audit mode is for MQTT: DDS enforces, and policy test says so.
          assert.notEqual(t.outcome, "audit-deny", what);
          seen[dds]++;
          decided.set(`${enclave} ${action} ${name}`, { allowed: t.allowed, ...(t.rule ? { rule: t.rule } : {}) });
        }
    for (const [k, n] of Object.entries(seen)) assert.ok(n >= 8, `${k}: only ${n} cases`);
    // The cases the issue names, spelt out (the loop above only compares the two sides).
    const expect = (key: string, allowed: boolean, rule?: string) =>
      assert.deepEqual(decided.get(key), { allowed, ...(rule ? { rule } : {}) }, key);
    expect("/r1/base publish /r1/cmd_vel", true, "drive"); // relative name in the device's namespace
    expect("/r1/base publish /r2/cmd_vel", false); // another device's namespace: default deny
    expect("/r1/base subscribe /r2/scan", false);
    expect("/r2/base publish /r2/cmd_vel", false, "paris-no-teleop"); // deny wins over drive
    expect("/r2/base subscribe /r2/odom", true, "drive");
    expect("/r1/base reply /r1/base_controller/reset", true, "drive"); // ~/reset of each node
    expect("/r1/base reply /r1/teleop/reset", true, "drive");
    expect("/r1/base execute /r1/navigate_to_pose", true, "drive");
    expect("/r1/base call /r1/navigate_to_pose", false);
    expect("/r1/base request /map_server/load_map", true, "maps");
    expect("/r1/base request /map_server/save_map", false, "no-map-writes");
    expect("/r1/base reply /map_server/load_map", false);
    expect("/r1/base publish /sites/berlin/chat", true, "site-chat");
    expect("/r1/base publish /sites/paris/chat", false);
    expect("/r1/base publish /sites/berlin/estop", false, "no-own-site-estop");
    expect("/r1/base publish /sites/paris/estop", true, "estop-anywhere");
    // lab1's site "x-y" is no ROS 2 name: its deny covers every site, its site-chat allow is gone.
    expect("/lab/lab1 publish /sites/paris/estop", false, "no-own-site-estop");
    expect("/robot_0001/arm call /robot_0001/follow_joint_trajectory", true, "arm");
    expect("/robot_0001/arm subscribe /robot_0001/joint_states", true, "arm");
    expect("/robot_0001/arm publish /rosout", false); // node_defaults: false
    expect("/r1/base publish /rosout", true, "ros2.enclaves[0].node_defaults");
    expect("/r1/base reply /r1/base_controller/get_parameters", true, "ros2.enclaves[0].node_defaults");
    expect("/robot_0001/arm reply /robot_0001/base_controller/get_parameters", false);
    // robot-0001 is robot_0001 in ROS 2 names: its base enclave grants under /robot_0001/, not another device's.
    expect("/robot_0001/base publish /robot_0001/cmd_vel", true, "drive");
    expect("/robot_0001/base subscribe /robot_0001/scan", true, "drive");
    expect("/robot_0001/base execute /robot_0001/navigate_to_pose", true, "drive");
    expect("/robot_0001/base reply /robot_0001/teleop/reset", true, "drive");
    expect("/robot_0001/base reply /robot_0001/base_controller/get_parameters", true, "ros2.enclaves[0].node_defaults");
    expect("/robot_0001/base publish /r1/cmd_vel", false);
    expect("/r1/base subscribe /robot_0001/scan", false);
  });

  it("`policy test --ros2-*` through the CLI: the same answer, allow and deny with the rule, never audit-deny", async () => {
    const ask = (...args: string[]) => cli(["policy", "test", "--dir", dir, "--device", "r2", "--ros2-enclave", "/r2/base", ...args]);
    const denied = ask("--ros2-publish", "/r2/cmd_vel");
    assertOk(denied, "policy test");
    assert.equal(denied.stdout.split("\n")[0], "deny  rule paris-no-teleop");
    assert.match(
      denied.stdout,
      new RegExp(
        String.raw`ros2 publish /r2/cmd_vel denied \(DDS publish rt/r2/cmd_vel\) by rule "paris-no-teleop" \(line \d+\)` +
          String.raw` \(enforced: DDS has no audit mode\)`,
      ),
    );
    const json = JSON.parse(ask("--ros2-request", "/map_server/load_map", "--json").stdout);
    const direct = await testRos2Policy(fleet, { device: "r2", enclave: "/r2/base", action: "request", name: "/map_server/load_map" });
    assert.deepEqual(
      {
        action: json.action,
        enclave: json.enclave,
        name: json.name,
        allowed: json.allowed,
        outcome: json.outcome,
        rule: json.rule,
        reason: json.reason,
      },
      {
        action: "ros2-request",
        enclave: "/r2/base",
        name: "/map_server/load_map",
        allowed: true,
        outcome: "allow",
        rule: "maps",
        reason: direct.reason,
      },
    );
    const byDefault = ask("--ros2-subscribe", "/r1/scan");
    assert.equal(byDefault.stdout.split("\n")[0], "deny  (default deny: no rule allows it)");
    // Bad requests: one line each.
    assertOneLineError(ask("--ros2-publish", "/a", "--ros2-subscribe", "/b"), /exactly one of --ros2-publish/);
    assertOneLineError(
      cli(["policy", "test", "--dir", dir, "--service", "x", "--ros2-enclave", "/r2/base", "--ros2-publish", "/a"]),
      /--service does not go with the --ros2-\* options/,
    );
    assertOneLineError(ask("--ros2-publish", "/a", "--publish", "a"), /--publish does not go with/);
    assertOneLineError(
      cli(["policy", "test", "--dir", dir, "--device", "r1", "--ros2-enclave", "/r2/base", "--ros2-publish", "/a"]),
      /the policy gives device r1 no enclave \/r2\/base \(its enclaves: \/r1\/base/,
    );
    const relative = JSON.parse(ask("--ros2-publish", "cmd_vel", "--json").stdout);
    assert.equal(relative.allowed, false);
    assert.match(relative.reason, /must be fully qualified/);
  });

  it("--from-fleet-policy for one device or enclave; nothing on stdout when it fails", () => {
    const check = cli(["policy", "check", "--dir", dir]);
    assertOk(check, "policy check");
    assert.equal(check.stdout, `ok: ${join(dir, "policy.yaml")}: 1 rule, mode audit; ros2: 3 enclaves, 8 rules\n`);
    const one = cli(["ros2", "permissions", "--from-fleet-policy", "--dir", dir, "--device", "r1"]);
    assertOk(one, "--device r1");
    assert.deepEqual(
      [...one.stdout.matchAll(/<grant name="([^"]+)">/g)].map((m) => m[1]),
      ["/r1/base"],
    );
    // sros2's template validity by default, as in the POLICY.xml mode.
    assert.match(one.stdout, /<not_before>2020-05-01T00:00:00<\/not_before>/);
    const enclave = cli(["ros2", "permissions", "--from-fleet-policy", "--dir", dir, "--enclave", "/lab/lab1"]);
    assertOk(enclave, "--enclave");
    assert.deepEqual(
      [...enclave.stdout.matchAll(/<grant name="([^"]+)">/g)].map((m) => m[1]),
      ["/lab/lab1"],
    );
    const dashed = cli(["ros2", "permissions", "--from-fleet-policy", "--dir", dir, "--device", "robot-0001"]);
    assertOk(dashed, "--device robot-0001");
    assert.deepEqual(
      [...dashed.stdout.matchAll(/<grant name="([^"]+)">/g)].map((m) => m[1]),
      ["/robot_0001/base", "/robot_0001/arm"],
    );
    const none = cli(["ros2", "permissions", "--from-fleet-policy", "--dir", dir, "--device", "0042"]);
    assert.equal(none.stdout, "");
    assertOneLineError(
      none,
      /the policy gives device 0042 no enclave \(skipped: 0042 \/\$\{device\}\/base: its id "0042" starts with a digit, which a ROS 2 name/,
    );
    const unknown = cli(["ros2", "permissions", "--from-fleet-policy", "--dir", dir, "--device", "r9"]);
    assert.equal(unknown.stdout, "");
    assertOneLineError(unknown, /unknown device "r9"/);
  });

  it("`ros2 enclave create --from-fleet-policy`: the device's derived permissions, re-derived from policy.yaml at renewal", async () => {
    const ks = join(tmp.path, "keystore");
    await initKeystore(fleet, { dir: ks, actor: "test" });
    const r = await createEnclave(fleet, { dir: ks, path: "/r2/base", deviceId: "r2", fromFleetPolicy: true, actor: "test" });
    assert.equal(r.source, "fleet-policy");
    const file = join(ks, "enclaves", "r2", "base", "permissions.xml");
    const denied = (xml: string) => /<deny_rule>[\s\S]*?<\/deny_rule>/.exec(xml)?.[0] ?? "";
    // The keystore allows ros_discovery_info (rmw_fastrtps needs it), as its own enclaves do.
    // Grants start 14 h before the certificate (Fast DDS reads them in local time: enclaveGrantValidity).
    const params = { ...enclaveGrantValidity(r.notBefore, r.notAfter), allowRosDiscoveryTopic: true, domainId: 0 };
    const policy = AccessPolicy.parse(POLICY, "policy.yaml");
    const r2 = { kind: "device" as const, id: "r2", group: "amr", labels: { site: "paris" } };
    const registered = ["0042", "lab1", "r1", "r2", "robot-0001"];
    assert.equal(readFileSync(file, "utf8"), renderPermissions(deriveEnclavePolicy(policy, r2, "/r2/base", registered), params));
    assert.match(denied(readFileSync(file, "utf8")), /<topic>rt\/r2\/cmd_vel<\/topic>/);
    // The policy changes (paris-no-teleop goes); the renewal carries the change to the enclave.
    const changed = POLICY.replace("labels: { site: paris } }", "labels: { site: nowhere } }");
    writeFileSync(join(dir, "policy.yaml"), changed);
    try {
      const renewed = await renewEnclaveInKeystore(fleet, { dir: ks, path: "/r2/base", actor: "test" });
      const p2 = { ...params, ...enclaveGrantValidity(renewed.notBefore, renewed.notAfter) };
      const expected = renderPermissions(deriveEnclavePolicy(AccessPolicy.parse(changed, "p"), r2, "/r2/base", registered), p2);
      assert.equal(readFileSync(file, "utf8"), expected);
      assert.doesNotMatch(denied(expected), /<topic>rt\/r2\/cmd_vel<\/topic>/);
    } finally {
      writeFileSync(join(dir, "policy.yaml"), POLICY);
    }
    // No device, or an enclave the policy does not give the device: refused, nothing written.
    await assert.rejects(
      createEnclave(fleet, { dir: ks, path: "/r1/base", fromFleetPolicy: true, actor: "test" }),
      PermissionsSourceRequired,
    );
    await assert.rejects(
      createEnclave(fleet, { dir: ks, path: "/r2/base2", deviceId: "r1", fromFleetPolicy: true, actor: "test" }),
      /the policy gives device r1 no enclave \/r2\/base2 \(its enclaves: \/r1\/base/,
    );
    assert.equal(existsSync(join(ks, "enclaves", "r1")), false);
    assert.equal(existsSync(join(ks, "enclaves", "r2", "base2")), false);
  });

  it("the default policy's commented ros2 example is a valid section once uncommented", () => {
    const lines = DEFAULT_POLICY.split("\n");
    const start = lines.indexOf("# ros2:");
    assert.ok(start > 0);
    const text = [...lines.slice(0, start), ...lines.slice(start).map((l) => l.replace(/^# ?/, ""))].join("\n");
    const p = AccessPolicy.parse(text, "policy.yaml");
    assert.deepEqual([p.ros2?.enclaves.length, p.ros2?.rules.map((r) => r.label)], [1, ["amr-drive", "no-map-writes"]]);
  });

  it("a label holding a DDS wildcard cannot widen an allow rule, and widens a deny rule", () => {
    const p = AccessPolicy.parse(
      withRos2(
        [
          "  enclaves:",
          '    - { path: "/${device}", devices: all, nodes: [{ ns: "/${device}", node: n }], node_defaults: false }',
          "  rules:",
          '    - { name: own-site, devices: all, topics: { publish: ["/sites/${label:site}/chat"] } }',
          '    - { name: any-estop, devices: all, topics: { publish: ["/sites/*/estop"] } }',
          '    - { name: not-own-estop, effect: deny, devices: all, topics: { publish: ["/sites/${label:site}/estop"] } }',
          "",
        ].join("\n"),
      ),
      "p",
    );
    // The registry takes "*" and "?" in label values (they mean nothing to MQTT).
    for (const site of ["*", "?erlin", "a/b"]) {
      const id = { kind: "device" as const, id: "d1", group: null, labels: { site } };
      const g = compileEnclave(p, id, "/d1", ["d1"]);
      assert.equal(g.decide("publish", "/sites/berlin/chat").allowed, false, site);
      assert.doesNotMatch(
        renderPermissions(g.policy, { notBefore: "a", notAfter: "b", allowRosDiscoveryTopic: false, domainId: 0 }),
        /chat/,
      );
      assert.deepEqual(g.decide("publish", "/sites/paris/estop").rule, "not-own-estop", site);
    }
    const berlin = compileEnclave(p, { kind: "device", id: "d1", group: null, labels: { site: "berlin" } }, "/d1", ["d1"]);
    assert.equal(berlin.decide("publish", "/sites/berlin/chat").rule, "own-site");
    assert.equal(berlin.decide("publish", "/sites/paris/estop").rule, "any-estop");
  });

  it("two devices given one enclave path are refused: a path names one identity", () => {
    const p = AccessPolicy.parse(withRos2(`  enclaves:\n    - { path: /shared, devices: all, nodes: [{ ns: /, node: n }] }\n`), "p");
    const id = (x: string) => ({ kind: "device" as const, id: x, group: null, labels: {} });
    assert.equal(fleetSros2Policy(p, [id("a")], ["a", "b"]).policy.enclaves.length, 1);
    assert.throws(() => fleetSros2Policy(p, [id("a"), id("b")], ["a", "b"]), /devices a and b are both given enclave \/shared/);
  });

  it("device ids written alike in ROS 2 names (robot-1, robot_1) never share names: refused for both", async () => {
    const f = await tempFleet();
    try {
      writeFileSync(
        join(f.dir, "policy.yaml"),
        withRos2(
          [
            "  enclaves:",
            '    - { path: "/${device}/base", devices: all, nodes: [{ ns: "/${device}", node: drive }] }',
            '    - { path: "/${label:arm}/arm", devices: all, nodes: [{ ns: "/${label:arm}", node: arm }], node_defaults: false }',
            "  rules:",
            '    - { name: drive, devices: all, enclaves: ["/${device}/base"], topics: { publish: [cmd_vel] } }',
            '    - { name: arm, devices: all, enclaves: ["/${label:arm}/arm"], topics: { subscribe: [joint_states] } }',
            "",
          ].join("\n"),
        ),
      );
      const arms: [string, string][] = [
        ["robot-1", "arm_a"],
        ["robot_1", "arm_b"],
        ["robot-2", "arm_c"],
        ["robot-3", "arm_d"],
        ["robot_3", "arm_e"],
      ];
      for (const [id, arm] of arms) await addDevice(f.fleet, { id, labels: { arm }, actor: "test" });
      // A revoked device can come back, so it still holds its name; a removed one never enrolls again.
      await revokeDevice(f.fleet, { deviceId: "robot_3", actor: "test" });
      await addDevice(f.fleet, { id: "robot-4", labels: { arm: "arm_f" }, actor: "test" });
      await addDevice(f.fleet, { id: "robot_4", actor: "test" });
      await removeDevice(f.fleet, { deviceId: "robot_4", actor: "test" });
      const esc = (t: string) => t.replace(/[.$\\{}()/]/g, "\\$&");
      const twins = (a: string, b: string, token: string) =>
        `device ${a} and registered device ${b} are both written ${token} in ROS 2 names, so neither is given an enclave whose names use`;

      const all = cli(["ros2", "permissions", "--from-fleet-policy", "--dir", f.dir]);
      assertOk(all, "ros2 permissions --from-fleet-policy");
      // Active devices by id: the enclaves whose names do not use the id are still given; robot-4's twin is removed.
      assert.deepEqual(
        [...all.stdout.matchAll(/<grant name="([^"]+)">/g)].map((m) => m[1]),
        ["/arm_a/arm", "/robot_2/base", "/arm_c/arm", "/arm_d/arm", "/robot_4/base", "/arm_f/arm", "/arm_b/arm"],
      );
      assert.doesNotMatch(all.stdout, /robot_[13]\/cmd_vel/);
      const notes = all.stderr.trimEnd().split("\n");
      assert.equal(notes.length, 3, all.stderr);
      const pairs: [string, string, string][] = [
        ["robot-1", "robot_1", "robot_1"],
        ["robot_1", "robot-1", "robot_1"],
        ["robot-3", "robot_3", "robot_3"],
      ];
      for (const [a, b, token] of pairs)
        assert.ok(
          notes.some((n) => n.startsWith(`fleetpki: note: device ${a}: enclave /\${device}/base skipped: ${twins(a, b, token)}`)),
          `${a}\n${all.stderr}`,
        );

      for (const [a, b] of [
        ["robot-1", "robot_1"],
        ["robot_1", "robot-1"],
      ] as const) {
        const why = esc(twins(a, b, "robot_1"));
        const one = cli(["ros2", "permissions", "--from-fleet-policy", "--dir", f.dir, "--device", a, "--enclave", "/robot_1/base"]);
        assert.equal(one.stdout, "");
        assertOneLineError(one, new RegExp(`no enclave /robot_1/base \\(skipped: ${a} .*${why}`));
        const ask = ["policy", "test", "--dir", f.dir, "--device", a, "--ros2-enclave", "/robot_1/base", "--ros2-publish", "/robot_1/x"];
        const asked = cli(ask);
        assertOneLineError(asked, new RegExp(`device ${a} no enclave /robot_1/base \\(its enclaves: /arm_\\w/arm; skipped: .*${why}`));
        await assert.rejects(
          testRos2Policy(f.fleet, { device: a, enclave: "/robot_1/base", action: "publish", name: "/robot_1/cmd_vel" }),
          new RegExp(why),
        );
      }
      // enclave create|renew --from-fleet-policy for one device: refused, nothing written.
      const ks = join(f.dir, "keystore");
      await initKeystore(f.fleet, { dir: ks, actor: "test" });
      await assert.rejects(
        createEnclave(f.fleet, { dir: ks, path: "/robot_1/base", deviceId: "robot_1", fromFleetPolicy: true, actor: "test" }),
        new RegExp(esc(twins("robot_1", "robot-1", "robot_1"))),
      );
      assert.equal(existsSync(join(ks, "enclaves", "robot_1")), false);
      const req = { dir: ks, path: "/robot_2/base", deviceId: "robot-2", fromFleetPolicy: true, actor: "test" };
      const ok = await createEnclave(f.fleet, req);
      assert.equal(ok.source, "fleet-policy");
      assert.match(readFileSync(join(ks, "enclaves", "robot_2", "base", "permissions.xml"), "utf8"), /rt\/robot_2\/cmd_vel/);
      // A twin registered later takes the enclave's names away at the next renewal.
      await addDevice(f.fleet, { id: "robot_2", actor: "test" });
      await assert.rejects(
        renewEnclaveInKeystore(f.fleet, { dir: ks, path: "/robot_2/base", actor: "test" }),
        new RegExp(esc(twins("robot-2", "robot_2", "robot_2"))),
      );
    } finally {
      await f.close();
    }
  });

  it("refuses bad paths, names, keys and placeholders, each with its line and field, and the whole file with them", () => {
    const problems = problemsOf(
      [
        "version: 1",
        "rules:",
        "  - name: mqtt", // 3
        "    devices: all",
        '    publish: ["a"]',
        "ros2:",
        "  enclaves:",
        '    - path: "/${device}/9base"', // 8
        "      devices: all",
        "      nodes: [{ ns: /x, node: n }]",
        "    - path: /ok", // 11
        "      devices: { ids: ['${device}'] }",
        "      nodes: [{ ns: 'rel', node: 'n-1' }]", // 13
        "      colour: red", // 14
        "  rules:",
        "    - name: drive", // 16
        "      mode: audit", // 17
        "      devices: all",
        '      enclaves: ["/ok", "/missing"]', // 19
        '      topics: { publish: ["/a//b", "~x", "/${devices}/x", "/a b"], subscribe: ["/${label:site}/9"] }', // 20
        "      services: { call: [x] }", // 21
        "    - name: '${device}-rule'", // 22
        "      devices: all",
        '      actions: { execute: ["/${device}"] }',
        "    - name: nothing", // 25
        "      devices: all",
      ].join("\n"),
    );
    const got = problems.map((p) => `${p.line} ${p.field}: ${p.message}`);
    const want = [
      /^8 ros2\.enclaves\[0\]\.path: enclave path "\/\$\{device\}\/9base": has the token "9base" that starts with a digit$/,
      /^12 ros2\.enclaves\[1\]\.devices: placeholders are only filled in enclave paths/,
      /^13 ros2\.enclaves\[1\]\.nodes\[0\]\.ns: namespace "rel": must start with "\/"/,
      /^13 ros2\.enclaves\[1\]\.nodes\[0\]\.node: node name "n-1": contains "-"/,
      /^14 ros2\.enclaves\[1\]\.colour: unknown key "colour"/,
      /^17 ros2\.rules\[0\]\.mode: ros2 rules have no audit mode/,
      /^19 ros2\.rules\[0\]\.enclaves: "\/missing" is not the path of an enclave in ros2\.enclaves/,
      /^20 ros2\.rules\[0\]\.topics\.publish\[0\]: topic "\/a\/\/b": contains an empty token/,
      /^20 ros2\.rules\[0\]\.topics\.publish\[1\]: topic "~x": a private name is "~" or starts with "~\/"/,
      /^20 ros2\.rules\[0\]\.topics\.publish\[2\]: unknown placeholder "\$\{devices\}"/,
      /^20 ros2\.rules\[0\]\.topics\.publish\[3\]: topic "\/a b": contains whitespace/,
      /^20 ros2\.rules\[0\]\.topics\.subscribe\[0\]: topic "\/\$\{label:site\}\/9": has the token "9"/,
      /^21 ros2\.rules\[0\]\.services\.call: unknown key "call" \(known: request, reply\)/,
      /^22 ros2\.rules\[1\]\.name: placeholders are only filled in/,
      /^25 ros2\.rules\[2\]: grants nothing: add topics, services and\/or actions/,
    ];
    for (const w of want)
      assert.ok(
        got.some((g) => w.test(g)),
        `missing ${w}\n${got.join("\n")}`,
      );
    assert.equal(got.length, want.length, got.join("\n"));
    // One name space for MQTT and ros2 rules; one enclave per path as written.
    const twice = problemsOf(
      "version: 1\nrules:\n  - { name: drive, devices: all, publish: [a] }\nros2:\n  enclaves:\n" +
        "    - { path: /e, devices: all, nodes: [{ ns: /, node: n }] }\n    - { path: /e, devices: all, nodes: [{ ns: /, node: m }] }\n" +
        "  rules:\n    - { name: drive, devices: all, topics: { publish: [a] } }\n",
    );
    assert.deepEqual(
      twice.map((p) => `${p.line} ${p.field}: ${p.message}`),
      ['7 ros2.enclaves[1].path: enclave path "/e" is already declared on line 6'],
    );
    const dup = problemsOf(
      "version: 1\nrules:\n  - { name: drive, devices: all, publish: [a] }\nros2:\n  enclaves:\n" +
        "    - { path: /e, devices: all, nodes: [{ ns: /, node: n }] }\n" +
        "  rules:\n    - { name: drive, devices: all, topics: { publish: [a] } }\n",
    );
    assert.deepEqual(
      dup.map((p) => `${p.line} ${p.field}: ${p.message}`),
      ['8 drive.name: rule name "drive" is already used on line 3'],
    );
  });

  it("refuses huge lists and grants that would be huge, before anything is derived", () => {
    const names = Array.from({ length: MAX_ROS2_NAMES + 1 }, (_, i) => `t${i}`).join(", ");
    const tooMany = problemsOf(
      withRos2(
        `  enclaves:\n    - { path: /e, devices: all, nodes: [{ ns: /, node: n }] }\n  rules:\n` +
          `    - { devices: all, topics: { publish: [${names}] } }\n`,
      ),
    );
    assert.deepEqual(
      tooMany.map((p) => `${p.line} ${p.field}: ${p.message}`),
      [`7 ros2.rules[0].topics.publish: lists 1001 names; at most 1000`],
    );
    // 200 nodes x 200 relative action names x 8 DDS topics: refused as a whole, not rendered.
    const nodes = Array.from({ length: 200 }, (_, i) => `{ ns: /, node: n${i} }`).join(", ");
    const actions = Array.from({ length: 200 }, (_, i) => `a${i}`).join(", ");
    const huge = problemsOf(
      withRos2(
        `  enclaves:\n    - { path: /e, devices: all, nodes: [${nodes}] }\n  rules:\n` +
          `    - { devices: all, actions: { call: [${actions}] } }\n`,
      ),
    );
    assert.equal(huge.length, 1);
    assert.match(huge[0]!.message, /^the enclave's permissions could list 324804 DDS topics; at most 20000$/);
    assert.equal(huge[0]!.field, "ros2.enclaves[0]");
    // YAML aliases (a billion laughs) are refused, as in MQTT rules.
    const alias = problemsOf(withRos2(`  enclaves:\n    - &e { path: /e, devices: all, nodes: [{ ns: /, node: n }] }\n    - *e\n`));
    assert.ok(alias.length > 0);
  });

  it("a reload with a broken ros2 section keeps the policy in force", async () => {
    const file = join(tmp.path, "reload.yaml");
    writeFileSync(file, POLICY);
    const pf = await PolicyFile.open(file);
    try {
      writeFileSync(file, POLICY.replace('path: "/lab/${device}"', 'path: "/lab/${device}/"'));
      const r = pf.reload();
      assert.equal(r.outcome, "invalid");
      assert.match(
        r.outcome === "invalid" ? r.error.message : "",
        /ros2\.enclaves\[2\]\.path: enclave path "\/lab\/\$\{device\}\/": must not end with "\/"/,
      );
      assert.equal(pf.current.ros2?.enclaves.length, 3);
    } finally {
      pf.close();
    }
  });

  it("POST /api/policy/test answers ROS 2 questions as testRos2Policy does (what `policy test --server` asks)", async () => {
    const a = await startAdminFleet();
    try {
      writeFileSync(a.f.fleet.path("policy.yaml"), POLICY);
      await addDevice(a.f.fleet, { id: "r2", group: "amr", labels: { site: "paris" }, actor: "test" });
      const ask = (body: unknown) =>
        https(`${a.base}/api/policy/test`, {
          ...a.as("viewer"),
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
      for (const [action, name] of [
        ["publish", "/r2/cmd_vel"],
        ["request", "/map_server/load_map"],
        ["subscribe", "/r1/scan"],
      ] as const) {
        const res = await ask({ device: "r2", enclave: "/r2/base", action: `ros2-${action}`, name });
        assert.equal(res.status, 200, res.body.toString());
        const d = await testRos2Policy(a.f.fleet, { device: "r2", enclave: "/r2/base", action, name });
        assert.deepEqual(JSON.parse(res.body.toString()), {
          allowed: d.allowed,
          outcome: d.outcome,
          rule: d.rule ?? null,
          reason: d.reason,
          mode: "audit",
          deviceStatus: "active",
        });
      }
      assert.equal((await ask({ device: "r2", enclave: "/r2/base", action: "ros2-fly", name: "/x" })).status, 400);
      assert.equal((await ask({ device: "r2", enclave: "/r2/base", action: "ros2-publish", topic: "/x" })).status, 400);
      const missing = await ask({ device: "r2", enclave: "/r9/base", action: "ros2-publish", name: "/x" });
      assert.equal(missing.status, 400, missing.body.toString());
      assert.match(JSON.parse(missing.body.toString()).detail, /the policy gives device r2 no enclave \/r9\/base/);
    } finally {
      await a.close();
    }
  });
});
