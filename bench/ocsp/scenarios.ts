// The OCSP load: 8 scenarios (2 servers x cached/uncached x 2 clients), each run for a fixed time
// with CONCURRENCY requests in flight, its CPU and connections counted, and every answer checked
// after the clock stops. Also what one signature costs on this machine right now.
import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { performance } from "node:perf_hooks";
import { BenchFailure, check, fmtRate, runLoad, watchContention, type LoadResult } from "../lib.js";
import type { ServerProcess } from "../server-process.js";
import { checkAnswer, checkSignature, type ResponderCert } from "./answers.js";
import { openTransport, type Transport } from "./clients.js";
import type { Fixture } from "./fleet.js";
import { withFreshNonce, type Requests } from "./requests.js";
import {
  CACHED_REQUESTS,
  CLIENT_LABEL,
  CONCURRENCY,
  NONCE_BYTES,
  OCSP_PATH,
  OCSP_RESPONSE_TYPE,
  SIGNATURE_SAMPLE,
  TARGET_LABEL,
  type Client,
  type Mode,
  type Target,
} from "./settings.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Run extends LoadResult {
  serverCores: number;
  clientCores: number;
  others: number | undefined;
  connections: number;
  bytes: number;
}

export interface Scenario {
  target: Target;
  mode: Mode;
  client: Client;
  label: string;
  results: Run[];
  /** Answers received after their nextUpdate had passed. */
  stale: number;
  checked: number;
  signaturesChecked: number;
}

interface Collected {
  connections: number;
  bytes: number;
  /** Requests and answers kept for checking after the clock stops. */
  items: { index: number; request: Buffer; der: Buffer; at: number }[];
}

export function makeScenarios(): Scenario[] {
  const scenarios: Scenario[] = [];
  for (const client of ["node", "raw"] as const)
    for (const mode of ["cached", "uncached"] as const)
      for (const target of ["fleet", "openssl"] as const)
        scenarios.push({
          target,
          mode,
          client,
          label: `${TARGET_LABEL[target]}, ${mode}, ${CLIENT_LABEL[client]} client`,
          results: [],
          stale: 0,
          checked: 0,
          signaturesChecked: 0,
        });
  return scenarios;
}

export interface LoadContext {
  fixture: Fixture;
  requests: Requests;
  servers: Record<Target, ServerProcess>;
  ports: Record<Target, number>;
  /** Each server's responder certificate, from its probe answer. */
  responders: Record<Target, ResponderCert>;
}

/** Runs scenarios against both servers and keeps what the checks after the runs need. */
export class OcspLoad {
  /** fleetpki's cached answers: the distinct bodies seen per cached request, in order (both clients), with their nextUpdate. */
  private readonly fleetCachedSeen: { der: Buffer; at: number; nextUpdateMs: number }[][];
  private fleetCachedAnswers = 0;

  constructor(private readonly ctx: LoadContext) {
    this.fleetCachedSeen = ctx.requests.cached.map(() => []);
  }

  /** One run of `seconds`; its answers are checked after the clock stops. */
  async measure(s: Scenario, seconds: number): Promise<Run> {
    const { servers, ports } = this.ctx;
    const allServers = Object.values(servers);
    const via = openTransport(s.client, ports[s.target], OCSP_PATH[s.target]);
    const out: Collected = { connections: 0, bytes: 0, items: [] };
    const cpu0 = allServers.map((p) => p.cpuSeconds());
    const own0 = process.cpuUsage();
    const stop = watchContention();
    const t0 = performance.now();
    let result: Run;
    try {
      const r = await runLoad(this.op(s, via, out), CONCURRENCY, seconds);
      const wall = (performance.now() - t0) / 1000;
      const cores = allServers.map((p, k) => (p.cpuSeconds() - cpu0[k]!) / wall);
      const own = process.cpuUsage(own0);
      const others = stop(cores.reduce((a, b) => a + b, 0));
      result = {
        ...r,
        serverCores: cores[allServers.indexOf(servers[s.target])]!,
        clientCores: (own.user + own.system) / 1e6 / wall,
        others,
        connections: out.connections,
        bytes: out.bytes,
      };
    } catch (e) {
      await sleep(500); // a crashed server's exit may be reported after its sockets' errors
      const dead = allServers.find((p) => p.exit);
      if (dead)
        throw new BenchFailure(
          `${dead.name} exited (${dead.exitText}) during "${s.label}": ${(e as Error).message}; its output:\n${dead.log}`,
        );
      throw e;
    } finally {
      via.close();
    }
    this.checkCollected(s, out); // after the clock has stopped
    return result;
  }

