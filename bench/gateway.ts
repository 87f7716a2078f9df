// The MQTT gateway (issue 10, Bench): fleetpki's gateway (`fleetpki serve --only gateway` in a
// child process) beside Debian's mosquitto 2.0 (mTLS, require_certificate, CN as user name, a
// pattern ACL as fleetpki's default policy) and `openssl s_server -Verify 1`, all on the same
// fleet certificates, measured in the same run:
//   (a) full TLS 1.3 mTLS handshakes per server CPU-second (vs s_server: target >= 0.85x);
//   (b) QoS 0 and QoS 1 messages delivered per broker CPU-second with the policy enforced, 200
//       publishers, 100-byte payloads, one subscriber reading them all (vs mosquitto: >= 0.5x),
//       and a 2x-overload run whose delivered rate must stay >= 90 % of the peak;
//   (c) RSS per idle mTLS connection at 5,000 connections (target <= 48 KiB; mosquitto beside it);
//   (d) revoke-to-disconnect latency over 100 revocations (target p99 <= 250 ms).
// The load generator is this process: raw TLS sockets and packets made once with mqtt-packet
// (bench/gateway/client.ts). The parts: gateway/fixture.ts (fleet and certificates),
// gateway/peers.ts (mosquitto, s_server), gateway/fleetpki.ts (the gateway), gateway/load.ts.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  WARMUP_SECONDS,
  check,
  cleanUpOnInterrupt,
  contentionWarning,
  fmtMs,
  fmtRate,
  formatTable,
  median,
  type BenchOptions,
  type Benchmark,
} from "./lib.js";
import { LIVE, killLive } from "./server-process.js";
import { makeBenchFleet, type BenchDevice } from "./gateway/fixture.js";
import { READER, revokeDevices, startFleetpkiGateway } from "./gateway/fleetpki.js";
import {
  handshakes,
  idleMemory,
  revokeToDisconnect,
  throughput,
  type Target,
  type ThroughputRun,
  type ThroughputSpec,
} from "./gateway/load.js";
import { startMosquitto, startOpensslServer } from "./gateway/peers.js";

export const benchmark: Benchmark = {
  name: "gateway",
  description:
    "MQTT gateway vs mosquitto and openssl s_server: mTLS handshakes/CPU-s, QoS 0/1 msgs/CPU-s (200 publishers) and 2x overload, " +
    "RSS per idle connection, revoke-to-disconnect latency",
  run,
};

const PUBLISHERS = 200;
const PAYLOAD = 100;
/** (c): idle connections; BENCH_GATEWAY_IDLE overrides it (e.g. 500 for a quick check). */
const IDLE = Number(process.env.BENCH_GATEWAY_IDLE ?? 5000);
const REVOCATIONS = Number(process.env.BENCH_GATEWAY_REVOCATIONS ?? 100);
const HANDSHAKE_CONCURRENCY = 8;
const QOS1_WINDOW = 10;
/** The offered-rate ladder (b) climbs, messages/s over all publishers, until delivery falls behind. */
const LADDER_START = 5000;
const LADDER_MAX = 320_000;
const TARGETS = { handshake: 0.85, throughput: 0.5, overload: 0.9, idleKiB: 48, revokeP99Ms: 250 };

const TEMP_DIRS = new Set<string>();
function emergencyCleanup(): void {
  killLive();
  for (const d of TEMP_DIRS) rmSync(d, { recursive: true, force: true });
}

async function run(options: BenchOptions): Promise<void> {
  const uninstall = cleanUpOnInterrupt(emergencyCleanup);
  try {
    await runBench(options);
  } finally {
    for (const s of [...LIVE]) await s.stop(5_000);
    for (const d of TEMP_DIRS) rmSync(d, { recursive: true, force: true });
    TEMP_DIRS.clear();
    uninstall();
  }
}

const fmtX = (x: number): string => `${x.toFixed(2)}x`;
const kib = (bytes: number): string => (bytes / 1024).toFixed(1);
const status = (ok: boolean): string => (ok ? "ok" : "MISSED");

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}

