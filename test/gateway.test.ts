// The MQTT gateway end to end: a fleet with its registration server and gateway on 127.0.0.1:0,
// devices enrolled by the agent library, and Debian's mosquitto_pub / mosquitto_sub (and Node's
// tls for what they cannot do) as the clients.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { enroll } from "../src/agent/enroll.js";
import { addDevice } from "../src/authority/devices.js";
import { AccessPolicy } from "../src/access/policy.js";
import { sha256Fingerprint } from "../src/x509/certificate.js";
import { fromPem } from "../src/x509/pem.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import type { PolicySource } from "../src/gateway/server.js";
import { cliAsync, tempFleet } from "./helpers.js";
import { editConfig, run } from "./server-helpers.js";
import { ManualClock } from "./support/clock.js";
import type { Clock } from "../src/authority/clock.js";
import { holdDevice, unholdDevice } from "../src/authority/status/revocation.js";
import { resignCrls } from "../src/authority/status/crls.js";

/**
 * The default policy (a device publishes under fleet/<id>/, reads fleet/<id>/cmd/#), plus: the
 * controller ctl-1 may command any robot, and a device labelled zone=a reads zones/a/#.
 */
const TEST_POLICY = `version: 1
rules:
  - name: devices-publish-own
    devices: all
    publish: ["fleet/\${device}/#"]
  - name: devices-read-own-commands
    devices: all
    subscribe: ["fleet/\${device}/cmd/#"]
  - name: controllers
    devices: { ids: [ctl-1] }
    publish: ["fleet/+/cmd/#", "zones/#"]
  - name: zone-a-readers
    devices: { labels: { zone: a } }
    subscribe: ["zones/a/#"]
`;
const testPolicy: PolicySource = AccessPolicy.parse(TEST_POLICY, "test-policy.yaml");
/** The same, after an edit that takes robot-1's commands away (deny wins). */
const withoutRobot1Commands: PolicySource = AccessPolicy.parse(
  `${TEST_POLICY}  - name: robot-1-cut-off
    effect: deny
    devices: { ids: [robot-1] }
    subscribe: ["#"]
`,
  "test-policy.yaml",
);

interface Device {
  id: string;
  dir: string;
}

const children = new Set<ChildProcess>();

/** mosquitto_* arguments for a device's agent files. */
function tlsArgs(port: number, d: Device, clientId = d.id): string[] {
  return [
    "-h", "127.0.0.1", "-p", String(port), "--cafile", join(d.dir, "ca.pem"),
    "--cert", join(d.dir, "cert.pem"), "--key", join(d.dir, "key.pem"), "-i", clientId,
  ]; // prettier-ignore
}

interface Subscriber {
  child: ChildProcess;
  /** Resolves when the SUBACK arrived (mosquitto_sub -d says so). */
  subscribed: Promise<string>;
  output(): string;
  exited: Promise<number | null>;
}

