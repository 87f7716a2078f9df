// `fleetpki demo`: the whole story on one machine in under a minute, in a throwaway directory.
// A fleet, a server with its MQTT gateway, five robots enrolled through the agent library, a
// backend service reading their telemetry, a robot trying to drive another one (denied and
// audited), a revocation that cuts a robot off, and the audit log verified. Every step checks
// that what it narrates really happened; the first one that does not ends the demo with
// DemoStepFailed (non-zero exit), so the demo is also a smoke test.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { enroll } from "../agent/enroll.js";
import { MqttError, connectTelemetry, identityFilesIn, type TelemetryClient, type TelemetryMessage } from "../agent/mqtt.js";
import { verifyFleetAudit } from "../authority/audit-checkpoints.js";
import { initFleet } from "../authority/ca/init.js";
import { addDevice } from "../authority/devices.js";
import { layout } from "../authority/layout.js";
import { FleetServices } from "../authority/services.js";
import { revokeDevice } from "../authority/status/revocation.js";
import { addServiceIdentity, denialRows, startDemoServer, type DemoServer } from "./platform.js";

export const DEMO_DOMAIN = "demo.fleet.invalid";
const ACTOR = "demo";
/** robot-1 .. robot-5: steps 6 and 7 use robot-1, robot-2 and robot-3. */
const ROBOTS = 5;
/** How long any one expected event may take before the step counts as failed. */
const STEP_TIMEOUT_MS = 15_000;

export class DemoStepFailed extends Error {
  constructor(
    readonly step: number,
    message: string,
  ) {
    super(`demo step ${step} did not behave as narrated: ${message}`);
    this.name = "DemoStepFailed";
  }
}

export interface DemoOptions {
  /** Keep the temporary directory (its path is printed). */
  keep?: boolean;
  /** Where the narrative goes (stdout by default). */
  write?: (line: string) => void;
}

export interface DemoResult {
  dir: string;
  kept: boolean;
  ms: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a value (bounded); the demo never waits on a fixed sleep. */
async function eventually<T>(probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined || Date.now() > end) return v;
    await sleep(100);
  }
}

