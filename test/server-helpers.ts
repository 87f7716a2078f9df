// Plumbing for tests that talk to a running registration server: config edits, a server on
// 127.0.0.1:0, an https client that reports status/headers/body, async child processes,
// CSRs made by an independent implementation (@peculiar/x509 over WebCrypto) and problem checks.
import "reflect-metadata";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createPrivateKey, webcrypto, type KeyObject } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpsRequest, type RequestOptions } from "node:https";
import type { IncomingHttpHeaders } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { parse, stringify } from "yaml";
import type { Clock } from "../src/authority/clock.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import type { RunResult } from "./helpers.js";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

/** Edits <dir>/fleetpki.yaml (parse, mutate, stringify). Call before the server starts. */
export function editConfig(dir: string, mutate: (doc: Record<string, any>) => void): void {
  const file = join(dir, "fleetpki.yaml");
  const doc = parse(readFileSync(file, "utf8")) as Record<string, any>;
  mutate(doc);
  writeFileSync(file, stringify(doc));
}

export interface TestServer {
  server: FleetServer;
  port: number;
  /** https://127.0.0.1:PORT */
  url: string;
  close(): Promise<void>;
}

/**
 * Starts the registration server on 127.0.0.1 with a free port; close() is idempotent. `clock`
 * (e.g. test/support/clock.ts ManualClock) is the authority's time: tests of expiry move it.
 */
export async function startTestServer(dir: string, options: { clock?: Clock } = {}): Promise<TestServer> {
  const server = await startFleetServer({
    dir,
    registrationListen: "127.0.0.1:0",
    statusListen: "127.0.0.1:0",
    gatewayListen: "127.0.0.1:0",
    adminListen: "127.0.0.1:0",
    logger: silentLogger,
    clock: options.clock,
  });
  let closed: Promise<void> | undefined;
  return {
    server,
    port: server.registration!.port,
    url: `https://127.0.0.1:${server.registration!.port}`,
    close: () => (closed ??= server.close()),
  };
}

/** A port that was free a moment ago (listen on 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export const rootPemPath = (dir: string): string => join(dir, "ca", "root", "cert.pem");
export const devicesCaPemPath = (dir: string): string => join(dir, "ca", "devices", "cert.pem");

export interface HttpResult {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
  json: () => any;
}

export interface HttpOptions {
  method?: string;
  headers?: Record<string, string | number>;
  body?: string | Buffer;
  /** PEM trust anchor(s) for the server certificate. */
  ca: string | string[];
  /** Client certificate (PEM, leaf first, chain may follow) and key. */
  cert?: string;
  key?: string | KeyObject;
  timeoutMs?: number;
  /** Source address of the connection, e.g. 127.0.0.2 to act as another client on loopback. */
  localAddress?: string;
}

/** One HTTPS request with its own connection (no agent pooling, so client certificates never mix). */
export function https(url: string, opts: HttpOptions): Promise<HttpResult> {
  const u = new URL(url);
  const key = opts.key && typeof opts.key !== "string" ? opts.key.export({ type: "pkcs8", format: "pem" }).toString() : opts.key;
  const options: RequestOptions = {
    host: u.hostname,
    port: u.port,
    path: u.pathname + u.search,
    method: opts.method ?? "GET",
    headers: opts.headers,
    ca: opts.ca,
    cert: opts.cert,
    key,
    agent: false,
    servername: "localhost",
    timeout: opts.timeoutMs ?? 30_000,
    localAddress: opts.localAddress,
  };
  return new Promise((resolve, reject) => {
    const req = httpsRequest(options, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const body = Buffer.concat(chunks);
        const text = body.toString("utf8");
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text, json: () => JSON.parse(text) });
      });
    });
    req.on("timeout", () => req.destroy(new Error(`request to ${url} timed out`)));
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** POSTs JSON. */
export function postJson(url: string, value: unknown, opts: Omit<HttpOptions, "body" | "method">): Promise<HttpResult> {
  return https(url, {
    ...opts,
    method: "POST",
    headers: { "content-type": "application/json", ...opts.headers },
    body: JSON.stringify(value),
  });
}

