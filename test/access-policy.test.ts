// The access policy at the decision level (src/access/): MQTT filter relations (+, #, $SYS), the
// default policy, substitutions and hostile values, allow vs deny, audit mode, schema errors with
// their lines, and the policy file's hot reload (a broken file keeps the old policy).
import assert from "node:assert/strict";
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { DEFAULT_POLICY } from "../src/access/default-policy.js";
import type { AccessIdentity } from "../src/access/identity.js";
import { PolicyFile } from "../src/access/policy-file.js";
import { AccessPolicy, PolicyError } from "../src/access/policy.js";
import { filterCovers, filterMatches, filtersIntersect, topicFilterProblem, topicNameProblem } from "../src/access/topics.js";
import { tempDir } from "./helpers.js";

const L = (s: string) => s.split("/");
const device = (id: string, group: string | null = null, labels: Record<string, string> = {}): AccessIdentity => ({
  kind: "device",
  id,
  group,
  labels,
});
const service = (name: string): AccessIdentity => ({ kind: "service", name });
const policy = (text: string) => AccessPolicy.parse(text, "policy.yaml");

describe("topic filters", () => {
  it("validates names and filters the MQTT way", () => {
    for (const ok of ["#", "+", "a/+/b", "a/#", "+/+", "/", "a//b", "$SYS/#", "a/b$/c"])
      assert.equal(topicFilterProblem(ok), undefined, ok);
    for (const bad of ["", "a/#/b", "a#", "a/b#", "a+/b", "+a", "a/\0", "a/\uD800", "x".repeat(65536)])
      assert.ok(topicFilterProblem(bad), JSON.stringify(bad.slice(0, 20)));
    assert.equal(topicNameProblem("fleet/r1/telemetry"), undefined);
    for (const bad of ["", "a/+", "a/#", "a\0b"]) assert.ok(topicNameProblem(bad), bad);
  });

  it("matches topics: + is one level, # any depth including the parent, neither a leading $ level", () => {
    assert.ok(filterMatches(L("a/+/c"), L("a/b/c")));
    assert.ok(filterMatches(L("a/+/c"), L("a//c")));
    assert.ok(!filterMatches(L("a/+/c"), L("a/b/x/c")));
    assert.ok(filterMatches(L("a/#"), L("a")));
    assert.ok(filterMatches(L("a/#"), L("a/b/c")));
    assert.ok(!filterMatches(L("a/+"), L("a")));
    assert.ok(!filterMatches(L("#"), L("$SYS/broker/load")));
    assert.ok(!filterMatches(L("+/broker/load"), L("$SYS/broker/load")));
    assert.ok(filterMatches(L("$SYS/#"), L("$SYS/broker/load")));
    assert.ok(filterMatches(L("#"), L("a/$SYS")), "only a first level starting with $ is special");
  });

  it("covers: every topic the subscription matches, the grant matches", () => {
    const yes: [string, string][] = [
      ["#", "#"],
      ["#", "fleet/+/cmd/#"],
      ["fleet/+/#", "fleet/+/#"],
      ["fleet/+/#", "fleet/r1/cmd/#"],
      ["fleet/+/#", "fleet/+"],
      ["fleet/+/#", "fleet/r1"],
      ["fleet/r1/#", "fleet/r1"],
      ["a/+/c", "a/b/c"],
      ["a/+/c", "a/+/c"],
      ["$SYS/#", "$SYS/broker/+"],
    ];
    const no: [string, string][] = [
      ["fleet/r1/#", "#"],
      ["fleet/r1/#", "fleet/+/#"],
      ["fleet/r1/cmd/#", "fleet/+/cmd/#"],
      ["fleet/r1/cmd/#", "fleet/r1/#"],
      ["fleet/+/#", "fleet/#"], // fleet/# matches "fleet" itself
      ["a/+/c", "a/+/#"],
      ["a/b", "a/+"],
      ["a/+", "a/+/b"],
      ["#", "$SYS/broker"],
      ["+/broker", "$SYS/broker"],
    ];
    for (const [a, s] of yes) assert.ok(filterCovers(L(a), L(s)), `${a} covers ${s}`);
    for (const [a, s] of no) assert.ok(!filterCovers(L(a), L(s)), `${a} does not cover ${s}`);
  });

  it("intersects: some topic matches both", () => {
    const yes: [string, string][] = [
      ["#", "a"],
      ["a/#", "a"],
      ["a/+/c", "a/b/#"],
      ["+/b", "a/+"],
      ["fleet/+/secret", "fleet/#"],
      ["$SYS/#", "$SYS/x"],
      ["+", "#"],
    ];
    const no: [string, string][] = [
      ["a/b", "a/c"],
      ["a/+", "a"],
      ["a/+/c", "a/b"],
      ["#", "$SYS/x"],
      ["+/x", "$SYS/x"],
      ["fleet/+/secret", "fleet/r1/public"],
    ];
    for (const [a, b] of yes) assert.ok(filtersIntersect(L(a), L(b)) && filtersIntersect(L(b), L(a)), `${a} meets ${b}`);
    for (const [a, b] of no) assert.ok(!filtersIntersect(L(a), L(b)) && !filtersIntersect(L(b), L(a)), `${a} misses ${b}`);
  });
});