function subscribe(port: number, d: Device, topic: string, extra: string[] = [], clientId = d.id): Subscriber {
  // Line-buffered, so the SUBACK line arrives when it is printed (a pipe is block-buffered).
  const args = ["-oL", "mosquitto_sub", ...tlsArgs(port, d, clientId), "-t", topic, "-v", "-d", "-W", "60", ...extra];
  const child = spawn("stdbuf", args, { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let out = "";
  let onSuback: (s: string) => void;
  const subscribed = new Promise<string>((resolve) => (onSuback = resolve));
  child.stdout!.setEncoding("utf8").on("data", (c: string) => {
    out += c;
    if (/received SUBACK/.test(out)) onSuback(out);
  });
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (out += c));
  const exited = new Promise<number | null>((resolve) =>
    child.on("close", (code) => {
      children.delete(child);
      onSuback(out);
      resolve(code);
    }),
  );
  return { child, subscribed, output: () => out, exited };
}

function publish(port: number, d: Device, topic: string, message: string, extra: string[] = [], clientId = d.id) {
  return run("mosquitto_pub", [...tlsArgs(port, d, clientId), "-t", topic, "-m", message, "-d", ...extra], undefined, 30_000);
}

/** A bare MQTT 3.1.1 CONNECT (clean session, keepalive 60 s). */
function connectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId);
  const body = Buffer.concat([Buffer.from([0, 4]), Buffer.from("MQTT"), Buffer.from([4, 2, 0, 60, 0, id.length]), id]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

interface RawAttempt {
  /** The CONNACK return code, or undefined when the TLS handshake or connection failed first. */
  connack: number | undefined;
  reused: boolean;
  session: Buffer | undefined;
  error?: string;
}

/** TLS with Node (optionally resuming a saved session), then CONNECT; reports the CONNACK code. */
function rawConnect(port: number, d: Device, session?: Buffer): Promise<RawAttempt> {
  return new Promise((resolve) => {
    let saved: Buffer | undefined;
    let reused = false;
    const socket = tlsConnect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: readFileSync(join(d.dir, "ca.pem")),
      cert: readFileSync(join(d.dir, "cert.pem")),
      key: readFileSync(join(d.dir, "key.pem")),
      ...(session ? { session } : {}),
    });
    let got = Buffer.alloc(0);
    let finished = false;
    const done = (error?: string) => {
      if (finished) return;
      finished = true;
      socket.destroy();
      const connack = got.length >= 4 && got[0] === 0x20 ? got[3] : undefined;
      resolve({ connack, reused, session: saved, ...(connack === undefined && error ? { error } : {}) });
    };
    socket.on("session", (s: Buffer) => (saved = s));
    socket.on("secureConnect", () => {
      reused = socket.isSessionReused();
      socket.write(connectPacket(d.id));
    });
    socket.on("data", (c: Buffer) => {
      got = Buffer.concat([got, c]);
      // Wait a moment for the TLS 1.3 session ticket, which may follow the CONNACK.
      if (got.length >= 4 && got[0] === 0x20) setTimeout(() => done(), 100);
    });
    socket.on("error", (e) => done(e.message));
    socket.on("close", () => done("closed"));
    socket.setTimeout(20_000, () => done("timeout"));
  });
}

