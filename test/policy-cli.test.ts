// `fleetpki policy check|test|init` through the real CLI, on a fleet made by init (which writes the
// default policy): decisions with the rule that made them, devices' groups and labels read from
// the registry, every schema error on its own line, one-line errors for bad requests.
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { DEFAULT_POLICY } from "../src/access/default-policy.js";
import { addDevice } from "../src/authority/devices.js";
import type { FleetServices } from "../src/authority/services.js";
import { assertOk, assertOneLineError, cli, tempDir, tempFleet } from "./helpers.js";

describe("fleetpki policy", () => {
  let dir: string;
  let fleet: FleetServices;
  let close: () => Promise<void>;
  const tmp = tempDir("fleetpki-policy-cli-");
  const policyTest = (...args: string[]) => cli(["policy", "test", "--dir", dir, ...args]);

  before(async () => {
    const f = await tempFleet();
    dir = f.dir;
    fleet = f.fleet;
    close = f.close;
    await addDevice(fleet, { id: "robot-1", actor: "test" });
    await addDevice(fleet, { id: "robot-2", group: "lab", labels: { site: "berlin" }, actor: "test" });
    await addDevice(fleet, { id: "robot-3", labels: { site: "#" }, actor: "test" });
  });
  after(async () => {
    await close();
    tmp.cleanup();
  });

  it("init writes the default policy (0644), and `policy check` accepts it", () => {
    const path = join(dir, "policy.yaml");
    assert.equal(readFileSync(path, "utf8"), DEFAULT_POLICY);
    assert.equal(statSync(path).mode & 0o777, 0o644);
    const r = cli(["policy", "check", "--dir", dir]);
    assertOk(r, "policy check");
    assert.equal(r.stdout, `ok: ${path}: 3 rules, mode enforce\n`);
  });

  it("`policy check FILE` prints every schema error with its line, exit 1", () => {
    const file = join(tmp.path, "broken.yaml");
    writeFileSync(
      file,
      [
        "version: 1",
        "rules:",
        "  - name: a",
        "    devices: all",
        '    publish: ["fleet/#/x"]',
        "  - name: b",
        "    services: [telemetry]",
        "    effect: allw",
        '    subscribe: ["fleet/+/#"]',
        "",
      ].join("\n"),
    );
    const r = cli(["policy", "check", file]);
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stdout, "");
    assert.deepEqual(r.stderr.trimEnd().split("\n"), [
      `fleetpki: ${file} line 5: rules[0].publish[0]: topic filter "fleet/#/x": "#" must be the last level and alone in it (level 2: "#")`,
      `fleetpki: ${file} line 8: rules[1].effect: must be allow or deny`,
    ]);
  });

  it("`policy check` on a fleet without policy.yaml says it is missing; `policy init` writes the default once", () => {
    const fleetDir = join(tmp.path, "old-fleet");
    // A fleet made before policies had no policy.yaml (its fleetpki.yaml is all `policy` reads).
    mkdirSync(fleetDir);
    copyFileSync(join(dir, "fleetpki.yaml"), join(fleetDir, "fleetpki.yaml"));
    const missing = cli(["policy", "check", "--dir", fleetDir]);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, new RegExp(`^fleetpki: ${join(fleetDir, "policy.yaml")}: not found \\(\`fleetpki policy init\``));
    assertOk(cli(["policy", "init", "--dir", fleetDir]), "policy init");
    assert.equal(readFileSync(join(fleetDir, "policy.yaml"), "utf8"), DEFAULT_POLICY);
    assertOneLineError(cli(["policy", "init", "--dir", fleetDir]), /already exists/);
    assertOneLineError(cli(["policy", "init", "--dir", join(tmp.path, "nothing")]), /no fleet at/);
  });

  it("`policy test` prints the decision and the rule, for devices and services", () => {
    const own = policyTest("--device", "robot-1", "--publish", "fleet/robot-1/telemetry");
    assertOk(own, "own topic");
    assert.match(own.stdout, /^allow {2}rule devices-publish-own\n {2}device robot-1: publish "fleet\/robot-1\/telemetry" allowed by rule/);
    const other = policyTest("--device", "robot-1", "--publish", "fleet/robot-2/cmd/cmd_vel");
    assertOk(other, "other device's cmd");
    assert.match(other.stdout, /^deny {2}\(default deny: no rule allows it\)\n/);
    for (const filter of ["#", "fleet/+/cmd/#"])
      assert.match(policyTest("--device", "robot-1", "--subscribe", filter).stdout, /^deny /, filter);
    assert.match(policyTest("--service", "telemetry", "--subscribe", "fleet/+/#").stdout, /^allow {2}rule telemetry-reads-fleet/);
    assert.match(policyTest("--service", "telemetry", "--publish", "fleet/robot-1/cmd/x").stdout, /^deny /);
    assert.match(policyTest("--operator", "alice", "--role", "admin", "--subscribe", "$SYS/#").stdout, /^deny /);
  });

  it("`policy test --device` takes group and labels from the registry", () => {
    const file = join(tmp.path, "groups.yaml");
    writeFileSync(
      file,
      "version: 1\nmode: audit\nrules:\n  - name: site\n    devices: { groups: [lab] }\n" +
        '    publish: ["sites/${label:site}/${group}/${device}"]\n',
    );
    const r = policyTest("--file", file, "--json", "--device", "robot-2", "--publish", "sites/berlin/lab/robot-2");
    assertOk(r, "policy test --json");
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.identity, { kind: "device", id: "robot-2", group: "lab", labels: { site: "berlin" } });
    assert.equal(out.deviceStatus, "active");
    assert.deepEqual([out.allowed, out.outcome, out.rule], [true, "allow", "site"]);
    const audited = JSON.parse(policyTest("--file", file, "--json", "--device", "robot-1", "--publish", "sites/berlin/lab/robot-1").stdout);
    assert.deepEqual([audited.allowed, audited.outcome], [true, "audit-deny"], "robot-1 has no group: audit mode lets it through, logged");
  });

  it("refuses bad requests with one line", () => {
    assertOneLineError(policyTest("--device", "robot-9", "--publish", "a"), /unknown device "robot-9"/);
    assertOneLineError(policyTest("--publish", "a"), /exactly one of --device, --service, --operator/);
    assertOneLineError(policyTest("--device", "robot-1", "--service", "x", "--publish", "a"), /exactly one of/);
    assertOneLineError(policyTest("--device", "robot-1"), /exactly one of --publish, --subscribe, --receive/);
    assertOneLineError(policyTest("--operator", "alice", "--subscribe", "a"), /--role/);
    const broken = join(tmp.path, "broken-test.yaml");
    writeFileSync(broken, "version: 1\nrules:\n  - devices: al\n    publish: [a]\n");
    const line = assertOneLineError(policyTest("--file", broken, "--service", "x", "--publish", "a"));
    assert.match(line, /broken-test\.yaml line 3: rules\[0\]\.devices: must be all/);
  });

  it("a device's hostile label never widens what it may read", () => {
    // Labels are free text in the registry: "#" as a site must not turn sites/${label:site}/# into "#".
    const file = join(tmp.path, "hostile.yaml");
    writeFileSync(file, 'version: 1\nrules:\n  - devices: all\n    subscribe: ["sites/${label:site}/#"]\n');
    for (const filter of ["sites/#", "sites/+/#", "sites/+/x"])
      assert.match(policyTest("--file", file, "--device", "robot-3", "--subscribe", filter).stdout, /^deny /, filter);
  });
});
