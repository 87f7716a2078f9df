// The gateway's settings in fleetpki.yaml, and `serve --only gateway` without a policy file.
import assert from "node:assert/strict";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ConfigError, DEFAULT_GATEWAY, defaultConfig, parseConfig, renderConfig } from "../src/config/config.js";
import { assertOneLineError, cliAsync, tempFleet } from "./helpers.js";

/** The rendered file without listen.gateway and the gateway section (as files written before the gateway). */
const withoutGateway = (text: string): string =>
  text.replace(/^  gateway: .*\n/m, "").replace(/^# The MQTT gateway.*\ngateway:\n(  .*\n)+/m, "");

const base = renderConfig(
  defaultConfig({
    name: "Test",
    domain: "fleet.example",
    keyType: "p256",
    passphraseFile: "secrets/passphrase",
    serverNames: ["localhost"],
  }),
);

describe("gateway configuration", () => {
  it("init renders listen.gateway and the gateway section with their defaults", () => {
    const c = parseConfig(base);
    assert.equal(c.listen.gateway, "0.0.0.0:8883");
    assert.deepEqual(c.gateway, DEFAULT_GATEWAY);
    assert.equal(c.gateway.denials_per_minute, 30);
    assert.equal(c.gateway.allow_local_cas, false);
  });

  it("files from before the gateway get the defaults", () => {
    const old = withoutGateway(base);
    assert.doesNotMatch(old, /gateway/);
    const c = parseConfig(old);
    assert.equal(c.listen.gateway, "0.0.0.0:8883");
    assert.deepEqual(c.gateway, DEFAULT_GATEWAY);
  });

  it("refuses bad values, naming the key", () => {
    const bad: [string, RegExp][] = [
      ["denials_per_minute: 0", /gateway\.denials_per_minute must be a positive integer/],
      ["denials_per_minute: 2.5", /gateway\.denials_per_minute must be a positive integer/],
      ["allow_local_cas: yes please", /gateway\.allow_local_cas must be true or false/],
      ["limits: 5", /gateway\.limits must be a mapping/],
      ["alow_local_cas: true", /line \d+: unknown key "gateway\.alow_local_cas" \(did you mean gateway\.allow_local_cas\?\)/],
    ];
    for (const [line, message] of bad)
      assert.throws(
        () => parseConfig(`${withoutGateway(base)}\ngateway:\n  ${line}\n`),
        (e: Error) => e instanceof ConfigError && message.test(e.message),
        line,
      );
  });

  it("serve --only gateway refuses to start without policy.yaml and says how to make one", async () => {
    const f = await tempFleet();
    try {
      const policy = join(f.dir, "policy.yaml");
      assert.ok(existsSync(policy), "init writes the default policy");
      rmSync(policy);
      const r = await cliAsync(["serve", "--dir", f.dir, "--only", "gateway", "--gateway-listen", "127.0.0.1:0"]);
      assertOneLineError(r, /policy\.yaml not found \(`fleetpki policy init` writes the default one/);
    } finally {
      await f.close();
    }
  });
});