/** Payload lines ("topic payload") mosquitto_sub -v printed, without its -d debug lines. */
const messages = (out: string): string[] => out.split("\n").filter((l) => /^fleet\//.test(l));

/** A fleet, its server with the gateway on 127.0.0.1:0, and devices enrolled by the agent. */
async function fleetWithDevices(
  ids: readonly string[],
  /** policy "file": the fleet's policy.yaml, as `serve` reads it; default: testPolicy. */
  options: {
    policy?: PolicySource | "file";
    clock?: Clock;
    config?: (doc: Record<string, any>) => void;
    editPolicy?: (text: string) => string;
  } = {},
) {
  const f = await tempFleet();
  if (options.editPolicy) writeFileSync(join(f.dir, "policy.yaml"), options.editPolicy(readFileSync(join(f.dir, "policy.yaml"), "utf8")));
  if (options.config) editConfig(f.dir, options.config);
  const server = await startFleetServer({
    dir: f.dir,
    registrationListen: "127.0.0.1:0",
    statusListen: "127.0.0.1:0",
    gatewayListen: "127.0.0.1:0",
    ...(options.policy === "file" ? {} : { policy: options.policy ?? testPolicy }),
    logger: silentLogger,
    clock: options.clock,
  });
  const devices: Record<string, Device> = {};
  const rootFp = `sha256:${sha256Fingerprint(fromPem(readFileSync(join(f.dir, "ca", "root", "cert.pem"), "utf8"), ["CERTIFICATE"]))}`;
  for (const id of ids) {
    const added = await addDevice(server.fleet, { id, actor: "test", token: {} });
    const dir = join(f.dir, "..", `agent-${id}`);
    await enroll({
      server: `https://127.0.0.1:${server.registration!.port}`,
      rootFingerprint: rootFp,
      deviceId: id,
      mode: { kind: "token", token: added.token!.token },
      dir,
    });
    devices[id] = { id, dir };
  }
  return { f, server, port: server.gateway!.address.port, devices };
}

describe("MQTT gateway", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let port: number;
  let devices: Record<string, Device> = {};

  before(async () => {
    ({ f, server, port, devices } = await fleetWithDevices(["robot-1", "robot-2", "ctl-1"]));
  });

  after(async () => {
    for (const c of children) c.kill("SIGKILL");
    await server?.close();
    await f?.close();
  });

  it("delivers where the policy allows, drops a forbidden publish, refuses a forbidden subscription", async () => {
    const sub = subscribe(port, devices["robot-1"]!, "fleet/robot-1/cmd/#", ["-C", "1"]);
    await sub.subscribed;
    assert.match(sub.output(), /received SUBACK/);
    // robot-2 may not command robot-1: acknowledged, dropped, never delivered.
    const forbidden = await publish(port, devices["robot-2"]!, "fleet/robot-1/cmd/stop", "from robot-2");
    assert.equal(forbidden.status, 0, forbidden.stderr);
    const allowed = await publish(port, devices["ctl-1"]!, "fleet/robot-1/cmd/go", "from ctl-1");
    assert.equal(allowed.status, 0, allowed.stderr + allowed.stdout);
    assert.equal(await sub.exited, 0, sub.output());
    assert.deepEqual(messages(sub.output()), ["fleet/robot-1/cmd/go from ctl-1"]);
    assert.ok((server.gateway!.counters.denials.publish ?? 0) >= 1);

    // A subscription to another robot's commands: SUBACK 0x80, which mosquitto_sub reports.
    const denied = subscribe(port, devices["robot-2"]!, "fleet/robot-1/cmd/#");
    await denied.exited;
    assert.match(denied.output(), /Subscribed \(mid: \d+\): 128/, denied.output());
    assert.match(denied.output(), /All subscription requests were denied/);
  });

  it("`fleetpki gateway sessions` lists who is connected now (from the sessions file, 0600)", async () => {
    const sub = subscribe(port, devices["robot-1"]!, "fleet/robot-1/cmd/#");
    await sub.subscribed;
    try {
      // The file is written at most once a second, when the sessions changed.
      let listed: { id: string; kind: string; gatewayPid: number }[] = [];
      for (let i = 0; i < 50 && !listed.some((s) => s.id === "robot-1"); i++) {
        const r = await cliAsync(["gateway", "sessions", "--json", "--dir", f.dir]);
        assert.equal(r.status, 0, r.stderr);
        listed = JSON.parse(r.stdout);
      }
      const mine = listed.find((s) => s.id === "robot-1");
      assert.ok(mine, JSON.stringify(listed));
      assert.equal(mine.kind, "device");
      assert.equal(mine.gatewayPid, process.pid);
      assert.equal(statSync(join(f.dir, "run", `gateway-${process.pid}.json`)).mode & 0o777, 0o600);
      const table = await cliAsync(["gateway", "sessions", "--dir", f.dir]);
      assert.match(table.stdout, /^ID\s+KIND\s+ADDRESS/m);
    } finally {
      sub.child.kill("SIGTERM");
      await sub.exited;
    }
  });

  it("refuses a client id that is not the device id (CONNACK identifier rejected)", async () => {
    const r = await publish(port, devices["robot-1"]!, "fleet/robot-1/x", "hi", [], "robot-2");
    assert.notEqual(r.status, 0);
    assert.match(r.stderr + r.stdout, /identifier rejected/i);
  });

  it("refuses MQTT 5 with CONNACK 1 (unacceptable protocol version)", async () => {
    const r = await publish(port, devices["robot-1"]!, "fleet/robot-1/x", "hi", ["-V", "mqttv5"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr + r.stdout, /protocol/i);
    assert.ok((server.gateway!.counters.refused["protocol-5"] ?? 0) >= 1);
  });

  it("refuses a client without a certificate at the TLS handshake", async () => {
    const r = await run(
      "mosquitto_pub",
      [
        "-h",
        "127.0.0.1",
        "-p",
        String(port),
        "--cafile",
        join(devices["robot-1"]!.dir, "ca.pem"),
        "-i",
        "robot-1",
        "-t",
        "fleet/robot-1/x",
        "-m",
        "x",
      ],
      undefined,
      30_000,
    );
    assert.notEqual(r.status, 0);
  });

  it("refuses a will aimed at another device's cmd topic (CONNACK not authorized)", async () => {
    const r = await publish(port, devices["robot-2"]!, "fleet/robot-2/x", "hi", [
      "--will-topic",
      "fleet/robot-1/cmd/stop",
      "--will-payload",
      "x",
    ]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr + r.stdout, /not authori[sz]ed/i);
  });

  it("cuts a subscriber off within 1 s of `fleetpki device revoke` (another process); a saved TLS session readmits no one", async () => {
    const robot = devices["robot-2"]!;
    const first = await rawConnect(port, robot);
    assert.equal(first.connack, 0, first.error);
    const sub = subscribe(port, robot, "fleet/robot-2/cmd/#");
    await sub.subscribed;
    assert.match(sub.output(), /received SUBACK/);
    const before = server.gateway!.counters.disconnected.revoked ?? 0;
    // Watch for the session's end while the CLI runs: its commit, not its exit, starts the clock.
    let disconnectedAt: number | undefined;
    const watching = (async () => {
      const deadline = Date.now() + 5000;
      while ((server.gateway!.counters.disconnected.revoked ?? 0) === before && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 2));
      if (Date.now() < deadline) disconnectedAt = Date.now();
    })();
    const revoke = await cliAsync(["device", "revoke", "robot-2", "--dir", f.dir]);
    assert.equal(revoke.status, 0, revoke.stderr);
    await Promise.race([watching, new Promise((r) => setTimeout(r, 3000))]);
    const revokedAt = server.certificateStatus.device("robot-2").certificates[0]?.since;
    assert.ok(revokedAt && disconnectedAt, "the session was closed");
    const cutOff = disconnectedAt - revokedAt.getTime();
    console.log(`revoke-to-disconnect: ${cutOff} ms (from the revocation's commit in the CLI process)`);
    assert.ok(cutOff < 1000, `disconnected ${cutOff} ms after the revocation`);
    assert.ok(!server.gateway!.sessions().some((s) => s.id === "robot-2"));

    // Reconnecting, with the saved TLS session or without, fails: at the handshake (CRL) or at CONNECT.
    const resumed = await rawConnect(port, robot, first.session);
    assert.notEqual(resumed.connack, 0, "a saved session must not readmit a revoked certificate");
    const fresh = await rawConnect(port, robot);
    assert.notEqual(fresh.connack, 0);
    sub.child.kill("SIGTERM");
    await sub.exited;
  });
});

