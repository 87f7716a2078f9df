// The gateway benchmark's measurements, one function per scenario, each against one server:
// (a) full mTLS handshakes per server CPU-second, (b) messages delivered per broker CPU-second at
// a paced offered rate or closed-loop QoS 1, (c) RSS per idle mTLS connection, (d) revoke-to-
// disconnect latency. Servers run in child processes (ServerProcess): their CPU comes from /proc.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import type { TLSSocket } from "node:tls";
import { generate } from "mqtt-packet";
import { check, watchContention } from "../lib.js";
import type { ServerProcess } from "../server-process.js";
import { LeanMqtt, connectTls } from "./client.js";
import type { BenchDevice } from "./fixture.js";

export interface Target {
  name: string;
  server: ServerProcess;
  port: number;
  /** MQTT brokers answer CONNECT; openssl s_server -rev echoes a line. */
  kind: "mqtt" | "echo";
}

export interface Measured {
  /** Wall seconds of the measured window. */
  seconds: number;
  /** CPU seconds of the server meanwhile. */
  serverCpu: number;
  /** CPU used by other processes (not this one, not the server), in cores. */
  others: number | undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** CPU seconds of `server` and wall seconds over `body`, and what the rest of the machine used. */
async function measured<T>(server: ServerProcess, body: () => Promise<T>): Promise<T & Measured> {
  const cpu0 = server.cpuSeconds();
  const stop = watchContention();
  const t0 = performance.now();
  const result = await body();
  const seconds = (performance.now() - t0) / 1000;
  const serverCpu = server.cpuSeconds() - cpu0;
  const others = stop(serverCpu / seconds);
  return { ...result, seconds, serverCpu, others };
}

async function mqttSession(port: number, device: BenchDevice, clientId = device.id): Promise<LeanMqtt> {
  const c = new LeanMqtt(await connectTls(port, device.context));
  await c.connect(clientId);
  return c;
}

// ---- (a) handshakes -------------------------------------------------------------------------

export interface HandshakeRun extends Measured {
  completed: number;
  resumed: number;
  tls13: number;
}

/**
 * Full TLS 1.3 handshakes with a client certificate, `concurrency` at a time for `seconds`: each
 * connection is a new one without a session to resume, and it counts once the server answered
 * on it (CONNACK; s_server: the echoed line), so the server has checked the client certificate.
 */
export async function handshakes(t: Target, devices: readonly BenchDevice[], concurrency: number, seconds: number): Promise<HandshakeRun> {
  let next = 0;
  let resumed = 0;
  let tls13 = 0;
  return measured(t.server, async () => {
    const deadline = performance.now() + seconds * 1000;
    let completed = 0;
    const worker = async (): Promise<void> => {
      while (performance.now() < deadline) {
        const device = devices[next++ % devices.length]!;
        const socket = await connectTls(t.port, device.context);
        if (socket.isSessionReused()) resumed++;
        if (socket.getProtocol() === "TLSv1.3") tls13++;
        if (t.kind === "mqtt") {
          const c = new LeanMqtt(socket);
          await c.connect(device.id);
        } else await echoLine(socket);
        socket.destroy();
        completed++;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return { completed, resumed, tls13 };
  });
}

function echoLine(socket: TLSSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once("data", () => resolve());
    socket.once("error", reject);
    socket.once("close", () => reject(new Error("s_server closed the connection before answering")));
    socket.write("ping\n");
  });
}

// ---- (b) throughput -------------------------------------------------------------------------

export interface ThroughputRun extends Measured {
  /** Messages the publishers wrote (paced) or sent (closed loop) in the window. */
  offered: number;
  /** Messages the subscriber received in the window. */
  delivered: number;
  /** Publishers whose socket refused more (write() false) at least once: the broker pushed back. */
  pushedBack: number;
  /** Connections that closed during the run (none expected). */
  lost: number;
}

export interface ThroughputSpec {
  publishers: readonly BenchDevice[];
  subscriber: { device: BenchDevice; clientId: string; filter: string };
  topic: (device: BenchDevice) => string;
  qos: 0 | 1;
  payloadBytes: number;
  /** Messages per second over all publishers; undefined: QoS 1 closed loop with `window` in flight each. */
  offeredPerSecond: number | undefined;
  window: number;
  seconds: number;
}

const TICK_MS = 10;
/** Publishing starts this long before the measured window (connections warm, queues filled). */
const RAMP_MS = 300;

/**
 * 200 publishers (their own certificates and client ids) and one subscriber receiving all of
 * them. Paced: every 10 ms each publisher writes its share of the offered rate as one buffer, and
 * skips a tick while its socket pushes back (TCP backpressure: the broker is not reading).
 * Closed loop (QoS 1): each keeps `window` PUBLISHes unacknowledged.
 */
export async function throughput(t: Target, spec: ThroughputSpec): Promise<ThroughputRun> {
  const sub = await mqttSession(t.port, spec.subscriber.device, spec.subscriber.clientId);
  await sub.subscribe(spec.subscriber.filter, spec.qos);
  sub.autoAck = true;
  const pubs = await Promise.all(spec.publishers.map((d) => mqttSession(t.port, d)));
  let offered = 0;
  let stopped = false;
  const blocked = new Set<number>();
  const pushedBack = new Set<number>();
  const timers: NodeJS.Timeout[] = [];
  try {
    if (spec.offeredPerSecond !== undefined) {
      const perTick = spec.offeredPerSecond / pubs.length / (1000 / TICK_MS);
      const templates = spec.publishers.map((d) => publishTemplate(spec.topic(d), spec.qos, spec.payloadBytes));
      const batches = new Map<string, Buffer>();
      const batch = (k: number, n: number): Buffer => {
        const key = `${k}:${n}`;
        let b = batches.get(key);
        if (!b) batches.set(key, (b = Buffer.concat(Array.from({ length: n }, () => templates[k]!))));
        return b;
      };
      const owed = new Float64Array(pubs.length);
      const tick = () => {
        if (stopped) return;
        pubs.forEach((p, k) => {
          if (p.closed || blocked.has(k)) return;
          owed[k]! += perTick;
          const n = Math.floor(owed[k]!);
          if (n === 0) return;
          owed[k]! -= n;
          offered += n;
          if (!(spec.qos === 1 ? p.publishWithIds(templates[k]!, n) : p.socket.write(batch(k, n)))) {
            blocked.add(k);
            pushedBack.add(k);
            p.socket.once("drain", () => blocked.delete(k));
          }
        });
      };
      timers.push(setInterval(tick, TICK_MS));
    } else {
      check(spec.qos === 1, "a closed loop needs QoS 1");
      pubs.forEach((p, k) => {
        const template = publishTemplate(spec.topic(spec.publishers[k]!), 1, spec.payloadBytes);
        const send = (n: number) => {
          if (stopped || p.closed) return;
          offered += n;
          p.publishWithIds(template, n);
        };
        p.onAck = () => send(1);
        send(spec.window);
      });
    }
    await sleep(RAMP_MS);
    const offered0 = offered;
    const delivered0 = sub.counts.published;
    const run = await measured(t.server, async () => {
      await sleep(spec.seconds * 1000);
      return { offered: offered - offered0, delivered: sub.counts.published - delivered0 };
    });
    stopped = true;
    const lost = pubs.filter((p) => p.closed).length + (sub.closed ? 1 : 0);
    return { ...run, pushedBack: pushedBack.size, lost };
  } finally {
    stopped = true;
    for (const timer of timers) clearInterval(timer);
    for (const p of pubs) p.close();
    sub.close();
    await sleep(200); // let the broker notice the closed connections before the next run
  }
}

function publishTemplate(topic: string, qos: 0 | 1, payloadBytes: number): Buffer {
  const payload = Buffer.alloc(payloadBytes, 0x61);
  return generate({ cmd: "publish", topic, payload, qos, retain: false, dup: false, ...(qos > 0 && { messageId: 1 }) });
}

// ---- (c) idle memory ------------------------------------------------------------------------

export function rssBytes(server: ServerProcess): number {
  const status = readFileSync(`/proc/${server.pid}/status`, "latin1");
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : NaN;
}

export interface MemoryRun {
  connections: number;
  rssBefore: number;
  rssHalf: number;
  rssAfter: number;
  /** (rssAfter - rssHalf) / (connections / 2). */
  perConnection: number;
}

/**
 * RSS of the server with no, half and all of `devices.length` idle mTLS MQTT sessions (opened
 * `concurrency` at a time). The figure is the slope over the second half: memory the earlier
 * scenarios freed inside the process (and that the first connections reuse) does not flatter it.
 */
export async function idleMemory(t: Target, devices: readonly BenchDevice[], concurrency: number): Promise<MemoryRun> {
  const rssBefore = rssBytes(t.server);
  const open: LeanMqtt[] = [];
  let next = 0;
  const openUntil = (n: number) =>
    Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < n) open.push(await mqttSession(t.port, devices[next++]!));
      }),
    );
  try {
    const half = Math.floor(devices.length / 2);
    await openUntil(half);
    await sleep(1000);
    const rssHalf = rssBytes(t.server);
    await openUntil(devices.length);
    await sleep(1000);
    const lost = open.filter((c) => c.closed).length;
    check(lost === 0, `${t.name}: ${lost} of ${open.length} idle connections closed`);
    const rssAfter = rssBytes(t.server);
    return { connections: open.length, rssBefore, rssHalf, rssAfter, perConnection: (rssAfter - rssHalf) / (open.length - half) };
  } finally {
    for (const c of open) c.close();
    await sleep(500);
  }
}

