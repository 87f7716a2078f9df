// Review of the MQTT gateway as an attacker: each test sends the hostile input with real clients
// (MQTT.js and Debian's mosquitto_*, over real mTLS) against a real fleet and gateway.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { enroll } from "../src/agent/enroll.js";
import { addDevice } from "../src/authority/devices.js";
import { addService } from "../src/authority/identities/services.js";
import { addOperator, setOperatorRole } from "../src/authority/identities/operators.js";
import { AccessPolicy } from "../src/access/policy.js";
import { DenialLog, type DenialRow } from "../src/access/denials.js";
import { readPrivateKey } from "../src/keys/keys.js";
import type { AccessDecision, AccessGrants, AccessIdentity } from "../src/access/identity.js";
import type { PolicySource } from "../src/gateway/server.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { sha256Fingerprint } from "../src/x509/certificate.js";
import { fromPem } from "../src/x509/pem.js";
import { tempFleet } from "./helpers.js";

const allow: AccessDecision = { allowed: true, outcome: "allow", rule: "test", reason: "allowed" };
const deny: AccessDecision = { allowed: false, outcome: "deny", rule: undefined, reason: "default deny" };
const decide = (ok: boolean): AccessDecision => (ok ? allow : deny);

/** Devices publish and read under fleet/<id>/; every service reads and writes fleet/#. */
const testPolicy: PolicySource = {
  grantsFor(id: AccessIdentity): AccessGrants {
    if (id.kind === "device") {
      const own = `fleet/${id.id}/`;
      return {
        publish: (t) => decide(t.startsWith(own)),
        subscribe: (f) => decide(f.startsWith(own)),
        receive: (t) => decide(t.startsWith(own)),
      };
    }
    if (id.kind === "service") {
      const fleet = (t: string) => decide(t === "fleet/#" || t.startsWith("fleet/"));
      return { publish: fleet, subscribe: fleet, receive: fleet };
    }
    return { publish: () => deny, subscribe: () => deny, receive: () => deny };
  },
};

interface Files {
  dir: string;
  /** PEMs to use instead of dir's ca.pem, cert.pem and key.pem. */
  pems?: { ca: string; cert: string; key: string };
}

const clients = new Set<MqttClient>();

/** MQTT.js over mTLS with the identity's files; resolves with the CONNACK's return code (0 connected). */
function connect(
  port: number,
  who: Files,
  clientId: string,
  options: IClientOptions = {},
): Promise<{ client: MqttClient; code: number; sessionPresent?: boolean }> {
  return new Promise((resolve) => {
    const client = mqtt.connect(`mqtts://127.0.0.1:${port}`, {
      ca: who.pems?.ca ?? readFileSync(join(who.dir, "ca.pem")),
      cert: who.pems?.cert ?? readFileSync(join(who.dir, "cert.pem")),
      key: who.pems?.key ?? readFileSync(join(who.dir, "key.pem")),
      servername: "localhost",
      rejectUnauthorized: true,
      protocolVersion: 4,
      clientId,
      reconnectPeriod: 0,
      connectTimeout: 20_000,
      ...options,
    });
    clients.add(client);
    let settled = false;
    const settle = (code: number, sessionPresent?: boolean) => {
      if (settled) return;
      settled = true;
      resolve({ client, code, ...(sessionPresent === undefined ? {} : { sessionPresent }) });
    };
    client.once("connect", (connack) => settle(0, connack.sessionPresent));
    client.once("error", (e: Error & { code?: number }) => settle(typeof e.code === "number" ? e.code : -1));
    client.once("close", () => settle(-1));
  });
}

