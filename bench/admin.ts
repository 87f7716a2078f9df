// The admin API's device list at fleet scale (issue 11): 100,000 devices and 300,000 certificates
// in the database, the admin listener (startFleetServer, only admin) in a child process, and the
// latency (p50, p95) of the first page, a filtered page (group + state), a deep cursor page (after
// ~90,000 devices), the dashboard's devices page, and two pages no index serves (an id substring
// search, a label filter), lock-step and with 8 concurrent keep-alive clients (operator
// certificate, mutual TLS). The peer, in a child process of its own and measured the same way in
// the same run: a bare node:https server answering each request with the same JSON bytes
// fleetpki gave for it (ratio = fleetpki / peer). Then, in this process, what the SQL alone costs
// per page and the plans SQLite chose, so the report says where the time goes.
//
// Seeding goes through the store's own connection in large transactions (prepared inserts, not the
// issuance path: 300,000 signatures would take the run's whole budget). The certificates share one
// real DER (the schema allows it: only the serial is unique) with distinct serials, three per device
// (two expired, one in force), so the lists read rows of the real shape.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:https";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { connect as tlsConnect } from "node:tls";
import { initFleet } from "../src/authority/ca/init.js";
import { issueOwnLeaf } from "../src/authority/ca/init.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { layout } from "../src/authority/layout.js";
import { listDevicePage } from "../src/authority/queries.js";
import { FleetServices } from "../src/authority/services.js";
import { readPrivateKey } from "../src/keys/keys.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer } from "../src/server.js";
import type { Store } from "../src/store/store.js";
import { devicePageQuery } from "../src/store/sqlite/devices.js";
import { operatorSpiffeId } from "../src/x509/profiles.js";
import {
  BenchFailure,
  WARMUP_SECONDS,
  check,
  cleanUpOnInterrupt,
  contentionWarning,
  fmtMs,
  formatTable,
  median,
  prepareP256Csrs,
  watchContention,
  Http1Connection,
  type BenchOptions,
  type Benchmark,
} from "./lib.js";
import { LIVE, ServerProcess, killLive } from "./server-process.js";

/** FLEETPKI_BENCH_ADMIN_DEVICES: a smaller fleet to check the plumbing (figures then meaningless). */
const DEVICES = Number(process.env.FLEETPKI_BENCH_ADMIN_DEVICES ?? 100_000);
const CERTS_PER_DEVICE = 3;
const GROUPS = 20;
/** A rare id substring: robot-009999, robot-019999, ... (10 of 100,000). */
const SEARCH = String(DEVICES - 1).slice(-4);
const ZONES = 10;
const TARGET_P95_MS = 100;
const CONCURRENCY = [1, 8] as const;
const THIS_FILE = fileURLToPath(import.meta.url);
const ADMIN_FLAG = "--admin-child";
const PEER_FLAG = "--peer-child";

const deviceId = (i: number) => `robot-${String(i).padStart(6, "0")}`;
/** Device i's status: 2 % removed, 3 % revoked, 5 % held, the rest active. */
function statusOf(i: number): "active" | "held" | "revoked" | "removed" {
  const r = (i * 7919) % 100;
  return r < 2 ? "removed" : r < 5 ? "revoked" : r < 10 ? "held" : "active";
}

interface Scenario {
  name: string;
  path: string;
  /** The JSON fleetpki answered at set-up (the peer sends the same bytes). */
  body?: Buffer;
  items?: number;
  results: Map<string, { p50: number; p95: number; n: number; others: number | undefined }>;
}

export const benchmark: Benchmark = {
  name: "admin",
  description:
    "admin API device list with 100,000 devices / 300,000 certificates: p50/p95 of the first, a filtered, a deep-cursor and the " +
    "dashboard's page, lock-step and 8 clients, next to a bare node:https peer sending the same bytes",
  run,
};

