// Issue 3 acceptance, end to end: the REAL device agent (`fleetpki agent ...`, the CLI from src/)
// against the REAL registration server (`fleetpki serve`), both as child processes, plus the
// operator CLI (`device add/requests/approve/deny`, `ca create-local/issue-batch`) and openssl
// and curl as independent clients of the files the agent writes.
//
// Fleets:
//   - "main" (default validities, enrollment.approval on): wrong fingerprint, token enrollment
//     with the files checked by openssl and curl, the factory path, approve and deny;
//   - "schedule" (validity.device 10m): `agent run`'s loop in this process on a clock the test
//     moves, against the real server: renewal inside the window twice, with the hook, and backoff
//     through a server outage (stopped before the second renewal, restarted on the same port);
//   - "short" (validity.device 30s, due at once): the real `agent run` process renews with its
//     hook after an outage and exits 0 on SIGTERM;
//   - "lost-answer": lost renewal answers and crashes, on a shifted agent clock.
// No test waits for a certificate's lifetime; they run concurrently.
import assert from "node:assert/strict";
import { X509Certificate, createHash, createPrivateKey, createPublicKey } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { connect, createServer as createTcpServer, type Socket } from "node:net";
import Database from "better-sqlite3";
import type { Clock } from "../src/agent/clock.js";
import { enroll } from "../src/agent/enroll.js";
import { TransportError } from "../src/agent/errors.js";
import { createLogger } from "../src/agent/log.js";
import { renew } from "../src/agent/renew.js";
import { runAgent } from "../src/agent/runner.js";
import { loadState, recoverState } from "../src/agent/state.js";
import { agentStatus } from "../src/agent/status.js";
import { opensslCsr } from "./helpers.js";
import {
  fingerprintOfPemFile,
  fleetpki,
  fleetpkiOk,
  killAll,
  logLines,
  run,
  setConfig,
  spawnCli,
  startServer,
  waitFor,
  type LogLine,
  type Server,
} from "./agent-e2e-helpers.js";

const DOMAIN = "fleet.example";
const SECOND = 1_000;
const AGENT_FILES = ["agent.json", "ca.pem", "cert.pem", "chain.pem", "key.pem"];

const tmp = mkdtempSync(join(tmpdir(), "fleetpki-agent-e2e-"));
const servers: Server[] = [];

after(async () => {
  await killAll();
  rmSync(tmp, { recursive: true, force: true });
});

// ---- small utilities ----------------------------------------------------------------------

const mode = (path: string): number => statSync(path).mode & 0o777;
const cert = (path: string): X509Certificate => new X509Certificate(readFileSync(path));
/** Hex serial without leading zeros, lower case: comparable across openssl, node and fleetpki. */
const normSerial = (s: string): string =>
  s
    .replace(/^serial=/i, "")
    .trim()
    .toLowerCase()
    .replace(/^0+/, "");
const spiffe = (id: string): string => `spiffe://${DOMAIN}/device/${id}`;

async function initFleet(name: string): Promise<string> {
  const dir = join(tmp, name);
  await fleetpkiOk(["init", "--dir", dir, "--name", `E2E ${name}`, "--domain", DOMAIN], { timeoutMs: 60_000 });
  return dir;
}

async function addDevice(fleetDir: string, id: string): Promise<string> {
  const r = await fleetpkiOk(["device", "add", id, "--dir", fleetDir, "--json"]);
  const token = (JSON.parse(r.stdout) as { token: string | null }).token;
  assert.ok(token, `device add ${id} printed a token`);
  return token;
}