describe("the default policy (written by init)", () => {
  const p = policy(DEFAULT_POLICY);
  const r1 = p.grantsFor(device("robot-1"));
  const telemetry = p.grantsFor(service("telemetry"));

  it("lets a device publish under its own prefix only", () => {
    assert.equal(p.mode, "enforce");
    assert.deepEqual(r1.publish("fleet/robot-1/telemetry"), {
      allowed: true,
      outcome: "allow",
      rule: "devices-publish-own",
      reason: 'device robot-1: publish "fleet/robot-1/telemetry" allowed by rule "devices-publish-own" (line 17)',
    });
    for (const t of ["fleet/robot-2/telemetry", "fleet/robot-2/cmd/cmd_vel", "fleet/robot-10/x", "fleet", "other/robot-1", "$SYS/x"]) {
      const d = r1.publish(t);
      assert.equal(d.allowed, false, t);
      assert.equal(d.outcome, "deny");
      assert.equal(d.rule, undefined, "the default deny");
    }
  });

  it("denies a device the subscriptions that would reach other devices' topics", () => {
    for (const f of ["#", "fleet/+/cmd/#", "fleet/#", "fleet/+/#", "+/robot-1/cmd/#", "fleet/robot-2/cmd/#", "$SYS/#"])
      assert.equal(r1.subscribe(f).allowed, false, f);
    for (const f of ["fleet/robot-1/cmd/#", "fleet/robot-1/cmd/cmd_vel", "fleet/robot-1/cmd/+"])
      assert.equal(r1.subscribe(f).outcome, "allow", f);
    assert.equal(r1.receive("fleet/robot-1/cmd/cmd_vel").allowed, true);
    assert.equal(r1.receive("fleet/robot-2/cmd/cmd_vel").allowed, false);
  });

  it("lets the telemetry service read fleet/+/# but not publish commands; other services get nothing", () => {
    assert.equal(telemetry.subscribe("fleet/+/#").outcome, "allow");
    assert.equal(telemetry.subscribe("fleet/robot-1/telemetry").outcome, "allow");
    assert.equal(telemetry.receive("fleet/robot-7/battery").allowed, true);
    assert.equal(telemetry.subscribe("#").allowed, false, "# also matches topics outside fleet/");
    assert.equal(telemetry.subscribe("$SYS/#").allowed, false);
    assert.equal(telemetry.publish("fleet/robot-1/cmd/cmd_vel").allowed, false);
    assert.equal(p.grantsFor(service("billing")).subscribe("fleet/+/#").allowed, false);
  });

  it("refuses a will message or retained message aimed at another device's cmd topic (publish rules)", () => {
    // The gateway checks a CONNECT's will topic and a retained PUBLISH with publish(); delivery of a
    // retained message to a subscriber is checked with receive().
    assert.equal(r1.publish("fleet/robot-2/cmd/cmd_vel").allowed, false);
    assert.equal(r1.publish("fleet/robot-1/status").allowed, true);
    const r2 = p.grantsFor(device("robot-2"));
    assert.equal(r2.receive("fleet/robot-1/status").allowed, false, "a retained message is not delivered to a reader without grant");
    assert.equal(telemetry.receive("fleet/robot-1/status").allowed, true);
  });

  it("keeps a reason on one line whatever the topic holds (control characters are legal in MQTT topics)", () => {
    for (const topic of ["fleet/robot-1/a\nforged log line", "fleet/robot-2/\r\u001b[2J", "x".repeat(70000)]) {
      const reason = r1.publish(topic).reason;
      assert.doesNotMatch(reason, /[\n\r\u001b]/, JSON.stringify(reason.slice(0, 80)));
      assert.ok(reason.length < 400, "long topics are cut in the reason");
    }
  });

  it("refuses malformed topics even in audit mode", () => {
    const audit = policy("version: 1\nmode: audit\nrules: []\n").grantsFor(device("robot-1"));
    assert.equal(audit.publish("fleet/+/x").allowed, false);
    assert.equal(audit.subscribe("fleet/#/x").allowed, false);
    assert.equal(audit.publish("a\0b").allowed, false);
    assert.equal(audit.publish("fleet/other").outcome, "audit-deny");
  });
});

