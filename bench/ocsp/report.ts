// The bench's printed report: the setting, the OCSP throughput table, the figures against the
// issue's targets, the CRL table, the phases and the checks that passed.
import { cpus } from "node:os";
import { contentionWarning, WARMUP_SECONDS, fmtMs, fmtRate, formatTable, median, opensslVersion, type BenchOptions } from "../lib.js";
import type { CrlFigures } from "./crl.js";
import type { Fixture } from "./fleet.js";
import { SIGN_COST_SECONDS, type Run, type Scenario, type SignCost } from "./scenarios.js";
import {
  CACHED_REQUESTS,
  CLIENT_LABEL,
  CONCURRENCY,
  CRL_ENTRIES,
  CRL_TARGET_MS,
  DEVICE_COUNT,
  ISSUE_NODE_CACHED,
  ISSUE_OPENSSL,
  NONCE_BYTES,
  OCSP_REQUEST_TYPE,
  REVOKE_EVERY,
  REVOKE_REASONS,
  TARGET_CACHED_RATIO,
  TARGET_LABEL,
  type Client,
  type Mode,
  type Target,
} from "./settings.js";

const fmtCores = (n: number | undefined): string => (n === undefined || Number.isNaN(n) ? "?" : n.toFixed(2));
const fmtRatio = (a: number, b: number): string => `${(a / b).toFixed(2)}x`;

export interface Report {
  options: BenchOptions;
  speed: SignCost;
  scenarios: readonly Scenario[];
  passed: readonly string[];
  timings: readonly [string, number][];
  netns: string;
  fixture: Fixture;
  tmp: string;
  cacheMs: number;
  responseBytes: Record<Target, number>;
  opensslConnections: string;
  crl: CrlFigures;
}