async function seed(dir: string): Promise<{ fleet: FleetServices; seconds: number; der: Buffer }> {
  const t0 = performance.now();
  await initFleet({ dir, name: "Bench Robots", domain: "fleet.example" });
  const fleet = await FleetServices.open(dir);
  // One real device certificate, whose DER every seeded row shares.
  await fleet.store.transaction((tx) =>
    tx.devices.add([
      {
        id: "template-0",
        group_name: null,
        labels: "{}",
        status: "active",
        created_at: new Date().toISOString(),
        updated_at: new Date().toISOString(),
      },
    ]),
  );
  const [csr] = prepareP256Csrs(1, "template-");
  const issued = await issueDeviceCertificate(fleet, { deviceId: "template-0", csr: csr!.der, actor: "bench" });
  const der = issued.der;
  const store = fleet.store as unknown as Store;
  const day = 86_400_000;
  const now = Date.now();
  await store.withNative((db) => {
    const addDevice = db.prepare(
      "insert into devices (id, group_name, labels, status, created_at, updated_at, last_seen_at) values (?, ?, ?, ?, ?, ?, ?)",
    );
    const addCert = db.prepare(
      "insert into certificates (serial, issuer_ca, kind, subject_id, device_id, not_before, not_after, fingerprint_sha256, der, " +
        "status, revoked_at, revocation_reason, created_at) values (?, 'devices', 'device', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    const fingerprint = issued.serial; // not read by the lists; the real one would be equal for every row
    const created = new Date(now - 90 * day).toISOString();
    for (let start = 0; start < DEVICES; start += 25_000) {
      db.transaction(() => {
        for (let i = start; i < Math.min(DEVICES, start + 25_000); i++) {
          const id = deviceId(i);
          const status = statusOf(i);
          const seen = i % 2 === 0 ? new Date(now - (i % 1440) * 60_000).toISOString() : null;
          addDevice.run(
            id,
            `group-${String(i % GROUPS).padStart(2, "0")}`,
            JSON.stringify({ zone: `z${i % ZONES}` }),
            status,
            created,
            created,
            seen,
          );
          for (let k = 0; k < CERTS_PER_DEVICE; k++) {
            // Two expired predecessors, one in force (30 days each, renewed at 20).
            const notBefore = now - (CERTS_PER_DEVICE - 1 - k) * 20 * day - 5 * day;
            const certStatus =
              k === CERTS_PER_DEVICE - 1 ? (status === "held" ? "hold" : status === "active" ? "valid" : "revoked") : "valid";
            addCert.run(
              randomBytes(16).toString("hex"),
              id,
              id,
              new Date(notBefore).toISOString(),
              new Date(notBefore + 30 * day).toISOString(),
              fingerprint,
              der,
              certStatus,
              certStatus === "revoked" ? new Date(now - day).toISOString() : null,
              certStatus === "revoked" ? "keyCompromise" : certStatus === "hold" ? "certificateHold" : null,
              new Date(notBefore).toISOString(),
            );
          }
        }
      })();
    }
    db.exec("analyze");
  });
  return { fleet, seconds: (performance.now() - t0) / 1000, der };
}

async function operatorCredentials(fleet: FleetServices): Promise<{ cert: string; key: string; ca: string }> {
  const dirRel = layout.operatorDir("bench-viewer");
  await issueOwnLeaf(
    fleet,
    {
      caId: "operators",
      kind: "operator",
      commonName: "bench-viewer",
      sans: [{ uri: operatorSpiffeId(fleet.domain, "bench-viewer") }],
      dirRel,
      lifetime: "1d",
    },
    "bench",
    new Date(),
  );
  const dir = fleet.path(dirRel);
  return {
    cert: readFileSync(join(dir, "cert.pem"), "utf8") + readFileSync(join(dir, "chain.pem"), "utf8"),
    key: readPrivateKey(join(dir, "key.pem"), fleet.passphrase()).export({ type: "pkcs8", format: "pem" }).toString(),
    ca: readFileSync(join(fleet.dir, "ca", "root", "cert.pem"), "utf8"),
  };
}

async function connection(port: number, creds: { cert?: string; key?: string; ca: string }): Promise<Http1Connection> {
  const socket = tlsConnect({ host: "127.0.0.1", port, servername: "localhost", ...creds });
  await new Promise<void>((res, rej) => {
    socket.once("secureConnect", () => res());
    socket.once("error", rej);
  });
  socket.setNoDelay(true);
  return new Http1Connection(socket);
}

const request = (path: string) => Buffer.from(`GET ${path} HTTP/1.1\r\nhost: localhost\r\naccept: application/json\r\n\r\n`);

/** Keeps `conns.length` requests in flight for `seconds`; every answer is checked. p50/p95 in ms. */
async function measure(conns: Http1Connection[], s: Scenario, seconds: number) {
  const bytes = request(s.path);
  const latencies: number[] = [];
  const stop = watchContention();
  const deadline = performance.now() + seconds * 1000;
  await Promise.all(
    conns.map(async (c) => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        const reply = await c.request(bytes);
        latencies.push(performance.now() - t0);
        if (reply.status !== 200) throw new BenchFailure(`${s.name}: status ${reply.status}: ${reply.body.toString().slice(0, 300)}`);
        if (s.body && reply.body.length !== s.body.length)
          throw new BenchFailure(`${s.name}: body of ${reply.body.length} bytes, not ${s.body.length}`);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  const at = (p: number) => latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)]!;
  return { p50: at(50), p95: at(95), n: latencies.length, others: stop() };
}

async function run(options: BenchOptions): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), "fleetpki-bench-admin-"));
  const cleanup = () => {
    killLive();
    rmSync(tmp, { recursive: true, force: true });
  };
  const uninstall = cleanUpOnInterrupt(cleanup);
  const passed: string[] = [];
  try {
    const dir = join(tmp, "fleet");
    const { fleet, seconds: seedSeconds } = await seed(dir);
    const creds = await operatorCredentials(fleet);
    const serverKey = readPrivateKey(fleet.path(join(layout.serverDir, "key.pem")), fleet.passphrase());
    const serverCert =
      readFileSync(fleet.path(join(layout.serverDir, "cert.pem")), "utf8") +
      readFileSync(fleet.path(join(layout.serverDir, "chain.pem")), "utf8");
    await fleet.close();
    console.log(
      `admin: seeded ${DEVICES.toLocaleString("en-US")} devices, ` +
        `${(DEVICES * CERTS_PER_DEVICE).toLocaleString("en-US")} certificates in ${seedSeconds.toFixed(1)} s`,
    );

    const child = (flag: string, ...args: string[]) =>
      ServerProcess.start(
        flag === ADMIN_FLAG ? "fleetpki admin" : "peer",
        process.execPath,
        ["--import", "tsx", THIS_FILE, flag, ...args],
        {
          logFile: join(tmp, `${flag.slice(2)}.log`),
          port: /listening on port (\d+)/,
        },
      );
    const admin = await child(ADMIN_FLAG, dir);

    // The scenarios' paths; the deep cursor is reached by paging (which also checks every device comes once).
    const scenarios: Scenario[] = [
      { name: "first page", path: "/api/devices?limit=50", results: new Map() },
      { name: "filtered (group + state)", path: "/api/devices?group=group-07&state=active&limit=50", results: new Map() },
      { name: "deep cursor (after ~90,000)", path: "", results: new Map() },
      { name: "dashboard devices page*", path: "/api/devices?limit=50&state=active", results: new Map() },
      { name: "search (id substring, rare)", path: `/api/devices?q=${SEARCH}&limit=50`, results: new Map() },
      { name: "label filter (zone=z3)", path: "/api/devices?label=zone%3Dz3&limit=50", results: new Map() },
    ];
    const c0 = await connection(admin.port, creds);
    const seen = new Set<string>();
    let cursor: string | null = null;
    let deepCursor: string | undefined;
    const t0 = performance.now();
    let pages = 0;
    do {
      const r = await c0.request(request(`/api/devices?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`));
      check(r.status === 200, `paging: status ${r.status}: ${r.body.toString().slice(0, 300)}`);
      const page = JSON.parse(r.body.toString()) as { items: { id: string }[]; nextCursor: string | null };
      for (const d of page.items) {
        check(!seen.has(d.id), `paging: ${d.id} served twice`);
        seen.add(d.id);
      }
      cursor = page.nextCursor;
      pages++;
      if (cursor && seen.size <= DEVICES * 0.9) deepCursor = cursor;
    } while (cursor);
    const pagingSeconds = (performance.now() - t0) / 1000;
    let expected = 0;
    for (let i = 0; i < DEVICES; i++) if (statusOf(i) !== "removed") expected++;
    expected += 1; // the template device
    check(seen.size === expected, `paging served ${seen.size} devices, expected ${expected}`);
    passed.push(
      `paging the whole list (limit 500, ${pages} pages, ${pagingSeconds.toFixed(1)} s) ` +
        `served each of the ${expected.toLocaleString("en-US")} ` +
        "devices not removed exactly once",
    );
    scenarios[2]!.path = `/api/devices?limit=50&cursor=${encodeURIComponent(deepCursor!)}`;
    for (const s of scenarios) {
      const r = await c0.request(request(s.path));
      check(r.status === 200, `${s.name}: status ${r.status}: ${r.body.toString().slice(0, 300)}`);
      s.body = r.body;
      const page = JSON.parse(r.body.toString()) as { items: { id: string; group: string; status: string; labels: { zone: string } }[] };
      s.items = page.items.length;
      check(s.items > 0, `${s.name}: no items`);
      if (s.name.startsWith("filtered"))
        check(
          page.items.every((d) => d.group === "group-07" && d.status === "active"),
          "filtered page: wrong rows",
        );
      if (s.name.startsWith("deep"))
        check(page.items[0]!.id >= deviceId(Math.floor(DEVICES * 0.9) - 600), `deep page starts at ${page.items[0]!.id}`);
      if (s.name.startsWith("search"))
        check(
          page.items.every((d) => d.id.includes(SEARCH)),
          "search: wrong rows",
        );
      if (s.name.startsWith("label"))
        check(
          page.items.every((d) => d.labels.zone === "z3"),
          "label: wrong rows",
        );
    }
    c0.close();
    passed.push("each scenario's page checked once (its rows match its filter); every measured answer is a 200 of the same length");

    const bodies = join(tmp, "bodies.json");
    writeFileSync(bodies, JSON.stringify(Object.fromEntries(scenarios.map((s) => [s.path, s.body!.toString("base64")]))));
    writeFileSync(join(tmp, "peer-key.pem"), serverKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    writeFileSync(join(tmp, "peer-cert.pem"), serverCert);
    const peer = await child(PEER_FLAG, join(tmp, "peer-key.pem"), join(tmp, "peer-cert.pem"), bodies);

    const servers = [
      { name: "fleetpki", port: admin.port, creds },
      { name: "peer", port: peer.port, creds: { ca: creds.ca } },
    ];
    for (const conc of CONCURRENCY) {
      const conns = new Map<string, Http1Connection[]>();
      for (const sv of servers) conns.set(sv.name, await Promise.all(Array.from({ length: conc }, () => connection(sv.port, sv.creds))));
      for (const s of scenarios) for (const sv of servers) await measure(conns.get(sv.name)!, s, WARMUP_SECONDS);
      const runs = new Map<string, { p50: number; p95: number; n: number; others: number | undefined }[]>();
      for (let round = 0; round < options.runs; round++)
        for (const s of scenarios)
          for (const sv of servers) {
            const key = `${s.name}|${sv.name}`;
            const list = runs.get(key) ?? [];
            list.push(await measure(conns.get(sv.name)!, s, options.seconds));
            runs.set(key, list);
          }
      for (const s of scenarios)
        for (const sv of servers) {
          const list = runs.get(`${s.name}|${sv.name}`)!;
          s.results.set(`${sv.name}@${conc}`, {
            p50: median(list.map((r) => r.p50)),
            p95: median(list.map((r) => r.p95)),
            n: list.reduce((a, r) => a + r.n, 0),
            others: Math.max(...list.map((r) => r.others ?? 0)),
          });
        }
      for (const list of conns.values()) for (const c of list) c.close();
    }
    for (const s of [...LIVE]) await s.stop(10_000);

    // Where the time goes: the SQL alone (this process, the same file), and its plan.
    const fleet2 = await FleetServices.open(dir);
    const store = fleet2.store as unknown as Store;
    const sqlRows: string[][] = [];
    const deepAfter = deviceId(Math.floor(DEVICES * 0.9));
    const queries: [string, Parameters<typeof devicePageQuery>[1], Parameters<typeof listDevicePage>[1]][] = [
      ["first page", { limit: 51 }, { limit: 50 }],
      ["filtered (group + state)", { limit: 51, group: "group-07", status: "active" }, { group: "group-07", state: "active" }],
      ["deep cursor (after ~90,000)", { limit: 51, afterId: deepAfter }, { limit: 50 }],
      ["dashboard devices page*", { limit: 51, status: "active" }, { state: "active" }],
      ["search (id substring, rare)", { limit: 51, search: SEARCH }, { q: SEARCH }],
      ["label filter (zone=z3)", { limit: 51, label: { key: "zone", value: "z3" } }, { label: "zone=z3" }],
    ];
    for (const [name, q, domainQuery] of queries) {
      // The plan of the path the store takes (a rare search: the trigram candidates; see SqliteDeviceOperations.page).
      const c = devicePageQuery(store.db, q, q.search !== undefined).compile();
      const planText = await store.withNative((db) =>
        (db.prepare(`explain query plan ${c.sql}`).all(...(c.parameters as unknown[])) as { detail: string }[])
          .map((r) => r.detail)
          .join("; "),
      );
      const times: number[] = [];
      const domainTimes: number[] = [];
      for (let k = 0; k < 30; k++) {
        let t = performance.now();
        await store.ops.devices.page(q);
        times.push(performance.now() - t);
        t = performance.now();
        await listDevicePage(fleet2, domainQuery);
        domainTimes.push(performance.now() - t);
      }
      sqlRows.push([name, fmtMs(median(times)), fmtMs(median(domainTimes)), planText]);
    }
    await fleet2.close();

    console.log(
      `\nadmin API: device list, ${DEVICES.toLocaleString("en-US")} devices / ` +
        `${(DEVICES * CERTS_PER_DEVICE).toLocaleString("en-US")} certificates; ` +
        `${options.runs} runs x ${options.seconds} s per cell (median of runs), target p95 <= ${TARGET_P95_MS} ms`,
    );
    const rows: string[][] = [];
    const missed: string[] = [];
    for (const s of scenarios)
      for (const conc of CONCURRENCY) {
        const f = s.results.get(`fleetpki@${conc}`)!;
        const p = s.results.get(`peer@${conc}`)!;
        if (f.p95 > TARGET_P95_MS) missed.push(`${s.name} @${conc}`);
        rows.push([
          s.name,
          String(conc),
          `${s.items} / ${(s.body!.length / 1024).toFixed(1)} KiB`,
          fmtMs(f.p50),
          fmtMs(f.p95),
          fmtMs(p.p50),
          fmtMs(p.p95),
          (f.p95 / p.p95).toFixed(1),
          f.p95 <= TARGET_P95_MS ? "met" : "MISSED",
        ]);
      }
    console.log(
      formatTable(["page", "clients", "items / body", "fleetpki p50", "p95", "peer p50", "peer p95", "p95 ratio", "target"], rows),
    );
    console.log(
      "* the dashboard's devices page is a static shell served from memory (cached by the browser after the first load); " +
        "what it waits for is this API call (active devices, 50 a page)",
    );
    console.log("\nthe SQL alone (median of 30, ms) and the whole domain call (page + newest certificates), with SQLite's plan:");
    console.log(formatTable(["page", "SQL ms", "listDevicePage ms", "plan"], sqlRows));
    const warning = contentionWarning(scenarios.flatMap((s) => [...s.results.values()].map((r) => r.others)));
    if (warning) console.log(`\n${warning}`);
    console.log(`\nchecks passed:\n${passed.map((p) => `  - ${p}`).join("\n")}`);
    console.log(missed.length === 0 ? "\nall p95 targets met" : `\np95 target missed: ${missed.join(", ")}`);
  } finally {
    for (const s of [...LIVE]) await s.stop(5_000);
    uninstall();
    cleanup();
  }
}