async function opensslVerify(args: readonly string[]): Promise<void> {
  const r = await run("openssl", ["verify", ...args]);
  assert.equal(r.code, 0, `openssl verify ${args.join(" ")}: ${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /: OK\s*$/);
}

async function status(agentDir: string): Promise<Record<string, any>> {
  const r = await fleetpkiOk(["agent", "status", "--dir", agentDir, "--json"]);
  return JSON.parse(r.stdout) as Record<string, any>;
}

/** The agent directory as `agent enroll` must leave it. */
function assertAgentDir(dir: string, id: string, server: Server, fingerprint: string): void {
  assert.equal(mode(dir), 0o700, "agent dir is 0700");
  assert.deepEqual(readdirSync(dir).sort(), AGENT_FILES, "exactly the five agent files, no leftovers");
  assert.equal(mode(join(dir, "key.pem")), 0o600, "key.pem is 0600");
  for (const f of ["cert.pem", "chain.pem", "ca.pem", "agent.json"])
    assert.equal(mode(join(dir, f)) & 0o022, 0, `${f} is not group/world writable`);
  assert.deepEqual(JSON.parse(readFileSync(join(dir, "agent.json"), "utf8")), {
    server: server.url,
    root_fingerprint: fingerprint,
    device_id: id,
  });
  const leaf = cert(join(dir, "cert.pem"));
  assert.ok(leaf.checkPrivateKey(createPrivateKey(readFileSync(join(dir, "key.pem")))), "key.pem matches cert.pem");
  assert.equal(leaf.subjectAltName, `URI:${spiffe(id)}, DNS:${id}.devices.${DOMAIN}`);
  assert.equal(fingerprintOfPemFile(join(dir, "ca.pem")), fingerprint, "ca.pem is the pinned root");
}

// ---- the fleet shared by every test except the renewal one -------------------------------

interface MainFleet {
  dir: string;
  server: Server;
  fingerprint: string;
}

let mainFleet: Promise<MainFleet> | undefined;
/** Created on first use. */
function main(): Promise<MainFleet> {
  return (mainFleet ??= (async () => {
    const dir = await initFleet("main");
    setConfig(dir, ["enrollment", "approval"], true);
    const server = await startServer(dir);
    servers.push(server);
    return { dir, server, fingerprint: fingerprintOfPemFile(join(dir, "ca", "root", "cert.pem")) };
  })());
}

function enrollArgs(f: MainFleet, id: string, agentDir: string, ...extra: string[]): string[] {
  return ["agent", "enroll", "--server", f.server.url, "--root-fingerprint", f.fingerprint, "--id", id, "--dir", agentDir, ...extra];
}

/** Waits until `device requests --json` lists the device; returns the request. */
async function pendingRequest(fleetDir: string, id: string, timeoutMs = 30_000): Promise<Record<string, string>> {
  return waitFor(
    `a pending request of ${id}`,
    async () => {
      const r = await fleetpkiOk(["device", "requests", "--json", "--dir", fleetDir]);
      return (JSON.parse(r.stdout) as Record<string, string>[]).find((p) => p.deviceId === id);
    },
    timeoutMs,
    300,
  );
}

describe("fleetpki agent against a running fleetpki serve", { concurrency: true, timeout: 240_000 }, () => {
  after(async () => {
    // Graceful first (the server must stop on SIGTERM), then the global hook kills leftovers.
    const exits = await Promise.all(servers.map((s) => s.stop()));
    for (const e of exits) assert.ok(e.code === 0 || e.code === null, `serve exited ${e.code ?? e.signal}`);
  });

  // ---- 3 ------------------------------------------------------------------------------------
  // Renewal timing is the agent's own clock against the server's real time: `agent run`'s loop
  // (runAgent, what the command runs) in this process on a clock the test moves, against the real
  // server process, proves when it renews and how it backs off, without waiting for a lifetime.
  // The next test runs the real agent process on certificates that are due at once.
  it("agent run renews inside its window twice with the hook, and rides out a server outage (the agent's clock)", async (t) => {
    const dir = await initFleet("schedule");
    setConfig(dir, ["validity", "device"], "10m");
    let server = await startServer(dir);
    servers.push(server);
    const port = server.port;
    const fingerprint = fingerprintOfPemFile(join(dir, "ca", "root", "cert.pem"));
    const id = "robot-0001";
    const token = await addDevice(dir, id);
    const A = join(tmp, "schedule-agent");
    await enroll({ server: server.url, rootFingerprint: fingerprint, deviceId: id, mode: { kind: "token", token }, dir: A });
    assertAgentDir(A, id, server, fingerprint);

    const clock = new SteppedClock();
    const s0 = agentStatus(A, clock.now());
    const life0 = Date.parse(s0.not_after) - clock.now();
    const span0 = Date.parse(s0.not_after) - Date.parse(s0.not_before);
    // 10 minutes from issuance; notBefore is backdated (by 1 minute) for slow device clocks.
    assert.ok(
      life0 <= 601 * SECOND && span0 >= 600 * SECOND && span0 <= 661 * SECOND,
      `validity.device 10m is in effect (${life0} ms left, ${span0} ms in all)`,
    );

    const hookFile = join(tmp, "schedule-hook.log");
    const hook = `printf '%s %s\\n' "$FLEETPKI_DEVICE_ID" "$(openssl x509 -in "$FLEETPKI_CERT" -noout -serial)" >> '${hookFile}'`;
    const hookLines = (): string[] => (existsSync(hookFile) ? readFileSync(hookFile, "utf8").split("\n").filter(Boolean) : []);
    const lines: string[] = [];
    const log = createLogger({ level: "info", write: (l) => void lines.push(l), now: () => clock.now() });
    const logs = (): LogLine[] => lines.map((l) => JSON.parse(l) as LogLine);
    const named = (msg: string): LogLine[] => logs().filter((l) => l.msg === msg);
    const controller = new AbortController();
    let failure: unknown;
    // The server issues on the real time (and TLS checks certificates on it): once a renewal is
    // in place, the agent's clock steps back to the real time, or the new certificate would be
    // due at once on it.
    const onRenewed = () => clock.backToRealTime();
    const running = runAgent({ dir: A, onRenew: hook, log, clock, signal: controller.signal, onRenewed }).catch(
      (e: unknown) => void (failure = e),
    );
    const stillRunning = () => {
      if (failure !== undefined) throw new Error(`agent run ended early: ${String(failure)}\n${lines.join("")}`);
    };
    /** Waits until the agent sleeps again on its clock, having logged `msg` at least `count` times. */
    const asleepAfter = (msg: string, count: number) =>
      waitFor(
        `"${msg}" x${count}, then a sleep`,
        () => (stillRunning(), named(msg).length >= count && clock.sleeping()),
        60 * SECOND,
        20,
      ).catch((e: Error) => {
        throw new Error(`${e.message}; the agent logged:\n${lines.join("")}`);
      });

    await asleepAfter("renewal scheduled", 1);
    const renewAt0 = Date.parse(String(named("renewal scheduled")[0]!.renew_at));
    assert.ok(
      renewAt0 >= Date.parse(s0.renew_window.from) && renewAt0 <= Date.parse(s0.renew_window.to),
      "scheduled inside the window agent status shows",
    );
    // A second before its time the agent still waits.
    clock.advanceTo(renewAt0 - SECOND);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(clock.sleeping() && named("renewing").length === 0, "no renewal before the scheduled time");

    // First renewal, on schedule (+1: the log's ISO time drops the fraction of a millisecond).
    clock.advanceTo(renewAt0 + 1);
    await asleepAfter("renewal scheduled", 2);
    assert.equal(hookLines().length, 1, "the hook ran after the first renewal");
    const s1 = agentStatus(A, clock.now());
    assert.notEqual(s1.serial, s0.serial, "first renewal: a new certificate");
    const firstRenewed = named("renewed");
    assert.equal(firstRenewed.length, 1);
    assert.ok(Date.parse(named("renewing")[0]!.time) >= Date.parse(s0.renew_window.from), "not renewed before the window");
    assert.equal(normSerial(String(firstRenewed[0]!.serial)), normSerial(s1.serial));
    assert.equal(normSerial(String(firstRenewed[0]!.previous_serial)), normSerial(s0.serial));
    await opensslVerify(["-CAfile", join(A, "ca.pem"), "-untrusted", join(A, "chain.pem"), join(A, "cert.pem")]);
    const renewAt1 = Date.parse(String(named("renewal scheduled")[1]!.renew_at));
    assert.ok(renewAt1 >= Date.parse(s1.renew_window.from) && renewAt1 <= Date.parse(s1.renew_window.to), "the next one too");

    // The server stops before the second renewal is due; the agent tries, fails on the network
    // and retries after each backoff (the clock moved by exactly that much each time).
    const stopped = await server.stop();
    assert.equal(stopped.code, 0, `serve exits 0 on SIGTERM: ${server.proc.stderr()}`);
    const stoppedAt = clock.now();
    clock.advanceTo(renewAt1 + 1);
    for (let n = 1; n <= 3; n++) {
      await asleepAfter("renewal failed; retrying", n);
      assert.equal(hookLines().length, 1, "no renewal while the server is down");
      const delay = Number(named("renewal failed; retrying")[n - 1]!.retry_in_ms);
      if (n < 3) clock.advance(delay);
      else {
        server = await startServer(dir, port);
        servers.push(server);
        clock.advance(delay);
      }
    }
    const restartedAt = clock.now();
    await asleepAfter("renewal scheduled", 3);
    assert.equal(hookLines().length, 2, "the hook ran after the second renewal");
    const s2 = agentStatus(A, clock.now());

    const all = logs();
    const renewedLines = named("renewed");
    assert.equal(renewedLines.length, 2, "renewed twice");
    assert.ok(Date.parse(renewedLines[1]!.time) >= restartedAt, "the second renewal happened after the restart");
    const retries = named("renewal failed; retrying");
    assert.equal(retries.length, 3, "three retries were logged");
    const lifetime1 = Date.parse(s1.not_after) - Date.parse(s1.not_before);
    for (const l of retries) {
      assert.equal(l.level, "warn");
      assert.equal(l.kind, "network", `a network failure: ${JSON.stringify(l)}`);
      assert.equal(normSerial(String(l.serial)), normSerial(s1.serial));
      assert.ok(Date.parse(l.time) >= renewAt1 && Date.parse(l.time) < restartedAt, `retry logged during the outage: ${l.time}`);
      assert.ok(
        typeof l.retry_in_ms === "number" && l.retry_in_ms > 0 && l.retry_in_ms <= lifetime1 / 10,
        `backoff within lifetime/10: ${l.retry_in_ms}`,
      );
    }
    assert.deepEqual(
      retries.map((l) => l.attempt),
      [1, 2, 3],
      "attempts counted up",
    );
    assert.ok(stoppedAt < renewAt1, "the server was down before the renewal was due");
    assert.equal(all.filter((l) => l.level === "error").length, 0, `no errors logged:\n${lines.join("")}`);
    assert.equal(named("renew hook succeeded").length, 2);

    // Hook: ran twice, after each commit, with the new certificate in place; serials differ.
    const hooked = hookLines().map((l) => {
      const [who, serial] = l.split(" ");
      assert.equal(who, id, "FLEETPKI_DEVICE_ID");
      return normSerial(serial!);
    });
    assert.deepEqual(hooked, [normSerial(s1.serial), normSerial(s2.serial)]);
    assert.equal(new Set([s0.serial, s1.serial, s2.serial]).size, 3, "three different certificates");
    assert.equal(normSerial(String(renewedLines[1]!.serial)), normSerial(s2.serial));
    assert.ok(Date.parse(s2.not_after) > Date.parse(s1.not_after));
    assert.equal(s2.expired, false);
    await opensslVerify(["-CAfile", join(A, "ca.pem"), "-untrusted", join(A, "chain.pem"), join(A, "cert.pem")]);

    controller.abort();
    await running;
    assert.equal(failure, undefined);
    assert.ok(named("agent stopped").length === 1);
    assertAgentDir(A, id, server, fingerprint);
    assert.ok(!lines.join("").includes("PRIVATE KEY"), "no key material in the logs");
    t.diagnostic(`retries after ${retries.map((l) => `${l.retry_in_ms} ms`).join(", ")} on the agent's clock`);
  });

  it("agent run as a process: renews with the hook, retries while the server is down, stops on SIGTERM", async (t) => {
    const started = Date.now();
    const dir = await initFleet("short");
    // Due at once: 30 s of validity and notBefore backdated by a minute put 2/3 of the lifetime at
    // the issuance (+-4.5 s of jitter), so each certificate renews within seconds of the last.
    setConfig(dir, ["validity", "device"], "30s");
    let server = await startServer(dir);
    servers.push(server);
    const port = server.port;
    const fingerprint = fingerprintOfPemFile(join(dir, "ca", "root", "cert.pem"));
    const id = "robot-0001";
    const token = await addDevice(dir, id);
    const A = join(tmp, "run-agent");
    await fleetpkiOk([
      "agent",
      "enroll",
      "--server",
      server.url,
      "--root-fingerprint",
      fingerprint,
      "--id",
      id,
      "--token",
      token,
      "--dir",
      A,
    ]);
    assertAgentDir(A, id, server, fingerprint);
    const s0 = await status(A);
    const span0 = Date.parse(s0.not_after) - Date.parse(s0.not_before);
    assert.ok(span0 >= 90 * SECOND && span0 <= 91 * SECOND, `validity.device 30s is in effect (${span0} ms in all)`);

    // The server is down when the agent starts: its first attempts fail on the network.
    const stoppedAt = Date.now();
    const stopped = await server.stop();
    assert.equal(stopped.code, 0, `serve exits 0 on SIGTERM: ${server.proc.stderr()}`);
    const hookFile = join(tmp, "hook.log");
    const hook = `printf '%s %s\\n' "$FLEETPKI_DEVICE_ID" "$(openssl x509 -in "$FLEETPKI_CERT" -noout -serial)" >> "$HOOK_FILE"`;
    const agent = spawnCli("agent run", ["agent", "run", "--dir", A, "--on-renew", hook], { env: { HOOK_FILE: hookFile } });
    const hookLines = (): string[] => (existsSync(hookFile) ? readFileSync(hookFile, "utf8").split("\n").filter(Boolean) : []);
    const logs = (): LogLine[] => logLines(agent.stderr());
    const stillRunning = () => {
      if (!agent.running()) throw new Error(`agent run exited early:\n${agent.stderr()}`);
    };
    await waitFor(
      "a failed renewal attempt while the server is down",
      () => (stillRunning(), logs().some((l) => l.msg === "renewal failed; retrying")),
      60 * SECOND,
      50,
    );
    assert.equal(hookLines().length, 0, "no renewal while the server is down");
    const restartAt = Date.now();
    server = await startServer(dir, port);
    servers.push(server);
    const restartedAt = Date.now();
    // Stopped while it sleeps until its next renewal: a renewal in flight keeps its key for the retry.
    await waitFor(
      "two renewals with their hooks, then a sleep of 2 s or more",
      () => {
        stillRunning();
        const last = logs().at(-1);
        return hookLines().length >= 2 && last?.msg === "renewal scheduled" && Number(last.in_ms) >= 2 * SECOND;
      },
      90 * SECOND,
      50,
    );

    // SIGTERM: the agent stops cleanly, releases its lock and leaves only its five files.
    const exit = await agent.stop("SIGTERM", 15_000);
    assert.equal(exit.code, 0, `agent run exits 0 on SIGTERM (got ${exit.code ?? exit.signal}):\n${agent.stderr()}`);
    const all = logs();
    assert.ok(all.some((l) => l.msg === "agent stopped"));
    assertAgentDir(A, id, server, fingerprint);
    assert.ok(!agent.stderr().includes("PRIVATE KEY"), "no key material in the logs");
    assert.equal(all.filter((l) => l.level === "error").length, 0, `no errors logged:\n${agent.stderr()}`);

    const renewedLines = all.filter((l) => l.msg === "renewed");
    assert.ok(renewedLines.length >= 2, "renewed at least twice");
    assert.ok(Date.parse(renewedLines[0]!.time) >= restartAt, "the first renewal happened after the restart");
    assert.equal(normSerial(String(renewedLines[0]!.previous_serial)), normSerial(s0.serial));
    const retries = all.filter((l) => l.msg === "renewal failed; retrying");
    for (const l of retries) {
      assert.equal(l.level, "warn");
      assert.equal(l.kind, "network", `a network failure: ${JSON.stringify(l)}`);
      assert.equal(normSerial(String(l.serial)), normSerial(s0.serial));
      assert.ok(
        Date.parse(l.time) >= stoppedAt && Date.parse(l.time) <= restartedAt + 5 * SECOND,
        `retry logged during the outage: ${l.time}`,
      );
      assert.ok(typeof l.retry_in_ms === "number" && l.retry_in_ms > 0 && l.retry_in_ms <= span0 / 10, `backoff within lifetime/10`);
    }
    assert.deepEqual(
      retries.map((l) => l.attempt),
      retries.map((_, i) => i + 1),
      "attempts counted up",
    );
    // Hook: after each renewal, with that renewal's certificate in place; serials differ.
    const hooked = hookLines().map((l) => {
      const [who, serial] = l.split(" ");
      assert.equal(who, id, "FLEETPKI_DEVICE_ID");
      return normSerial(serial!);
    });
    assert.deepEqual(
      hooked,
      renewedLines.map((l) => normSerial(String(l.serial))),
      "one hook per renewal, in order",
    );
    assert.equal(new Set([normSerial(s0.serial), ...hooked]).size, hooked.length + 1, "a new certificate each time");
    assert.equal(all.filter((l) => l.msg === "renew hook succeeded").length, hooked.length);
    const s2 = await status(A);
    assert.equal(normSerial(s2.serial), normSerial(String(renewedLines.at(-1)!.serial)), "cert.pem is the last renewal");
    await opensslVerify(["-CAfile", join(A, "ca.pem"), "-untrusted", join(A, "chain.pem"), join(A, "cert.pem")]);
    t.diagnostic(`${retries.length} retries, ${renewedLines.length} renewals; test took ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });

  // ---- 1 ------------------------------------------------------------------------------------
  it("refuses a wrong --root-fingerprint with one line, a non-zero exit and nothing written", { timeout: 180_000 }, async () => {
    const f = await main();
    const id = "robot-0300";
    const token = await addDevice(f.dir, id);
    const devicesCa = fingerprintOfPemFile(join(f.dir, "ca", "devices", "cert.pem"));
    const real = f.fingerprint.slice("sha256:".length);
    const flipped = `sha256:${real.slice(0, -1)}${real.endsWith("0") ? "1" : "0"}`;
    const cases: [string, string][] = [
      ["all zeros", `sha256:${"0".repeat(64)}`],
      ["one hex digit off", flipped],
      // Offered by the server in cacerts, but not a root: must not become the trust anchor.
      ["the devices CA", devicesCa],
    ];
    await Promise.all(
      cases.map(async ([what, fp], i) => {
        const dir = join(tmp, `wrong-fp-${i}`);
        const r = await fleetpki([
          "agent",
          "enroll",
          "--server",
          f.server.url,
          "--root-fingerprint",
          fp,
          "--id",
          id,
          "--token",
          token,
          "--dir",
          dir,
        ]);
        assert.notEqual(r.code, 0, `${what}: exit code`);
        assert.equal(r.stdout, "", `${what}: nothing on stdout`);
        const lines = r.stderr.trimEnd().split("\n");
        assert.equal(lines.length, 1, `${what}: exactly one line on stderr:\n${r.stderr}`);
        assert.match(lines[0]!, /^fleetpki: .*fingerprint/i, `${what}: ${lines[0]}`);
        assert.doesNotMatch(lines[0]!, /--debug|at .*\.ts:\d+/, `${what}: an expected error, no stack`);
        assert.ok(!existsSync(dir), `${what}: ${dir} was not created`);
      }),
    );
    // Nothing was sent with the token: it still works with the right fingerprint.
    const good = join(tmp, "wrong-fp-then-right");
    await fleetpkiOk([
      "agent",
      "enroll",
      "--server",
      f.server.url,
      "--root-fingerprint",
      f.fingerprint,
      "--id",
      id,
      "--token",
      token,
      "--dir",
      good,
    ]);
    assertAgentDir(good, id, f.server, f.fingerprint);
  });

  // ---- 2 ------------------------------------------------------------------------------------
  it("enrolls with a token; the files work as they are with openssl and curl", { timeout: 180_000 }, async () => {
    const f = await main();
    const id = "robot-0001";
    const token = await addDevice(f.dir, id);
    const A = join(tmp, "token-agent");
    const r = await fleetpkiOk(enrollArgs(f, id, A, "--token", token));
    assert.match(r.stdout, new RegExp(`enrolled ${id} as ${spiffe(id)}`));
    assertAgentDir(A, id, f.server, f.fingerprint);
    const leaf = cert(join(A, "cert.pem"));
    const devicesCa = cert(join(f.dir, "ca", "devices", "cert.pem"));
    assert.ok(leaf.checkIssued(devicesCa) && leaf.verify(devicesCa.publicKey), "issued by the devices CA");
    assert.ok(cert(join(A, "chain.pem")).raw.equals(devicesCa.raw), "chain.pem is the devices CA");

    // The token was one-time.
    const again = await fleetpki(enrollArgs(f, id, join(tmp, "token-agent-again"), "--token", token));
    assert.notEqual(again.code, 0, "a used token is refused");
    assert.ok(!existsSync(join(tmp, "token-agent-again")));

    await opensslVerify(["-CAfile", join(A, "ca.pem"), "-untrusted", join(A, "chain.pem"), join(A, "cert.pem")]);

    // agent status: identity and next renewal (2/3 of the lifetime, +-5%).
    const s = await status(A);
    assert.equal(s.device_id, id);
    assert.equal(s.identity, spiffe(id));
    assert.equal(s.server, f.server.url);
    assert.equal(s.root_fingerprint, f.fingerprint);
    assert.equal(normSerial(s.serial), normSerial(leaf.serialNumber));
    assert.equal(s.key_type, "p256");
    assert.equal(s.not_after, new Date(leaf.validTo).toISOString());
    assert.equal(s.expired, false);
    assert.equal(s.renewal_due, false);
    assert.equal(s.update_pending, false);
    const nb = Date.parse(s.not_before);
    const na = Date.parse(s.not_after);
    const renewAt = Date.parse(s.renew_at);
    assert.ok(
      Math.abs(renewAt - (nb + ((na - nb) * 2) / 3)) < 2 * SECOND,
      `renew_at ${s.renew_at} is at 2/3 of ${s.not_before}..${s.not_after}`,
    );
    assert.ok(Date.parse(s.renew_window.from) < renewAt && renewAt < Date.parse(s.renew_window.to));
    const human = await fleetpkiOk(["agent", "status", "--dir", A]);
    assert.match(human.stdout, new RegExp(`identity:\\s+${spiffe(id)}`));
    assert.match(human.stdout, /renews at:\s+\d{4}-/);

    // openssl s_client with the agent's files: the server verifies against ca.pem.
    const sc = await run("openssl", [
      "s_client",
      "-connect",
      `127.0.0.1:${f.server.port}`,
      "-cert",
      join(A, "cert.pem"),
      "-key",
      join(A, "key.pem"),
      "-CAfile",
      join(A, "ca.pem"),
      "-verify_return_error",
    ]);
    assert.equal(sc.code, 0, `openssl s_client: ${sc.stderr}`);
    assert.match(sc.stdout, /Verify return code: 0 \(ok\)/);

    // The robot serving TLS with the same files (as foxglove_bridge's certfile/keyfile): curl,
    // trusting only ca.pem, accepts the robot's DNS name and refuses any other.
    const robotService = createHttpsServer(
      {
        cert: readFileSync(join(A, "cert.pem"), "utf8") + readFileSync(join(A, "chain.pem"), "utf8"),
        key: readFileSync(join(A, "key.pem")),
      },
      (_req, res) => res.end("robot ok\n"),
    );
    await new Promise<void>((resolve) => robotService.listen(0, "127.0.0.1", resolve));
    try {
      const port = (robotService.address() as AddressInfo).port;
      const robotUrl = (host: string) => [
        "-sS",
        "--cacert",
        join(A, "ca.pem"),
        "--resolve",
        `${host}:${port}:127.0.0.1`,
        `https://${host}:${port}/`,
      ];
      const served = await run("curl", robotUrl(`${id}.devices.${DOMAIN}`));
      assert.equal(served.code, 0, served.stderr);
      assert.equal(served.stdout, "robot ok\n");
      const wrongName = await run("curl", robotUrl(`robot-9999.devices.${DOMAIN}`));
      assert.equal(wrongName.code, 60, `another robot's name is refused: ${wrongName.stderr}`);
    } finally {
      await new Promise((resolve) => robotService.close(resolve));
    }

    // curl with cert.pem/key.pem/ca.pem as they are: the server takes the certificate as the
    // device's identity and renews it (a CSR for a key made by openssl).
    const curlDir = mkdtempSync(join(tmp, "curl-"));
    const { key: csrKey, csr: csrFile } = opensslCsr(curlDir, id);
    const body = join(tmp, "curl-body.json");
    writeFileSync(body, JSON.stringify({ csr: readFileSync(csrFile, "utf8") }));
    const curl = (extra: string[], out: string) =>
      run("curl", [
        "-sS",
        "-o",
        out,
        "-w",
        "%{http_code}",
        "--cacert",
        join(A, "ca.pem"),
        ...extra,
        "-H",
        "content-type: application/json",
        "--data-binary",
        `@${body}`,
        `${f.server.url}/api/v1/renew`,
      ]);
    const withCert = await curl(["--cert", join(A, "cert.pem"), "--key", join(A, "key.pem")], join(tmp, "curl-renew.json"));
    assert.equal(withCert.code, 0, withCert.stderr);
    assert.equal(withCert.stdout, "200", readFileSync(join(tmp, "curl-renew.json"), "utf8"));
    const renewed = JSON.parse(readFileSync(join(tmp, "curl-renew.json"), "utf8")) as { certificate: string; serial: string };
    const renewedCert = new X509Certificate(renewed.certificate);
    assert.equal(
      renewedCert.subjectAltName,
      `URI:${spiffe(id)}, DNS:${id}.devices.${DOMAIN}`,
      "curl got a certificate for the same identity",
    );
    assert.ok(
      renewedCert.publicKey
        .export({ type: "spki", format: "der" })
        .equals(createPublicKey(readFileSync(csrKey)).export({ type: "spki", format: "der" })),
    );
    assert.notEqual(normSerial(renewed.serial), normSerial(leaf.serialNumber));
    // ...and it is the client certificate that made the difference.
    const without = await curl([], join(tmp, "curl-nocert.json"));
    assert.equal(without.stdout, "401", readFileSync(join(tmp, "curl-nocert.json"), "utf8"));
  });

  // ---- 4 ------------------------------------------------------------------------------------
  it("enrolls with a factory bundle and gets a devices-CA certificate", { timeout: 180_000 }, async (t) => {
    const f = await main();
    const id = "robot-0100";
    // The local CA is made while the server is running, as a factory would.
    await fleetpkiOk(["ca", "create-local", "--name", "f1", "--dir", f.dir]);
    const B = join(tmp, "factory-bundles");
    await fleetpkiOk(["ca", "issue-batch", "--local", "f1", "--ids", "robot-0100..robot-0101", "--out", B, "--dir", f.dir]);
    const bundle = join(B, id);
    const before = Object.fromEntries(readdirSync(bundle).map((n) => [n, readFileSync(join(bundle, n), "utf8")]));
    assert.deepEqual(Object.keys(before).sort(), ["ca.pem", "cert.pem", "chain.pem", "key.pem"]);
    const localCa = cert(join(f.dir, "ca", "local-f1", "cert.pem"));
    const devicesCa = cert(join(f.dir, "ca", "devices", "cert.pem"));
    assert.ok(cert(join(bundle, "cert.pem")).checkIssued(localCa), "the factory certificate comes from the local CA");

    // A bundle for another id is refused before anything is sent or written.
    const wrongId = join(tmp, "factory-wrong-id");
    const bad = await fleetpki(enrollArgs(f, "robot-0101", wrongId, "--factory-dir", bundle));
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /^fleetpki: .*robot-0100.*robot-0101|^fleetpki: .*robot-0101.*robot-0100/);
    assert.ok(!existsSync(wrongId));

    const C = join(tmp, "factory-agent");
    const r = await fleetpkiOk(enrollArgs(f, id, C, "--factory-dir", bundle));
    assert.match(r.stdout, new RegExp(`enrolled ${id}`));
    assertAgentDir(C, id, f.server, f.fingerprint);
    const leaf = cert(join(C, "cert.pem"));
    assert.ok(leaf.checkIssued(devicesCa) && leaf.verify(devicesCa.publicKey), "issued by the devices CA");
    assert.ok(!leaf.checkIssued(localCa), "not issued by the local CA");
    assert.equal(leaf.issuer, devicesCa.subject);
    assert.ok(cert(join(C, "chain.pem")).raw.equals(devicesCa.raw), "chain.pem is the devices CA");
    await opensslVerify(["-CAfile", join(C, "ca.pem"), "-untrusted", join(f.dir, "ca", "devices", "cert.pem"), join(C, "cert.pem")]);
    // The device made a new key; the factory bundle is left as it was.
    assert.ok(
      !leaf.publicKey
        .export({ type: "spki", format: "der" })
        .equals(cert(join(bundle, "cert.pem")).publicKey.export({ type: "spki", format: "der" })),
    );
    for (const [n, text] of Object.entries(before))
      assert.equal(readFileSync(join(bundle, n), "utf8"), text, `${n} of the bundle unchanged`);

    // Known server bug (src/server.ts registrationTls): the TLS trust list of local CAs is read
    // once at startup, so a device presenting only its factory leaf (no chain) is refused with
    // 401 UNABLE_TO_VERIFY_LEAF_SIGNATURE until the server restarts. The agent always sends
    // the chain, which is why the enrollment above works.
    await t.test("a factory leaf without its chain enrolls against a server started before the local CA", async () => {
      const other = join(B, "robot-0101");
      const { csr } = opensslCsr(tmp, "robot-0101");
      const body = join(tmp, "factory-leaf-body.json");
      writeFileSync(body, JSON.stringify({ device_id: "robot-0101", csr: readFileSync(csr, "utf8") }));
      const out = join(tmp, "factory-leaf-answer.json");
      const r = await run("curl", [
        "-sS",
        "-o",
        out,
        "-w",
        "%{http_code}",
        "--cacert",
        join(other, "ca.pem"),
        "--cert",
        join(other, "cert.pem"),
        "--key",
        join(other, "key.pem"),
        "-H",
        "content-type: application/json",
        "--data-binary",
        `@${body}`,
        `${f.server.url}/api/v1/enroll`,
      ]);
      assert.equal(r.stdout, "200", existsSync(out) ? readFileSync(out, "utf8") : r.stderr);
    });
  });

  // ---- 5 ------------------------------------------------------------------------------------
  it("enrolls by operator approval: pending, approve, certificate", { timeout: 180_000 }, async () => {
    const f = await main();
    const id = "robot-0200";
    const E = join(tmp, "approval-agent");
    const agent = spawnCli(`agent enroll ${id}`, enrollArgs(f, id, E, "--approval", "--wait", "150s", "--log-level", "info"));
    const request = await pendingRequest(f.dir, id);
    assert.match(request.source ?? "", /127\.0\.0\.1/);
    await waitFor(
      "the agent to log that it is pending",
      () => logLines(agent.stderr()).some((l) => l.msg === "enrollment pending approval"),
      15_000,
    );
    assert.ok(agent.running(), "the agent waits for the decision");
    assert.deepEqual(readdirSync(E), [`pending-${id}.key.pem`], "while pending, only the request's key is kept");
    assert.equal(mode(E), 0o700);
    assert.equal(mode(join(E, `pending-${id}.key.pem`)), 0o600);
    // The agent prints its key's fingerprint (at the default level too) for the operator to
    // compare with the one `device requests` lists; it is the SPKI of the kept key.
    const waiting = logLines(agent.stderr()).find((l) => l.msg.startsWith("waiting for an operator to approve this key"));
    assert.ok(waiting, agent.stderr());
    assert.equal(waiting.level, "warn");
    const keptSpki = createPublicKey(createPrivateKey(readFileSync(join(E, `pending-${id}.key.pem`), "utf8"))).export({
      type: "spki",
      format: "der",
    });
    assert.equal(waiting.key_fingerprint, `sha256:${createHash("sha256").update(keptSpki).digest("hex")}`);
    assert.equal(waiting.key_fingerprint, request.keyFingerprint, "the agent and `device requests` show the same fingerprint");
    assert.equal(waiting.request_id, request.id);
    assert.equal(waiting.approve_with, `fleetpki device approve ${id} --fingerprint ${request.keyFingerprint}`);

    await fleetpkiOk(["device", "approve", id, "--fingerprint", String(waiting.key_fingerprint), "--dir", f.dir]);
    const exit = await agent.exited;
    assert.equal(exit.code, 0, `agent enroll --approval: ${agent.stderr()}`);
    assert.match(agent.stdout(), new RegExp(`enrolled ${id} as ${spiffe(id)}`));
    assertAgentDir(E, id, f.server, f.fingerprint);
    await opensslVerify(["-CAfile", join(E, "ca.pem"), "-untrusted", join(E, "chain.pem"), join(E, "cert.pem")]);
    const shown = JSON.parse((await fleetpkiOk(["device", "show", id, "--json", "--dir", f.dir])).stdout) as {
      status: string;
      certificates: { serial: string }[];
    };
    assert.equal(shown.status, "active", "approval registered the device");
    assert.ok(
      shown.certificates.some((c) => normSerial(c.serial) === normSerial(cert(join(E, "cert.pem")).serialNumber)),
      "the server recorded the agent's certificate",
    );
  });

  it("enrollment by approval: deny ends the agent with a clear error and nothing written", { timeout: 180_000 }, async () => {
    const f = await main();
    const id = "robot-0201";
    const E = join(tmp, "denied-agent");
    const agent = spawnCli(`agent enroll ${id}`, enrollArgs(f, id, E, "--approval", "--wait", "150s"));
    await pendingRequest(f.dir, id);
    assert.ok(agent.running());
    await fleetpkiOk(["device", "deny", id, "--dir", f.dir]);
    const exit = await agent.exited;
    assert.notEqual(exit.code, 0, "agent enroll exits non-zero after a denial");
    assert.equal(agent.stdout(), "");
    const lines = agent.stderr().trimEnd().split("\n");
    assert.equal(lines.length, 2, `at log level warn: the key fingerprint to compare while waiting, then the error:\n${agent.stderr()}`);
    assert.match(JSON.parse(lines[0]!).key_fingerprint, /^sha256:[0-9a-f]{64}$/);
    assert.match(lines[1]!, /^fleetpki: enrollment refused: .*denied/);
    assert.ok(!existsSync(E), "nothing left after a denial (the pending key is removed with the directory it needed)");
  });

  it(
    "enrollment by approval survives an agent restart: approved later, the next run gets the certificate for the same key",
    { timeout: 180_000 },
    async () => {
      const f = await main();
      const id = "robot-0202";
      const E = join(tmp, "restarted-approval-agent");
      // The first run gives up while still pending (as after a reboot, or a short --wait).
      const first = await fleetpki(enrollArgs(f, id, E, "--approval", "--wait", "2s"));
      assert.notEqual(first.code, 0);
      assert.match(first.stderr, /still pending approval/);
      const keptKey = createPrivateKey(readFileSync(join(E, `pending-${id}.key.pem`), "utf8"));
      // The operator approves the key the robot printed, never the device id alone.
      const fingerprintOfKey = (k: ReturnType<typeof createPrivateKey>) =>
        `sha256:${createHash("sha256")
          .update(createPublicKey(k).export({ format: "der", type: "spki" }))
          .digest("hex")}`;
      assert.ok(first.stderr.includes(fingerprintOfKey(keptKey)), first.stderr);
      await fleetpkiOk(["device", "approve", id, "--fingerprint", fingerprintOfKey(keptKey), "--dir", f.dir]);

      const second = await fleetpki(enrollArgs(f, id, E, "--approval", "--wait", "60s"));
      assert.equal(second.code, 0, second.stderr);
      assertAgentDir(E, id, f.server, f.fingerprint);
      const issuedKey = cert(join(E, "cert.pem")).publicKey.export({ format: "der", type: "spki" });
      assert.deepEqual(
        issuedKey,
        createPublicKey(keptKey).export({ format: "der", type: "spki" }),
        "the certificate is for the key of the approved request",
      );
      assert.deepEqual(
        createPublicKey(createPrivateKey(readFileSync(join(E, "key.pem"), "utf8"))).export({ format: "der", type: "spki" }),
        issuedKey,
      );
    },
  );
  // ---- 6 ------------------------------------------------------------------------------------
  // The server renews a certificate once and re-delivers that renewal to the same key only. Here
  // the server commits each renewal but its answer never reaches the agent (a proxy cuts the
  // connection once the renewal is in the database), or the agent crashes around the request;
  // the agent (in this process, on a shifted clock) must end with the certificate the server
  // recorded, never with "must re-enroll".
  it("a lost renewal answer or a crash is retried with the kept key and gets the recorded certificate", { timeout: 240_000 }, async () => {
    const dir = await initFleet("lost-answer");
    // Short-lived, so that the server accepts the after-expiry exchange at once (it allows a
    // device clock 5 minutes ahead) while the certificates still hold for mTLS in real time.
    setConfig(dir, ["validity", "device"], "4m");
    const server = await startServer(dir);
    servers.push(server);
    const db = new Database(join(dir, "fleetpki.db"), { readonly: true, fileMustExist: true });
    const renewals = db.prepare<[string], { serial: string }>("select serial from renewals where renewed_serial = ?");
    const renewalOf = (serial: string): string | undefined => renewals.get(serial)?.serial;
    const proxy = await lossyProxy(server.port, renewalOf);
    try {
      const fingerprint = fingerprintOfPemFile(join(dir, "ca", "root", "cert.pem"));
      const id = "robot-0500";
      const A = join(tmp, "lost-answer-agent");
      const token = await addDevice(dir, id);
      // In this process: one CLI start fewer on a busy machine (`agent enroll` is shown above).
      await enroll({ server: proxy.url, rootFingerprint: fingerprint, deviceId: id, mode: { kind: "token", token }, dir: A });
      const keptFile = (serial: string) => join(A, `renewal-${serial}.key.pem`);
      const spkiOf = (pem: string | Buffer) => createPublicKey(pem).export({ type: "spki", format: "der" }).toString("hex");
      const lines: string[] = [];
      const log = createLogger({ level: "debug", write: (l) => void lines.push(l) });
      const crashAt = (step: string) => (s: string) => {
        if (s === step) throw new Error(`crash at ${step}`);
      };
      const recorded: string[] = [];

      // 1. Over mTLS, in the run loop: the answer is lost, the loop backs off and retries.
      let s = loadState(A);
      proxy.loseAnswerToRenewalOf(s.serial);
      const due = shiftedClock(s.notBefore.getTime() + ((s.notAfter.getTime() - s.notBefore.getTime()) * 2) / 3 - Date.now() + 1);
      const controller = new AbortController();
      const renewed: string[] = [];
      const onRenewed = (r: { serial: string }) => {
        renewed.push(r.serial);
        controller.abort();
      };
      await runAgent({ dir: A, clock: due, random: () => 0.5, log, signal: controller.signal, onRenewed });
      assert.equal(proxy.cuts, 1, "the answer was lost once");
      const failed = lines.map((l) => JSON.parse(l) as LogLine).filter((l) => l.msg === "renewal failed; retrying");
      assert.deepEqual(
        failed.map((l) => l.kind),
        ["network"],
        "one network failure, then success",
      );
      assert.ok(renewalOf(s.serial), "the server had committed the renewal");
      assert.deepEqual(renewed, [renewalOf(s.serial)], "the retry got the certificate the server recorded");
      recorded.push(renewalOf(s.serial)!);

      // 2. After expiry (challenge and proof): the answer is lost; the retry (a new challenge, the same key) gets it.
      s = loadState(A);
      assert.equal(s.serial, recorded[0]);
      const expired = shiftedClock(s.notAfter.getTime() + 60 * SECOND - Date.now());
      proxy.loseAnswerToRenewalOf(s.serial);
      await assert.rejects(renew(s, { clock: expired, log }), (e: Error) => e instanceof TransportError);
      assert.equal(proxy.cuts, 2);
      assert.ok(renewalOf(s.serial), "committed");
      assert.equal(mode(keptFile(s.serial)), 0o600, "the key is kept for the retry");
      const r2 = await renew(loadState(A), { clock: expired, log });
      assert.equal(r2.afterExpiry, true);
      assert.equal(r2.serial, renewalOf(s.serial));
      recorded.push(r2.serial);

      // 3. Lost over mTLS, fetched again after expiry.
      s = loadState(A);
      proxy.loseAnswerToRenewalOf(s.serial);
      await assert.rejects(renew(s, { log }), (e: Error) => e instanceof TransportError);
      assert.ok(renewalOf(s.serial), "committed");
      const r3 = await renew(loadState(A), { clock: shiftedClock(s.notAfter.getTime() + SECOND - Date.now()), log });
      assert.equal(r3.afterExpiry, true);
      assert.equal(r3.serial, renewalOf(s.serial));
      recorded.push(r3.serial);

      // 4. A crash between keeping the key and sending: nothing reached the server; the next run sends that key.
      s = loadState(A);
      await assert.rejects(renew(s, { log, onStep: crashAt("key kept") }), /crash at key kept/);
      assert.equal(renewalOf(s.serial), undefined, "nothing was sent");
      const keptKey = readFileSync(keptFile(s.serial), "utf8");
      recoverState(A);
      const r4 = await renew(loadState(A), { log });
      assert.equal(r4.serial, renewalOf(s.serial));
      assert.equal(spkiOf(readFileSync(join(A, "cert.pem"))), spkiOf(keptKey), "certified for the kept key");
      recorded.push(r4.serial);

      // 5. A crash after the answer, before the agent's commit point: the old pair stays; the retry gets the recorded one.
      s = loadState(A);
      await assert.rejects(renew(s, { log, commit: { onStep: crashAt("staged cert.pem") } }), /crash at staged cert\.pem/);
      assert.equal(recoverState(A), "rolled-back");
      assert.equal(loadState(A).serial, s.serial);
      assert.ok(renewalOf(s.serial), "committed by the server");
      const r5 = await renew(loadState(A), { log });
      assert.equal(r5.serial, renewalOf(s.serial));
      recorded.push(r5.serial);

      // The server renewed each certificate once; the four retries after a commit were re-deliveries.
      const count = (sql: string, ...args: string[]) => db.prepare<string[], { n: number }>(sql).get(...args)!.n;
      assert.equal(count("select count(*) as n from renewals where device_id = ?", id), 5);
      assert.equal(count("select count(*) as n from audit_log where action = 'certificate.redeliver' and subject = ?", `device:${id}`), 4);
      assert.equal(new Set(recorded).size, 5);
      assert.ok(!lines.some((l) => /re-enroll/.test(l)), "never 'must re-enroll'");
      assert.ok(!lines.join("\n").includes("PRIVATE KEY"), "no key material in the logs");
      assertAgentDir(A, id, { ...server, url: proxy.url }, fingerprint); // the five files, no kept key left
      assert.equal(normSerial(cert(join(A, "cert.pem")).serialNumber), normSerial(recorded[4]!));
      await opensslVerify(["-CAfile", join(A, "ca.pem"), "-untrusted", join(A, "chain.pem"), join(A, "cert.pem")]);
    } finally {
      db.close();
      await proxy.close();
    }
  });
});

