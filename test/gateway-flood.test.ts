// Flood protection of the MQTT gateway (issue 10 §4), end to end over mutual TLS: one device
// publishing as fast as its socket takes it while 20 others publish 10 msgs/s each, a service
// reading all of them; a packet declaring more than the payload limit; too many connections from
// one address. This file measures rates, so it runs in real time, with generous margins.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect as netConnect } from "node:net";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import mqtt, { type MqttClient } from "mqtt";
import type { AccessDecision, AccessGrants, AccessIdentity } from "../src/access/identity.js";
import { addDevice } from "../src/authority/devices.js";
import { addService } from "../src/authority/identities/services.js";
import { issueForKey, subjectKeyOf } from "../src/authority/issue/issuance.js";
import { silentLogger } from "../src/log.js";
import type { PolicySource } from "../src/gateway/server.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { tempFleet } from "./helpers.js";

const allow: AccessDecision = { allowed: true, outcome: "allow", rule: "test", reason: "allowed" };
const deny: AccessDecision = { allowed: false, outcome: "deny", rule: undefined, reason: "default deny" };
const decide = (ok: boolean): AccessDecision => (ok ? allow : deny);

/** As the default policy: a device publishes under fleet/<id>/; the service "telemetry" reads fleet/+/#. */
const policy: PolicySource = {
  grantsFor(id: AccessIdentity): AccessGrants {
    if (id.kind === "service" && id.name === "telemetry")
      return { publish: () => deny, subscribe: (f) => decide(/^fleet\/\+\//.test(f)), receive: (t) => decide(t.startsWith("fleet/")) };
    if (id.kind !== "device") return { publish: () => deny, subscribe: () => deny, receive: () => deny };
    return { publish: (t) => decide(t.startsWith(`fleet/${id.id}/`)), subscribe: () => deny, receive: () => deny };
  },
};

interface Credentials {
  id: string;
  key: string;
  cert: string;
  ca: string;
}

const DEVICES = 20;
const RATE = 10; // msgs/s per well-behaved device
const SECONDS = 4;
/** Well above the 20 devices' 10 msgs/s; the flooder exceeds it by orders of magnitude. */
const LIMITS = [
  "  limits:",
  "    default: { messages_per_second: 50, bytes_per_second: 1000000, burst_seconds: 2 }",
  "    throttle_grace_seconds: 2",
  "    max_payload_bytes: 65536",
  "    max_connections_per_address: 40",
  "",
].join("\n");

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("gateway flood protection", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let port: number;
  const creds = new Map<string, Credentials>();
  const clients: MqttClient[] = [];

  before(async () => {
    f = await tempFleet();
    const config = join(f.dir, "fleetpki.yaml");
    writeFileSync(config, readFileSync(config, "utf8").replace(/^gateway:\n/m, `gateway:\n${LIMITS}`));
    const root = readFileSync(join(f.dir, "ca", "root", "cert.pem"), "utf8");
    for (const id of ["flooder", "late", "big", ...Array.from({ length: DEVICES }, (_, i) => `robot-${i}`)]) {
      await addDevice(f.fleet, { id, actor: "test" });
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      const cert = await issueForKey(f.fleet, { deviceId: id, actor: "test" }, subjectKeyOf(privateKey));
      const key = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
      creds.set(id, { id, key, cert: cert.certificatePem + cert.chainPem, ca: root });
    }
    const svc = await addService(f.fleet, { name: "telemetry", outDir: join(f.dir, "..", "svc-telemetry"), actor: "test" });
    const read = (p: string) => readFileSync(p, "utf8");
    creds.set("telemetry", { id: "telemetry", key: read(svc.files.key), cert: read(svc.files.cert) + read(svc.files.chain), ca: root });
    server = await startFleetServer({ dir: f.dir, only: ["gateway"], gatewayListen: "127.0.0.1:0", policy, logger: silentLogger });
    port = server.gateway!.address.port;
  });

  after(async () => {
    for (const c of clients) c.end(true);
    await server?.close();
    await f?.close();
  });

  const connect = async (who: string, clientId = who): Promise<MqttClient> => {
    const c = creds.get(who)!;
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, {
      clientId,
      key: c.key,
      cert: c.cert,
      ca: c.ca,
      servername: "localhost",
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 20_000,
    });
    clients.push(client);
    return client;
  };

  it("a flooder is paused then disconnected; 20 devices at 10 msgs/s keep >= 99 % delivery; the process stays up", async () => {
    const counters = server.gateway!.counters;
    const reader = await connect("telemetry", "telemetry-1");
    const received = new Map<string, number>();
    let fromFlooder = 0;
    reader.on("message", (topic) => {
      const device = topic.split("/")[1]!;
      if (device === "flooder") fromFlooder++;
      else received.set(device, (received.get(device) ?? 0) + 1);
    });
    await reader.subscribeAsync("fleet/+/telemetry", { qos: 0 });
    const devices = await Promise.all(Array.from({ length: DEVICES }, (_, i) => connect(`robot-${i}`)));

    // The flooder: QoS 0 as fast as its socket takes it, until the gateway closes the connection.
    const flooder = await connect("flooder");
    let flooderClosedAt: number | undefined;
    flooder.stream.once("close", () => (flooderClosedAt = Date.now()));
    let flooded = 0;
    const payload = Buffer.alloc(64, 0x66);
    const flood = () => {
      while (flooderClosedAt === undefined && !flooder.stream.destroyed) {
        for (let i = 0; i < 200; i++) flooder.publish("fleet/flooder/telemetry", payload, { qos: 0 });
        flooded += 200;
        if ((flooder.stream as unknown as { writableNeedDrain: boolean }).writableNeedDrain) {
          flooder.stream.once("drain", flood);
          return;
        }
        // Let the event loop breathe now and then: this test's clients share the process with the gateway.
        if (flooded % 5000 === 0) return void setImmediate(flood);
      }
    };
    const started = Date.now();
    flood();

    // 20 devices at 10 msgs/s each, for SECONDS.
    let sent = 0;
    for (let tick = 0; tick < SECONDS * RATE; tick++) {
      const due = started + (tick * 1000) / RATE;
      await sleep(Math.max(0, due - Date.now()));
      for (const [i, d] of devices.entries()) {
        d.publish(`fleet/robot-${i}/telemetry`, `${tick}`, { qos: 0 });
        sent++;
      }
    }
    // Delivery of what is still in flight (generous on a loaded machine).
    const expected = DEVICES * SECONDS * RATE;
    for (let i = 0; i < 100 && [...received.values()].reduce((a, b) => a + b, 0) < expected; i++) await sleep(100);
    const delivered = [...received.values()].reduce((a, b) => a + b, 0);

    assert.equal(sent, expected);
    assert.ok(delivered >= 0.99 * expected, `the 20 devices' delivery: ${delivered} of ${expected}`);
    assert.ok(flooded > 5000, `the flooder offered ${flooded} messages`);
    assert.ok(counters.throttled >= 1, `throttled: ${counters.throttled}`);
    assert.ok((counters.disconnected["flood-throttled"] ?? 0) >= 1, `disconnected: ${JSON.stringify(counters.disconnected)}`);
    assert.ok(flooderClosedAt !== undefined, "the flooder's connection was closed");
    // At most its burst plus its rate until the grace ran out reached the reader; never the flood.
    assert.ok(fromFlooder < 50 * 2 + 50 * 6, `the reader got ${fromFlooder} of the flooder's ${flooded} messages`);
    // Still serving: a new device connects and is delivered.
    const late = await connect("late");
    const got = new Promise<void>((resolve) => reader.on("message", (t) => t === "fleet/late/telemetry" && resolve()));
    await late.publishAsync("fleet/late/telemetry", "hello", { qos: 1 });
    await got;
  });

  it("closes a connection whose PUBLISH declares more than max_payload_bytes at its header, before its body arrives", async () => {
    const c = creds.get("big")!;
    const socket: TLSSocket = await new Promise((resolve, reject) => {
      const s = tlsConnect({ host: "127.0.0.1", port, key: c.key, cert: c.cert, ca: c.ca, servername: "localhost" }, () => resolve(s));
      s.once("error", reject);
    });
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.on("error", () => {});
    const connack = new Promise<Buffer>((resolve) => socket.once("data", resolve));
    // CONNECT (MQTT 3.1.1, client id "big", keepalive 30).
    const id = Buffer.from("big");
    const vh = Buffer.concat([Buffer.from([0, 4]), Buffer.from("MQTT"), Buffer.from([4, 2, 0, 30]), Buffer.from([0, id.length]), id]);
    socket.write(Buffer.concat([Buffer.from([0x10, vh.length]), vh]));
    assert.deepEqual([...(await connack)], [0x20, 2, 0, 0]);
    // PUBLISH declaring 16 MiB: fixed header, topic, and only 1 KiB of its payload.
    const topic = Buffer.from("fleet/big/telemetry");
    const remaining = 2 + topic.length + 16 * 1024 * 1024;
    const length: number[] = [];
    for (let n = remaining; n > 0; n >>= 7) length.push((n & 0x7f) | (n >= 0x80 ? 0x80 : 0));
    socket.write(Buffer.concat([Buffer.from([0x30, ...length, 0, topic.length]), topic, Buffer.alloc(1024)]));
    const outcome = await Promise.race([closed.then(() => "closed"), sleep(5000).then(() => "still open")]);
    socket.destroy();
    assert.equal(outcome, "closed");
    assert.ok((server.gateway!.counters.disconnected["flood-payload"] ?? 0) >= 1, JSON.stringify(server.gateway!.counters.disconnected));
  });

  it("refuses connections beyond max_connections_per_address before their TLS handshake", async () => {
    // The flood test's clients are closed by now except the reader and the 20 devices (21 + late).
    const open: ReturnType<typeof netConnect>[] = [];
    const refused = () => server.gateway!.counters.refused["address-connections"] ?? 0;
    const before = refused();
    try {
      for (let i = 0; i < 45 && refused() === before; i++) {
        const s = netConnect(port, "127.0.0.1");
        s.on("error", () => {});
        open.push(s);
        await new Promise<void>((resolve) => s.once("connect", () => resolve()).once("close", () => resolve()));
        await sleep(20);
      }
      assert.ok(refused() > before, `refused: ${JSON.stringify(server.gateway!.counters.refused)}`);
    } finally {
      for (const s of open) s.destroy();
    }
  });
});