describe("MQTT gateway admission and authorization", () => {
  const clock = new ManualClock();
  let mutable = true;
  // robot-1 may read its commands only while `mutable` holds (a policy reload takes it away).
  const policy: PolicySource = { grantsFor: (id) => (mutable ? testPolicy : withoutRobot1Commands).grantsFor(id) };
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let port: number;
  let devices: Record<string, Device> = {};
  let tmp: string;

  before(async () => {
    ({ f, server, port, devices } = await fleetWithDevices(["robot-1", "robot-2", "ctl-1"], { policy, clock }));
    tmp = join(f.dir, "..");
  });

  after(async () => {
    for (const c of children) c.kill("SIGKILL");
    await server?.close();
    await f?.close();
  });

  it("refuses certificates of another CA, or self-signed, that claim a device's SAN URI (TLS handshake)", async () => {
    const san = "subjectAltName=URI:spiffe://fleet.example/device/robot-1";
    const ca = join(tmp, "evil-ca");
    assert.equal((await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
      `${ca}.key`, "-out", `${ca}.pem`, "-subj", "/CN=Evil CA", "-days", "1",
      "-addext", "basicConstraints=critical,CA:TRUE"])).status, 0); // prettier-ignore
    const leaf = join(tmp, "evil-leaf");
    assert.equal((await run("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
      `${leaf}.key`, "-out", `${leaf}.csr`, "-subj", "/CN=robot-1"])).status, 0); // prettier-ignore
    const ext = join(tmp, "evil.ext");
    writeFileSync(ext, `${san}\nextendedKeyUsage=clientAuth\n`);
    assert.equal((await run("openssl", ["x509", "-req", "-in", `${leaf}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`,
      "-out", `${leaf}.pem`, "-days", "1", "-extfile", ext])).status, 0); // prettier-ignore
    const self = join(tmp, "self");
    assert.equal((await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
      `${self}.key`, "-out", `${self}.pem`, "-subj", "/CN=robot-1", "-days", "1", "-addext", san])).status, 0); // prettier-ignore
    const failuresBefore = Object.values(server.gateway!.counters.handshakeFailures).reduce((a, b) => a + b, 0);
    for (const [cert, key] of [
      [`${leaf}.pem`, `${leaf}.key`],
      [`${self}.pem`, `${self}.key`],
    ] as const) {
      const r = await run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "--cafile", join(devices["robot-1"]!.dir, "ca.pem"),
        "--cert", cert, "--key", key, "-i", "robot-1", "-t", "fleet/robot-1/x", "-m", "x"], undefined, 30_000); // prettier-ignore
      assert.notEqual(r.status, 0, `${cert} was accepted`);
    }
    const failures = Object.values(server.gateway!.counters.handshakeFailures).reduce((a, b) => a + b, 0);
    assert.ok(failures >= failuresBefore + 2, JSON.stringify(server.gateway!.counters.handshakeFailures));
    assert.equal(server.gateway!.sessions().length, 0);
  });

  it("authorizes retained messages like publishes and delivers them only where receive() allows", async () => {
    // A retained message robot-2 may not publish is never stored; ctl-1's is.
    assert.equal((await publish(port, devices["robot-2"]!, "fleet/robot-1/cmd/evil", "evil", ["-r"])).status, 0);
    assert.equal((await publish(port, devices["ctl-1"]!, "fleet/robot-1/cmd/keep", "kept", ["-r"])).status, 0);
    // --retained-only: print retained messages, stop at the first live one (the marker below).
    const sub = subscribe(port, devices["robot-1"]!, "fleet/robot-1/cmd/#", ["--retained-only"]);
    await sub.subscribed;
    assert.equal((await publish(port, devices["ctl-1"]!, "fleet/robot-1/cmd/marker", "live")).status, 0);
    await sub.exited;
    assert.deepEqual(messages(sub.output()), ["fleet/robot-1/cmd/keep kept"]);
    // robot-2 subscribing to its own commands does not get robot-1's retained ones.
    const other = subscribe(port, devices["robot-2"]!, "fleet/robot-2/cmd/#", ["--retained-only"]);
    await other.subscribed;
    assert.equal((await publish(port, devices["ctl-1"]!, "fleet/robot-2/cmd/marker", "live")).status, 0);
    await other.exited;
    assert.deepEqual(messages(other.output()), []);
  });

  it("a policy reload removes a subscription it no longer allows", async () => {
    const sub = subscribe(port, devices["robot-1"]!, "fleet/robot-1/cmd/#");
    await sub.subscribed;
    try {
      const session = () => server.gateway!.sessions().find((s) => s.id === "robot-1");
      assert.equal(session()?.subscriptions, 1);
      mutable = false;
      await server.gateway!.policyChanged();
      assert.equal(session()?.subscriptions, 0);
      const out = session()!.messagesOut;
      assert.equal((await publish(port, devices["ctl-1"]!, "fleet/robot-1/cmd/after", "x", ["-q", "1"])).status, 0);
      assert.equal(session()!.messagesOut, out);
      assert.ok(!messages(sub.output()).some((m) => m.startsWith("fleet/robot-1/cmd/after")), sub.output());
    } finally {
      mutable = true;
      sub.child.kill("SIGTERM");
      await sub.exited;
    }
  });

  it("a label change (`fleetpki device set`, another process) removes a subscription the new labels do not allow", async () => {
    assert.equal((await cliAsync(["device", "set", "robot-2", "--label", "zone=a", "--dir", f.dir])).status, 0);
    await server.changes.poll();
    const sub = subscribe(port, devices["robot-2"]!, "zones/a/#");
    await sub.subscribed;
    try {
      const session = () => server.gateway!.sessions().find((s) => s.id === "robot-2");
      assert.equal(session()?.subscriptions, 1, sub.output());
      assert.equal((await publish(port, devices["ctl-1"]!, "zones/a/before", "1", ["-q", "1"])).status, 0);
      const zoneLines = () =>
        sub
          .output()
          .split("\n")
          .filter((l) => /^zones\//.test(l));
      for (let i = 0; i < 100 && zoneLines().length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(zoneLines(), ["zones/a/before 1"], "delivered while the label allowed it");
      const label = await cliAsync(["device", "set", "robot-2", "--label", "zone=b", "--dir", f.dir]);
      assert.equal(label.status, 0, label.stderr);
      await server.changes.poll();
      // The sessions are re-admitted and re-granted right after the poll applied the change, asynchronously.
      for (let i = 0; i < 100 && session()?.subscriptions !== 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(session()?.subscriptions, 0);
      const out = session()!.messagesOut;
      assert.equal((await publish(port, devices["ctl-1"]!, "zones/a/after", "2", ["-q", "1"])).status, 0);
      assert.equal(session()!.messagesOut, out, "nothing delivered after the label change");
      assert.deepEqual(zoneLines(), ["zones/a/before 1"]);
    } finally {
      sub.child.kill("SIGTERM");
      await sub.exited;
    }
  });

  it("a held device is refused (TLS handshake with the re-signed CRL, else CONNACK 5) until unheld", async () => {
    const first = await rawConnect(port, devices["robot-1"]!);
    assert.equal(first.connack, 0, first.error);
    const hold = await holdDevice(server.fleet, { deviceId: "robot-1", actor: "test" });
    await server.changes.poll();
    // Admission refuses from the in-memory status (CONNACK 5), or the handshake already has a CRL listing it.
    const held = await rawConnect(port, devices["robot-1"]!);
    assert.ok(held.connack === 5 || held.connack === undefined, `CONNACK ${held.connack}`);
    // Once the CRL lists it (as the CLI re-signs after a change): OpenSSL refuses the handshake.
    await resignCrls(server.fleet, hold.cas);
    await server.gateway!.refreshTls();
    const heldTls = await rawConnect(port, devices["robot-1"]!);
    assert.equal(heldTls.connack, undefined, "refused at the handshake");
    const unhold = await unholdDevice(server.fleet, { deviceId: "robot-1", actor: "test" });
    await server.changes.poll();
    await resignCrls(server.fleet, unhold.cas);
    await server.gateway!.refreshTls();
    const back = await rawConnect(port, devices["robot-1"]!);
    assert.equal(back.connack, 0, back.error);
  });

  it("an expired certificate is refused at CONNECT (the fleet clock decides), CONNACK 5", async () => {
    clock.advance(31 * 24 * 3600 * 1000);
    try {
      const before = server.gateway!.counters.refused.expired ?? 0;
      const r = await rawConnect(port, devices["robot-2"]!);
      assert.equal(r.connack, 5, r.error);
      assert.equal(server.gateway!.counters.refused.expired, before + 1);
    } finally {
      clock.advance(-31 * 24 * 3600 * 1000);
    }
  });
});

describe("MQTT gateway denials", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let port: number;
  let devices: Record<string, Device> = {};
  let closed: Promise<void> | undefined;

  before(async () => {
    ({ f, server, port, devices } = await fleetWithDevices(["robot-1"], { config: (doc) => (doc.gateway = { denials_per_minute: 5 }) }));
  });

  after(async () => {
    for (const c of children) c.kill("SIGKILL");
    await (closed ??= server?.close());
    await f?.close();
  });

  it("drops denied publishes, closes the connection past the denial budget, audits them aggregated per topic and minute", async () => {
    // One connection publishing 50 lines (mosquitto_pub -l) where it may not.
    const lines = Array.from({ length: 50 }, (_, i) => `m${i}`).join("\n") + "\n";
    await run("mosquitto_pub", [...tlsArgs(port, devices["robot-1"]!), "-t", "fleet/robot-2/cmd/stop", "-l", "-q", "1"], lines, 30_000);
    const counters = server.gateway!.counters;
    // mosquitto_pub -l connects again after a close: each connection is closed at its 6th denial.
    const closes = counters.disconnected.denials ?? 0;
    assert.ok(closes >= 1, JSON.stringify(counters));
    const denied = counters.denials.publish ?? 0;
    assert.equal(denied, 6 * closes, JSON.stringify(counters));
    assert.equal(counters.messages.out, 0);
    await (closed ??= server.close()); // flushes the aggregated denials
    const listed = await cliAsync(["audit", "list", "--json", "--dir", f.dir]);
    assert.equal(listed.status, 0, listed.stderr);
    const rows = (JSON.parse(listed.stdout) as { action: string; subject: string; details: Record<string, unknown> }[]).filter(
      (r) => r.action === "access.deny",
    );
    // The first denial of its kind is written within a second, the repeats added up at the next flush
    // (here: close): at most two rows per minute, not one per message.
    const perMinute = new Map<unknown, number>();
    for (const r of rows) perMinute.set(r.details.minute, (perMinute.get(r.details.minute) ?? 0) + 1);
    assert.ok(perMinute.size <= 2 && [...perMinute.values()].every((n) => n <= 2), JSON.stringify(rows));
    assert.equal(rows[0]!.subject, "device:robot-1");
    assert.equal(rows[0]!.details.topic, "fleet/robot-2/cmd/stop");
    assert.equal(rows[0]!.details.action, "publish");
    assert.equal(
      rows.reduce((n, r) => n + Number(r.details.count), 0),
      denied,
    );
    const verify = await cliAsync(["audit", "verify", "--dir", f.dir]);
    assert.equal(verify.status, 0, verify.stdout + verify.stderr);
  });
});