describe("$SYS topics", () => {
  const p = policy(`version: 1
rules:
  - name: everything
    services: "*"
    publish: ["#"]
    subscribe: ["#", "+/broker/#"]
  - name: admins-sys
    operators: { roles: [admin] }
    subscribe: ["$SYS/#"]
`);

  it("are never reached through a leading + or #", () => {
    const s = p.grantsFor(service("any"));
    assert.equal(s.subscribe("#").allowed, true);
    assert.equal(s.subscribe("$SYS/#").allowed, false);
    assert.equal(s.subscribe("$SYS/broker/load").allowed, false);
    assert.equal(s.receive("$SYS/broker/load").allowed, false);
    assert.equal(s.publish("$SYS/broker/load").allowed, false);
    assert.equal(s.receive("fleet/r1/x").allowed, true);
  });

  it("are reached by a role granted them by a filter starting with $SYS", () => {
    const admin = p.grantsFor({ kind: "operator", name: "alice", role: "admin" });
    assert.equal(admin.subscribe("$SYS/#").rule, "admins-sys");
    assert.equal(admin.receive("$SYS/broker/clients").allowed, true);
    assert.equal(admin.subscribe("#").allowed, false);
    const viewer = p.grantsFor({ kind: "operator", name: "bob", role: "viewer" });
    assert.equal(viewer.subscribe("$SYS/#").allowed, false);
  });
});

