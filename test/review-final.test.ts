// Final review of issue 10's flood protection and demo: each test sends the hostile or unlucky
// input that the code before the review mishandled.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ConfigError } from "../src/config/config.js";
import { AddressLimiter, DEFAULT_GATEWAY_LIMITS, FloodLimiter, floodSeam, parseGatewayLimits } from "../src/gateway/limits.js";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import mqtt from "mqtt";
import type { AccessDecision, AccessGrants, AccessIdentity } from "../src/access/identity.js";
import { addDevice } from "../src/authority/devices.js";
import { issueForKey, subjectKeyOf } from "../src/authority/issue/issuance.js";
import type { PolicySource } from "../src/gateway/server.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer } from "../src/server.js";
import { CLI, tempFleet } from "./helpers.js";

describe("review-final: flood limits", () => {
  it("a burst of refused attempts from one address (a shared NAT) locks it out for at most a minute after it stops", () => {
    let t = 0;
    const a = new AddressLimiter(100, 60, () => t);
    // One host behind the NAT hammers: 100,000 attempts in a few seconds, all but 60 refused.
    for (let i = 0; i < 100_000; i++) {
      if (a.opened("203.0.113.7") === undefined) a.closed("203.0.113.7");
      if (i % 20_000 === 0) t += 1000;
    }
    // Two minutes after the hammering stopped, an honest robot behind the same NAT gets in.
    t += 120_000;
    assert.equal(a.opened("203.0.113.7"), undefined);
  });

  it("refuses rates whose bucket cannot hold one message of the largest allowed size", () => {
    const refused = (value: unknown, re: RegExp) =>
      assert.throws(
        () => parseGatewayLimits(value),
        (e: unknown) => e instanceof ConfigError && re.test(e.message),
      );
    refused(
      { default: { bytes_per_second: 5000, burst_seconds: 2 } },
      /default: bytes_per_second x burst_seconds .* max_payload_bytes \(262144\)/,
    );
    refused({ groups: { cams: { messages_per_second: 100, burst_seconds: 0.005 } } }, /groups\.cams: messages_per_second x burst_seconds/);
    const ok = parseGatewayLimits({ default: { bytes_per_second: 5000, burst_seconds: 2 }, max_payload_bytes: 10_000 });
    assert.equal(ok.max_payload_bytes, 10_000);
  });

  it("refuses timer settings longer than a timer can wait (Node would fire them after 1 ms)", () => {
    for (const key of ["drain_timeout_seconds", "max_debt_seconds"])
      assert.throws(
        () => parseGatewayLimits({ [key]: 10_000_000 }),
        (e: unknown) => e instanceof ConfigError && e.message.includes(key),
      );
    assert.equal(parseGatewayLimits({ drain_timeout_seconds: 2_147_483 }).drain_timeout_seconds, 2_147_483);
  });
});