describe("MQTT gateway with the fleet's policy.yaml and a service identity", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let port: number;
  let devices: Record<string, Device> = {};
  let telemetry: Device;

  before(async () => {
    ({ f, server, port, devices } = await fleetWithDevices(["robot-1", "robot-2"], { policy: "file" }));
    const dir = join(f.dir, "..", "svc-telemetry");
    const added = await cliAsync(["service", "add", "telemetry", "--out", dir, "--dir", f.dir]);
    assert.equal(added.status, 0, added.stderr);
    telemetry = { id: "telemetry", dir };
  });

  after(async () => {
    for (const c of children) c.kill("SIGKILL");
    await server?.close();
    await f?.close();
  });

  it("the telemetry service reads every device's messages and cannot publish to a cmd topic", async () => {
    const sub = subscribe(port, telemetry, "fleet/+/#", ["-C", "3"], "telemetry-1");
    await sub.subscribed;
    assert.match(sub.output(), /received SUBACK/);
    assert.equal((await publish(port, devices["robot-1"]!, "fleet/robot-1/telemetry", "r1")).status, 0);
    assert.equal((await publish(port, devices["robot-2"]!, "fleet/robot-2/telemetry", "r2")).status, 0);
    const before = server.gateway!.counters.denials.publish ?? 0;
    const cmd = await publish(port, telemetry, "fleet/robot-1/cmd/stop", "halt", [], "telemetry-2");
    assert.equal(cmd.status, 0, cmd.stderr);
    assert.equal(server.gateway!.counters.denials.publish, before + 1);
    assert.equal((await publish(port, devices["robot-1"]!, "fleet/robot-1/last", "end")).status, 0);
    await sub.exited;
    assert.deepEqual(messages(sub.output()), ["fleet/robot-1/telemetry r1", "fleet/robot-2/telemetry r2", "fleet/robot-1/last end"]);
    // A device may not read the whole fleet: `#` and `fleet/+/cmd/#` are refused.
    for (const filter of ["#", "fleet/+/cmd/#"]) {
      const wide = subscribe(port, devices["robot-1"]!, filter);
      await wide.exited;
      assert.match(wide.output(), /All subscription requests were denied/, filter);
    }
  });

  it("an edit of policy.yaml that drops the service's rule removes its live subscription (hot reload)", async () => {
    const sub = subscribe(port, telemetry, "fleet/+/#", [], "telemetry-1");
    await sub.subscribed;
    try {
      const session = () => server.gateway!.sessions().find((s) => s.id === "telemetry-1");
      assert.equal(session()?.subscriptions, 1);
      const path = join(f.dir, "policy.yaml");
      const text = readFileSync(path, "utf8");
      writeFileSync(path, text.replace(/  - name: telemetry-reads-fleet[\s\S]*?"fleet\/\+\/#"\n/, ""));
      // The policy file follows fs.watch and a 1 s poll.
      const deadline = Date.now() + 10_000;
      while (session()?.subscriptions !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(session()?.subscriptions, 0, "subscription removed after the reload");
      assert.equal((await publish(port, devices["robot-1"]!, "fleet/robot-1/telemetry", "after")).status, 0);
      assert.deepEqual(messages(sub.output()), []);
    } finally {
      sub.child.kill("SIGTERM");
      await sub.exited;
    }
  });

  it("`fleetpki device remove` cuts the device off; it cannot come back", async () => {
    const first = await rawConnect(port, devices["robot-2"]!);
    assert.equal(first.connack, 0, first.error);
    const sub = subscribe(port, devices["robot-2"]!, "fleet/robot-2/cmd/#");
    await sub.subscribed;
    const removed = await cliAsync(["device", "remove", "robot-2", "--dir", f.dir]);
    assert.equal(removed.status, 0, removed.stderr);
    const deadline = Date.now() + 5000;
    while (server.gateway!.sessions().some((s) => s.id === "robot-2") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.ok(!server.gateway!.sessions().some((s) => s.id === "robot-2"), "session closed");
    const again = await rawConnect(port, devices["robot-2"]!);
    assert.notEqual(again.connack, 0);
    sub.child.kill("SIGTERM");
    await sub.exited;
  });
});

describe("MQTT gateway in audit mode", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let port: number;
  let devices: Record<string, Device> = {};
  let closed: Promise<void> | undefined;

  before(async () => {
    const editPolicy = (text: string) => text.replace(/^mode: enforce/m, "mode: audit");
    ({ f, server, port, devices } = await fleetWithDevices(["robot-1", "robot-2"], { policy: "file", editPolicy }));
  });

  after(async () => {
    for (const c of children) c.kill("SIGKILL");
    await (closed ??= server?.close());
    await f?.close();
  });

  it("lets a would-deny through, counts it and audits it as audit-deny", async () => {
    const sub = subscribe(port, devices["robot-2"]!, "fleet/robot-2/cmd/#", ["-C", "1"]);
    await sub.subscribed;
    assert.equal((await publish(port, devices["robot-1"]!, "fleet/robot-2/cmd/go", "through")).status, 0);
    await sub.exited;
    assert.deepEqual(messages(sub.output()), ["fleet/robot-2/cmd/go through"]);
    assert.equal(server.gateway!.counters.denials["audit-publish"], 1);
    assert.equal(server.gateway!.counters.denials.publish, undefined);
    await (closed ??= server.close());
    const listed = await cliAsync(["audit", "list", "--json", "--dir", f.dir]);
    const rows = (JSON.parse(listed.stdout) as { action: string; subject: string; details: Record<string, unknown> }[]).filter(
      (r) => r.action === "access.deny",
    );
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.subject, "device:robot-1");
    assert.deepEqual([rows[0]!.details.outcome, rows[0]!.details.topic, rows[0]!.details.count], ["audit-deny", "fleet/robot-2/cmd/go", 1]);
  });
});
