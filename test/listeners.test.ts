// Both listeners against slow and vanishing clients (issue 9, item 1.9): a raw TCP (status) or
// TLS (registration) client that sends part of a request is cut off within the configured
// header or request timeout plus a small margin (Node's own check runs only every 30 s by
// default), and a client that closes the connection mid-request is logged as a client abort,
// not as an error with status 500.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect as connectTcp, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { connect as connectTls } from "node:tls";
import pino from "pino";
import { deviceClientCas } from "../src/authority/ca/cas.js";
import { CrlPublisher } from "../src/authority/status/crls.js";
import { layout } from "../src/authority/layout.js";
import { OcspService } from "../src/authority/status/ocsp-responder.js";
import { startRegistrationServer, type RunningServer } from "../src/enroll/server.js";
import type { ListenerTimeouts } from "../src/http/http.js";
import { readPrivateKey } from "../src/keys/keys.js";
import type { Logger } from "../src/log.js";
import { startStatusServer, type RunningStatusServer } from "../src/status/server.js";
import { tempFleet } from "./helpers.js";
import { rootPemPath } from "./server-helpers.js";

/**
 * Short, so that the tests are quick. The margin allows for a loaded machine; it is far below
 * Node's default 30 s check and half of the registration listener's former 1 s one.
 */
const TIMEOUTS: ListenerTimeouts = { headersMs: 300, requestMs: 600, keepAliveMs: 300 };
const MARGIN_MS = 500;

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** A pino logger writing JSON lines into an array; next() resolves with the next line written. */
function captureLog(): { logger: Logger; lines: LogLine[]; next: () => Promise<LogLine> } {
  const lines: LogLine[] = [];
  let waiting: ((line: LogLine) => void) | undefined;
  const logger = pino(
    { level: "debug" },
    {
      write(text: string) {
        const line = JSON.parse(text) as LogLine;
        lines.push(line);
        waiting?.(line);
        waiting = undefined;
      },
    },
  );
  const next = () =>
    new Promise<LogLine>((resolve, reject) => {
      waiting = resolve;
      setTimeout(() => reject(new Error(`no log line within 10 s; so far: ${JSON.stringify(lines)}`)), 10_000).unref();
    });
  return { logger, lines, next };
}

/**
 * Sends `data` and waits for the server to close the connection, at most `limitMs`: how long it
 * took (or Infinity) and what the server sent.
 */
function closedAfter(socket: Socket, ready: string, data: string, limitMs: number): Promise<{ ms: number; received: string }> {
  return new Promise((resolve, reject) => {
    let received = "";
    let started = 0;
    const limit = setTimeout(() => {
      socket.destroy();
      resolve({ ms: Infinity, received });
    }, limitMs + 5_000);
    socket.on(ready, () => {
      started = performance.now();
      if (data) socket.write(data);
    });
    socket.on("data", (d: Buffer) => (received += d.toString("latin1")));
    socket.on("error", () => {}); // a reset after the 408 is still a close
    socket.on("close", () => {
      clearTimeout(limit);
      if (!started) reject(new Error(`closed before it was ${ready}: ${received}`));
      else resolve({ ms: performance.now() - started, received });
    });
  });
}

const PARTIAL_HEADERS = "POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request\r\n";
const PARTIAL_BODY = `${PARTIAL_HEADERS}Content-Length: 100\r\n\r\n0123456789`;

function assertCutOff(r: { ms: number; received: string }, timeoutMs: number, what: string): void {
  const held = r.ms === Infinity ? "past the limit" : `${Math.round(r.ms)} ms`;
  assert.ok(r.ms <= timeoutMs + MARGIN_MS, `${what}: the connection was held ${held}; the timeout is ${timeoutMs} ms`);
  // The 408 says it was the timeout; the server's clock may start a little before the client's.
  assert.match(r.received, /^HTTP\/1\.1 408 /, `${what}: Node answers 408 Request Timeout`);
  assert.ok(r.ms >= timeoutMs / 2, `${what}: closed after ${Math.round(r.ms)} ms, well before the ${timeoutMs} ms timeout`);
}

