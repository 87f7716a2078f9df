// The server certificate renews itself inside `serve` at 2/3 of its lifetime: a keep-alive HTTPS
// connection to the registration listener and an MQTT session on the gateway, both opened before
// the rotation, stay up and keep working; new connections (Node's tls, openssl s_client) get the
// new certificate; the reissue is in the audit log. Time moves on the fleet's clock, not by waiting.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Agent, request as httpsRequest } from "node:https";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import mqtt, { type MqttClient } from "mqtt";
import { enroll } from "../src/agent/enroll.js";
import { AccessPolicy } from "../src/access/policy.js";
import { addDevice } from "../src/authority/devices.js";
import { readServerCertificate, ServerCertificateRenewer } from "../src/authority/ca/server-renewal.js";
import { reissueServerCertificate } from "../src/authority/ca/server-certificate.js";
import { FleetServices } from "../src/authority/services.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { sha256Fingerprint } from "../src/x509/certificate.js";
import { fromPem } from "../src/x509/pem.js";
import { tempFleet } from "./helpers.js";
import { editConfig, run } from "./server-helpers.js";
import { ManualClock } from "./support/clock.js";

const policy = AccessPolicy.parse(
  `version: 1
rules:
  - name: own-topics
    devices: all
    publish: ["fleet/\${device}/#"]
    subscribe: ["fleet/\${device}/#"]
`,
  "rotation-policy.yaml",
);

/** Serial (lower-case hex, no leading zeros) of the certificate a TLS peer presented. */
const peerSerial = (socket: TLSSocket): string => socket.getPeerX509Certificate()!.serialNumber.toLowerCase().replace(/^0+/, "");
const bare = (serial: string): string => serial.toLowerCase().replace(/^0+/, "");

/** The serial openssl s_client sees on a fresh connection. */
async function sClientSerial(port: number, extra: string[] = []): Promise<string> {
  const r = await run("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost", ...extra], "");
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/.exec(r.stdout)?.[0];
  assert.ok(pem, `openssl s_client printed no certificate:\n${r.stdout}\n${r.stderr}`);
  const x = await run("openssl", ["x509", "-noout", "-serial"], pem);
  return bare(/serial=([0-9A-Fa-f]+)/.exec(x.stdout)![1]!);
}

