// Revocation status (issue 4): OCSP responses per second from the real status listener
// (`fleetpki serve --only status` in a child process) with 4 keep-alive clients, cached (the same
// few no-nonce requests for good certificates) and uncached (a fresh nonce in every request,
// cycling over 1,000 certificates of which 100 are revoked), next to the `openssl ocsp` responder
// answering the same requests from an index.txt of the same certificates, measured the same way
// in the same run. Each pair is measured with two load generators in this process: node:http
// with a keep-alive Agent (as bench/est.ts), and a lean hand-written HTTP/1.1 client whose own
// CPU cost per request is a third of node:http's, so that on 2 vCPUs the client is not what
// limits the servers. Then the time and size of a CRL with 100,000 revoked entries (signCrl),
// next to `openssl ca -gencrl` over the same 100,000 entries.
//
// `openssl ocsp -port` binds every interface, so everything runs in a network namespace of its
// own: benchmark.run re-executes this module under `unshare -n` (ocsp/namespace.ts; NETNS_FLAG, see
// the end of this file), and fleetpki, openssl and the load generator (that process) talk over the
// namespace's loopback.
//
// This file is the driver: the phases in order. The parts are in bench/ocsp/: settings.ts (sizes
// and targets), namespace.ts, fleet.ts (set-up through the product's code), requests.ts,
// openssl.ts (the peer), servers.ts, clients.ts (node:http and the lean client), answers.ts and
// scenarios.ts (the load and its checks), crl.ts, report.ts.
import { writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { layout } from "../src/authority/layout.js";
import { parseDuration } from "../src/config/duration.js";
import { BenchFailure, WARMUP_SECONDS, check, cleanUpOnInterrupt, type BenchOptions, type Benchmark } from "./lib.js";
import { probeAnswers } from "./ocsp/answers.js";
import { crlBench } from "./ocsp/crl.js";
import { checkFleetAfter, makeFixture, readCacheSetting } from "./ocsp/fleet.js";
import { checkNamespace, runInNamespace } from "./ocsp/namespace.js";
import { checkRequestText, writeOpensslFiles } from "./ocsp/openssl.js";
import { printReport } from "./ocsp/report.js";
import { prepareRequests, withFreshNonce } from "./ocsp/requests.js";
import { OcspLoad, makeScenarios, opensslConnections, signCost } from "./ocsp/scenarios.js";
import { startServers, stopServers } from "./ocsp/servers.js";
import { DEVICE_COUNT, REVOKE_EVERY } from "./ocsp/settings.js";
import { LIVE, killLive } from "./server-process.js";

const NETNS_FLAG = "--ocsp-netns-child";
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const THIS_FILE = fileURLToPath(import.meta.url);

export const benchmark: Benchmark = {
  name: "ocsp",
  description:
    "OCSP responses/s (cached, uncached) of fleetpki's status listener next to `openssl ocsp`, 4 keep-alive clients; " +
    "CRL re-sign time and size with 100,000 entries",
  run: (options) => runInNamespace(THIS_FILE, NETNS_FLAG, REPO, options),
};

/** Inside the namespace: everything, in order. */
async function runBench(tmp: string, options: BenchOptions, ns: string): Promise<void> {
  const timings: [string, number][] = [];
  let t = performance.now();
  const lap = (what: string) => {
    const now = performance.now();
    timings.push([what, (now - t) / 1000]);
    t = now;
  };
  const netns = checkNamespace();
  lap("namespace");

  // Before anything else uses the CPU: what one signature (an uncached answer's floor) costs right now.
  const speed = signCost();
  lap("sign cost");

  const fixture = await makeFixture(join(tmp, "fleet"));
  lap(`fleet, ${DEVICE_COUNT} certificates, ${DEVICE_COUNT / REVOKE_EVERY} revoked`);
  const requests = prepareRequests(fixture);
  const files = await writeOpensslFiles(fixture, join(tmp, "openssl-ocsp"));
  const passed: string[] = [];

  // openssl must read our requests as we mean them. The probe asks about a revoked certificate (every tenth), keyCompromise.
  const probe = {
    request: withFreshNonce(requests.nonceTemplates[REVOKE_EVERY]!),
    file: join(tmp, "probe-request.der"),
    cert: fixture.certs[REVOKE_EVERY]!,
  };
  writeFileSync(probe.file, probe.request);
  passed.push(checkRequestText(probe.file, probe.request, probe.cert.serialHex));

  const { servers, ports } = await startServers(REPO, fixture, files, tmp);
  lap("servers started");

  // One answer from each before any clock runs: what they say, and that openssl accepts fleetpki's (and its own).
  const responders = await probeAnswers(probe, ports, { tmp, chain: join(fixture.dir, layout.caChain("devices")), caCert: files.caCert });
  check(responders.openssl.der.equals(files.responderDer), "openssl ocsp answered with another responder certificate than it was given");
  passed.push(
    "a nonce request for a revoked certificate: both answers parse (parseOcspResponse), say revoked at the database's time and reason, " +
      "echo the nonce; `openssl ocsp -reqin -respin -CAfile <devices chain>` verifies both (signature, delegated responder, nonce) " +
      "and reads them as revoked, keyCompromise",
  );

  const scenarios = makeScenarios();
  const load = new OcspLoad({ fixture, requests, servers, ports, responders });
  // JIT, the responder certificate, the cache, page cache: none of it belongs in the figures.
  for (const s of scenarios) await load.measure(s, WARMUP_SECONDS);
  lap("warm-up");
  // Interleaved, so that drift in the host's speed hits every scenario alike.
  for (let round = 0; round < options.runs; round++) for (const s of scenarios) s.results.push(await load.measure(s, options.seconds));
  lap("measured runs");

  const cacheMs = parseDuration(await readCacheSetting(fixture.dir));
  passed.push(...load.checksAfterRuns(scenarios, cacheMs));

  // Graceful stop before the database is read.
  passed.push(await stopServers(servers));
  lap("servers stopped");
  passed.push(await checkFleetAfter(fixture, responders.fleet.der));
  lap("checks");

  const crl = await crlBench(tmp, fixture.sampleDer, options.runs);
  passed.push(...crl.checks);
  lap("CRL");

  printReport({
    options,
    speed,
    scenarios,
    passed,
    timings,
    netns: `${ns}: ${netns}`,
    fixture,
    tmp,
    cacheMs,
    responseBytes: { fleet: responders.fleet.der.length, openssl: responders.openssl.der.length },
    opensslConnections: opensslConnections(scenarios),
    crl,
  });
}

// ---- inside the namespace ---------------------------------------------------------------------

async function netnsMain(tmp: string, options: BenchOptions, ns: string): Promise<number> {
  cleanUpOnInterrupt(killLive); // this process ends when the measurement does
  try {
    await runBench(tmp, options, ns);
    return 0;
  } catch (e) {
    const what = e instanceof BenchFailure ? "check failed" : "error";
    console.error(`\nbench ocsp (in the network namespace): ${what}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return e instanceof BenchFailure ? 1 : 2;
  } finally {
    for (const s of [...LIVE]) await s.stop(5_000);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === THIS_FILE && process.argv[2] === NETNS_FLAG) {
  const [tmp, seconds, runs, ns] = process.argv.slice(3);
  if (!tmp || !seconds || !runs)
    throw new Error(
      `usage: node --import tsx bench/ocsp.ts ${NETNS_FLAG} TMP SECONDS RUNS [UNSHARE-OPTIONS] (run.ts starts it under unshare)`,
    );
  const code = await netnsMain(tmp, { seconds: Number(seconds), runs: Number(runs) }, `unshare ${ns ?? "-n"}`);
  process.exit(code);
}