describe("the status listener and slow or vanishing clients", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let status: RunningStatusServer;
  let crls: CrlPublisher;
  const log = captureLog();

  before(async () => {
    f = await tempFleet();
    crls = new CrlPublisher(f.fleet);
    await crls.start();
    const ocsp = new OcspService(f.fleet);
    status = await startStatusServer({ crls, ocsp, logger: log.logger, host: "127.0.0.1", port: 0, timeouts: TIMEOUTS });
  });
  after(async () => {
    await status?.close();
    await crls?.stop();
    await f?.close();
  });

  const tcp = () => connectTcp(status.address.port, "127.0.0.1");

  it("a client that sends nothing, or only part of its headers, is cut off at the header timeout", async () => {
    const [silent, partial] = await Promise.all([
      closedAfter(tcp(), "connect", "", TIMEOUTS.headersMs),
      closedAfter(tcp(), "connect", PARTIAL_HEADERS, TIMEOUTS.headersMs),
    ]);
    assertCutOff(silent, TIMEOUTS.headersMs, "nothing sent");
    assertCutOff(partial, TIMEOUTS.headersMs, "partial headers");
  });

  it("a client that sends its headers and part of the body is cut off at the request timeout, logged as no error", async () => {
    const from = log.lines.length;
    const r = await closedAfter(tcp(), "connect", PARTIAL_BODY, TIMEOUTS.requestMs);
    assertCutOff(r, TIMEOUTS.requestMs, "partial body");
    const line = log.lines.length > from ? log.lines[from]! : await log.next();
    assert.ok(line.level < 40, `logged at level ${line.level}: ${JSON.stringify(line)}`);
    assert.match(line.msg, /did not arrive within the request timeout/);
  });

  it("a client that closes the connection mid-body: one info line saying so, no error, no 500; the listener carries on", async () => {
    const from = log.lines.length;
    const socket = tcp();
    await new Promise<void>((resolve) => socket.on("connect", resolve));
    // The handler is reading the body when the client goes.
    const logged = log.next();
    socket.write(PARTIAL_BODY);
    await new Promise((resolve) => setImmediate(resolve));
    socket.destroy();
    const line = await logged;
    assert.ok(line.level < 40, `logged at level ${line.level}: ${JSON.stringify(line)}`);
    assert.match(line.msg, /client closed the connection/);
    assert.equal(line.path, "/ocsp");
    assert.deepEqual(
      log.lines.slice(from).filter((l) => l.level >= 40),
      [],
      "no warning or error",
    );
    assert.equal((await fetch(`http://127.0.0.1:${status.address.port}/healthz`)).status, 200);
  });
});

describe("the registration listener and slow or vanishing clients", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let registration: RunningServer;
  let rootPem: string;
  const log = captureLog();

  before(async () => {
    f = await tempFleet();
    rootPem = readFileSync(rootPemPath(f.dir), "utf8");
    const key = readPrivateKey(f.fleet.path(`${layout.serverDir}/key.pem`), f.fleet.passphrase());
    const server = (name: string) => readFileSync(f.fleet.path(`${layout.serverDir}/${name}`), "utf8");
    const cert = server("cert.pem") + server("chain.pem");
    const tls = { key: key.export({ type: "pkcs8", format: "pem" }).toString(), cert, ca: await deviceClientCas(f.fleet) };
    const options = { fleet: f.fleet, logger: log.logger, tls, host: "127.0.0.1", port: 0, timeouts: TIMEOUTS };
    registration = await startRegistrationServer(options);
  });
  after(async () => {
    await registration?.close();
    await f?.close();
  });

  const tls = () => connectTls({ host: "127.0.0.1", port: registration.address.port, servername: "localhost", ca: rootPem });
  const EST_PARTIAL_HEADERS = "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pkcs10\r\n";
  const EST_PARTIAL_BODY = `${EST_PARTIAL_HEADERS}Content-Length: 100\r\n\r\nMIIB`;

  it("a TLS client that sends part of its headers, or of its body, is cut off at the header or request timeout", async () => {
    const [headers, body] = await Promise.all([
      closedAfter(tls(), "secureConnect", EST_PARTIAL_HEADERS, TIMEOUTS.headersMs),
      closedAfter(tls(), "secureConnect", EST_PARTIAL_BODY, TIMEOUTS.requestMs),
    ]);
    assertCutOff(headers, TIMEOUTS.headersMs, "partial headers");
    assertCutOff(body, TIMEOUTS.requestMs, "partial body");
  });

  it("a client that closes the connection mid-body: logged as a client abort (info, 499), not as an error with status 500", async () => {
    const from = log.lines.length;
    const socket = tls();
    await new Promise<void>((resolve) => socket.on("secureConnect", resolve));
    const logged = log.next();
    socket.write(EST_PARTIAL_BODY);
    await new Promise((resolve) => setImmediate(resolve));
    socket.destroy();
    const line = await logged;
    assert.ok(line.level < 40, `logged at level ${line.level}: ${JSON.stringify(line)}`);
    assert.equal(line.msg, "request");
    assert.equal(line.status, 499, JSON.stringify(line));
    assert.deepEqual(
      log.lines.slice(from).filter((l) => l.level >= 40),
      [],
      "no warning or error",
    );
  });
});