/** Runs a program without blocking the event loop; `input` is written to its stdin. */
export function run(
  cmd: string,
  args: readonly string[],
  input?: string | Buffer,
  timeoutMs = 60_000,
): Promise<RunResult & { stdoutBytes: Buffer }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const stdoutBytes = Buffer.concat(out);
      resolve({
        status: code ?? (signal ? -1 : 0),
        stdout: stdoutBytes.toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        stdoutBytes,
      });
    });
    child.stdin.on("error", () => {}); // the program may exit before reading everything
    child.stdin.end(input);
  });
}

/** `openssl ...`, failing the test on a non-zero exit. */
export async function opensslOk(args: readonly string[], input?: string | Buffer): Promise<RunResult & { stdoutBytes: Buffer }> {
  const r = await run("openssl", args, input);
  assert.equal(r.status, 0, `openssl ${args.join(" ")} failed (${r.status}):\n${r.stderr}`);
  return r;
}

export interface CurlResult {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  text: string;
}

/**
 * curl with `-sS`, headers dumped to a temporary file; returns the last response's status and
 * lower-cased headers. `args` are curl arguments (URL included).
 * (`-D /dev/stderr` would be simpler, but this curl build crashes when stderr is a pipe.)
 */
export async function curl(args: readonly string[], input?: string | Buffer): Promise<CurlResult> {
  const tmp = mkdtempSync(join(tmpdir(), "fleetpki-curl-"));
  try {
    const headerFile = join(tmp, "headers");
    const r = await run("curl", ["-sS", "-D", headerFile, "-o", "-", ...args], input);
    assert.equal(r.status, 0, `curl ${args.join(" ")} failed (${r.status}):\n${r.stderr}`);
    const dump = readFileSync(headerFile, "latin1");
    // Skip interim responses (100 Continue): take the last status block.
    const blocks = dump.split(/\r?\n\r?\n/).filter((b) => /^HTTP\//.test(b.trim()));
    const last = (blocks[blocks.length - 1] ?? "").trim().split(/\r?\n/);
    const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(last[0] ?? "")?.[1] ?? 0);
    const headers: Record<string, string> = {};
    for (const line of last.slice(1)) {
      const colon = line.indexOf(":");
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    return { status, headers, body: r.stdoutBytes, text: r.stdout };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Asserts an RFC 9457 problem: status, content type, the four members, and the type's last segment. */
export function assertProblem(res: { status: number; headers: Record<string, unknown>; text: string }, status: number, type?: string): any {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`);
  assert.match(String(res.headers["content-type"]), /^application\/problem\+json/, `content type of ${res.text}`);
  const p = JSON.parse(res.text);
  assert.equal(typeof p.type, "string");
  assert.equal(typeof p.title, "string");
  assert.ok(p.title.length > 0);
  assert.equal(p.status, status);
  assert.equal(typeof p.detail, "string");
  assert.ok(p.detail.length > 0);
  if (type) assert.ok(p.type.endsWith(`/${type}`), `problem type ${p.type} should end with /${type}`);
  return p;
}

export interface ClientKey {
  /** Node KeyObject of the private key (for signing and TLS). */
  privateKey: KeyObject;
  keyPem: string;
  keys: CryptoKeyPair;
}

const P256 = { name: "ECDSA", namedCurve: "P-256" } as const;

export async function newP256Key(): Promise<ClientKey> {
  const keys = (await webcrypto.subtle.generateKey(P256, true, ["sign", "verify"])) as unknown as CryptoKeyPair;
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey as unknown as webcrypto.CryptoKey));
  const privateKey = createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" });
  return { privateKey, keyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(), keys };
}

export interface ClientCsr {
  der: Buffer;
  pem: string;
  /** The base64 DER body EST expects. */
  b64: string;
}

/** A P-256 / ECDSA-SHA256 PKCS#10 request made with @peculiar/x509 (not fleetpki code). */
export async function makeCsr(cn: string, key?: ClientKey): Promise<{ key: ClientKey; csr: ClientCsr }> {
  const k = key ?? (await newP256Key());
  const req = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${cn}`,
    keys: k.keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" } as EcdsaParams,
  });
  const der = Buffer.from(req.rawData);
  return { key: k, csr: { der, pem: req.toString("pem") + "\n", b64: der.toString("base64") } };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs fn over items with at most `limit` in flight. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