describe("substitution", () => {
  const p = policy(`version: 1
rules:
  - name: group-chat
    devices: all
    publish: ["lab/\${group}/chat"]
    subscribe: ["lab/\${group}/chat"]
  - name: site
    devices: { labels: { site: [berlin, paris] } }
    publish: ["sites/\${label:site}/\${device}/#", "site-\${label:site}/x"]
  - name: by-id
    devices: { ids: [robot-9] }
    publish: ["special/\${device}"]
`);

  it("fills ${device}, ${group} and ${label:KEY} (whole level or part of one)", () => {
    const g = p.grantsFor(device("robot-1", "lab1", { site: "berlin" }));
    assert.equal(g.publish("lab/lab1/chat").rule, "group-chat");
    assert.equal(g.publish("lab/lab2/chat").allowed, false);
    assert.equal(g.subscribe("lab/lab1/chat").allowed, true);
    assert.equal(g.publish("sites/berlin/robot-1/pose").rule, "site");
    assert.equal(g.publish("site-berlin/x").rule, "site");
    assert.equal(g.publish("sites/paris/robot-1/pose").allowed, false);
    assert.equal(g.publish("special/robot-1").allowed, false, "selected by id");
    assert.equal(p.grantsFor(device("robot-9")).publish("special/robot-9").rule, "by-id");
  });

  it("drops a rule whose placeholder has no value: a device without group or label, a service", () => {
    const g = p.grantsFor(device("robot-1", null, {}));
    assert.equal(g.publish("lab//chat").allowed, false);
    assert.equal(g.publish("lab/+/chat").allowed, false);
    assert.equal(p.grantsFor(device("robot-2", null, { site: "rome" })).publish("sites/rome/robot-2/x").allowed, false);
    const mixed = policy(`version: 1
rules:
  - devices: all
    services: all
    publish: ["fleet/\${device}/x"]
`);
    assert.equal(mixed.grantsFor(service("telemetry")).publish("fleet/telemetry/x").allowed, false);
    assert.equal(mixed.grantsFor(device("telemetry")).publish("fleet/telemetry/x").rule, "rules[0]");
  });

  it("never substitutes a hostile value: a label or group with /, +, #, a leading $, NUL or nothing", () => {
    const wide = policy(`version: 1
rules:
  - name: own-site
    devices: all
    publish: ["sites/\${label:site}/data"]
    subscribe: ["sites/\${label:site}/#"]
  - name: own-level
    devices: all
    subscribe: ["\${label:root}/cmd"]
`);
    for (const site of ["#", "+", "a/b", "berlin/../paris", "$SYS", "", "a\0b"]) {
      const g = wide.grantsFor(device("robot-1", null, { site, root: site }));
      assert.equal(g.subscribe("sites/#").allowed, false, `site=${JSON.stringify(site)}: sites/#`);
      assert.equal(g.subscribe("sites/+/#").allowed, false, `site=${JSON.stringify(site)}: sites/+/#`);
      assert.equal(g.receive("sites/paris/data").allowed, false, `site=${JSON.stringify(site)}: receive`);
      assert.equal(g.publish("sites/a/b/data").allowed, false, `site=${JSON.stringify(site)}: publish`);
      assert.equal(g.subscribe("$SYS/cmd").allowed, false, `site=${JSON.stringify(site)}: $SYS`);
      assert.equal(g.receive("$SYS/cmd").allowed, false, `site=${JSON.stringify(site)}: $SYS receive`);
    }
    // The same device with a sane label gets exactly its site.
    const ok = wide.grantsFor(device("robot-1", null, { site: "berlin" }));
    assert.equal(ok.subscribe("sites/berlin/#").allowed, true);
    assert.equal(ok.subscribe("sites/#").allowed, false);
  });

  it("lets no hostile value switch off a deny rule: its level becomes + instead", () => {
    const p2 = policy(`version: 1
rules:
  - devices: all
    publish: ["sites/#"]
  - name: no-site-secrets
    effect: deny
    devices: all
    publish: ["sites/\${label:site}/secret"]
`);
    const hostile = p2.grantsFor(device("robot-1", null, { site: "a/b" }));
    assert.equal(hostile.publish("sites/berlin/secret").rule, "no-site-secrets");
    assert.equal(hostile.publish("sites/berlin/public").allowed, true);
    const none = p2.grantsFor(device("robot-1"));
    assert.equal(none.publish("sites/berlin/secret").allowed, true, "no label at all: the deny does not apply");
  });
});

describe("allow and deny", () => {
  const text = (denyFirst: boolean) => {
    const allow = `  - name: all-fleet
    devices: all
    publish: ["fleet/#"]
    subscribe: ["fleet/#"]
`;
    const deny = `  - name: no-secrets
    effect: deny
    devices: all
    publish: ["fleet/+/secret"]
    subscribe: ["fleet/+/secret"]
`;
    return `version: 1\nrules:\n${denyFirst ? deny + allow : allow + deny}`;
  };

  for (const denyFirst of [false, true])
    it(`an explicit deny wins over an overlapping allow (deny ${denyFirst ? "before" : "after"} it)`, () => {
      const g = policy(text(denyFirst)).grantsFor(device("robot-1"));
      assert.deepEqual([g.publish("fleet/robot-2/secret").outcome, g.publish("fleet/robot-2/secret").rule], ["deny", "no-secrets"]);
      assert.equal(g.publish("fleet/robot-2/public").rule, "all-fleet");
      assert.equal(g.subscribe("fleet/#").rule, "no-secrets", "a filter meeting a denied topic is denied whole");
      assert.equal(g.subscribe("fleet/+/+").allowed, false);
      assert.equal(g.subscribe("fleet/robot-2/public").allowed, true);
      assert.equal(g.subscribe("fleet/robot-2/+/x").allowed, true);
      assert.equal(g.receive("fleet/robot-2/secret").allowed, false);
      assert.equal(g.receive("fleet/robot-2/public").allowed, true);
    });
});