// ---- (d) revocation -------------------------------------------------------------------------

export interface RevocationRun {
  latenciesMs: number[];
  /** Revoked devices whose reconnect the gateway accepted (none expected). */
  readmitted: number;
}

/**
 * For each device: a session, then `revoke(id)` (resolves once the revocation is committed), then
 * the time until the gateway closes that session. One at a time, so each latency is its own.
 */
export async function revokeToDisconnect(
  port: number,
  devices: readonly BenchDevice[],
  revoke: (id: string) => Promise<void>,
  timeoutMs = 5000,
): Promise<RevocationRun> {
  const latenciesMs: number[] = [];
  let readmitted = 0;
  for (const device of devices) {
    const c = await mqttSession(port, device);
    const closed = new Promise<number>((resolve) => c.socket.once("close", () => resolve(performance.now())));
    await revoke(device.id);
    const t0 = performance.now();
    const t1 = await Promise.race([closed, sleep(timeoutMs).then(() => NaN)]);
    check(!Number.isNaN(t1), `the session of revoked ${device.id} was still open ${timeoutMs} ms after the revocation`);
    latenciesMs.push(Math.max(0, t1 - t0));
    c.close();
  }
  // A revoked device reconnecting is refused (TLS or CONNACK).
  for (const device of devices.slice(0, 5))
    try {
      const again = await mqttSession(port, device);
      again.close();
      readmitted++;
    } catch {
      // refused, as it must be
    }
  return { latenciesMs, readmitted };
}
