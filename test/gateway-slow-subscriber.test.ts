// A subscriber that stops reading its socket (issue 10 §4, denial of service): aedes waits for a
// full socket to drain before a delivery completes, and while it waits the delivery holds one of
// the broker's few delivery slots; enough of them and nothing reaches anyone until aedes gives up
// (60 s by default). gateway.limits.drain_timeout_seconds bounds that wait. End to end over mTLS,
// in real time: the frozen subscriber is a raw TLS client that stops reading after its SUBACK.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import mqtt, { type MqttClient } from "mqtt";
import { generate, parser as mqttParser } from "mqtt-packet";
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

/** Devices publish under fleet/<id>/; "telemetry" reads fleet/+/telemetry; "frozen" may read fleet/bulk/#. */
const policy: PolicySource = {
  grantsFor(id: AccessIdentity): AccessGrants {
    if (id.kind === "service" && id.name === "telemetry")
      return { publish: () => deny, subscribe: (f) => decide(/^fleet\/\+\//.test(f)), receive: (t) => decide(t.startsWith("fleet/")) };
    if (id.kind === "service" && id.name === "frozen")
      return { publish: () => deny, subscribe: (f) => decide(f === "fleet/bulk/#"), receive: (t) => decide(t.startsWith("fleet/bulk/")) };
    if (id.kind !== "device") return { publish: () => deny, subscribe: () => deny, receive: () => deny };
    return { publish: (t) => decide(t.startsWith(`fleet/${id.id}/`)), subscribe: () => deny, receive: () => deny };
  },
};

interface Credentials {
  key: string;
  cert: string;
  ca: string;
}

const DRAIN_TIMEOUT_S = 2;
/** Scheduling slack on a loaded 2-core machine, on top of the drain timeout. */
const MARGIN_MS = 2500;
const DEVICES = 5;
const RATE = 10; // msgs/s per device
const SECONDS = 8; // > DRAIN_TIMEOUT_S + MARGIN: a stall of aedes' 60 s shows as a gap, the test does not wait it out
const BULK = 60 * 1024;
/** 24 MB: far more than the socket buffers between the gateway and the frozen subscriber hold. */
const BULK_MESSAGES = 400;
const LIMITS = [
  "  limits:",
  "    default: { messages_per_second: 1000, bytes_per_second: 100000000, burst_seconds: 2 }",
  `    drain_timeout_seconds: ${DRAIN_TIMEOUT_S}`,
  "",
].join("\n");

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("gateway slow subscriber", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let port: number;
  const creds = new Map<string, Credentials>();
  const clients: MqttClient[] = [];
  const sockets: TLSSocket[] = [];

  before(async () => {
    f = await tempFleet();
    const config = join(f.dir, "fleetpki.yaml");
    writeFileSync(config, readFileSync(config, "utf8").replace(/^gateway:\n/m, `gateway:\n${LIMITS}`));
    const root = readFileSync(join(f.dir, "ca", "root", "cert.pem"), "utf8");
    for (const id of ["bulk", ...Array.from({ length: DEVICES }, (_, i) => `robot-${i}`)]) {
      await addDevice(f.fleet, { id, actor: "test" });
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      const cert = await issueForKey(f.fleet, { deviceId: id, actor: "test" }, subjectKeyOf(privateKey));
      const key = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
      creds.set(id, { key, cert: cert.certificatePem + cert.chainPem, ca: root });
    }
    const read = (p: string) => readFileSync(p, "utf8");
    for (const name of ["telemetry", "frozen"]) {
      const svc = await addService(f.fleet, { name, outDir: join(f.dir, "..", `svc-${name}`), actor: "test" });
      creds.set(name, { key: read(svc.files.key), cert: read(svc.files.cert) + read(svc.files.chain), ca: root });
    }
    server = await startFleetServer({ dir: f.dir, only: ["gateway"], gatewayListen: "127.0.0.1:0", policy, logger: silentLogger });
    port = server.gateway!.address.port;
  });

  after(async () => {
    for (const c of clients) c.end(true);
    for (const s of sockets) s.destroy();
    await server?.close();
    await f?.close();
  });

  const connect = async (who: string): Promise<MqttClient> => {
    const c = creds.get(who)!;
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, {
      clientId: who,
      ...c,
      servername: "localhost",
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 20_000,
    });
    clients.push(client);
    return client;
  };

  /** A raw MQTT client that subscribes to fleet/bulk/# and then never reads its socket again. */
  const frozenSubscriber = async (): Promise<TLSSocket> => {
    const c = creds.get("frozen")!;
    const socket = tlsConnect({ host: "127.0.0.1", port, servername: "localhost", ...c });
    sockets.push(socket);
    await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
    const p = mqttParser({ protocolVersion: 4 });
    const suback = new Promise<void>((resolve, reject) => {
      p.on("packet", (packet) => {
        if (packet.cmd === "connack" && packet.returnCode !== 0) reject(new Error(`CONNACK ${packet.returnCode}`));
        if (packet.cmd === "suback") resolve();
      });
    });
    const feed = (chunk: Buffer) => p.parse(chunk);
    socket.on("data", feed);
    socket.write(generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "frozen", clean: true, keepalive: 0 }));
    socket.write(generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "fleet/bulk/#", qos: 0 }] }));
    await suback;
    // Stop reading: Node stops reading the TCP socket once its buffer is full, so the kernel's
    // receive window closes and the gateway's writes pile up in its own buffer.
    socket.off("data", feed);
    socket.pause();
    return socket;
  };

  it("a subscriber that stops reading is disconnected after drain_timeout_seconds; others keep >= 99 % delivery", async (t) => {
    const counters = server.gateway!.counters;
    const reader = await connect("telemetry");
    const arrivals: number[] = [];
    reader.on("message", (topic) => {
      if (topic.endsWith("/telemetry")) arrivals.push(Date.now());
    });
    await reader.subscribeAsync("fleet/+/telemetry", { qos: 0 });
    const devices = await Promise.all(Array.from({ length: DEVICES }, (_, i) => connect(`robot-${i}`)));
    await frozenSubscriber();
    const connectedBefore = counters.connections.current;

    // The bulk publisher: 60 KiB QoS 0 messages to the frozen subscriber's topic, as fast as its own
    // socket takes them.
    const bulk = await connect("bulk");
    const payload = Buffer.alloc(BULK, 0x62);
    let bulkSent = 0;
    let stop = false;
    const pump = () => {
      while (!stop && bulkSent < BULK_MESSAGES && !bulk.stream.destroyed) {
        bulk.publish("fleet/bulk/data", payload, { qos: 0 });
        bulkSent++;
        if ((bulk.stream as unknown as { writableNeedDrain: boolean }).writableNeedDrain) return void bulk.stream.once("drain", pump);
        if (bulkSent % 20 === 0) return void setImmediate(pump);
      }
    };
    const started = Date.now();
    pump();

    let sent = 0;
    for (let tick = 0; tick < SECONDS * RATE; tick++) {
      await sleep(Math.max(0, started + (tick * 1000) / RATE - Date.now()));
      for (const [i, d] of devices.entries()) {
        d.publish(`fleet/robot-${i}/telemetry`, `${tick}`, { qos: 0 });
        sent++;
      }
    }
    const ended = Date.now();
    stop = true;
    // What is still in flight, bounded: a stall of aedes' 60 s is not waited for.
    for (let i = 0; i < 40 && arrivals.length < sent; i++) await sleep(100);

    // The longest silence the healthy reader saw while the devices were publishing.
    const times = [started, ...arrivals.filter((t) => t <= ended + MARGIN_MS), Math.min(Date.now(), ended)];
    let gap = 0;
    for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i]! - times[i - 1]!);
    const bound = DRAIN_TIMEOUT_S * 1000 + MARGIN_MS;
    t.diagnostic(`longest gap ${gap} ms; delivered ${arrivals.length} of ${sent}; bulk ${bulkSent}`);
    assert.ok(gap <= bound, `the healthy reader waited ${gap} ms for a message (bound ${bound} ms)`);
    assert.ok(arrivals.length >= 0.99 * sent, `the devices' delivery: ${arrivals.length} of ${sent}`);
    assert.equal(bulkSent, BULK_MESSAGES, "the bulk publisher's messages all went out");
    assert.ok((counters.disconnected["slow-subscriber"] ?? 0) >= 1, `disconnected: ${JSON.stringify(counters.disconnected)}`);
    assert.ok(counters.connections.current <= connectedBefore, `frozen subscriber still connected (${counters.connections.current})`);
    // Still serving.
    const got = new Promise<void>((resolve) => reader.on("message", (t) => t === "fleet/robot-0/telemetry" && resolve()));
    await devices[0]!.publishAsync("fleet/robot-0/telemetry", "hello", { qos: 1 });
    await got;
  });
});