/** GET on a given agent; resolves with the status and the socket it went over. */
function get(url: string, agent: Agent, ca: string): Promise<{ status: number; socket: TLSSocket; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { agent, ca, servername: "localhost" }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, socket: req.socket as TLSSocket, reused: req.reusedSocket }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("server certificate rotation", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let clock: ManualClock;
  let rootPem: string;
  let deviceDir: string;
  let oldSerial: string;
  /** Real time at the start; the fleet's clock is set relative to it. */
  const R = Date.now();
  const mqttClients: MqttClient[] = [];

  before(async () => {
    f = await tempFleet();
    await f.fleet.close();
    // A 10-minute server certificate issued 400 s "ago": due (at 2/3) 20 s before R, valid in real
    // time for about 200 s more, so clients verify it normally while the test sets up.
    editConfig(f.dir, (doc) => (doc.validity.server = "10m"));
    const past = await FleetServices.open(f.dir, { clock: new ManualClock(R - 400_000) });
    try {
      await reissueServerCertificate(past, { actor: "test", reasons: ["a short-lived certificate for the test"] });
    } finally {
      await past.close();
    }
    rootPem = readFileSync(join(f.dir, "ca", "root", "cert.pem"), "utf8");
    clock = new ManualClock(R - 30_000); // 10 s before the certificate is due
    server = await startFleetServer({
      dir: f.dir,
      registrationListen: "127.0.0.1:0",
      statusListen: "127.0.0.1:0",
      gatewayListen: "127.0.0.1:0",
      adminListen: "127.0.0.1:0",
      policy,
      logger: silentLogger,
      clock,
    });
    oldSerial = readServerCertificate(server.fleet).serial;
    const added = await addDevice(server.fleet, { id: "robot-1", actor: "test", token: {} });
    deviceDir = join(f.dir, "..", "agent-robot-1");
    await enroll({
      server: `https://127.0.0.1:${server.registration!.port}`,
      rootFingerprint: `sha256:${sha256Fingerprint(fromPem(rootPem, ["CERTIFICATE"]))}`,
      deviceId: "robot-1",
      mode: { kind: "token", token: added.token!.token },
      dir: deviceDir,
    });
  });

  after(async () => {
    for (const c of mqttClients) c.end(true);
    await server?.close();
    await f?.close();
  });

  it("renews at 2/3 of the lifetime; open connections stay up, new ones get the new certificate; audited", async () => {
    const renewer = server.serverCertificate!;
    assert.ok(renewer, "serve runs the renewer when a listener serves the server certificate");
    // Not due yet (the start-up check left it alone too).
    assert.equal(await renewer.renewNow(), undefined);
    assert.equal(readServerCertificate(server.fleet).serial, oldSerial);

    // Opened before the rotation: an MQTT session (subscribed to its own topic) and a keep-alive HTTPS connection.
    const files = {
      ca: readFileSync(join(deviceDir, "ca.pem")),
      cert: readFileSync(join(deviceDir, "cert.pem")),
      key: readFileSync(join(deviceDir, "key.pem")),
    };
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${server.gateway!.address.port}`, {
      ...files,
      servername: "localhost",
      rejectUnauthorized: true,
      protocolVersion: 4,
      clientId: "robot-1",
      reconnectPeriod: 0,
      connectTimeout: 20_000,
    });
    mqttClients.push(client);
    let closes = 0;
    client.on("close", () => closes++);
    const mqttSocket = client.stream as unknown as TLSSocket;
    assert.equal(peerSerial(mqttSocket), bare(oldSerial));
    let mqttHandshakes = 1;
    mqttSocket.on("secureConnect", () => mqttHandshakes++);
    await client.subscribeAsync("fleet/robot-1/#", { qos: 1 });

    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const url = `https://127.0.0.1:${server.registration!.port}/.well-known/est/cacerts`;
    // The server certificate of a connection is fixed by its one handshake (TLS 1.3 has no renegotiation):
    // read it at the handshake and count handshakes on the socket.
    let handshakes = 0;
    let firstSerial = "";
    const first = await new Promise<Awaited<ReturnType<typeof get>>>((resolve, reject) => {
      agent.once("free", (socket: TLSSocket) => {
        firstSerial = peerSerial(socket);
        handshakes = 1;
        socket.on("secureConnect", () => handshakes++);
      });
      get(url, agent, rootPem).then(resolve, reject);
    });
    assert.equal(first.status, 200);
    assert.equal(firstSerial, bare(oldSerial));

    // The fleet's clock reaches the due time (R - 20 s): the next check renews.
    clock.set(R);
    const reissue = await renewer.renewNow();
    assert.ok(reissue, "renewed once due");
    assert.equal(reissue.previousSerial, oldSerial);
    assert.notEqual(bare(reissue.serial), bare(oldSerial));
    assert.equal(readServerCertificate(server.fleet).serial, reissue.serial);
    // A second check right after changes nothing.
    assert.equal(await renewer.renewNow(), undefined);

    // The keep-alive connection: same socket, still the old certificate, still answering.
    const second = await get(url, agent, rootPem);
    assert.equal(second.status, 200);
    assert.ok(second.reused, "the second request went over the connection opened before the rotation");
    assert.equal(second.socket, first.socket);
    assert.equal(handshakes, 1, "no second handshake on it");
    agent.destroy();

    // The MQTT session: never closed, and a message still goes round on it.
    const received = new Promise<string>((resolve) => client.once("message", (_t, payload) => resolve(payload.toString())));
    await client.publishAsync("fleet/robot-1/status", "after rotation", { qos: 1 });
    assert.equal(await received, "after rotation");
    assert.equal(closes, 0);
    assert.equal(client.stream, mqttSocket as unknown, "the same TLS connection");
    assert.equal(mqttHandshakes, 1, "no second handshake on it");

    // New connections get the new certificate: Node's tls (verifying it against the root) and openssl.
    const fresh = await new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({ host: "127.0.0.1", port: server.registration!.port, servername: "localhost", ca: rootPem }, () => resolve(s));
      s.on("error", reject);
    });
    assert.equal(fresh.authorized, true, String(fresh.authorizationError));
    assert.equal(peerSerial(fresh), bare(reissue.serial));
    fresh.destroy();
    assert.equal(await sClientSerial(server.registration!.port), bare(reissue.serial));
    assert.equal(await sClientSerial(server.admin!.address.port), bare(reissue.serial));
    const deviceFiles = ["-cert", join(deviceDir, "cert.pem"), "-key", join(deviceDir, "key.pem")];
    assert.equal(await sClientSerial(server.gateway!.address.port, deviceFiles), bare(reissue.serial));

    // Audited: a certificate.issue event by serve, naming what it replaces and why.
    const rows = await server.fleet.store.ops.audit.list({});
    const issued = rows.filter((r) => r.action === "certificate.issue" && JSON.parse(r.details).serial === reissue.serial);
    assert.equal(issued.length, 1);
    assert.equal(issued[0]!.actor, "serve");
    const details = JSON.parse(issued[0]!.details) as { kind: string; reissue: { replaces: string; reasons: string[] } };
    assert.equal(details.kind, "server");
    assert.equal(details.reissue.replaces, oldSerial);
    assert.match(details.reissue.reasons[0]!, /2\/3 of its lifetime/);
  });

  it("a renewer started past the due time renews at once; a running server passes a certificate changed on disk on", async () => {
    // Opened on the same directory, its clock 2/3 of a lifetime after the current certificate began.
    const current = readServerCertificate(server.fleet);
    const later = await FleetServices.open(f.dir, { clock: new ManualClock(current.renewAt.getTime() + 1000) });
    try {
      const renewer = new ServerCertificateRenewer(later, { actor: "serve" });
      const told: string[] = [];
      renewer.addListener(async () => told.push(readServerCertificate(later).serial));
      const renewed = await renewer.start();
      await renewer.stop();
      assert.ok(renewed);
      assert.equal(renewed.previousSerial, current.serial);
      assert.deepEqual(told, [renewed.serial]);
    } finally {
      await later.close();
    }
    // The running server notices the change on disk at its next check and its listeners serve it.
    const onDisk = readServerCertificate(server.fleet).serial;
    await server.serverCertificate!.renewNow();
    assert.equal(await sClientSerial(server.registration!.port), bare(onDisk));
    assert.equal(await sClientSerial(server.admin!.address.port), bare(onDisk));
    assert.equal(
      await sClientSerial(server.gateway!.address.port, ["-cert", join(deviceDir, "cert.pem"), "-key", join(deviceDir, "key.pem")]),
      bare(onDisk),
    );
  });

  it("serve started after the due time renews before it listens: the first client gets the new certificate", async () => {
    const current = readServerCertificate(server.fleet);
    const second = await startFleetServer({
      dir: f.dir,
      only: ["registration"],
      registrationListen: "127.0.0.1:0",
      logger: silentLogger,
      clock: new ManualClock(current.renewAt.getTime() + 1000),
    });
    try {
      const renewed = readServerCertificate(second.fleet);
      assert.notEqual(renewed.serial, current.serial);
      assert.equal(await sClientSerial(second.registration!.port), bare(renewed.serial));
      const rows = await second.fleet.store.ops.audit.list({});
      const row = rows.find((r) => r.action === "certificate.issue" && JSON.parse(r.details).serial === renewed.serial);
      assert.equal(JSON.parse(row!.details).reissue.replaces, current.serial);
    } finally {
      await second.close();
    }
  });
});