/** Resolves when the client's connection has closed, or with false after `ms`. */
function closedWithin(client: MqttClient, ms: number): Promise<boolean> {
  if (!client.connected) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    client.once("close", () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

async function enrollDevice(fleetDir: string, server: FleetServer, rootFp: string, id: string): Promise<Files> {
  const added = await addDevice(server.fleet, { id, actor: "test", token: {} });
  const dir = join(fleetDir, "..", `agent-${id}`);
  await enroll({
    server: `https://127.0.0.1:${server.registration!.port}`,
    rootFingerprint: rootFp,
    deviceId: id,
    mode: { kind: "token", token: added.token!.token },
    dir,
  });
  await server.changes.poll();
  return { dir };
}

async function fleetWith(deviceIds: readonly string[], serviceNames: readonly string[], policy: PolicySource = testPolicy) {
  const f = await tempFleet();
  const server = await startFleetServer({
    dir: f.dir,
    registrationListen: "127.0.0.1:0",
    statusListen: "127.0.0.1:0",
    gatewayListen: "127.0.0.1:0",
    adminListen: "127.0.0.1:0",
    policy,
    logger: silentLogger,
  });
  const rootFp = `sha256:${sha256Fingerprint(fromPem(readFileSync(join(f.dir, "ca", "root", "cert.pem"), "utf8"), ["CERTIFICATE"]))}`;
  const files: Record<string, Files> = {};
  for (const id of deviceIds) files[`device:${id}`] = await enrollDevice(f.dir, server, rootFp, id);
  for (const name of serviceNames) {
    const dir = join(f.dir, "..", `service-${name}`);
    await addService(server.fleet, { name, outDir: dir, actor: "test" });
    files[`service:${name}`] = { dir };
  }
  await server.changes.poll();
  return { f, server, port: server.gateway!.address.port, files, rootFp };
}

async function endAll(): Promise<void> {
  await Promise.all([...clients].map((c) => c.endAsync(true).catch(() => {})));
  clients.clear();
}

describe("review: client ids across identities", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let port: number;
  let files: Record<string, Files>;
  let rootFp: string;

  before(async () => {
    ({ f, server, port, files, rootFp } = await fleetWith(["robot-1", "robot"], ["robot", "robot-x"]));
  });

  after(async () => {
    await endAll();
    await server?.close();
    await f?.close();
  });

  it("a service cannot take over a connected device's client id (service robot as robot-1)", async () => {
    const device = await connect(port, files["device:robot-1"]!, "robot-1");
    assert.equal(device.code, 0);
    const thief = await connect(port, files["service:robot"]!, "robot-1");
    assert.equal(thief.code, 2, "CONNACK 2 identifier rejected");
    assert.equal(await closedWithin(device.client, 300), false, "the device stays connected");
    assert.ok(server.gateway!.sessions().some((s) => s.id === "robot-1" && s.kind === "device"));
    await endAll();
  });

  it("a service may not use a registered device's id as its client id, even while the device is offline", async () => {
    // Device robot exists: service robot's client id "robot" (its bare name) would be the device's.
    for (const [service, id] of [
      ["service:robot", "robot-1"],
      ["service:robot", "robot"],
    ] as const) {
      const r = await connect(port, files[service]!, id);
      assert.equal(r.code, 2, `${service} as ${id}`);
    }
    // Its own ids that no device has stay usable.
    const ok = await connect(port, files["service:robot"]!, "robot-ingest");
    assert.equal(ok.code, 0);
    await endAll();
  });

  it("a service cannot take over another service's client id (service robot as robot-x, held by service robot-x)", async () => {
    const owner = await connect(port, files["service:robot-x"]!, "robot-x");
    assert.equal(owner.code, 0);
    const thief = await connect(port, files["service:robot"]!, "robot-x");
    assert.equal(thief.code, 2);
    assert.equal(await closedWithin(owner.client, 300), false, "the owner stays connected");
    await endAll();
  });

  it("a persistent session (clean=false) of one identity is never resumed by another", async () => {
    // robot-x's backend keeps a session with a QoS 1 subscription, then goes away.
    const owner = await connect(port, files["service:robot-x"]!, "robot-x-1", { clean: false });
    assert.equal(owner.code, 0);
    await owner.client.subscribeAsync("fleet/robot-1/#", { qos: 1 });
    await owner.client.endAsync();
    // Queued for it while it is away.
    const device = await connect(port, files["device:robot-1"]!, "robot-1");
    await device.client.publishAsync("fleet/robot-1/t", "queued", { qos: 1 });
    // Service robot asks for the session of client id robot-x-1 (its prefix robot- allows the id).
    const thief = await connect(port, files["service:robot"]!, "robot-x-1", { clean: false });
    assert.equal(thief.code, 2, "identifier rejected: the session belongs to service robot-x");
    // The owner still finds its session and the queued message.
    const got: string[] = [];
    const back = await connect(port, files["service:robot-x"]!, "robot-x-1", { clean: false });
    assert.equal(back.code, 0);
    back.client.on("message", (_t, m) => got.push(m.toString()));
    const deadline = Date.now() + 5000;
    while (got.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(got, ["queued"]);
    await endAll();
  });

  it("a device registered after a service stored a session under its id gets its id, but not that session", async () => {
    const early = await connect(port, files["service:robot"]!, "robot-9", { clean: false });
    assert.equal(early.code, 0);
    await early.client.subscribeAsync("fleet/robot-9/#", { qos: 1 });
    await early.client.endAsync();
    const robot9 = await enrollDevice(f.dir, server, rootFp, "robot-9");
    const device = await connect(port, robot9, "robot-9", { clean: false });
    assert.equal(device.code, 0, "the device is not locked out of its own id");
    assert.equal(device.sessionPresent, false, "no session stored by service robot is handed to the device");
    assert.equal(server.gateway!.sessions().find((s) => s.id === "robot-9")?.subscriptions, 0);
    // And the service may no longer use it.
    assert.equal((await connect(port, files["service:robot"]!, "robot-9")).code, 2);
    await endAll();
  });
});

describe("review: operator roles", () => {
  // The policy a fleet would write from docs/policy.md: admins read the broker's own topics.
  const text = `version: 1
mode: enforce
rules:
  - name: admins-sys
    operators: { roles: [admin] }
    subscribe: ["$SYS/#"]
  - name: viewers-read
    operators: { roles: [viewer] }
    subscribe: ["fleet/#"]
  - name: alice-by-name
    operators: { names: [admin] }
    subscribe: ["ops/#"]
`;
  const policy = AccessPolicy.parse(text, "policy.yaml");
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let port: number;
  let admin: Files;

  before(async () => {
    ({ f, server, port } = await fleetWith([], [], { grantsFor: (id) => policy.grantsFor(id) }));
    const dir = join(f.dir, "operators", "admin");
    const pem = (p: string) => readFileSync(join(dir, p), "utf8");
    admin = {
      dir,
      pems: {
        ca: readFileSync(join(f.dir, "ca", "root", "cert.pem"), "utf8"),
        cert: pem("cert.pem") + pem("chain.pem"),
        key: readPrivateKey(join(dir, "key.pem"), server.fleet.passphrase()).export({ type: "pkcs8", format: "pem" }).toString(),
      },
    };
  });

  after(async () => {
    await endAll();
    await server?.close();
    await f?.close();
  });

  it("an operator's role is its stored role, never its name (init's admin is an admin until demoted)", async () => {
    const c = await connect(port, admin, "admin-1");
    assert.equal(c.code, 0);
    // MQTT.js rejects a SUBACK 0x80 (v3.1.1's failure code).
    const granted = (filter: string) =>
      c.client.subscribeAsync(filter).then(
        (g) => g[0]!.qos,
        () => 128,
      );
    assert.equal(await granted("$SYS/#"), 0, "init stored role admin for it");
    assert.equal(await granted("fleet/#"), 128, "not a viewer");
    assert.equal(await granted("ops/#"), 0, "rules naming the operator apply");
    // Demoted (another admin first: the last one cannot be), the operator named admin is no admin.
    const other = join(f.dir, "..", "operator-second");
    await addOperator(server.fleet, { name: "second", role: "admin", outDir: other, actor: "test" });
    await setOperatorRole(server.fleet, { name: "admin", role: "viewer", actor: "test" });
    await server.changes.poll();
    await server.gateway!.recheck();
    assert.equal(await granted("$SYS/#"), 128, "the operator named admin is not an admin by its name");
    assert.equal(await granted("fleet/#"), 0, "a viewer now");
    await endAll();
  });
});

/** An MQTT fixed header: packet type byte and the remaining length (variable byte integer). */
function fixedHeader(type: number, length: number): Buffer {
  const bytes = [type];
  do {
    let b = length % 128;
    length = Math.floor(length / 128);
    if (length > 0) b |= 0x80;
    bytes.push(b);
  } while (length > 0);
  return Buffer.from(bytes);
}

/** A bare MQTT 3.1.1 CONNECT (clean session, keepalive 60 s). */
function connectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId);
  const body = Buffer.concat([Buffer.from([0, 4]), Buffer.from("MQTT"), Buffer.from([4, 2, 0, 60, id.length >> 8, id.length & 0xff]), id]);
  return Buffer.concat([fixedHeader(0x10, body.length), body]);
}