export function printReport(r: Report): void {
  const { options, speed, scenarios, crl } = r;
  const cpu = cpus();
  const find = (target: Target, mode: Mode, client: Client) =>
    scenarios.find((s) => s.target === target && s.mode === mode && s.client === client)!;
  const med = (s: Scenario, f: (x: Run) => number) => median(s.results.map(f));
  const rate = (s: Scenario) => med(s, (x) => x.perSecond);
  const out: string[] = [];
  out.push("== ocsp: OCSP responses/s with 4 keep-alive clients; CRL with 100,000 entries ==");
  out.push(
    `machine   ${cpu.length} x ${cpu[0]?.model ?? "?"}, Node ${process.version} ` +
      `(OpenSSL ${process.versions.openssl}), CLI ${opensslVersion()}`,
  );
  out.push(`netns     ${r.netns}; servers and clients talk over 127.0.0.1 there`);
  out.push(
    `setup     fresh P-256 fleet in ${r.tmp}: ${fmtRate(DEVICE_COUNT)} device certificates from the devices CA, ` +
      `${DEVICE_COUNT / REVOKE_EVERY} revoked (revokeCertificate; ${REVOKE_REASONS.join(", ")})`,
  );
  out.push(
    `servers   \`fleetpki serve --only status\` (FLEETPKI_LOG_LEVEL=warn, ocsp_cache ${r.cacheMs / 1000} s); ` +
      `\`openssl ocsp -index -CA -rsigner -rkey -port 0 -nmin 1 -ignore_err -resp_key_id\` (one process)`,
  );
  out.push(
    `          both sign with a P-256 delegated responder (ECDSA-SHA256), ResponderID byKey, the responder certificate in every answer`,
  );
  out.push(
    `requests  POST ${OCSP_REQUEST_TYPE}, one SHA-1 CertID each; cached: ${CACHED_REQUESTS} fixed no-nonce requests ` +
      `for good certificates; uncached: a fresh ${NONCE_BYTES}-byte nonce in every request, ` +
      `cycling over all ${fmtRate(DEVICE_COUNT)} certificates`,
  );
  out.push(
    `method    ${CONCURRENCY} clients, one request in flight each, in this process: node:http with a keep-alive Agent, ` +
      `and a lean client (hand-written HTTP/1.1 on net.Socket, keep-alive);`,
  );
  out.push(
    `          ${WARMUP_SECONDS} s warm-up per scenario, then ${options.runs} interleaved runs of ${options.seconds} s; median reported`,
  );
  out.push(
    `signing   node:crypto sign("sha256", <300 bytes>, P-256 key), tight loop for ${SIGN_COST_SECONDS} s before the servers start: ` +
      `${speed.us.toFixed(1)} us per signature` +
      (speed.otherCores === undefined ? "" : ` (other processes ${speed.otherCores.toFixed(2)} cores)`),
  );
  out.push("");
  out.push("OCSP throughput");
  const cpuUs = (cores: number, perSecond: number) => (cores / perSecond) * 1e6;
  const rows = scenarios.map((s) => {
    const rates = s.results.map((x) => x.perSecond);
    const other = find(s.target === "fleet" ? "openssl" : "fleet", s.mode, s.client);
    return [
      TARGET_LABEL[s.target],
      s.mode,
      CLIENT_LABEL[s.client],
      fmtRate(rate(s)),
      `${fmtRate(Math.min(...rates))}..${fmtRate(Math.max(...rates))}`,
      s.target === "fleet" ? fmtRatio(rate(s), rate(other)) : "-",
      fmtMs(med(s, (x) => x.p50Ms)),
      fmtMs(med(s, (x) => x.p99Ms)),
      Math.round(med(s, (x) => cpuUs(x.serverCores, x.perSecond))).toString(),
      Math.round(med(s, (x) => cpuUs(x.clientCores, x.perSecond))).toString(),
      fmtCores(med(s, (x) => x.serverCores)),
      fmtCores(med(s, (x) => x.clientCores)),
      fmtRate(med(s, (x) => x.connections)),
      Math.round(med(s, (x) => x.bytes / x.completed)).toString(),
      fmtCores(med(s, (x) => x.others ?? NaN)),
    ];
  });
  out.push(
    formatTable(
      [
        "server",
        "requests",
        "client",
        "req/s",
        "runs min..max",
        "vs openssl",
        "p50 ms",
        "p99 ms",
        "srv us/req",
        "cli us/req",
        "srv cores",
        "cli cores",
        "conns/run",
        "bytes/resp",
        "others",
      ],
      rows,
    ),
  );
  out.push("  vs openssl: fleetpki's req/s over the openssl responder's for the same requests in this run.");
  out.push(
    "  srv/cli us/req: CPU time (user + system, all threads) of the server process / of this client process per request; " +
      "cores: the same as cores busy.",
  );
  out.push(
    `  conns/run: TCP connections opened per run (openssl ocsp: ${r.opensslConnections}). ` +
      `others: CPU taken meanwhile by other processes or the hypervisor, in cores of ${cpu.length}.`,
  );
  out.push("  Every column is the median over the runs.");
  out.push("");

  const srvUs = (s: Scenario) => med(s, (x) => cpuUs(x.serverCores, x.perSecond));
  out.push("Against the issue");
  const issueRows: string[][] = [];
  for (const client of ["node", "raw"] as const) {
    for (const mode of ["cached", "uncached"] as const) {
      const f = rate(find("fleet", mode, client));
      const o = rate(find("openssl", mode, client));
      const target = mode === "cached" ? `>= ${TARGET_CACHED_RATIO.toFixed(2)}x` : "-";
      const status = mode === "cached" ? (f / o >= TARGET_CACHED_RATIO ? "ok" : "BELOW") : "";
      issueRows.push([`${mode}, ${CLIENT_LABEL[client]} client, req/s`, fmtRate(f), fmtRate(o), fmtRatio(f, o), target, status]);
    }
  }
  for (const mode of ["cached", "uncached"] as const) {
    // CPU per answer does not depend on how fast the client can ask: each server's cost, both clients pooled.
    const f = median((["node", "raw"] as const).map((c) => srvUs(find("fleet", mode, c))));
    const o = median((["node", "raw"] as const).map((c) => srvUs(find("openssl", mode, c))));
    const target = mode === "cached" ? `>= ${TARGET_CACHED_RATIO.toFixed(2)}x` : "-";
    const status = mode === "cached" ? (o / f >= TARGET_CACHED_RATIO ? "ok" : "BELOW") : "";
    issueRows.push([
      `${mode}, server CPU us per answer`,
      Math.round(f).toString(),
      Math.round(o).toString(),
      fmtRatio(o, f),
      target,
      status,
    ]);
  }
  issueRows.push([
    "the issue's measurement (cached, req/s)",
    fmtRate(ISSUE_NODE_CACHED),
    fmtRate(ISSUE_OPENSSL),
    fmtRatio(ISSUE_NODE_CACHED, ISSUE_OPENSSL),
    "",
    "a cached Node responder vs openssl",
  ]);
  out.push(formatTable(["figure", "fleetpki", "openssl", "fleetpki / openssl", "target", "status"], issueRows));
  out.push(
    "  req/s rows: medians of this run. server CPU rows: srv us/req (the mean of the two clients' medians); " +
      "there the ratio is openssl's CPU per answer",
  );
  out.push(
    "  over fleetpki's: how many answers fleetpki gives for the CPU openssl spends on one, " +
      "i.e. the rate ratio if neither the client nor the core count limited.",
  );
  const stale = scenarios.reduce((n, s) => n + s.stale, 0);
  if (stale > 0)
    out.push(
      `WARNING: ${stale} answers arrived after their own nextUpdate had passed (stale when served): ${scenarios
        .filter((s) => s.stale)
        .map((s) => `${s.label}: ${s.stale}`)
        .join("; ")}`,
    );
  const contended = contentionWarning([speed.otherCores, ...scenarios.flatMap((s) => s.results.map((r) => r.others))]);
  if (contended) out.push(contended);
  out.push("");

  const reasons = crl.reasons.map(([reason, n]) => `${Math.round((n / CRL_ENTRIES) * 100)}% ${reason}`).join(", ");
  out.push(
    `CRL of the devices CA with ${fmtRate(CRL_ENTRIES)} revoked entries (${reasons}); P-256, ECDSA-SHA256; ` +
      `rows inserted in ${crl.insertSeconds.toFixed(1)} s`,
  );
  const msRow = (what: string, values: readonly number[]) => [
    what,
    fmtMs(median(values)),
    `${fmtMs(Math.min(...values))}..${fmtMs(Math.max(...values))}`,
    String(values.length),
  ];
  const signMed = median(crl.signMs);
  out.push(
    formatTable(
      ["step", "median ms", "min..max", "runs"],
      [
        msRow('signCrl(fleet, "devices"): one transaction', crl.signMs),
        msRow("  its query on its own (listCrlEntries)", crl.queryMs),
        msRow("  buildCrl on its own (encode + sign)", crl.buildMs),
        msRow("  storing the row on its own (upsert + commit)", crl.storeMs),
        msRow("openssl ca -gencrl, same entries (whole process)", crl.opensslGencrlMs),
        msRow("openssl crl DER -> DER of fleetpki's CRL (no signing)", crl.opensslReencodeMs),
      ],
    ),
  );
  out.push(
    `  size: fleetpki ${fmtRate(crl.derBytes)} bytes DER (${(crl.derBytes / CRL_ENTRIES).toFixed(1)} bytes/entry); ` +
      `openssl ca -gencrl ${fmtRate(crl.opensslDerBytes)} bytes DER` +
      ` (${(crl.opensslDerBytes / CRL_ENTRIES).toFixed(1)} bytes/entry)`,
  );
  out.push(
    `  target signCrl <= ${CRL_TARGET_MS} ms: ${signMed <= CRL_TARGET_MS ? "ok" : "ABOVE"} (${fmtMs(signMed)} ms); ` +
      `vs openssl ca -gencrl: ${fmtRatio(signMed, median(crl.opensslGencrlMs))} of its time`,
  );
  out.push("");
  out.push(`Phases: ${r.timings.map(([w, s]) => `${w} ${s.toFixed(1)} s`).join(", ")}`);
  out.push("");
  out.push("Checks");
  for (const c of r.passed) out.push(`  ok  ${c}`);
  console.log(out.join("\n"));
}
