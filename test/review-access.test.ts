// Review of the access policy and identities branches: hostile inputs that the merged code got wrong.
// Each test sends the input that broke it (see the commit that fixed it).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { AccessIdentity } from "../src/access/identity.js";
import { AccessPolicy } from "../src/access/policy.js";

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