/** Mutual TLS with the identity's files, raw. */
function tlsTo(port: number, who: Files): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: readFileSync(join(who.dir, "ca.pem")),
      cert: readFileSync(join(who.dir, "cert.pem")),
      key: readFileSync(join(who.dir, "key.pem")),
    });
    socket.once("secureConnect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Writes `total` bytes in 64 KiB chunks, honouring backpressure; how many were written before the peer closed. */
async function pour(socket: TLSSocket, total: number): Promise<number> {
  let closed = false;
  socket.on("close", () => (closed = true));
  socket.on("error", () => (closed = true));
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  let written = 0;
  while (written < total && !closed) {
    if (!socket.write(chunk)) await new Promise<void>((r) => (socket.once("drain", r), socket.once("close", r)));
    written += chunk.length;
  }
  return closed ? written : total;
}

describe("review: packet sizes", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let port: number;
  let files: Record<string, Files>;

  before(async () => {
    ({ f, server, port, files } = await fleetWith(["robot-1"], []));
  });

  after(async () => {
    await endAll();
    await server?.close();
    await f?.close();
  });

  const MiB = 1024 * 1024;

  it("a CONNECT announcing 200 MiB is cut off at its fixed header, not buffered", async () => {
    const socket = await tlsTo(port, files["device:robot-1"]!);
    socket.write(fixedHeader(0x10, 200 * MiB));
    const written = await pour(socket, 32 * MiB);
    socket.destroy();
    assert.ok(written < 32 * MiB, "the gateway read 32 MiB of one CONNECT without closing the connection");
  });

  it("an admitted session's PUBLISH announcing 200 MiB is cut off too", async () => {
    const socket = await tlsTo(port, files["device:robot-1"]!);
    socket.write(connectPacket("robot-1"));
    await new Promise<void>((resolve) => socket.once("data", () => resolve()));
    socket.write(fixedHeader(0x30, 200 * MiB));
    const written = await pour(socket, 32 * MiB);
    socket.destroy();
    assert.ok(written < 32 * MiB, "the gateway read 32 MiB of one PUBLISH without closing the connection");
  });
});