describe("audit mode", () => {
  it("file-wide: every deny, the default one included, is allowed and marked audit-deny", () => {
    const p = policy(`version: 1
mode: audit
rules:
  - name: own
    devices: all
    publish: ["fleet/\${device}/#"]
  - name: no-estop
    effect: deny
    devices: all
    publish: ["fleet/+/estop"]
`);
    assert.equal(p.mode, "audit");
    const g = p.grantsFor(device("robot-1"));
    assert.deepEqual(
      { ...g.publish("fleet/robot-2/x"), reason: "" },
      { allowed: true, outcome: "audit-deny", rule: undefined, reason: "" },
    );
    assert.match(g.publish("fleet/robot-2/x").reason, /would be denied.*audit mode/);
    const estop = g.publish("fleet/robot-1/estop");
    assert.deepEqual([estop.allowed, estop.outcome, estop.rule], [true, "audit-deny", "no-estop"]);
    const otherEstop = g.publish("fleet/robot-2/estop");
    assert.deepEqual([otherEstop.allowed, otherEstop.outcome, otherEstop.rule], [true, "audit-deny", "no-estop"]);
    assert.match(otherEstop.reason, /would be denied \(audit mode\) by rule "no-estop" \(line 7\)$/);
    assert.equal(g.publish("fleet/robot-1/x").outcome, "allow");
    assert.equal(g.subscribe("#").outcome, "audit-deny");
  });

  it("per rule: only that rule's denials are audited; other denies and the default deny still bite", () => {
    const p = policy(`version: 1
rules:
  - name: own
    devices: all
    publish: ["fleet/\${device}/#"]
  - name: new-estop-rule
    effect: deny
    mode: audit
    devices: all
    publish: ["fleet/+/estop"]
  - name: no-firmware
    effect: deny
    devices: all
    publish: ["fleet/+/firmware/#"]
`);
    const g = p.grantsFor(device("robot-1"));
    const estop = g.publish("fleet/robot-1/estop");
    assert.deepEqual([estop.allowed, estop.outcome, estop.rule], [true, "audit-deny", "new-estop-rule"]);
    assert.deepEqual([g.publish("fleet/robot-1/firmware/x").outcome, g.publish("fleet/robot-1/firmware/x").rule], ["deny", "no-firmware"]);
    assert.equal(g.publish("fleet/robot-2/estop").outcome, "deny", "not allowed anyway: the default deny is enforced");
    assert.equal(g.publish("fleet/robot-1/telemetry").outcome, "allow");
  });
});

