// Bad input to the revocation surface: settings, serials, reasons and commands each get a
// specific error and change nothing.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { parse, stringify } from "yaml";
import { addDevice } from "../src/authority/devices.js";
import { InvalidArgument, UnknownCa, UnknownDevice } from "../src/authority/errors.js";
import {
  holdDevice,
  normalizeSerial,
  parseRevokeReason,
  revokeCertificate,
  revokeDevice,
  revokeLocalCa,
  unholdDevice,
} from "../src/authority/status/revocation.js";
import { ros2CrlValidityWarning } from "../src/authority/status/crls.js";
import { ConfigError, DEFAULT_REVOCATION, defaultConfig, parseConfig, renderConfig } from "../src/config/config.js";
import { assertOneLineError, cliAsync, tempFleet } from "./helpers.js";
import { sqliteStore } from "./support/sqlite.js";

const base = renderConfig(
  defaultConfig({ name: "t", domain: "fleet.example", keyType: "p256", passphraseFile: "secrets/passphrase", serverNames: ["localhost"] }),
);
const withRevocation = (revocation: unknown) => {
  const doc = parse(base) as Record<string, unknown>;
  doc.revocation = revocation;
  return stringify(doc);
};

describe("revocation settings", () => {
  it("defaults when the section is absent; the written file round-trips", () => {
    const doc = parse(base) as Record<string, unknown>;
    delete doc.revocation;
    assert.deepEqual(parseConfig(stringify(doc)).revocation, DEFAULT_REVOCATION);
    assert.deepEqual(parseConfig(base).revocation, DEFAULT_REVOCATION);
  });
  for (const [value, pattern] of [
    [{ crl_validity: "1s" }, /revocation\.crl_validity: must be at least 2s/],
    [{ ocsp_responder_validity: "soon" }, /revocation\.ocsp_responder_validity: invalid duration/],
    [{ ocsp_cache: "0s" }, /revocation\.ocsp_cache: duration "0s" must be positive/],
    [{ ocsp_cache: "soon" }, /revocation\.ocsp_cache: invalid duration/],
    [{ ocsp_max_certificates: 0 }, /ocsp_max_certificates must be an integer from 1 to 1000/],
    [{ ocsp_max_certificates: "16" }, /ocsp_max_certificates must be an integer/],
    ["yes", /"revocation" must be a mapping/],
    [{ ros2_crl_validity: "1s" }, /revocation\.ros2_crl_validity: must be at least 2s/],
    [{ ros2_crl_validity: "29d" }, /revocation\.ros2_crl_validity \(29d\) is shorter than validity\.ros2_enclave \(30d\)/],
  ] as const)
    it(`refuses ${JSON.stringify(value)}`, () =>
      assert.throws(
        () => parseConfig(withRevocation(value)),
        (e: Error) => e instanceof ConfigError && pattern.test(e.message),
      ));
  it("ros2_crl_validity: 45d by default (written by init), never below validity.ros2_enclave, unset follows it", () => {
    assert.equal(DEFAULT_REVOCATION.ros2_crl_validity, "45d");
    assert.match(base, /^  ros2_crl_validity: 45d$/m);
    assert.equal(parseConfig(withRevocation({ ros2_crl_validity: "30d" })).revocation.ros2_crl_validity, "30d");
    const doc = parse(base) as Record<string, any>;
    doc.validity.ros2_enclave = "60d";
    doc.revocation.ros2_crl_validity = "45d";
    assert.throws(() => parseConfig(stringify(doc)), /ros2_crl_validity \(45d\) is shorter than validity\.ros2_enclave \(60d\)/);
    // A file written before the key existed: 3/2 of a longer enclave lifetime, not a CRL that expires inside running nodes.
    delete doc.revocation.ros2_crl_validity;
    assert.equal(parseConfig(stringify(doc)).revocation.ros2_crl_validity, "90d");
    delete doc.revocation;
    assert.equal(parseConfig(stringify(doc)).revocation.ros2_crl_validity, "90d");
  });
  it("serve warns below 4/3 of validity.ros2_enclave (a node may outlive a CRL re-signed at half-life)", () => {
    assert.equal(ros2CrlValidityWarning(parseConfig(base)), undefined);
    assert.equal(ros2CrlValidityWarning(parseConfig(withRevocation({ ros2_crl_validity: "40d" }))), undefined);
    const warning = ros2CrlValidityWarning(parseConfig(withRevocation({ ros2_crl_validity: "39d" })));
    assert.match(warning ?? "", /revocation\.ros2_crl_validity \(39d\) is less than 4\/3 of validity\.ros2_enclave \(30d\)/);
  });
});