describe("review: denial audit rows", () => {
  it("a device cycling through distinct denied topics writes a bounded number of rows per minute", async () => {
    // What a device reconnecting in a loop does: each connection is closed at its denials budget,
    // but every connection may deny new topics. 20,000 distinct topics within one minute.
    const written: DenialRow[] = [];
    const at = new Date("2030-01-01T00:00:05Z");
    const log = new DenialLog(
      async (rows) => void written.push(...rows),
      () => at,
    );
    for (let i = 0; i < 20_000; i++) {
      log.record({ subject: "device:robot-1", action: "publish", topic: `fleet/robot-2/cmd/${i}`, outcome: "deny", rule: undefined });
      if (i % 1000 === 0) await log.flush(); // the 10 s timer
    }
    log.record({ subject: "device:robot-3", action: "publish", topic: "fleet/robot-2/cmd/x", outcome: "deny", rule: undefined });
    await log.close();
    const mine = written.filter((r) => r.subject === "device:robot-1");
    // 100 distinct topics, then one "(other topics)" row per flush (21 flushes here; the timer's 6 a minute).
    assert.ok(mine.length <= 100 + 21, `${mine.length} audit rows for one device in one minute`);
    assert.ok(mine.some((r) => r.topic === "(other topics)"));
    assert.equal(
      mine.reduce((n, r) => n + r.count, 0),
      20_000,
      "every denial is still counted",
    );
    assert.ok(
      written.some((r) => r.subject === "device:robot-3"),
      "another device's denial is not swallowed",
    );
  });
});

function publishPacket(topic: string, payload = "x"): Buffer {
  const t = Buffer.from(topic);
  const body = Buffer.concat([Buffer.from([t.length >> 8, t.length & 0xff]), t, Buffer.from(payload)]);
  return Buffer.concat([fixedHeader(0x30, body.length), body]);
}

function subscribePacket(filter: string): Buffer {
  const t = Buffer.from(filter);
  const body = Buffer.concat([Buffer.from([0, 1, t.length >> 8, t.length & 0xff]), t, Buffer.from([0])]);
  return Buffer.concat([fixedHeader(0x82, body.length), body]);
}

describe("review: topic names with NUL", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let port: number;
  let files: Record<string, Files>;

  before(async () => {
    ({ f, server, port, files } = await fleetWith(["robot-1"], ["svc"]));
  });

  after(async () => {
    await endAll();
    await server?.close();
    await f?.close();
  });

  /** An admitted raw session of robot-1. */
  async function session(): Promise<TLSSocket> {
    const s = await tlsTo(port, files["device:robot-1"]!);
    s.write(connectPacket("robot-1"));
    await new Promise<void>((r) => s.once("data", () => r()));
    return s;
  }

  it("a PUBLISH whose topic contains U+0000 is never delivered and ends the connection (MQTT-4.7.3-2)", async () => {
    const sub = await connect(port, files["service:svc"]!, "svc-1");
    const got: string[] = [];
    sub.client.on("message", (t) => got.push(t));
    await sub.client.subscribeAsync("fleet/#");
    const s = await session();
    const closed = new Promise<boolean>((r) => (s.once("close", () => r(true)), setTimeout(() => r(false), 3000)));
    s.write(publishPacket("fleet/robot-1/a\u0000b"));
    const ended = await closed;
    s.destroy();
    // A marker published after it: once it arrives, the NUL one would have too.
    const marker = await connect(port, files["device:robot-1"]!, "robot-1");
    await marker.client.publishAsync("fleet/robot-1/marker", "m", { qos: 1 });
    const deadline = Date.now() + 5000;
    while (!got.includes("fleet/robot-1/marker") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(got, ["fleet/robot-1/marker"]);
    assert.ok(ended, "the connection was closed");
    await endAll();
  });

  it("a SUBSCRIBE to a filter containing U+0000 gets SUBACK 0x80", async () => {
    const s = await session();
    s.write(subscribePacket("fleet/robot-1/\u0000"));
    const suback = await new Promise<Buffer>((r) => s.once("data", r));
    s.destroy();
    assert.equal(suback[0], 0x90);
    assert.equal(suback[4], 0x80, `SUBACK ${suback.toString("hex")}`);
  });
});