async function runBench(options: BenchOptions): Promise<void> {
  const timings: [string, number][] = [];
  let t = performance.now();
  const lap = (what: string) => {
    const now = performance.now();
    timings.push([what, (now - t) / 1000]);
    t = now;
  };
  const others: (number | undefined)[] = [];
  const out: string[] = [];

  const tmp = mkdtempSync(join(tmpdir(), "fleetpki-bench-gateway-"));
  TEMP_DIRS.add(tmp);
  // Devices: publishers and handshakes use the first PUBLISHERS; (c) all IDLE; (d) the REVOCATIONS after them.
  const count = Math.max(PUBLISHERS, IDLE) + REVOCATIONS;
  const fleet = await makeBenchFleet(tmp, count, READER);
  const devices = fleet.devices;
  const reader = fleet.reader;
  lap(`fleet with ${fmtRate(count)} device certificates`);

  const fp = await startFleetpkiGateway(tmp, fleet);
  const mq = await startMosquitto(tmp, fleet, READER);
  const ossl = await startOpensslServer(tmp, fleet);
  const fleetpki: Target = { name: "fleetpki gateway", server: fp.server, port: fp.port, kind: "mqtt" };
  const mosquitto: Target = { name: "mosquitto 2.0", server: mq.server, port: mq.port, kind: "mqtt" };
  const openssl: Target = { name: "openssl s_server", server: ossl.server, port: ossl.port, kind: "echo" };
  lap("servers started");

  // ---- (a) handshakes ----
  const hsTargets = [fleetpki, mosquitto, openssl];
  const hsRuns = new Map<Target, { perCpu: number; perSecond: number; completed: number }[]>(hsTargets.map((x) => [x, []]));
  const pool = devices.slice(0, PUBLISHERS);
  for (const x of hsTargets) await handshakes(x, pool, HANDSHAKE_CONCURRENCY, WARMUP_SECONDS);
  for (let r = 0; r < options.runs; r++)
    for (const x of hsTargets) {
      const m = await handshakes(x, pool, HANDSHAKE_CONCURRENCY, options.seconds);
      check(m.resumed === 0, `${x.name}: ${m.resumed} handshakes resumed a session`);
      check(m.tls13 === m.completed, `${x.name}: ${m.completed - m.tls13} handshakes were not TLS 1.3`);
      check(m.completed > 0, `${x.name}: no handshake completed`);
      others.push(m.others);
      hsRuns.get(x)!.push({ perCpu: m.completed / m.serverCpu, perSecond: m.completed / m.seconds, completed: m.completed });
    }
  lap("(a) handshakes");
  const hsMed = (x: Target, f: (r: { perCpu: number; perSecond: number }) => number) => median(hsRuns.get(x)!.map(f));
  const hsRatio = hsMed(fleetpki, (r) => r.perCpu) / hsMed(openssl, (r) => r.perCpu);
  out.push(
    `(a) Full TLS 1.3 mTLS handshakes (P-256 certificates, ${HANDSHAKE_CONCURRENCY} clients, no resumption), ` +
      `medians of ${options.runs} runs`,
  );
  out.push(
    formatTable(
      ["server", "handshakes/s", "per server CPU-s", "vs s_server"],
      hsTargets.map((x) => [
        x.name,
        fmtRate(hsMed(x, (r) => r.perSecond)),
        fmtRate(hsMed(x, (r) => r.perCpu)),
        fmtX(hsMed(x, (r) => r.perCpu) / hsMed(openssl, (r) => r.perCpu)),
      ]),
    ),
  );
  out.push("  A handshake counts once the server answered on the connection: CONNACK (MQTT brokers) or the echoed line (s_server -rev),");
  out.push("  so the brokers' figures include an MQTT CONNECT (fleetpki: admission from the certificate, policy grants, session).");
  out.push(`  Target: fleetpki / s_server >= ${TARGETS.handshake}x: ${fmtX(hsRatio)} ${status(hsRatio >= TARGETS.handshake)}`);
  out.push("");

  // ---- (b) throughput ----
  const brokers = [fleetpki, mosquitto];
  const base = (x: Target, qos: 0 | 1, offeredPerSecond: number | undefined, seconds: number): ThroughputSpec => ({
    publishers: pool,
    subscriber: { device: reader, clientId: x === fleetpki ? `${READER}-bench` : READER, filter: "fleet/+/telemetry" },
    topic: (d: BenchDevice) => `fleet/${d.id}/telemetry`,
    qos,
    payloadBytes: PAYLOAD,
    offeredPerSecond,
    window: QOS1_WINDOW,
    seconds,
  });
  // The ladder: offered QoS 0 rate doubling until the subscriber falls behind; its best step is the peak.
  const ladderSeconds = Math.min(options.seconds, 1);
  const peakOffered = new Map<Target, number>();
  const ladders: string[] = [];
  for (const x of brokers) {
    let best = { offered: 0, delivered: 0 };
    const steps: string[] = [];
    // Two steps in a row behind the offered rate end the climb: one alone may be a neighbour's burst.
    let behind = 0;
    for (let offered = LADDER_START; offered <= LADDER_MAX && behind < 2; offered *= 2) {
      const m = await throughput(x, base(x, 0, offered, ladderSeconds));
      check(m.lost === 0, `${x.name}: ${m.lost} connections lost at ${fmtRate(offered)} msgs/s offered`);
      const rate = m.delivered / m.seconds;
      steps.push(`${fmtRate(offered)}->${fmtRate(rate)}`);
      if (rate > best.delivered) best = { offered, delivered: rate };
      behind = rate < 0.9 * (m.offered / m.seconds) ? behind + 1 : 0;
    }
    peakOffered.set(x, best.offered);
    ladders.push(`  ${x.name}: ${steps.join(", ")} (offered->delivered msgs/s)`);
  }
  lap("(b) ladder");
  type Mode = { label: string; qos: 0 | 1; offered: (x: Target) => number | undefined };
  const modes: Mode[] = [
    { label: "QoS 0, peak", qos: 0, offered: (x) => peakOffered.get(x)! },
    { label: "QoS 0, 2x overload", qos: 0, offered: (x) => 2 * peakOffered.get(x)! },
    { label: `QoS 1, closed loop (${QOS1_WINDOW} in flight each)`, qos: 1, offered: () => undefined },
  ];
  const tpRuns = new Map<string, ThroughputRun[]>();
  const key = (m: Mode, x: Target) => `${m.label}|${x.name}`;
  for (const m of modes) for (const x of brokers) await throughput(x, base(x, m.qos, m.offered(x), WARMUP_SECONDS));
  for (let r = 0; r < options.runs; r++)
    for (const m of modes)
      for (const x of brokers) {
        const res = await throughput(x, base(x, m.qos, m.offered(x), options.seconds));
        check(res.lost === 0, `${x.name}, ${m.label}: ${res.lost} connections lost`);
        check(res.delivered > 0, `${x.name}, ${m.label}: nothing delivered`);
        others.push(res.others);
        const list = tpRuns.get(key(m, x)) ?? [];
        list.push(res);
        tpRuns.set(key(m, x), list);
      }
  lap("(b) throughput");
  const tpMed = (m: Mode, x: Target, f: (r: ThroughputRun) => number) => median(tpRuns.get(key(m, x))!.map(f));
  const perCpu = (r: ThroughputRun) => r.delivered / r.serverCpu;
  const rate = (r: ThroughputRun) => r.delivered / r.seconds;
  out.push(`(b) Messages through the broker: ${PUBLISHERS} publishers (own certificates, policy/ACL enforced), ${PAYLOAD}-byte payloads,`);
  out.push(`    one subscriber receiving all of them; medians of ${options.runs} runs of ${options.seconds} s`);
  out.push(
    formatTable(
      ["mode", "broker", "offered/s", "delivered/s", "per CPU-s", "vs mosquitto", "broker cores", "pushed back"],
      modes.flatMap((m) =>
        brokers.map((x) => [
          m.label,
          x.name,
          fmtRate(tpMed(m, x, (r) => r.offered / r.seconds)),
          fmtRate(tpMed(m, x, rate)),
          fmtRate(tpMed(m, x, perCpu)),
          fmtX(tpMed(m, x, perCpu) / tpMed(m, mosquitto, perCpu)),
          tpMed(m, x, (r) => r.serverCpu / r.seconds).toFixed(2),
          `${Math.round(tpMed(m, x, (r) => r.pushedBack))}/${PUBLISHERS}`,
        ]),
      ),
    ),
  );
  out.push(...ladders);
  out.push("  pushed back: publishers whose socket refused more at least once (the broker stopped reading them: TCP backpressure).");
  const [peak, overload, qos1] = modes as [Mode, Mode, Mode];
  const r0 = tpMed(peak, fleetpki, perCpu) / tpMed(peak, mosquitto, perCpu);
  const r1 = tpMed(qos1, fleetpki, perCpu) / tpMed(qos1, mosquitto, perCpu);
  const kept = tpMed(overload, fleetpki, rate) / Math.max(tpMed(peak, fleetpki, rate), ...tpRuns.get(key(peak, fleetpki))!.map(rate));
  const keptMq = tpMed(overload, mosquitto, rate) / Math.max(...tpRuns.get(key(peak, mosquitto))!.map(rate));
  out.push(`  Target QoS 0 per CPU-s >= ${TARGETS.throughput}x mosquitto: ${fmtX(r0)} ${status(r0 >= TARGETS.throughput)}`);
  out.push(`  Target QoS 1 per CPU-s >= ${TARGETS.throughput}x mosquitto: ${fmtX(r1)} ${status(r1 >= TARGETS.throughput)}`);
  out.push(
    `  Target at 2x overload delivered >= ${TARGETS.overload * 100} % of peak: ` +
      `${(kept * 100).toFixed(0)} % ${status(kept >= TARGETS.overload)}` +
      ` (mosquitto ${(keptMq * 100).toFixed(0)} %)`,
  );
  out.push("");

  // ---- (c) idle memory ----
  const idle = devices.slice(0, IDLE);
  const mem = [];
  for (const x of brokers) mem.push({ x, m: await idleMemory(x, idle, 32) });
  lap(`(c) ${fmtRate(IDLE)} idle connections`);
  const fpMem = mem[0]!.m.perConnection;
  out.push(`(c) Idle mTLS MQTT sessions: RSS of the broker with none, half and all ${fmtRate(IDLE)} of them`);
  out.push(
    formatTable(
      ["broker", "connections", "RSS before MiB", "at half MiB", "at all MiB", "KiB per connection"],
      mem.map(({ x, m }) => [
        x.name,
        fmtRate(m.connections),
        (m.rssBefore / 2 ** 20).toFixed(1),
        (m.rssHalf / 2 ** 20).toFixed(1),
        (m.rssAfter / 2 ** 20).toFixed(1),
        kib(m.perConnection),
      ]),
    ),
  );
  out.push(
    "  KiB per connection: the RSS growth over the second half, per connection (memory freed by earlier scenarios is reused first).",
  );
  out.push(`  Target fleetpki <= ${TARGETS.idleKiB} KiB per connection: ${kib(fpMem)} KiB ${status(fpMem / 1024 <= TARGETS.idleKiB)}`);
  out.push("");

  // ---- (d) revocation ----
  const victims = devices.slice(count - REVOCATIONS);
  check(!victims.some((d) => pool.includes(d) || idle.includes(d)), "revoked devices overlap the others");
  const rev = await revokeToDisconnect(fp.port, victims, (id) => revokeDevices(fleet.dir, [id]));
  lap(`(d) ${REVOCATIONS} revocations`);
  check(rev.readmitted === 0, `${rev.readmitted} revoked devices were admitted again`);
  const p50 = percentile(rev.latenciesMs, 50);
  const p99 = percentile(rev.latenciesMs, 99);
  out.push(
    `(d) Revoke-to-disconnect: revokeDevice committed -> the gateway closed that device's session, ` +
      `${rev.latenciesMs.length} revocations one by one`,
  );
  out.push(formatTable(["p50 ms", "p99 ms", "max ms"], [[fmtMs(p50), fmtMs(p99), fmtMs(Math.max(...rev.latenciesMs))]]));
  out.push(
    `  Target p99 <= ${TARGETS.revokeP99Ms} ms: ${status(p99 <= TARGETS.revokeP99Ms)}. Reconnects of revoked devices refused: 5 of 5.`,
  );
  out.push("");

  const stops = await Promise.all([fp.server, mq.server, ossl.server].map(async (s) => ({ name: s.name, ...(await s.stop()) })));
  for (const s of stops) check(!s.killed, `${s.name} did not stop on SIGTERM`);
  lap("servers stopped");

  const contended = contentionWarning(others);
  if (contended) out.push(contended);
  const counters = fp.counters();
  if (counters) out.push(`fleetpki gateway counters at the end: ${counters}`);
  out.push(`Phases: ${timings.map(([w, s]) => `${w} ${s.toFixed(1)} s`).join(", ")}`);
  console.log(out.join("\n"));
}