function within<T>(p: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), ms)))]).finally(() => clearTimeout(timer));
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const write = options.write ?? ((line: string) => void process.stdout.write(line + "\n"));
  const robotCount = ROBOTS;
  const started = Date.now();
  const tmp = mkdtempSync(join(tmpdir(), "fleetpki-demo-"));
  const fleetDir = join(tmp, "fleet");
  const clients: TelemetryClient[] = [];
  let server: DemoServer | undefined;
  let operator: FleetServices | undefined;
  let step = 0;
  const heading = (title: string) => {
    step++;
    write("");
    write(`${step}. ${title}`);
  };
  const say = (text: string) => write(`   ${text}`);
  const why = (text: string) => write(`   Why it matters: ${text}`);
  // Declared with its type so that control flow knows a call never returns.
  const fail: (message: string) => never = (message) => {
    throw new DemoStepFailed(step, message);
  };
  const robots = Array.from({ length: robotCount }, (_, i) => `robot-${i + 1}`);
  const robotDir = (id: string) => join(tmp, "robots", id);

  // Ctrl-C (or a kill) mid-demo would skip `finally` and leave a fleet, CA keys included, in the
  // temporary directory: remove it before going down the way the signal would have taken us.
  const onSignal = (signal: NodeJS.Signals) => {
    if (!options.keep) rmSync(tmp, { recursive: true, force: true });
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  write(`fleetpki demo: a throwaway DEMO fleet (trust domain ${DEMO_DOMAIN}) in ${tmp}`);
  write(options.keep ? "The directory is kept at the end (--keep)." : "The directory is deleted at the end (--keep keeps it).");
  try {
    // ---- 1 ------------------------------------------------------------------------------
    heading("Create the fleet's PKI");
    const init = await initFleet({
      dir: fleetDir,
      name: "fleetpki demo (temporary)",
      domain: DEMO_DOMAIN,
      serverNames: ["localhost", "127.0.0.1"],
    });
    say(`Root CA (self-signed) with the devices, services and operators CAs under it; fingerprint sha256:${init.rootFingerprint}.`);
    if (!existsSync(join(fleetDir, layout.policy))) fail(`init wrote no ${layout.policy}`);
    say("init also wrote the default access policy (policy.yaml): a robot publishes under fleet/<its id>/ and reads");
    say("fleet/<its id>/cmd/#; the service `telemetry` reads fleet/+/#. Everything else is denied.");
    why("every identity below is a certificate from this hierarchy, and the policy is default-deny.");

    // ---- 2 ------------------------------------------------------------------------------
    heading("Start the server: registration (EST + JSON), status (CRL + OCSP) and the MQTT gateway");
    server = await startDemoServer(fleetDir);
    say(`registration ${server.registrationUrl}, status ${server.statusUrl}, gateway ${server.gatewayUrl} (mTLS only)`);
    why("one process; the gateway follows the audit log, so what the CLI changes reaches it within a second.");
    // The operator's own handle on the fleet, as `fleetpki device add|revoke` opens it: not the server's.
    operator = await FleetServices.open(fleetDir);

    // ---- 3 ------------------------------------------------------------------------------
    heading(`Enroll ${robotCount} robots with one-time tokens, through the agent library`);
    for (const id of robots) {
      const { token } = await addDevice(operator, { id, actor: ACTOR, token: {} });
      if (!token) fail(`device add ${id} returned no token`);
      const r = await enroll({
        server: server.registrationUrl,
        rootFingerprint: `sha256:${init.rootFingerprint}`,
        deviceId: id,
        mode: { kind: "token", token: token!.token },
        dir: robotDir(id),
      });
      say(`${id}: ${r.spiffeId}, serial ${r.serial.slice(0, 16)}…, valid until ${r.notAfter.toISOString().slice(0, 10)}`);
    }
    why("each robot made its own key, trusted only the pinned root fingerprint, and spent a single-use token.");

    // ---- 4 ------------------------------------------------------------------------------
    heading("Create the service identity `telemetry` (a backend that reads what robots send)");
    const serviceDir = join(tmp, "services", "telemetry");
    const service = await addServiceIdentity(operator, "telemetry", serviceDir);
    say(`spiffe://${DEMO_DOMAIN}/service/telemetry, serial ${service.serial.slice(0, 16)}…, files in ${serviceDir}`);
    why("backends get their own certificates from the services CA: no shared passwords, revocable one by one.");

    // ---- 5 ------------------------------------------------------------------------------
    heading("Robots publish telemetry over mTLS; the service receives it");
    const backend = await connectTelemetry({ files: identityFilesIn(serviceDir), url: server.gatewayUrl });
    clients.push(backend);
    await backend.subscribe("fleet/+/telemetry", 1);
    const received = new Map<string, TelemetryMessage>();
    backend.onMessage((m) => received.set(m.topic, m));
    const byId = new Map<string, TelemetryClient>();
    for (const id of robots) {
      const c = await connectTelemetry({ agentDir: robotDir(id), url: server.gatewayUrl });
      clients.push(c);
      byId.set(id, c);
    }
    for (const [i, id] of robots.entries())
      await byId.get(id)!.publish(`fleet/${id}/telemetry`, JSON.stringify({ battery: 0.9 - i / 20, mode: "patrol" }), 1);
    const all = await eventually(async () => (received.size >= robotCount ? received.size : undefined), STEP_TIMEOUT_MS);
    if (all === undefined) fail(`the service received telemetry from ${received.size} of ${robotCount} robots`);
    for (const id of robots) {
      const m = received.get(`fleet/${id}/telemetry`);
      if (!m) fail(`no telemetry from ${id} reached the service`);
      say(`telemetry <- ${id}: ${m!.payload.toString()}`);
    }
    why("the gateway admitted each robot by its certificate's SAN URI (client id = device id), publishing only under its own topic.");

    // ---- 6 ------------------------------------------------------------------------------
    heading("robot-1 tries to drive robot-2: PUBLISH fleet/robot-2/cmd/cmd_vel");
    const victim = byId.get("robot-2")!;
    const attacker = byId.get("robot-1")!;
    const target = "fleet/robot-2/cmd/cmd_vel";
    await victim.subscribe("fleet/robot-2/cmd/#", 1);
    const hijack: TelemetryMessage[] = [];
    victim.onMessage((m) => {
      if (m.topic === target) hijack.push(m);
    });
    try {
      await attacker.publish(target, JSON.stringify({ linear: { x: 2.0 }, angular: { z: 1.5 } }), 1);
      say("robot-1's PUBLISH was accepted on the wire and dropped by the gateway (MQTT 3.1.1 has no negative PUBACK).");
    } catch (e) {
      if (!(e instanceof MqttError)) throw e;
      say(`robot-1's PUBLISH failed: ${e.message}`);
    }
    say("Waiting for the audit row: a new kind of denial is written within a second; repeats are added up per minute.");
    // robot-2's own command channel still works after the attempt (it may publish under its own
    // prefix): its ping arriving shows the gateway handled robot-1's message before it.
    const ping = victim.nextMessage((m) => m.topic === "fleet/robot-2/cmd/ping", STEP_TIMEOUT_MS);
    await victim.publish("fleet/robot-2/cmd/ping", "ping", 1);
    await ping.catch(() => fail("robot-2's subscription to fleet/robot-2/cmd/# delivered nothing (not even its own ping)"));
    const rows = await eventually(async () => {
      const r = await denialRows(operator!, "device:robot-1", target);
      return r.length > 0 ? r : undefined;
    }, STEP_TIMEOUT_MS);
    if (!rows) fail(`no ${target} denial for device:robot-1 in the audit log`);
    if (hijack.length > 0) fail(`robot-2 received the forbidden message on ${target}`);
    const row = rows![rows!.length - 1]!;
    say("robot-2 received its own ping but not robot-1's cmd_vel.");
    say(`Audit row #${row.seq}: ${row.at} ${row.actor} ${row.action} ${row.subject} ${row.details}`);
    why("a stranger (or a compromised robot) on the network cannot command another robot's cmd_vel; the attempt is on record.");

    // ---- 7 ------------------------------------------------------------------------------
    heading("Revoke robot-3 (fleetpki device revoke robot-3 --reason keyCompromise)");
    const revoked = byId.get("robot-3")!;
    if (!revoked.connected) fail("robot-3 was not connected before the revocation");
    await revokeDevice(operator, { deviceId: "robot-3", reason: "keyCompromise", actor: ACTOR });
    const t0 = Date.now();
    const cut = await within(revoked.closed, STEP_TIMEOUT_MS);
    if (cut === "timeout") fail(`robot-3's session was still open ${STEP_TIMEOUT_MS} ms after the revocation`);
    const cutMs = Math.max(0, cut.at.getTime() - t0);
    say(`robot-3's live MQTT session was closed by the gateway ${cutMs} ms after the revocation was committed.`);
    let refusal: string | undefined;
    try {
      const again = await connectTelemetry({ agentDir: robotDir("robot-3"), url: server.gatewayUrl, connectTimeoutMs: STEP_TIMEOUT_MS });
      clients.push(again);
    } catch (e) {
      if (!(e instanceof MqttError)) throw e;
      refusal = e.message;
    }
    if (refusal === undefined) fail("robot-3 reconnected after its revocation");
    say(`robot-3 reconnects and is refused: ${refusal}`);
    const others = robots.filter((id) => id !== "robot-3" && !byId.get(id)!.connected);
    if (others.length > 0) fail(`the revocation also disconnected ${others.join(", ")}`);
    why("brokers that check revocation only at the handshake keep a revoked robot connected; here it is cut off at once and stays out.");

    // ---- 8 ------------------------------------------------------------------------------
    heading("Verify the audit log (fleetpki audit verify)");
    const report = await verifyFleetAudit(operator);
    if (!report.ok) fail(`audit verify found: ${report.problems.join("; ")}`);
    say(`intact: ${report.rows} hash-chained rows, head ${(report.headHash ?? "").slice(0, 16)}…; the state tables agree with it.`);
    why("every step above (enrollments, the denial, the revocation) is a row no one can quietly edit or drop.");

    const ms = Date.now() - started;
    write("");
    write(`Demo complete in ${(ms / 1000).toFixed(1)} s: every step behaved as narrated.`);
    return { dir: tmp, kept: !!options.keep, ms };
  } catch (e) {
    // Whatever broke, the exit says which step: the demo doubles as a smoke test.
    if (e instanceof DemoStepFailed) throw e;
    throw new DemoStepFailed(step, (e as Error)?.message ?? String(e));
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    for (const c of clients) await c.close().catch(() => {});
    await server?.close().catch(() => {});
    await operator?.close().catch(() => {});
    if (options.keep) write(`Kept: ${tmp} (fleet in ${fleetDir}, robots in ${join(tmp, "robots")})`);
    else rmSync(tmp, { recursive: true, force: true });
  }
}