describe("serials and reasons", () => {
  it("normalizes the forms operators paste", () => {
    assert.equal(normalizeSerial("serial=01AB:CD"), "01abcd");
    assert.equal(normalizeSerial("0x1abcd"), "01abcd");
    assert.equal(normalizeSerial("00 00 7f"), "7f");
  });
  for (const bad of ["", "xyz", "01-02", "0".repeat(43)])
    it(`refuses serial ${JSON.stringify(bad)}`, () => assert.throws(() => normalizeSerial(bad), InvalidArgument));
  it("reasons: case-insensitive names, unknown and CA-only reasons refused", () => {
    assert.equal(parseRevokeReason(undefined), "unspecified");
    assert.equal(parseRevokeReason("KEYCOMPROMISE"), "keyCompromise");
    for (const bad of ["certificateHold", "cACompromise", "lost"]) assert.throws(() => parseRevokeReason(bad), /--reason must be one of/);
  });
});

describe("revocation refusals leave nothing behind", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  before(async () => {
    f = await tempFleet();
    await addDevice(f.fleet, { id: "in-1", actor: "test" });
  });
  after(() => f.close());

  it("unknown devices, serials and CAs; wrong state transitions; the audit log only grows for what happened", async () => {
    const count = async () =>
      Number(
        (
          await sqliteStore(f.fleet)
            .db.selectFrom("audit_log")
            .select((eb) => eb.fn.countAll().as("n"))
            .executeTakeFirstOrThrow()
        ).n,
      );
    const before = await count();
    await assert.rejects(revokeDevice(f.fleet, { deviceId: "nobody", actor: "t" }), UnknownDevice);
    await assert.rejects(revokeCertificate(f.fleet, { serial: "01ab", actor: "t" }), /no certificate with serial 01ab/);
    await assert.rejects(revokeLocalCa(f.fleet, { name: "nope", actor: "t" }), UnknownCa);
    await assert.rejects(revokeLocalCa(f.fleet, { name: "local-devices", actor: "t" }), UnknownCa);
    await assert.rejects(unholdDevice(f.fleet, { deviceId: "in-1", actor: "t" }), /is active, not on hold/);
    assert.equal(await count(), before);
    await holdDevice(f.fleet, { deviceId: "in-1", actor: "t" });
    await assert.rejects(holdDevice(f.fleet, { deviceId: "in-1", actor: "t" }), /only an active device can be put on hold/);
    await revokeDevice(f.fleet, { deviceId: "in-1", actor: "t" });
    await assert.rejects(revokeDevice(f.fleet, { deviceId: "in-1", actor: "t" }), /already revoked/);
    assert.equal(await count(), before + 2);
  });

  it("the CLI: a bad reason, serial or CA name is one line on stderr and a non-zero exit", async () => {
    const d = ["--dir", f.dir];
    const [reason, serial, ca, crl] = await Promise.all([
      cliAsync(["device", "revoke", "in-1", "--reason", "lost", ...d]),
      cliAsync(["cert", "revoke", "not-hex", ...d]),
      cliAsync(["ca", "revoke-local", "nope", ...d]),
      cliAsync(["crl", "export", "--ca", "nope", "--out", f.dir, ...d]),
    ]);
    assertOneLineError(reason, /--reason must be one of unspecified, keyCompromise/);
    assertOneLineError(serial, /invalid serial "not-hex"/);
    assertOneLineError(ca, /unknown CA "local-nope"/);
    assertOneLineError(crl, /unknown CA "nope"/);
  });
});