  private op(s: Scenario, via: Transport, out: Collected) {
    const { requests, fixture } = this.ctx;
    return async (i: number) => {
      let index: number;
      let request: Buffer;
      if (s.mode === "cached") {
        index = i % requests.cached.length;
        request = requests.cached[index]!;
      } else {
        index = i % fixture.certs.length;
        request = withFreshNonce(requests.nonceTemplates[index]!);
      }
      const reply = await via.send(request);
      const now = Date.now();
      if (reply.newConnection) out.connections++;
      out.bytes += reply.body.length;
      if (reply.status !== 200 || reply.contentType !== OCSP_RESPONSE_TYPE)
        throw new BenchFailure(`${s.label}: HTTP ${reply.status} ${reply.contentType}: ${reply.body.toString("latin1").slice(0, 300)}`);
      if (s.target === "fleet" && s.mode === "cached") {
        // Served from the cache: byte for byte what was served before, until it expires.
        this.fleetCachedAnswers++;
        const seen = this.fleetCachedSeen[index]!;
        const last = seen[seen.length - 1];
        if (!last || !last.der.equals(reply.body)) {
          const basic = checkAnswer(reply.body, requests.cachedCerts[index]!, undefined, s.label);
          seen.push({ der: reply.body, at: now, nextUpdateMs: basic.responses[0]!.nextUpdate!.getTime() });
        } else if (now > last.nextUpdateMs) s.stale++;
        return;
      }
      out.items.push({ index, request, der: reply.body, at: now });
    };
  }

  private checkCollected(s: Scenario, out: Collected): void {
    const { requests, fixture, responders } = this.ctx;
    let signatures = 0;
    for (const item of out.items) {
      const cert = s.mode === "cached" ? requests.cachedCerts[item.index]! : fixture.certs[item.index]!;
      const nonce = s.mode === "uncached" ? item.request.subarray(item.request.length - NONCE_BYTES) : undefined;
      const basic = checkAnswer(item.der, cert, nonce, s.label);
      if (item.at > basic.responses[0]!.nextUpdate!.getTime()) s.stale++;
      if (signatures < SIGNATURE_SAMPLE) {
        checkSignature(basic, responders[s.target], s.label);
        signatures++;
      }
    }
    s.checked += out.items.length;
    s.signaturesChecked += signatures;
  }

  /**
   * After all runs: fleetpki's cached answers were re-signed no sooner than ocsp_cache, and each
   * distinct one is right; every other answer was checked; fleetpki kept its connections alive.
   */
  checksAfterRuns(scenarios: readonly Scenario[], cacheMs: number): string[] {
    const { requests, responders } = this.ctx;
    const passed: string[] = [];
    const what = "fleetpki, cached";
    for (const [k, seen] of this.fleetCachedSeen.entries()) {
      check(seen.length > 0, `${what}: no answer for cached request ${k}`);
      for (let j = 1; j < seen.length; j++) {
        const gap = seen[j]!.nextUpdateMs - seen[j - 1]!.nextUpdateMs;
        check(
          gap >= cacheMs - 1000,
          `${what}: request ${k} got a newly signed answer ${gap} ms after the previous one; cached answers are kept ${cacheMs} ms`,
        );
      }
      for (const d of seen) checkSignature(checkAnswer(d.der, requests.cachedCerts[k]!, undefined, what), responders.fleet, what);
    }
    const distinctCount = this.fleetCachedSeen.reduce((n, seen) => n + seen.length, 0);
    passed.push(
      `fleetpki cached (both clients): ${distinctCount} distinct answers to ${CACHED_REQUESTS} requests ` +
        `in ${fmtRate(this.fleetCachedAnswers)} answers (warm-up included); ` +
        `each was served byte for byte until it was re-signed, ` +
        `no sooner than ocsp_cache (${cacheMs / 1000} s) later; each distinct one parsed, matched the database and its signature verified`,
    );
    for (const s of scenarios) {
      if (s.target === "fleet" && s.mode === "cached") continue;
      passed.push(
        `${s.label}: all ${fmtRate(s.checked)} answers (warm-up included) parsed and matched the database ` +
          `(status, revocation time and reason, nonce); ${s.signaturesChecked} signatures verified`,
      );
    }
    for (const s of scenarios)
      if (s.target === "fleet")
        for (const r of s.results)
          check(
            r.connections <= CONCURRENCY,
            `${s.label}: ${r.connections} connections for ${CONCURRENCY} keep-alive clients; connections were not kept alive`,
          );
    passed.push(`fleetpki: every run used at most ${CONCURRENCY} connections (keep-alive)`);
    return passed;
  }
}

/** How openssl's runs used connections, for the report. */
export function opensslConnections(scenarios: readonly Scenario[]): string {
  const runs = scenarios.filter((s) => s.target === "openssl").flatMap((s) => s.results);
  if (runs.every((r) => r.connections <= CONCURRENCY)) return "kept alive";
  return runs.every((r) => r.connections === r.completed) ? "one per request" : "mixed";
}

export const SIGN_COST_SECONDS = 0.5;

export interface SignCost {
  us: number;
  otherCores: number | undefined;
}

/** What one ECDSA P-256 signature over a response-sized TBS costs through node:crypto here, on one core. */
export function signCost(): SignCost {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const tbs = randomBytes(300);
  for (let i = 0; i < 200; i++) sign("sha256", tbs, privateKey);
  const stop = watchContention();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < SIGN_COST_SECONDS * 1000) {
    for (let i = 0; i < 100; i++) sign("sha256", tbs, privateKey);
    n += 100;
  }
  const us = ((performance.now() - t0) * 1000) / n;
  return { us, otherCores: stop() };
}
