// The agent's MQTT client (src/agent/mqtt.ts) against a small stand-in gateway started here: a
// real aedes broker behind a real TLS server on 127.0.0.1:0 with the fleet's server certificate,
// requiring a client certificate from the devices CA, and refusing CONNECTs the way the gateway
// does (client id != identity: CONNACK 2; a listed identity: CONNACK 5). The agent files come
// from a real enrollment against a real registration server. (The real gateway is exercised by
// test/demo.test.ts and the gateway's own tests.)
import assert from "node:assert/strict";
import { cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, relative, resolve } from "node:path";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { ROOT } from "./helpers.js";
import tls from "node:tls";
import { after, before, describe, it } from "node:test";
import { Aedes, type AuthenticateError, type Client } from "aedes";
import { enroll } from "../src/agent/enroll.js";
import { MqttConnectRefused, MqttError, MqttSubscribeDenied, connectTelemetry, identityFilesIn } from "../src/agent/mqtt.js";
import { addDevice } from "../src/authority/devices.js";
import { readPrivateKey } from "../src/keys/keys.js";
import { tempFleet } from "./helpers.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { rootPemPath } from "./server-helpers.js";
import { fingerprintOfPemFile } from "./agent-e2e-helpers.js";

interface StandIn {
  url: string;
  broker: Aedes;
  /** Closes the TLS connection of this client id from the server side. */
  kick(clientId: string): void;
  close(): Promise<void>;
}