/**
 * The agent's clock in the schedule test: it starts at the real time and moves only when the test
 * moves it. A sleep ends when the clock reaches its end (or its signal aborts), never by itself,
 * so the agent takes each step when the test says and waits meanwhile.
 */
class SteppedClock implements Clock {
  private t = Date.now();
  private readonly sleepers = new Set<{ until: number; wake: () => void }>();

  now(): number {
    return this.t;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const sleeper = {
        until: this.t + ms,
        wake: () => {
          this.sleepers.delete(sleeper);
          signal?.removeEventListener("abort", sleeper.wake);
          resolve();
        },
      };
      this.sleepers.add(sleeper);
      signal?.addEventListener("abort", sleeper.wake, { once: true });
    });
  }

  /** True while the agent waits on this clock. */
  sleeping(): boolean {
    return this.sleepers.size > 0;
  }

  /** Moves the clock forward to `at` (ms since the epoch) and ends the sleeps due by then. */
  advanceTo(at: number): void {
    this.t = Math.max(this.t, at);
    for (const s of [...this.sleepers]) if (s.until <= this.t) s.wake();
  }

  advance(ms: number): void {
    this.advanceTo(this.t + ms);
  }

  /** Steps back to the real time (while nothing sleeps on it). */
  backToRealTime(): void {
    assert.ok(!this.sleeping(), "no sleep spans a step back");
    this.t = Date.now();
  }
}