describe("schema errors name file, line and field", () => {
  const cases: { name: string; text: string; line: number; field: string; message: RegExp }[] = [
    { name: "not YAML", text: "version: 1\nrules: [\n  - a: b\n", line: 3, field: "", message: /not valid YAML/ },
    { name: "no version", text: "rules: []\n", line: 1, field: "version", message: /missing/ },
    { name: "wrong version", text: "version: 2\nrules: []\n", line: 1, field: "version", message: /must be 1/ },
    { name: "unknown top key", text: "version: 1\nrules: []\nrulez: []\n", line: 3, field: "rulez", message: /unknown key "rulez"/ },
    { name: "bad mode", text: "version: 1\nmode: permissive\nrules: []\n", line: 2, field: "mode", message: /enforce or audit/ },
    {
      name: "unknown rule key",
      text: "version: 1\nrules:\n  - devices: all\n    publish: [a]\n    pubish: [b]\n",
      line: 5,
      field: "rules[0].pubish",
      message: /unknown key "pubish"/,
    },
    {
      name: "bad effect",
      text: "version: 1\nrules:\n  - devices: all\n    effect: permit\n    publish: [a]\n",
      line: 4,
      field: "rules[0].effect",
      message: /allow or deny/,
    },
    {
      name: "# not last",
      text: 'version: 1\nrules:\n  - devices: all\n    publish:\n      - "a/b"\n      - "a/#/b"\n',
      line: 6,
      field: "rules[0].publish[1]",
      message: /"#" must be the last level/,
    },
    {
      name: "+ not alone",
      text: "version: 1\nrules:\n  - devices: all\n    subscribe: [a/b+]\n",
      line: 4,
      field: "rules[0].subscribe[0]",
      message: /"\+" must be alone/,
    },
    {
      name: "unknown placeholder",
      text: 'version: 1\nrules:\n  - devices: all\n    publish: ["fleet/${devices}/x"]\n',
      line: 4,
      field: "rules[0].publish[0]",
      message: /unknown placeholder "\$\{devices\}"/,
    },
    {
      name: "no subject",
      text: "version: 1\nrules:\n  - name: x\n    publish: [a]\n",
      line: 3,
      field: "rules[0]",
      message: /names no subject/,
    },
    {
      name: "no grant",
      text: "version: 1\nrules:\n  - devices: all\n",
      line: 3,
      field: "rules[0]",
      message: /grants nothing/,
    },
    {
      name: "device placeholder for services",
      text: 'version: 1\nrules:\n  - services: [telemetry]\n    subscribe: ["fleet/${device}/#"]\n',
      line: 3,
      field: "rules[0]",
      message: /only devices have/,
    },
    {
      name: "unknown role",
      text: "version: 1\nrules:\n  - operators: { roles: [root] }\n    subscribe: [a]\n",
      line: 3,
      field: "rules[0].operators.roles",
      message: /unknown role "root"/,
    },
    {
      name: "unknown selector",
      text: "version: 1\nrules:\n  - devices:\n      group: [lab]\n    publish: [a]\n",
      line: 4,
      field: "rules[0].devices.group",
      message: /unknown key "group"/,
    },
    {
      name: "audit on an allow rule",
      text: "version: 1\nrules:\n  - devices: all\n    mode: audit\n    publish: [a]\n",
      line: 4,
      field: "rules[0].mode",
      message: /deny rules only/,
    },
    {
      name: "duplicate name",
      text: "version: 1\nrules:\n  - name: a\n    devices: all\n    publish: [x]\n  - name: a\n    devices: all\n    publish: [y]\n",
      line: 6,
      field: "a.name",
      message: /already used on line 3/,
    },
    {
      name: "number as filter",
      text: "version: 1\nrules:\n  - devices: all\n    publish: [42]\n",
      line: 4,
      field: "rules[0].publish[0]",
      message: /quote it/,
    },
    { name: "not a mapping", text: "- a\n- b\n", line: 1, field: "", message: /expected a mapping/ },
    { name: "duplicate key", text: "version: 1\nversion: 1\nrules: []\n", line: 2, field: "", message: /not valid YAML.*unique/ },
  ];
  for (const c of cases)
    it(c.name, () => {
      assert.throws(
        () => AccessPolicy.parse(c.text, "/etc/fleet/policy.yaml"),
        (e: unknown) => {
          assert.ok(e instanceof PolicyError, String(e));
          assert.equal(e.file, "/etc/fleet/policy.yaml");
          assert.equal(e.line, c.line, e.message);
          assert.equal(e.field, c.field, e.message);
          assert.match(e.message, c.message);
          assert.ok(e.message.startsWith(`/etc/fleet/policy.yaml line ${c.line}: ${c.field ? c.field + ": " : ""}`), e.message);
          return true;
        },
      );
    });

  it("lists every problem of a file, in line order", () => {
    const text = "version: 1\nrules:\n  - devices: all\n    publish: [a/#/b]\n  - services: all\n    effect: maybe\n    subscribe: [x]\n";
    assert.throws(
      () => AccessPolicy.parse(text, "p.yaml"),
      (e: unknown) => {
        assert.ok(e instanceof PolicyError);
        assert.deepEqual(
          e.problems.map((p) => [p.line, p.field]),
          [
            [4, "rules[0].publish[0]"],
            [6, "rules[1].effect"],
          ],
        );
        assert.match(e.message, /\(and 1 more problem\)$/);
        return true;
      },
    );
  });

  it("accepts an empty rule list (everything denied)", () => {
    const p = policy("version: 1\nrules: []\n");
    assert.equal(p.ruleCount, 0);
    assert.equal(p.grantsFor(device("r1")).publish("a").allowed, false);
  });
});

