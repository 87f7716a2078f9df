// Review of the access policy and identities branches: hostile inputs that the merged code got wrong.
// Each test sends the input that broke it (see the commit that fixed it).
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import Database from "better-sqlite3";
import type { AccessIdentity } from "../src/access/identity.js";
import { AccessPolicy, PolicyError } from "../src/access/policy.js";
import { addDevice, updateDevice } from "../src/authority/devices.js";
import { verifyFleetAudit } from "../src/authority/audit-checkpoints.js";
import { InvalidArgument } from "../src/authority/errors.js";
import { addService, removeService } from "../src/authority/identities/services.js";
import { tempDir, tempFleet } from "./helpers.js";

const policy = (text: string) => AccessPolicy.parse(text, "policy.yaml");
const device = (id: string, group: string | null = null, labels: Record<string, string> = {}): AccessIdentity => ({
  kind: "device",
  id,
  group,
  labels,
});

describe("review: deny rules fail closed", () => {
  const text = `version: 1
rules:
  - name: devices-publish-fleet
    devices: all
    publish: ["fleet/#"]
  - name: backends-publish-fleet
    services: all
    publish: ["fleet/#"]
  - name: no-commands
    effect: deny
    devices: all
    services: all
    publish: ["fleet/+/cmd/#", "zones/\${label:zone}/#"]
`;

  it("a deny filter whose placeholder a device cannot fill does not switch off the rule's other filters", () => {
    const p = policy(text);
    const labelled = p.grantsFor(device("r1", null, { zone: "north" })).publish("fleet/r2/cmd/cmd_vel");
    assert.equal(labelled.allowed, false);
    // The same device without the label: the deny must still hold for fleet/+/cmd/#.
    const unlabelled = p.grantsFor(device("r1")).publish("fleet/r2/cmd/cmd_vel");
    assert.equal(unlabelled.allowed, false, unlabelled.reason);
    assert.equal(unlabelled.rule, "no-commands");
  });

  it("a deny rule naming devices and services still denies a service its literal filters", () => {
    const d = policy(text).grantsFor({ kind: "service", name: "control" }).publish("fleet/r2/cmd/cmd_vel");
    assert.equal(d.allowed, false, d.reason);
    assert.equal(d.rule, "no-commands");
  });
});

describe("review: label keys that name Object.prototype members", () => {
  const text = `version: 1
rules:
  - name: by-constructor
    devices: all
    publish: ["x/\${label:constructor}"]
  - name: own
    devices: all
    publish: ["fleet/\${device}/#"]
  - name: deny-constructor
    effect: deny
    devices: all
    publish: ["y/\${label:constructor}"]
`;

  it("a device without the label gets a decision (the rule does not apply), not a TypeError", () => {
    // Labels as the registry and CertificateStatus hand them over: a plain object from JSON.parse.
    const labels = JSON.parse("{}") as Record<string, string>;
    const grants = policy(text).grantsFor(device("r1", null, labels));
    assert.equal(grants.publish("fleet/r1/telemetry").allowed, true);
    assert.equal(grants.publish("x/y").allowed, false);
  });

  it("a device that has the label is substituted as usual", () => {
    const grants = policy(text).grantsFor(device("r1", null, JSON.parse('{"constructor":"c1"}') as Record<string, string>));
    assert.equal(grants.publish("x/c1").allowed, true);
    assert.equal(grants.publish("x/c2").allowed, false);
  });

  it("device set can remove a label named constructor, and refuses to remove one the device lacks as missing", async () => {
    const f = await tempFleet();
    try {
      await addDevice(f.fleet, { id: "r1", labels: { constructor: "c1", site: "x" }, actor: "test" });
      const updated = await updateDevice(f.fleet, { id: "r1", unsetLabels: ["constructor"], actor: "test" });
      assert.deepEqual(updated.labels, { site: "x" });
      await assert.rejects(
        updateDevice(f.fleet, { id: "r1", unsetLabels: ["constructor"], actor: "test" }),
        (e: unknown) => e instanceof InvalidArgument && /has no label "constructor"/.test((e as Error).message),
      );
    } finally {
      await f.close();
    }
  });
});

describe("review: placeholder scanning is linear", () => {
  it('a filter of 100,000 "${" is refused quickly, not after a quadratic scan that stalls a reload', () => {
    const filter = "${".repeat(100_000);
    const started = process.hrtime.bigint();
    assert.throws(
      () => policy(`version: 1\nrules:\n  - devices: all\n    publish: ["${filter}"]\n`),
      (e: unknown) => e instanceof PolicyError && /does not start a placeholder/.test(e.message),
    );
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    // The quadratic scan took about 17 s here (68 s for 200,000); the linear one a few ms.
    assert.ok(ms < 4000, `took ${Math.round(ms)} ms`);
  });
});

describe("review: audit verify sees a service certificate moved away from its service behind the log", () => {
  it("a certificate whose subject_id or kind was changed in the table (so service remove skips it) is reported", async () => {
    const f = await tempFleet();
    const out = tempDir("fleetpki-review-service-");
    try {
      const first = await addService(f.fleet, { name: "telemetry", outDir: join(out.path, "a"), actor: "test" });
      const second = await addService(f.fleet, { name: "telemetry", outDir: join(out.path, "b"), renew: true, actor: "test" });
      const third = await addService(f.fleet, { name: "control", outDir: join(out.path, "c"), actor: "test" });
      assert.deepEqual((await verifyFleetAudit(f.fleet)).problems, []);
      // Someone who can write the database hides two certificates from `service remove`.
      const db = new Database(join(f.dir, "fleetpki.db"));
      try {
        db.prepare("UPDATE certificates SET subject_id = 'telemetry-old' WHERE serial = ?").run(first.serial);
        db.prepare("UPDATE certificates SET kind = 'server' WHERE serial = ?").run(third.serial);
      } finally {
        db.close();
      }
      const removed = await removeService(f.fleet, { name: "telemetry", actor: "test" });
      assert.deepEqual(removed.serials, [second.serial], "the tampered certificate escaped the removal");
      const problems = (await verifyFleetAudit(f.fleet)).problems.join("\n");
      assert.match(problems, new RegExp(`certificate ${first.serial} .*telemetry`));
      assert.match(problems, new RegExp(`certificate ${third.serial} .*service`));
    } finally {
      await f.close();
      out.cleanup();
    }
  });
});

describe("review: service add --out into an existing directory", () => {
  it("leaves the directory's mode alone (a new one is made 0700); the key is 0600", async () => {
    const f = await tempFleet();
    const out = tempDir("fleetpki-review-out-");
    try {
      const shared = join(out.path, "srv-telemetry");
      mkdirSync(shared);
      chmodSync(shared, 0o755); // e.g. the backend's own directory, which its user must still enter
      const s = await addService(f.fleet, { name: "telemetry", outDir: shared, actor: "test" });
      assert.equal(statSync(shared).mode & 0o777, 0o755);
      assert.equal(statSync(s.files.key).mode & 0o777, 0o600);
      const fresh = join(out.path, "new", "control");
      await addService(f.fleet, { name: "control", outDir: fresh, actor: "test" });
      assert.equal(statSync(fresh).mode & 0o777, 0o700);
    } finally {
      await f.close();
      out.cleanup();
    }
  });
});