/** A TLS+aedes broker with `serverDir`'s identity (a fleet's server/ dir) that trusts `clientCas`. */
async function startStandIn(serverDir: string, passphrase: string, clientCas: string[], refused: Set<string>): Promise<StandIn> {
  const broker = await Aedes.createBroker({
    authenticate(client: Client, _u, _p, done) {
      const socket = client.conn as unknown as tls.TLSSocket;
      const cn = socket.getPeerCertificate().subject?.CN;
      const fail = (returnCode: 2 | 5) => done(Object.assign(new Error("refused"), { returnCode }) as AuthenticateError, false);
      if (client.id !== cn) return fail(2);
      if (refused.has(cn)) return fail(5);
      done(null, true);
    },
    // SUBACK 0x80 for anything under forbidden/ (aedes negates a subscription passed back as null).
    authorizeSubscribe(_client, sub, done) {
      done(null, sub.topic.startsWith("forbidden/") ? null : sub);
    },
  });
  const key = readPrivateKey(join(serverDir, "key.pem"), passphrase).export({ type: "pkcs8", format: "pem" }).toString();
  const cert = readFileSync(join(serverDir, "cert.pem"), "utf8") + readFileSync(join(serverDir, "chain.pem"), "utf8");
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer({ key, cert, ca: clientCas, requestCert: true, rejectUnauthorized: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    broker.handle(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `mqtts://127.0.0.1:${port}`,
    broker,
    // aedes keeps connected clients by id (untyped in its .d.ts)
    kick: (id) => ((broker as unknown as { clients: Record<string, Client> }).clients[id]?.conn as unknown as tls.TLSSocket)?.destroy(),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    },
  };
}

describe("agent MQTT client (connectTelemetry)", () => {
  let fleetA: Awaited<ReturnType<typeof tempFleet>>;
  let fleetB: Awaited<ReturnType<typeof tempFleet>>;
  let registration: FleetServer;
  let gateway: StandIn;
  let otherFleetGateway: StandIn;
  const refused = new Set<string>();
  let agentDir: (id: string) => string;

  before(async () => {
    fleetA = await tempFleet();
    fleetB = await tempFleet({ name: "Other Robots", domain: "other.example" });
    // Only the registration listener: the gateway under test here is the stand-in.
    registration = await startFleetServer({
      dir: fleetA.dir,
      registrationListen: "127.0.0.1:0",
      only: ["registration"],
      logger: silentLogger,
    });
    const registrationUrl = `https://127.0.0.1:${registration.registration!.port}`;
    const fingerprint = fingerprintOfPemFile(rootPemPath(fleetA.dir));
    const base = join(fleetA.dir, "..", "agents");
    agentDir = (id) => join(base, id);
    for (const id of ["robot-1", "robot-2", "robot-9"]) {
      const { token } = await addDevice(fleetA.fleet, { id, actor: "test", token: {} });
      await enroll({
        server: registrationUrl,
        rootFingerprint: fingerprint,
        deviceId: id,
        mode: { kind: "token", token: token!.token },
        dir: agentDir(id),
      });
    }
    const clientCas = [readFileSync(rootPemPath(fleetA.dir), "utf8"), readFileSync(join(fleetA.dir, "ca", "devices", "cert.pem"), "utf8")];
    gateway = await startStandIn(join(fleetA.dir, "server"), fleetA.fleet.passphrase(), clientCas, refused);
    // Same client trust, but a server certificate from another fleet's root.
    otherFleetGateway = await startStandIn(join(fleetB.dir, "server"), fleetB.fleet.passphrase(), clientCas, refused);
  });

  after(async () => {
    await gateway?.close();
    await otherFleetGateway?.close();
    await registration?.close();
    await fleetB?.close();
    await fleetA?.close();
  });

  it("connects as the device (client id = device id), publishes QoS 0 and 1, subscribes and receives", async () => {
    const a = await connectTelemetry({ agentDir: agentDir("robot-1"), url: gateway.url });
    const b = await connectTelemetry({ agentDir: agentDir("robot-2"), url: gateway.url });
    try {
      assert.equal(a.clientId, "robot-1");
      assert.deepEqual(a.identity, { kind: "device", name: "robot-1", spiffeId: "spiffe://fleet.example/device/robot-1" });
      assert.equal(await b.subscribe("fleet/robot-1/#", 1), 1);
      const got = b.nextMessage((m) => m.topic === "fleet/robot-1/telemetry");
      await a.publish("fleet/robot-1/telemetry", '{"battery":0.8}', 1);
      const m = await got;
      assert.equal(m.payload.toString(), '{"battery":0.8}');
      const got0 = b.nextMessage((m) => m.topic === "fleet/robot-1/odom");
      await a.publish("fleet/robot-1/odom", Buffer.from([1, 2, 3]), 0);
      assert.deepEqual([...(await got0).payload], [1, 2, 3]);
    } finally {
      await a.close();
      await b.close();
    }
    assert.deepEqual(await a.closed.then((c) => c.byUs), true);
  });

  it("works from explicit files too (cert, key, chain, ca), as a service identity would", async () => {
    const dir = join(fleetA.dir, "..", "files-copy");
    mkdirSync(dir);
    for (const f of ["cert.pem", "key.pem", "chain.pem", "ca.pem"]) cpSync(join(agentDir("robot-2"), f), join(dir, f));
    const c = await connectTelemetry({ files: identityFilesIn(dir), url: gateway.url });
    assert.equal(c.clientId, "robot-2");
    await c.close();
  });

  it("maps CONNACK codes to words: identifier rejected, not authorized", async () => {
    await assert.rejects(connectTelemetry({ agentDir: agentDir("robot-1"), url: gateway.url, clientId: "robot-2" }), (e: unknown) => {
      assert.ok(e instanceof MqttConnectRefused, String(e));
      assert.equal(e.returnCode, 2);
      assert.match(e.message, /refused: identifier rejected \(CONNACK 2\); the client id must be the device id/);
      return true;
    });
    refused.add("robot-9");
    await assert.rejects(connectTelemetry({ agentDir: agentDir("robot-9"), url: gateway.url }), (e: unknown) => {
      assert.ok(e instanceof MqttConnectRefused, String(e));
      assert.equal(e.reason, "not authorized");
      assert.match(e.message, /refused: not authorized \(CONNACK 5\)/);
      return true;
    });
  });

  it("SUBACK 0x80 is an MqttSubscribeDenied naming the filter; the session stays usable", async () => {
    const c = await connectTelemetry({ agentDir: agentDir("robot-1"), url: gateway.url });
    try {
      await assert.rejects(c.subscribe("forbidden/#"), (e: unknown) => {
        assert.ok(e instanceof MqttSubscribeDenied, String(e));
        assert.match(e.message, /subscription to "forbidden\/#" refused by the gateway \(SUBACK 0x80\)/);
        return true;
      });
      assert.equal(await c.subscribe("fleet/robot-1/cmd/#"), 0);
    } finally {
      await c.close();
    }
  });

  it("a session the gateway closes settles `closed` (not by us), and later publishes fail with a clear error", async () => {
    const c = await connectTelemetry({ agentDir: agentDir("robot-2"), url: gateway.url });
    gateway.kick("robot-2");
    const closed = await c.closed;
    assert.equal(closed.byUs, false);
    assert.equal(c.connected, false);
    await assert.rejects(
      c.publish("fleet/robot-2/telemetry", "x", 1),
      /cannot publish to "fleet\/robot-2\/telemetry": the session with mqtts:\/\/127\.0\.0\.1:\d+ is closed/,
    );
    await c.close();
  });

  it("trusts only the fleet root: a gateway certificate from another fleet is refused before CONNECT", async () => {
    await assert.rejects(connectTelemetry({ agentDir: agentDir("robot-1"), url: otherFleetGateway.url }), (e: unknown) => {
      assert.ok(e instanceof MqttError, String(e));
      assert.match(e.message, /TLS verification of the gateway mqtts:\/\/127\.0\.0\.1:\d+ failed \(\w+\).*must chain to the fleet root/);
      return true;
    });
  });

  it("checks the gateway's name: a certificate that does not name `servername` is refused", async () => {
    await assert.rejects(
      connectTelemetry({ agentDir: agentDir("robot-1"), url: gateway.url, servername: "gateway.elsewhere.example" }),
      (e: unknown) => {
        assert.ok(e instanceof MqttError, String(e));
        assert.equal(e.code, "ERR_TLS_CERT_ALTNAME_INVALID");
        assert.match(e.message, /name gateway\.elsewhere\.example/);
        return true;
      },
    );
  });

  it("refuses bad input before any connection: plain mqtt://, a path, no identity, a ca.pem that is not a root", async () => {
    await assert.rejects(connectTelemetry({ agentDir: agentDir("robot-1"), url: "mqtt://127.0.0.1:1883" }), /must use mqtts:\/\//);
    await assert.rejects(connectTelemetry({ agentDir: agentDir("robot-1"), url: `${gateway.url}/x` }), /must not have a path/);
    await assert.rejects(connectTelemetry({ url: gateway.url }), /exactly one of agentDir or files/);
    const dir = join(fleetA.dir, "..", "files-bad-ca");
    mkdirSync(dir);
    for (const f of ["cert.pem", "key.pem", "chain.pem"]) cpSync(join(agentDir("robot-1"), f), join(dir, f));
    writeFileSync(join(dir, "ca.pem"), readFileSync(join(fleetA.dir, "ca", "devices", "cert.pem")));
    await assert.rejects(
      connectTelemetry({ files: identityFilesIn(dir), url: gateway.url }),
      /must hold exactly the fleet root certificate/,
    );
    cpSync(join(agentDir("robot-2"), "key.pem"), join(dir, "key.pem"));
    writeFileSync(join(dir, "ca.pem"), readFileSync(rootPemPath(fleetA.dir)));
    await assert.rejects(connectTelemetry({ files: identityFilesIn(dir), url: gateway.url }), /key\.pem does not match .*cert\.pem/);
  });
});

describe("the agent runs on robots", () => {
  // What src/agent/index.ts reaches through relative imports, transitively: the MQTT client must
  // not have pulled server code (authority, store, gateway, the native SQLite module) onto robots.
  it("src/agent (the MQTT client included) imports only agent, x509, der and keys code", () => {
    const seen = new Set<string>();
    const packages = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const source = readFileSync(file, "utf8");
      for (const m of source.matchAll(/^\s*(?:import\s+"([^"]+)"|(?:import|export)\b[^'";]*?\bfrom\s+"([^"]+)")/gm)) {
        const spec = (m[1] ?? m[2])!;
        if (spec.startsWith(".")) visit(resolve(dirname(file), spec.replace(/\.js$/, ".ts")));
        else if (!spec.startsWith("node:")) packages.add(spec);
      }
    };
    visit(join(ROOT, "src", "agent", "index.ts"));
    assert.ok(seen.has(join(ROOT, "src", "agent", "mqtt.ts")), "the MQTT client is part of the agent library");
    const outside = [...seen].map((f) => relative(join(ROOT, "src"), f)).filter((f) => !/^(agent|x509|der|keys)\//.test(f));
    assert.deepEqual(outside, []);
    assert.deepEqual([...packages].sort(), ["mqtt"]);
  });
});