// ---- child processes ------------------------------------------------------------------------

async function adminChild(dir: string): Promise<void> {
  const server = await startFleetServer({
    dir,
    only: ["admin"],
    adminListen: "127.0.0.1:0",
    logger: silentLogger,
    operators: { role: (name) => (name === "bench-viewer" ? "viewer" : null) },
  });
  console.log(`admin listening on port ${server.admin!.address.port}`);
  process.once("SIGTERM", () => void server.close().then(() => process.exit(0)));
}

async function peerChild(keyFile: string, certFile: string, bodiesFile: string): Promise<void> {
  const bodies = new Map(
    Object.entries(JSON.parse(readFileSync(bodiesFile, "utf8")) as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, "base64")]),
  );
  const server = createServer({ key: readFileSync(keyFile), cert: readFileSync(certFile), keepAliveTimeout: 30_000 }, (req, res) => {
    const body = bodies.get(req.url ?? "");
    if (!body) {
      res.writeHead(404, { "content-length": 0 }).end();
      return;
    }
    res
      .writeHead(200, { "content-type": "application/json; charset=utf-8", "content-length": body.length, "cache-control": "no-store" })
      .end(body);
  });
  server.listen(0, "127.0.0.1", () => console.log(`peer listening on port ${(server.address() as { port: number }).port}`));
  process.once("SIGTERM", () => server.close(() => process.exit(0)));
}

if (process.argv[1] && resolve(process.argv[1]) === THIS_FILE) {
  const [flag, ...args] = process.argv.slice(2);
  if (flag === ADMIN_FLAG) await adminChild(args[0]!);
  else if (flag === PEER_FLAG) await peerChild(args[0]!, args[1]!, args[2]!);
}