describe("PolicyFile", () => {
  const tmp = tempDir("fleetpki-policy-");
  after(() => tmp.cleanup());
  const OWN = 'version: 1\nrules:\n  - name: own\n    devices: all\n    subscribe: ["fleet/${device}/#"]\n';
  const NONE = "version: 1\nrules: []\n";

  it("refuses a missing file at open, naming its path", async () => {
    const path = join(tmp.path, "absent.yaml");
    await assert.rejects(
      PolicyFile.open(path),
      (e: unknown) => e instanceof PolicyError && e.message.includes(path) && /not found/.test(e.message),
    );
  });

  it("reloads a change; a broken file keeps the old policy and is reported once", async () => {
    const path = join(tmp.path, "policy.yaml");
    writeFileSync(path, OWN);
    const invalid: PolicyError[] = [];
    const reloaded: AccessPolicy[] = [];
    const file = await PolicyFile.open(
      path,
      (e) => invalid.push(e),
      (p) => reloaded.push(p),
    );
    try {
      assert.equal(file.version, 1);
      const before = file.current.grantsFor(device("robot-1"));
      assert.equal(before.subscribe("fleet/robot-1/#").allowed, true);

      writeFileSync(path, OWN.replace("subscribe:", "subscrbe:"));
      const r = file.reload();
      assert.equal(r.outcome, "invalid");
      assert.equal(file.reload().outcome, "invalid");
      assert.equal(invalid.length, 1, "reported once");
      assert.match(invalid[0]!.message, /line 5: rules\[0\]\.subscrbe: unknown key/);
      assert.equal(file.version, 1);
      assert.equal(file.current.grantsFor(device("robot-1")).subscribe("fleet/robot-1/#").allowed, true, "old policy stays");

      rmSync(path);
      assert.equal(file.reload().outcome, "invalid");
      assert.equal(file.current.grantsFor(device("robot-1")).receive("fleet/robot-1/x").allowed, true, "a deleted file keeps the policy");

      // A reload that takes a grant away: the subscription granted before stops receiving.
      writeFileSync(path, NONE);
      assert.equal(file.reload().outcome, "reloaded");
      assert.equal(file.version, 2);
      assert.equal(reloaded.length, 1);
      assert.equal(file.current.grantsFor(device("robot-1")).receive("fleet/robot-1/x").allowed, false);
      assert.equal(file.reload().outcome, "unchanged");
    } finally {
      file.close();
    }
  });

  it("follows a file replaced by rename, without reload() being called", async () => {
    const path = join(tmp.path, "watched.yaml");
    writeFileSync(path, NONE);
    let resolveReload!: (p: AccessPolicy) => void;
    const changed = new Promise<AccessPolicy>((r) => (resolveReload = r));
    // The watcher and the poll do not keep a process alive (unref): this timer does, and bounds the wait.
    const guard = setTimeout(() => resolveReload(undefined as unknown as AccessPolicy), 10_000);
    const file = await PolicyFile.open(path, undefined, (p) => resolveReload(p));
    try {
      writeFileSync(path + ".tmp", OWN);
      renameSync(path + ".tmp", path);
      // fs.watch reacts within milliseconds; the 1 s poll is the fallback. A hang here fails by the test timeout.
      const p = await changed;
      assert.ok(p, "no reload within 10 s");
      assert.equal(p.ruleCount, 1);
      assert.equal(file.current, p);
      assert.equal(file.version, 2);
    } finally {
      clearTimeout(guard);
      file.close();
    }
  });
});