/** The agent's clock in the lost-answer test: real time shifted by `offset`; sleeping moves the offset instead of waiting. */
function shiftedClock(offset: number): Clock {
  return {
    now: () => Date.now() + offset,
    sleep: async (ms: number, signal?: AbortSignal) => {
      if (signal?.aborted) return;
      offset += ms;
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}

interface LossyProxy {
  url: string;
  /** Connections cut so far. */
  cuts: number;
  loseAnswerToRenewalOf(serial: string): void;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of the registration server (TLS passes through it untouched) that can lose
 * one renewal answer. Armed with a serial, it cuts the connection at the first server-to-client
 * chunk that arrives once the server has recorded the renewal of that serial. The server records
 * before it answers, so the answer never reaches the agent, and nothing before the commit is cut:
 * decided by the database, not by timing.
 */
async function lossyProxy(targetPort: number, renewalOf: (serial: string) => string | undefined): Promise<LossyProxy> {
  const sockets = new Set<Socket>();
  let armed: string | undefined;
  const server = createTcpServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    const cut = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("data", (chunk: Buffer) => upstream.write(chunk));
    upstream.on("data", (chunk: Buffer) => {
      if (armed !== undefined && renewalOf(armed) !== undefined) {
        armed = undefined;
        proxy.cuts++;
        cut();
      } else client.write(chunk);
    });
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", cut);
      socket.on("close", () => {
        sockets.delete(socket);
        cut();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const proxy: LossyProxy = {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cuts: 0,
    loseAnswerToRenewalOf: (serial) => void (armed = serial),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  return proxy;
}