describe("review-final: fleetpki demo", () => {
  it("removes its temporary directory when interrupted with SIGINT", async () => {
    const tmp = mkdtempSync(join(tmpdir(), "fleetpki-review-demo-"));
    try {
      const child = spawn(process.execPath, [CLI, "demo"], { env: { ...process.env, TMPDIR: tmp }, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      // Interrupted once the fleet exists (step 2 starts the server): keys are on disk by then.
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.includes("\n2. ")) resolve();
        });
        void exited.then(() => reject(new Error(`demo exited before step 2:\n${out}`)));
      });
      assert.ok(
        readdirSync(tmp).some((n) => n.startsWith("fleetpki-demo-")),
        "the demo made its directory",
      );
      child.kill("SIGINT");
      const code = await exited;
      assert.notEqual(code, 0);
      assert.deepEqual(readdirSync(tmp), [], "nothing left in TMPDIR after Ctrl-C");
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe("review-final: max_subscriptions over a real gateway", () => {
  it("one SUBSCRIBE with many filters from a persistent (clean: false) session gets no more than max_subscriptions", async () => {
    const f = await tempFleet();
    const config = join(f.dir, "fleetpki.yaml");
    writeFileSync(config, readFileSync(config, "utf8").replace(/^gateway:\n/m, "gateway:\n  limits:\n    max_subscriptions: 5\n"));
    const allow: AccessDecision = { allowed: true, outcome: "allow", rule: "test", reason: "allowed" };
    const policy: PolicySource = {
      grantsFor: (_id: AccessIdentity): AccessGrants => ({ publish: () => allow, subscribe: () => allow, receive: () => allow }),
    };
    await addDevice(f.fleet, { id: "robot-1", actor: "test" });
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const cert = await issueForKey(f.fleet, { deviceId: "robot-1", actor: "test" }, subjectKeyOf(privateKey));
    const server = await startFleetServer({ dir: f.dir, only: ["gateway"], gatewayListen: "127.0.0.1:0", policy, logger: silentLogger });
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${server.gateway!.address.port}`, {
      clientId: "robot-1",
      key: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
      cert: cert.certificatePem + cert.chainPem,
      ca: readFileSync(join(f.dir, "ca", "root", "cert.pem"), "utf8"),
      servername: "localhost",
      protocolVersion: 4,
      clean: false,
      reconnectPeriod: 0,
    });
    try {
      const filters = Array.from({ length: 40 }, (_, i) => `fleet/robot-1/cmd/${i}`);
      // mqtt.js rejects when any filter is refused; the SUBACK's codes are on the error.
      const codes = await client.subscribeAsync(filters, { qos: 0 }).then(
        (granted) => granted.map((g) => g.qos),
        (e: { packet?: { granted?: number[] } }) => e.packet?.granted ?? assert.fail(String(e)),
      );
      assert.equal(codes.length, 40);
      const accepted = codes.filter((q) => q !== 128).length;
      assert.equal(accepted, 5, `${accepted} of 40 filters granted with max_subscriptions 5`);
    } finally {
      client.end(true);
      await server.close();
      await f.close();
    }
  });
});

describe("review-final: gateway counters", () => {
  it("a connection refused by the per-address limit is counted once in refused", async () => {
    const f = await tempFleet();
    const config = join(f.dir, "fleetpki.yaml");
    const limits = "gateway:\n  limits:\n    max_connections_per_address: 1\n";
    writeFileSync(config, readFileSync(config, "utf8").replace(/^gateway:\n/m, limits));
    const server = await startFleetServer({ dir: f.dir, only: ["gateway"], gatewayListen: "127.0.0.1:0", logger: silentLogger });
    const port = server.gateway!.address.port;
    const first = netConnect(port, "127.0.0.1");
    try {
      await new Promise((r) => first.once("connect", r));
      const second = netConnect(port, "127.0.0.1");
      second.on("error", () => {});
      await new Promise((r) => second.once("close", r));
      const refused = server.gateway!.counters.refused;
      const total = Object.values(refused).reduce((a, b) => a + b, 0);
      assert.equal(total, 1, `refused: ${JSON.stringify(refused)}`);
      assert.equal(refused["address-connections"], 1);
    } finally {
      first.destroy();
      await server.close();
      await f.close();
    }
  });
});

describe("review-final: flood seam after a session closed", () => {
  it("a PUBLISH handled after its session closed is refused and leaves no limiter state behind", () => {
    let t = 0;
    const flood = new FloodLimiter(
      DEFAULT_GATEWAY_LIMITS,
      () => t,
      () => () => {},
    );
    const seam = floodSeam(flood);
    const session = { identity: { kind: "device", id: "robot-1", group: null, labels: {} } as unknown as AccessIdentity };
    // aedes may still hand over packets of the batch it was parsing when the connection closed.
    seam.sessionClosed(session);
    assert.equal(seam.publish(session, { topic: "fleet/robot-1/t", payloadBytes: 10, qos: 0 }), "close");
    t += 3_600_000;
    flood.sweep();
    assert.equal(flood.size, 0, "the identity is forgotten once idle");
  });
});
