// The device agent without a fleetpki server: fingerprints, the renewal schedule and backoff,
// the expired-renewal signature, crash-safe state, JSON logs without secrets, and the whole
// client side (TLS pinning, enroll by token / approval / factory certificate, renewal over
// mTLS and after expiry, the run loop) against a small fake registration server started here
// on 127.0.0.1 that follows docs/enrollment.md.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  X509Certificate,
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  verify,
  type KeyObject,
} from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AgentError, ReEnrollRequired } from "../src/agent/errors.js";
import { bootstrapRoot, parseServerUrl } from "../src/agent/client.js";
import type { Clock } from "../src/agent/clock.js";
import { enroll } from "../src/agent/enroll.js";
import { fingerprintOf, parseFingerprint } from "../src/agent/fingerprint.js";
import { createLogger, type Logger } from "../src/agent/log.js";
import { expiredRenewalMessage, newKeyAndCsr, signExpiredRenewal } from "../src/agent/request.js";
import { renew } from "../src/agent/renew.js";
import { runAgent } from "../src/agent/runner.js";
import { backoffCap, backoffDelay, parseDuration, renewalTime, renewalWindow } from "../src/agent/schedule.js";
import { AGENT_FILES, COMMIT_MARKER, commitState, loadState, recoverState } from "../src/agent/state.js";
import { agentStatus } from "../src/agent/status.js";
import { generateKey, privateKeyPem, publicSpki } from "../src/keys/keys.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { parseCertificate, subjectPublicKeyOf } from "../src/x509/certificate.js";
import { parseCsr } from "../src/x509/csr.js";
import { encodeName } from "../src/x509/name.js";
import { OID } from "../src/der/oids.js";
import { toPem } from "../src/x509/pem.js";
import { certsOnly, toBase64Body } from "../src/x509/pkcs7.js";
import { LeafTemplate, buildIntermediateCertificate, buildRootCertificate, type IssuingCa } from "../src/x509/profiles.js";
import { CLI, cliAsync, tempDir } from "./helpers.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const DOMAIN = "fleet.example";

// ---------------------------------------------------------------------------------------------
// A throwaway PKI: root -> services CA -> server cert (localhost, 127.0.0.1); root -> devices CA;
// root -> factory CA. And an unrelated "attacker" root with its own server cert.

interface Ca {
  issuing: IssuingCa;
  der: Buffer;
  pem: string;
  cert: X509Certificate;
}

function caFrom(der: Buffer, key: KeyObject): Ca {
  return {
    issuing: { certificate: parseCertificate(der), signer: { key, scheme: signatureSchemeFor(key) }, status: {} },
    der,
    pem: toPem("CERTIFICATE", der),
    cert: new X509Certificate(der),
  };
}

function makeRoot(name: string): Ca {
  const key = generateKey("p256");
  const spki = publicSpki(key);
  const now = Date.now();
  const issued = buildRootCertificate({
    subject: { commonName: name, organization: "Agent Test" },
    spki,
    subjectPublicKey: subjectPublicKeyOf(spki),
    signer: { key, scheme: signatureSchemeFor(key) },
    notBefore: new Date(now - HOUR),
    notAfter: new Date(now + 20 * 365 * DAY),
  });
  return caFrom(issued.der, key);
}

function makeIntermediate(root: Ca, name: string, constrain?: string): Ca {
  const key = generateKey("p256");
  const spki = publicSpki(key);
  const issued = buildIntermediateCertificate(root.issuing, {
    subject: encodeName([
      { type: OID.organizationName, value: "Agent Test" },
      { type: OID.commonName, value: name },
    ]),
    spki,
    subjectPublicKey: subjectPublicKeyOf(spki),
    now: new Date(Date.now() - HOUR),
    lifetimeMs: 10 * 365 * DAY,
    constrainToDomain: constrain,
  });
  return caFrom(issued.der, key);
}

function serverCert(ca: Ca): { keyPem: string; certPem: string } {
  const key = generateKey("p256");
  const spki = publicSpki(key);
  const issued = new LeafTemplate(ca.issuing, "server").issue("localhost", [{ dns: "localhost" }, { ip: "127.0.0.1" }], {
    spki,
    subjectPublicKey: subjectPublicKeyOf(spki),
    now: new Date(Date.now() - HOUR),
    lifetimeMs: 365 * DAY,
  });
  return { keyPem: privateKeyPem(key), certPem: toPem("CERTIFICATE", issued.der) + ca.pem };
}

function issueDevice(ca: Ca, id: string, spki: Buffer, now: number, lifetimeMs: number): { der: Buffer; pem: string; serial: string } {
  const issued = new LeafTemplate(ca.issuing, "device").issue(id, [{ uri: `spiffe://${DOMAIN}/device/${id}` }], {
    spki,
    subjectPublicKey: subjectPublicKeyOf(spki),
    now: new Date(now),
    lifetimeMs,
  });
  return { der: issued.der, pem: toPem("CERTIFICATE", issued.der), serial: issued.serialHex };
}

const root = makeRoot("Agent Test Root");
const services = makeIntermediate(root, "Services CA");
const devices = makeIntermediate(root, "Devices CA", DOMAIN);
const factoryCa = makeIntermediate(root, "Factory CA", DOMAIN);
const attackerRoot = makeRoot("Attacker Root");
const attackerServices = makeIntermediate(attackerRoot, "Attacker Services CA");
const ROOT_FP = fingerprintOf(root.der);

// ---------------------------------------------------------------------------------------------
// Fake clock: sleeping advances time at once.

class FakeClock implements Clock {
  readonly sleeps: number[] = [];
  constructor(public t: number) {}
  now(): number {
    return this.t;
  }
  async sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return;
    this.sleeps.push(ms);
    this.t += ms;
    await new Promise((r) => setImmediate(r));
  }
}

// ---------------------------------------------------------------------------------------------
// Fake registration server (docs/enrollment.md), on the fake clock.

interface Behaviour {
  lifetimeMs: number;
  tokens: Map<string, string>; // token -> device id
  /** 202 answers to give before approving an approval-mode request. */
  pendingPolls: number;
  /** Approval-mode requests to refuse with 429 first (the server's bounds are full). */
  busyPolls?: number;
  /** Statuses to answer renewals with before serving them. */
  failRenewals: number[];
  graceMs: number;
  /** Issue for a different key / identity (validation tests). */
  wrongKey?: boolean;
  wrongId?: boolean;
}

interface Fake {
  url: string;
  clock: FakeClock;
  behaviour: Behaviour;
  calls: { path: string; status: number }[];
  received: string[];
  close: () => Promise<void>;
}

function problem(res: ServerResponse, status: number, type: string, detail: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "application/problem+json", ...headers });
  res.end(JSON.stringify({ type: `https://fleetpki.dev/problems/${type}`, title: type, status, detail }));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function idOf(cert: X509Certificate): string | undefined {
  return /URI:spiffe:\/\/[^/]+\/device\/([^,\s]+)/.exec(cert.subjectAltName ?? "")?.[1];
}

function signedBy(cert: X509Certificate, ca: Ca): boolean {
  return cert.checkIssued(ca.cert) && cert.verify(ca.cert.publicKey);
}

async function startFake(
  opts: { tls?: { keyPem: string; certPem: string }; behaviour?: Partial<Behaviour>; clock?: FakeClock } = {},
): Promise<Fake> {
  const clock = opts.clock ?? new FakeClock(Date.now());
  const behaviour: Behaviour = {
    lifetimeMs: 24 * HOUR,
    tokens: new Map(),
    pendingPolls: 0,
    failRenewals: [],
    graceMs: 7 * DAY,
    ...opts.behaviour,
  };
  const calls: Fake["calls"] = [];
  const received: string[] = [];
  const nonces = new Map<string, string>();
  let polls = 0;
  const tls = opts.tls ?? serverCert(services);

  const issueFor = (res: ServerResponse, id: string, csrPem: string, path: string) => {
    let spki: Buffer;
    try {
      spki = parseCsr(csrPem).spki;
    } catch (e) {
      return problem(res, 400, "csr-invalid", (e as Error).message);
    }
    if (behaviour.wrongKey) spki = publicSpki(generateKey("p256"));
    const cert = issueDevice(devices, behaviour.wrongId ? "someone-else" : id, spki, clock.now(), behaviour.lifetimeMs);
    calls.push({ path, status: 200 });
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ certificate: cert.pem, chain: devices.pem, ca_bundle: root.pem, not_after: "", serial: cert.serial }));
  };

  const handler = async (req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? "";
    const body = await readBody(req);
    received.push(body);
    const peer = (req.socket as TLSSocket).getPeerX509Certificate();
    const json = () => JSON.parse(body || "{}") as Record<string, string>;
    if (req.method === "GET" && path === "/.well-known/est/cacerts") {
      res.writeHead(200, { "content-type": "application/pkcs7-mime; smime-type=certs-only" });
      return res.end(toBase64Body(certsOnly([devices.der, root.der])));
    }
    if (req.method !== "POST") return problem(res, 404, "not-found", path);
    if (path === "/api/v1/enroll") {
      const b = json();
      if (b.token !== undefined) {
        if (behaviour.tokens.get(b.token) !== b.device_id) return problem(res, 401, "token-invalid", "unknown token");
        behaviour.tokens.delete(b.token);
        return issueFor(res, b.device_id!, b.csr!, path);
      }
      if (peer) {
        if (!signedBy(peer, factoryCa) || idOf(peer) !== b.device_id)
          return problem(res, 403, "forbidden", "not a factory certificate for this device");
        return issueFor(res, b.device_id!, b.csr!, path);
      }
      if (behaviour.busyPolls) {
        behaviour.busyPolls--;
        return problem(res, 429, "too-many-requests", "20 enrollment requests from 10.0.0.1 already wait", { "retry-after": "60" });
      }
      if (polls++ < behaviour.pendingPolls) {
        res.writeHead(202, { "content-type": "application/json", "retry-after": "2" });
        return res.end(JSON.stringify({ status: "pending", request_id: "req-1", retry_after: 2 }));
      }
      return issueFor(res, b.device_id!, b.csr!, path);
    }
    if (path === "/api/v1/renew") {
      const fail = behaviour.failRenewals.shift();
      if (fail) return problem(res, fail, "unavailable", "try later", fail === 503 ? { "retry-after": "3" } : {});
      const now = clock.now();
      const validNow = peer && now >= Date.parse(peer.validFrom) && now < Date.parse(peer.validTo);
      if (!peer || !signedBy(peer, devices) || !validNow)
        return problem(res, 401, "unauthenticated", "a valid device certificate is required");
      return issueFor(res, idOf(peer)!, json().csr!, path);
    }
    if (path === "/api/v1/renew/challenge") {
      const nonce = randomBytes(16).toString("base64url");
      nonces.set(nonce, json().device_id!);
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ nonce, expires_at: new Date(clock.now() + 5 * MINUTE).toISOString() }));
    }
    if (path === "/api/v1/renew/expired") {
      const b = json();
      const cert = new X509Certificate(b.certificate!);
      const id = idOf(cert)!;
      if (!signedBy(cert, devices)) return problem(res, 401, "unauthenticated", "not a device certificate");
      if (nonces.get(b.nonce!) !== id) return problem(res, 401, "nonce-invalid", "unknown nonce");
      nonces.delete(b.nonce!);
      if (clock.now() > Date.parse(cert.validTo) + behaviour.graceMs)
        return problem(res, 403, "re-enroll-required", "expired beyond the grace period");
      const csr = parseCsr(b.csr!);
      const message = expiredRenewalMessage(id, b.nonce!, csr.der);
      const digest =
        cert.publicKey.asymmetricKeyType === "ed25519"
          ? null
          : cert.publicKey.asymmetricKeyDetails?.namedCurve === "secp384r1"
            ? "sha384"
            : "sha256";
      if (!verify(digest, message, cert.publicKey, Buffer.from(b.signature!, "base64")))
        return problem(res, 401, "signature-invalid", "bad signature");
      return issueFor(res, id, b.csr!, path);
    }
    return problem(res, 404, "not-found", path);
  };

  const server = https.createServer({ key: tls.keyPem, cert: tls.certPem, requestCert: true, rejectUnauthorized: false }, (req, res) => {
    handler(req, res).catch((e) => problem(res, 500, "internal", String(e)));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://127.0.0.1:${port}`,
    clock,
    behaviour,
    calls,
    received,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

function captureLog(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: createLogger({ level: "debug", write: (l) => void lines.push(l) }), lines };
}

const tmp = tempDir("fleetpki-agent-test-");
let counter = 0;
const freshDir = () => join(tmp.path, `agent-${++counter}`);

const fakes: Fake[] = [];
async function fake(opts: Parameters<typeof startFake>[0] = {}): Promise<Fake> {
  const f = await startFake(opts);
  fakes.push(f);
  return f;
}
after(async () => {
  await Promise.all(fakes.map((f) => f.close()));
  tmp.cleanup();
});

async function enrolled(f: Fake, id = "robot-0001", extra: Partial<Parameters<typeof enroll>[0]> = {}): Promise<string> {
  const dir = freshDir();
  f.behaviour.tokens.set(`tok-${id}-${counter}`, id);
  await enroll({
    server: f.url,
    rootFingerprint: ROOT_FP,
    deviceId: id,
    mode: { kind: "token", token: `tok-${id}-${counter}` },
    dir,
    clock: f.clock,
    ...extra,
  });
  return dir;
}

// ---------------------------------------------------------------------------------------------

describe("agent: fingerprints", () => {
  const hex = "ab".repeat(32);
  it("accepts sha256:hex in any case, with or without colons, and bare hex", () => {
    for (const text of [
      `sha256:${hex}`,
      `SHA256:${hex.toUpperCase()}`,
      `sha256:${hex.match(/../g)!.join(":")}`,
      ` sha256:${hex} `,
      hex,
      `sha-256:${hex}`,
    ])
      assert.equal(parseFingerprint(text), `sha256:${hex}`, text);
  });
  it("refuses other lengths, digests and characters", () => {
    for (const text of [`sha256:${hex.slice(2)}`, `sha1:${hex}`, `sha256:${hex.slice(2)}zz`, "", `md5:${hex}`])
      assert.throws(() => parseFingerprint(text), AgentError, text);
  });
  it("fingerprintOf is sha256 of the DER, canonical", () => {
    assert.equal(fingerprintOf(root.der), `sha256:${root.cert.fingerprint256.replace(/:/g, "").toLowerCase()}`);
  });
});

describe("agent: schedule and backoff", () => {
  const nb = Date.UTC(2030, 0, 1);
  const life = 30 * DAY;
  const na = nb + life;
  it("renews at 2/3 of the lifetime, jittered by at most +-5%", () => {
    assert.equal(
      renewalTime(nb, na, () => 0.5),
      nb + (life * 2) / 3,
    );
    assert.equal(
      renewalTime(nb, na, () => 0),
      nb + (life * 2) / 3 - life * 0.05,
    );
    assert.ok(Math.abs(renewalTime(nb, na, () => 0.9999999) - (nb + (life * 2) / 3 + life * 0.05)) < 100);
    for (let i = 0; i < 1000; i++) {
      const t = renewalTime(nb, na);
      assert.ok(t >= nb + life * (2 / 3 - 0.05) - 1 && t <= nb + life * (2 / 3 + 0.05) + 1);
    }
    const w = renewalWindow(nb, na);
    assert.ok(Math.abs(w.earliest - (nb + life * (2 / 3 - 0.05))) < 1 && Math.abs(w.latest - (nb + life * (2 / 3 + 0.05))) < 1);
  });
  it("stays inside the validity, even for odd random sources", () => {
    assert.ok(renewalTime(nb, nb, () => 0.5) === nb);
    assert.ok(renewalTime(nb, na, () => NaN) <= na);
    assert.ok(renewalTime(nb, na, () => 7) < na);
  });
  it("backs off exponentially from 1 s, capped at 60 s or a tenth of the lifetime, with jitter", () => {
    const one = () => 1;
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 7, 20].map((a) => backoffDelay(a, life, one)),
      [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000],
    );
    assert.equal(
      backoffDelay(3, life, () => 0),
      4000,
    ); // equal jitter: half to all
    assert.equal(backoffCap(5 * MINUTE), 30_000); // a tenth of a 5-minute lifetime
    assert.equal(backoffDelay(10, 5 * MINUTE, one), 30_000);
    assert.equal(backoffDelay(0, 5 * 1000, one), 500); // base shrinks below the cap for tiny lifetimes
    assert.equal(backoffDelay(0, life, one, 45_000), 45_000); // Retry-After is a floor
    assert.equal(backoffDelay(0, life, one, 10 * DAY), HOUR); // but capped
    for (let i = 0; i < 100; i++) assert.ok(backoffDelay(i, life) <= 60_000);
  });
  it("parses --wait durations", () => {
    assert.equal(parseDuration("10m"), 10 * MINUTE);
    assert.equal(parseDuration("1h30m"), 90 * MINUTE);
    assert.equal(parseDuration("45"), 45_000);
    assert.equal(parseDuration("500ms"), 500);
    assert.equal(parseDuration("soon"), undefined);
  });
});

describe("agent: expired-renewal signature", () => {
  it("signs exactly the documented message", () => {
    const csr = Buffer.from("not really a csr");
    assert.equal(
      expiredRenewalMessage("robot-7", "n0nce", csr).toString("utf8"),
      "fleetpki-renew-expired/v1\nrobot-7\nn0nce\n" + createHash("sha256").update(csr).digest("hex"),
    );
  });
  const cases: [string, KeyObject, string | null][] = [
    ["p256", generateKey("p256"), "sha256"],
    ["p384", generateKey("p384"), "sha384"],
    ["ed25519", generateKey("ed25519"), null],
    ["rsa", generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey, "sha256"],
  ];
  for (const [name, key, digest] of cases)
    it(`verifies with node:crypto for ${name} (${digest ?? "no digest"})`, () => {
      const { csrDer } = newKeyAndCsr("robot-7", "p256");
      const sig = Buffer.from(signExpiredRenewal(key, "robot-7", "abc", csrDer), "base64");
      const message = expiredRenewalMessage("robot-7", "abc", csrDer);
      assert.ok(verify(digest, message, createPublicKey(key), sig));
      assert.ok(!verify(digest, expiredRenewalMessage("robot-8", "abc", csrDer), createPublicKey(key), sig));
      if (name.startsWith("p")) assert.equal(sig[0], 0x30, "ECDSA signatures are DER");
      if (name === "p384") assert.ok(!verify("sha256", message, createPublicKey(key), sig));
    });
});

describe("agent: logs", () => {
  it("writes JSON lines and never secrets", () => {
    const { log, lines } = captureLog();
    const keyPem = privateKeyPem(generateKey("p256"));
    log.info("hello", { token: "tok-secret", key: keyPem, nested: { passphrase: "pw", ok: 1 }, detail: `here ${keyPem}`, serial: "01" });
    const entry = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.equal(entry.level, "info");
    assert.equal(entry.msg, "hello");
    assert.ok(!Number.isNaN(Date.parse(entry.time as string)));
    assert.equal(entry.serial, "01");
    assert.deepEqual(entry.nested, { ok: 1 });
    assert.ok(
      !lines[0]!.includes("tok-secret") && !lines[0]!.includes("PRIVATE KEY-----\nM") && !lines[0]!.includes(keyPem.split("\n")[1]!),
    );
  });
});

describe("agent: state directory", () => {
  function pair(id: string, lifetime = DAY) {
    const k = newKeyAndCsr(id, "p256");
    const cert = issueDevice(devices, id, publicSpki(k.key), Date.now(), lifetime);
    return { keyPem: k.keyPem, certPem: cert.pem, serial: cert.serial };
  }
  const config = JSON.stringify({ server: "https://127.0.0.1:1", root_fingerprint: ROOT_FP, device_id: "robot-s" });

  it("writes key.pem 0600 in a 0700 directory and reads back a consistent state", () => {
    const dir = join(freshDir(), "nested");
    const p = pair("robot-s");
    commitState(dir, { key: p.keyPem, cert: p.certPem, chain: devices.pem, ca: root.pem, config });
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, "key.pem")).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, "cert.pem")).mode & 0o777, 0o644);
    assert.ok(!existsSync(join(dir, COMMIT_MARKER)));
    const s = loadState(dir);
    assert.equal(s.serial, p.serial);
    assert.equal(s.spiffeId, `spiffe://${DOMAIN}/device/robot-s`);
  });

  it("after a crash at any point of a key/cert replacement, holds the old pair or the new one", () => {
    const steps = [
      "staged key.pem",
      "staged cert.pem",
      "staged chain.pem",
      "committed",
      "applied key.pem",
      "applied cert.pem",
      "applied chain.pem",
      "done",
    ];
    for (const [i, crashAt] of steps.entries()) {
      const dir = freshDir();
      const old = pair("robot-s");
      commitState(dir, { key: old.keyPem, cert: old.certPem, chain: devices.pem, ca: root.pem, config });
      const next = pair("robot-s");
      assert.throws(
        () =>
          commitState(
            dir,
            { key: next.keyPem, cert: next.certPem, chain: devices.pem },
            {
              onStep: (s) => {
                if (s === crashAt) throw new Error("crash");
              },
            },
          ),
        /crash/,
      );
      // status sees what recovery will produce, without writing
      assert.equal(agentStatus(dir).serial, i < 3 ? old.serial : next.serial, `status after crash at ${crashAt}`);
      const recovery = recoverState(dir);
      const s = loadState(dir); // throws if key and cert do not match
      assert.equal(s.serial, i < 3 ? old.serial : next.serial, `crash at ${crashAt} (${recovery})`);
      assert.equal(statSync(join(dir, "key.pem")).mode & 0o777, 0o600);
      assert.ok(!existsSync(join(dir, COMMIT_MARKER)));
      assert.ok(!existsSync(join(dir, "key.pem.new")) && !existsSync(join(dir, "cert.pem.new")));
    }
  });

  it("refuses a directory whose key does not match its certificate", () => {
    const dir = freshDir();
    const a = pair("robot-s");
    const b = pair("robot-s");
    commitState(dir, { key: a.keyPem, cert: b.certPem, chain: devices.pem, ca: root.pem, config });
    assert.throws(() => loadState(dir), /does not match/);
  });
});

describe("agent: TLS pinning and enrollment", () => {
  let f: Fake;
  before(async () => {
    f = await fake();
  });

  it("bootstraps the root from cacerts with the right fingerprint", async () => {
    const pinned = await bootstrapRoot(parseServerUrl(f.url), parseFingerprint(ROOT_FP.toUpperCase().replace("SHA256", "sha256")));
    assert.ok(pinned.der.equals(root.der));
  });

  it("refuses a wrong fingerprint and writes nothing, not even the directory", async () => {
    const dir = freshDir();
    f.behaviour.tokens.set("tok-wrong", "robot-0002");
    await assert.rejects(
      enroll({
        server: f.url,
        rootFingerprint: fingerprintOf(attackerRoot.der),
        deviceId: "robot-0002",
        mode: { kind: "token", token: "tok-wrong" },
        dir,
      }),
      (e: Error) => e instanceof AgentError && /root fingerprint mismatch/.test(e.message),
    );
    assert.ok(!existsSync(dir));
    assert.ok(!f.received.some((b) => b.includes("tok-wrong")), "the token was never sent");
  });

  it("does not talk to a server whose TLS certificate does not chain to the pinned root, even if it serves that root", async () => {
    const mitm = await fake({ tls: serverCert(attackerServices) });
    const dir = freshDir();
    mitm.behaviour.tokens.set("tok-mitm", "robot-0003");
    await assert.rejects(
      enroll({ server: mitm.url, rootFingerprint: ROOT_FP, deviceId: "robot-0003", mode: { kind: "token", token: "tok-mitm" }, dir }),
      /TLS verification of https:\/\/127\.0\.0\.1:\d+ failed/,
    );
    assert.ok(!existsSync(dir));
    assert.ok(!mitm.received.some((b) => b.includes("tok-mitm")), "the token never reached the impostor");
  });

  it("checks the host name: the certificate names 127.0.0.1, not 127.0.0.2", async () => {
    const pinned = await bootstrapRoot(parseServerUrl(f.url), ROOT_FP);
    const { RegistrationClient } = await import("../src/agent/client.js");
    const client = new RegistrationClient(f.url.replace("127.0.0.1", "127.0.0.2"), { rootPem: pinned.pem });
    try {
      await assert.rejects(client.postJson("/api/v1/enroll", {}), /ERR_TLS_CERT_ALTNAME_INVALID|TLS verification|cannot reach/);
    } finally {
      client.close();
    }
  });

  it("enrolls with a token: key made here, files and modes as documented, no secrets in the log", async () => {
    const dir = freshDir();
    const { log, lines } = captureLog();
    f.behaviour.tokens.set("tok-secret-123", "robot-0004");
    const r = await enroll({
      server: f.url,
      rootFingerprint: ROOT_FP,
      deviceId: "robot-0004",
      mode: { kind: "token", token: "tok-secret-123" },
      dir,
      log,
    });
    assert.equal(r.spiffeId, `spiffe://${DOMAIN}/device/robot-0004`);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, "key.pem")).mode & 0o777, 0o600);
    for (const f of Object.values(AGENT_FILES)) assert.ok(existsSync(join(dir, f)), f);
    assert.deepEqual(JSON.parse(readFileSync(join(dir, "agent.json"), "utf8")), {
      server: f.url,
      root_fingerprint: ROOT_FP,
      device_id: "robot-0004",
    });
    assert.ok(readFileSync(join(dir, "ca.pem")).equals(Buffer.from(root.pem)));
    assert.ok(new X509Certificate(readFileSync(join(dir, "chain.pem"))).raw.equals(devices.der));
    const key = createPrivateKey(readFileSync(join(dir, "key.pem")));
    assert.ok(
      createPublicKey(key)
        .export({ type: "spki", format: "der" })
        .equals(new X509Certificate(readFileSync(join(dir, "cert.pem"))).publicKey.export({ type: "spki", format: "der" })),
    );
    const all = lines.join("");
    assert.ok(!all.includes("tok-secret-123") && !all.includes("PRIVATE KEY"), all);
    for (const l of lines) JSON.parse(l);

    const s = agentStatus(dir);
    assert.equal(s.device_id, "robot-0004");
    assert.equal(s.identity, `spiffe://${DOMAIN}/device/robot-0004`);
    assert.equal(s.expired, false);
    assert.equal(s.key_type, "p256");

    await assert.rejects(
      enroll({ server: f.url, rootFingerprint: ROOT_FP, deviceId: "robot-0004", mode: { kind: "token", token: "x" }, dir }),
      /already holds an enrollment/,
    );
  });

  it("reports a refused token and writes nothing", async () => {
    const dir = freshDir();
    await assert.rejects(
      enroll({ server: f.url, rootFingerprint: ROOT_FP, deviceId: "robot-0005", mode: { kind: "token", token: "nope" }, dir }),
      /HTTP 401: token-invalid: unknown token/,
    );
    assert.ok(!existsSync(dir));
  });

  for (const keyType of ["p384", "ed25519"] as const)
    it(`enrolls with a ${keyType} key`, async () => {
      const dir = await enrolled(f, `robot-${keyType}`, { keyType });
      assert.equal(agentStatus(dir).key_type, keyType);
    });

  it("waits for approval, polling with Retry-After", async () => {
    const g = await fake({ behaviour: { pendingPolls: 3 } });
    const dir = freshDir();
    const { log, lines } = captureLog();
    await enroll({ server: g.url, rootFingerprint: ROOT_FP, deviceId: "robot-0006", mode: { kind: "approval" }, dir, clock: g.clock, log });
    assert.deepEqual(g.clock.sleeps, [2000, 2000, 2000]);
    assert.equal(lines.filter((l) => l.includes("pending approval")).length, 3);
    assert.ok(existsSync(join(dir, "cert.pem")));
  });

  it("gives up waiting for approval after --wait, keeping only the pending request's key (0600) for the next run", async () => {
    const g = await fake({ behaviour: { pendingPolls: 1000 } });
    const dir = freshDir();
    await assert.rejects(
      enroll({
        server: g.url,
        rootFingerprint: ROOT_FP,
        deviceId: "robot-0007",
        mode: { kind: "approval" },
        dir,
        clock: g.clock,
        waitMs: 7000,
      }),
      /still pending approval after 7 s \(request req-1\)/,
    );
    assert.deepEqual(readdirSync(dir), ["pending-robot-0007.key.pem"]);
    assert.equal(statSync(join(dir, "pending-robot-0007.key.pem")).mode & 0o777, 0o600);
  });

  it("refused with 429 while asking for approval, the agent prints its key fingerprint and asks with the same key next run", async () => {
    const g = await fake({ behaviour: { busyPolls: 1, pendingPolls: 0 } });
    const dir = freshDir();
    const { log, lines } = captureLog();
    const refused = await enroll({
      server: g.url,
      rootFingerprint: ROOT_FP,
      deviceId: "robot-0010",
      mode: { kind: "approval" },
      dir,
      clock: g.clock,
      log,
    }).then(
      () => assert.fail("a 429 must end the run"),
      (e: Error) => e,
    );
    const keptPath = join(dir, "pending-robot-0010.key.pem");
    assert.ok(existsSync(keptPath), "the key is kept, so the fingerprint shown stays the one the robot asks with");
    const fp = fingerprintOf(publicSpki(createPrivateKey(readFileSync(keptPath, "utf8"))));
    assert.match(refused.message, /HTTP 429/);
    assert.ok(refused.message.includes(`this robot's key fingerprint: ${fp}`), refused.message);
    assert.ok(
      lines.some((l) => l.includes(fp) && l.includes("fingerprint to compare")),
      lines.join("\n"),
    );
    // The next run asks with that key and gets a certificate for it.
    await enroll({ server: g.url, rootFingerprint: ROOT_FP, deviceId: "robot-0010", mode: { kind: "approval" }, dir, clock: g.clock });
    assert.equal(fingerprintOf(publicSpki(createPrivateKey(readFileSync(join(dir, "key.pem"), "utf8")))), fp);
  });

  it("an unreadable kept approval key is a clear error, and the file is left for the operator", async () => {
    const g = await fake({ behaviour: { pendingPolls: 1000 } });
    const dir = freshDir();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, "pending-robot-0009.key.pem"), "not a key\n", { mode: 0o600 });
    await assert.rejects(
      enroll({
        server: g.url,
        rootFingerprint: ROOT_FP,
        deviceId: "robot-0009",
        mode: { kind: "approval" },
        dir,
        clock: g.clock,
        waitMs: 7000,
      }),
      /pending-robot-0009\.key\.pem \(the key of a pending approval request\) cannot be read; delete it to start a new request/,
    );
    assert.equal(readFileSync(join(dir, "pending-robot-0009.key.pem"), "utf8"), "not a key\n");
  });

  it("enrolls with a factory certificate as the TLS client identity", async () => {
    const bundle = join(freshDir(), "bundle");
    mkdirSync(bundle, { recursive: true });
    const key = generateKey("p256");
    const cert = issueDevice(factoryCa, "robot-0008", publicSpki(key), Date.now(), 365 * DAY);
    writeFileSync(join(bundle, "key.pem"), privateKeyPem(key));
    writeFileSync(join(bundle, "cert.pem"), cert.pem);
    writeFileSync(join(bundle, "chain.pem"), factoryCa.pem);
    writeFileSync(join(bundle, "ca.pem"), root.pem);
    const dir = freshDir();
    await enroll({ server: f.url, rootFingerprint: ROOT_FP, deviceId: "robot-0008", mode: { kind: "factory", dir: bundle }, dir });
    assert.equal(agentStatus(dir).device_id, "robot-0008");
    // the bundle is for robot-0008 only
    await assert.rejects(
      enroll({ server: f.url, rootFingerprint: ROOT_FP, deviceId: "robot-0009", mode: { kind: "factory", dir: bundle }, dir: freshDir() }),
      /factory certificate in .* is for spiffe:\/\/fleet\.example\/device\/robot-0008, not device robot-0009/,
    );
  });

  it("rejects a certificate for another key or another device, writing nothing", async () => {
    for (const [flag, pattern] of [
      ["wrongKey", /does not carry the key this device generated/],
      ["wrongId", /names spiffe:\/\/fleet\.example\/device\/someone-else/],
    ] as const) {
      const g = await fake({ behaviour: { [flag]: true } });
      const dir = freshDir();
      g.behaviour.tokens.set("t", "robot-0010");
      await assert.rejects(
        enroll({ server: g.url, rootFingerprint: ROOT_FP, deviceId: "robot-0010", mode: { kind: "token", token: "t" }, dir }),
        pattern,
      );
      assert.ok(!existsSync(dir));
    }
  });
});

describe("agent: renewal", () => {
  it("renews over mTLS with a fresh key each time, and after expiry with a signed challenge", async () => {
    const f = await fake();
    const dir = await enrolled(f, "robot-0100");
    const first = loadState(dir);
    const r1 = await renew(first, { clock: f.clock });
    assert.equal(r1.afterExpiry, false);
    const second = loadState(dir);
    assert.notEqual(second.serial, first.serial);
    assert.notEqual(second.keyPem, first.keyPem);
    assert.equal(f.calls.at(-1)!.path, "/api/v1/renew");

    f.clock.t = second.notAfter.getTime() + HOUR; // expired, within grace
    const r2 = await renew(second, { clock: f.clock });
    assert.equal(r2.afterExpiry, true);
    assert.equal(f.calls.at(-1)!.path, "/api/v1/renew/expired");
    const third = loadState(dir);
    assert.ok(third.notAfter.getTime() > f.clock.t);

    f.clock.t = third.notAfter.getTime() + 8 * DAY; // beyond the grace
    await assert.rejects(
      renew(third, { clock: f.clock }),
      (e: Error) => e instanceof ReEnrollRequired && /^must re-enroll: /.test(e.message),
    );
    assert.equal(loadState(dir).serial, third.serial, "nothing changed");
  });

  for (const keyType of ["p384", "ed25519"] as const)
    it(`renews a ${keyType} certificate over mTLS and after expiry`, async () => {
      const f = await fake();
      const dir = await enrolled(f, `robot-x-${keyType}`, { keyType });
      assert.equal((await renew(loadState(dir), { clock: f.clock })).afterExpiry, false);
      assert.equal(f.calls.at(-1)!.path, "/api/v1/renew");
      const s = loadState(dir);
      f.clock.t = s.notAfter.getTime() + MINUTE;
      assert.equal((await renew(s, { clock: f.clock })).afterExpiry, true);
      assert.equal(agentStatus(dir, f.clock.t).key_type, keyType);
    });
});

describe("agent: run loop", () => {
  it("renews at 2/3 of each lifetime, runs the hook, and stops on abort", async () => {
    const f = await fake({ behaviour: { lifetimeMs: 3 * HOUR } });
    const dir = await enrolled(f, "robot-0200");
    const envFile = join(tmp.path, "hook-env.txt");
    const controller = new AbortController();
    const renewedAt: number[] = [];
    const notBefores: number[] = [loadState(dir).notBefore.getTime()];
    const lifetimes: number[] = [];
    const { log, lines } = captureLog();
    await runAgent({
      dir,
      clock: f.clock,
      random: () => 0.5,
      signal: controller.signal,
      log,
      onRenew: `printf '%s|%s|%s|%s\\n' "$FLEETPKI_CERT" "$FLEETPKI_KEY" "$FLEETPKI_CHAIN" "$FLEETPKI_CA" >> '${envFile}'`,
      onRenewed: (r) => {
        renewedAt.push(f.clock.t);
        notBefores.push(r.notBefore.getTime());
        lifetimes.push(r.notAfter.getTime() - r.notBefore.getTime());
        if (renewedAt.length === 3) controller.abort();
      },
    });
    assert.equal(renewedAt.length, 3);
    for (let i = 0; i < 3; i++) {
      const lifetime = 3 * HOUR + MINUTE; // LeafTemplate backdates notBefore by a minute
      assert.ok(Math.abs(renewedAt[i]! - (notBefores[i]! + (lifetime * 2) / 3)) < 2000, `renewal ${i} at 2/3`);
    }
    const hookLines = readFileSync(envFile, "utf8").trim().split("\n");
    assert.equal(hookLines.length, 3);
    assert.equal(hookLines[0], ["cert.pem", "key.pem", "chain.pem", "ca.pem"].map((n) => join(dir, n)).join("|"));
    assert.ok(lines.some((l) => JSON.parse(l).msg === "renewed"));
    assert.ok(lines.some((l) => JSON.parse(l).msg === "agent stopped"));
    assert.ok(!existsSync(join(dir, "agent.lock")), "lock released");
  });

  it("renews immediately when past 2/3 at start-up, backs off on 5xx honouring Retry-After, logs a failing hook", async () => {
    const f = await fake({ behaviour: { failRenewals: [503, 500, 502] } });
    const dir = await enrolled(f, "robot-0201");
    const s = loadState(dir);
    f.clock.t = s.notBefore.getTime() + (s.notAfter.getTime() - s.notBefore.getTime()) * 0.8;
    const start = f.clock.t;
    const controller = new AbortController();
    const { log, lines } = captureLog();
    await runAgent({
      dir,
      clock: f.clock,
      random: () => 1,
      signal: controller.signal,
      log,
      onRenew: "echo oops >&2; exit 3",
      onRenewed: () => controller.abort(),
    });
    // 503 with Retry-After 3 s, then 2 s, then 4 s of backoff
    assert.deepEqual(f.clock.sleeps, [3000, 2000, 4000]);
    assert.equal(f.clock.t - start, 9000);
    const failures = lines.map((l) => JSON.parse(l)).filter((e) => e.msg === "renewal failed; retrying");
    assert.deepEqual(
      failures.map((e) => e.status),
      [503, 500, 502],
    );
    const hook = lines.map((l) => JSON.parse(l)).find((e) => e.msg === "renew hook failed");
    assert.equal(hook.exit_code, 3);
    assert.match(hook.output, /oops/);
    assert.notEqual(loadState(dir).serial, s.serial);
  });

  it("keeps retrying a refusal, then uses the expired path once the certificate has expired", async () => {
    const f = await fake({ behaviour: { failRenewals: [403, 403] } });
    const dir = await enrolled(f, "robot-0202");
    const s = loadState(dir);
    f.clock.t = s.notAfter.getTime() - 1500; // due now; expires during the backoff
    const controller = new AbortController();
    const { log, lines } = captureLog();
    await runAgent({ dir, clock: f.clock, random: () => 1, signal: controller.signal, log, onRenewed: () => controller.abort() });
    const entries = lines.map((l) => JSON.parse(l));
    assert.deepEqual(
      entries.filter((e) => e.msg === "renewal refused; retrying").map((e) => e.status),
      [403, 403],
    );
    assert.equal(f.calls.at(-1)!.path, "/api/v1/renew/expired");
  });

  it("ends with 'must re-enroll' past the grace period", async () => {
    const f = await fake();
    const dir = await enrolled(f, "robot-0203");
    f.clock.t = loadState(dir).notAfter.getTime() + 30 * DAY;
    await assert.rejects(
      runAgent({ dir, clock: f.clock }),
      (e: Error) => e instanceof ReEnrollRequired && /must re-enroll: /.test(e.message),
    );
    assert.ok(!existsSync(join(dir, "agent.lock")));
  });

  it("stops promptly on abort while waiting, and refuses a second agent on the same directory", async () => {
    const f = await fake();
    const dir = await enrolled(f, "robot-0204");
    const controller = new AbortController();
    const running = runAgent({ dir, signal: controller.signal }); // real clock: waits ~16 h
    await new Promise((r) => setTimeout(r, 100));
    await assert.rejects(runAgent({ dir, signal: AbortSignal.abort() }), /another fleetpki agent \(pid \d+\) is using/);
    controller.abort();
    await running;
  });

  it("refuses to run on a directory without an enrollment, without creating it", async () => {
    const dir = freshDir();
    await assert.rejects(runAgent({ dir }), /holds no agent enrollment/);
    assert.ok(!existsSync(dir));
  });
});

/**
 * `agent run` until it has scheduled its renewal, then ONE SIGTERM; resolves with its exit and output.
 * Once: a SIGTERM on every later chunk ("stopping", "agent stopped") could land after the CLI had
 * removed its handlers but before the process exited, killing it by signal (status null).
 */
function runUntilScheduledThenTerm(dir: string): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, "agent", "run", "--dir", dir], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    let termSent = false;
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
      if (!termSent && stderr.includes('"renewal scheduled"')) {
        termSent = true;
        child.kill("SIGTERM");
      }
    });
    child.on("error", reject);
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stderr });
    });
  });
}

describe("agent: CLI", () => {
  let f: Fake;
  before(async () => {
    f = await fake();
  });

  it("enroll: wrong fingerprint is one line and creates nothing; enroll, status --json, run stops on SIGTERM", async () => {
    const badDir = freshDir();
    const dir = freshDir();
    f.behaviour.tokens.set("cli-token", "robot-0300");
    const statusDir = await enrolled(f, "robot-0302");
    // CLI start-up is the slow part: run the invocations side by side.
    const [bad, usage, ok, status, run] = await Promise.all([
      cliAsync([
        "agent",
        "enroll",
        "--server",
        f.url,
        "--root-fingerprint",
        fingerprintOf(attackerRoot.der),
        "--id",
        "robot-0300",
        "--token",
        "t",
        "--dir",
        badDir,
      ]),
      cliAsync([
        "agent",
        "enroll",
        "--server",
        f.url,
        "--root-fingerprint",
        ROOT_FP,
        "--id",
        "robot-0301",
        "--token",
        "x",
        "--approval",
        "--dir",
        freshDir(),
      ]),
      cliAsync([
        "agent",
        "enroll",
        "--server",
        f.url,
        "--root-fingerprint",
        ROOT_FP.toUpperCase().replace("SHA256", "sha256"),
        "--id",
        "robot-0300",
        "--token",
        "cli-token",
        "--dir",
        dir,
      ]),
      cliAsync(["agent", "status", "--dir", statusDir, "--json"]),
      runUntilScheduledThenTerm(statusDir),
    ]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /^fleetpki: root fingerprint mismatch: .*\n$/);
    assert.ok(!existsSync(badDir));
    assert.match(usage.stderr, /^fleetpki: give only one of --token, --factory-dir and --approval\n$/);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /enrolled robot-0300 as spiffe:\/\/fleet\.example\/device\/robot-0300/);
    assert.equal(agentStatus(dir).device_id, "robot-0300");

    assert.equal(status.status, 0, status.stderr);
    const s = JSON.parse(status.stdout);
    assert.equal(s.device_id, "robot-0302");
    assert.equal(s.identity, "spiffe://fleet.example/device/robot-0302");
    assert.equal(s.expired, false);
    assert.equal(s.server, f.url);

    assert.equal(run.status, 0, run.stderr);
    const msgs = run.stderr
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l).msg);
    assert.deepEqual(msgs, ["agent started", "renewal scheduled", "stopping", "agent stopped"]);
  });
});

// ---------------------------------------------------------------------------------------------
// The key of a renewal in flight (issue 9, item 1.10 follow-up): the server renews a certificate
// once and re-delivers it only to the same key, so every retry of one renewal must send the key
// of the first attempt. (agent-e2e.test.ts shows the same against the real server.)

describe("agent: the renewal key survives failed attempts and crashes", () => {
  const spkiHex = (k: KeyObject) => (k.type === "public" ? k : createPublicKey(k)).export({ type: "spki", format: "der" }).toString("hex");
  /** SPKIs (hex) of the CSRs of every renewal request the fake received (mTLS and after expiry), in order. */
  const renewalCsrKeys = (f: Fake) =>
    f.received
      .map((b) => JSON.parse(b || "{}") as Record<string, string>)
      .filter((b) => b.csr !== undefined && b.device_id === undefined)
      .map((b) => parseCsr(b.csr!).spki.toString("hex"));
  const keptFile = (dir: string, serial: string) => join(dir, `renewal-${serial}.key.pem`);
  const agentFiles = ["agent.json", "ca.pem", "cert.pem", "chain.pem", "key.pem"];
  const crashAt = (step: string) => (s: string) => {
    if (s === step) throw new Error(`crash at ${step}`);
  };

  it("keeps the key (0600) before sending, sends it again on every retry, and removes it once the certificate is committed", async () => {
    const f = await fake({ behaviour: { failRenewals: [503, 500] } });
    const dir = await enrolled(f, "robot-0400");
    const s = loadState(dir);
    await assert.rejects(renew(s, { clock: f.clock }), /HTTP 503/);
    const kept = keptFile(dir, s.serial);
    assert.ok(existsSync(kept), "the key of the failed attempt is kept");
    assert.equal(statSync(kept).mode & 0o777, 0o600);
    const keptKey = createPrivateKey(readFileSync(kept, "utf8"));
    assert.notEqual(spkiHex(keptKey), spkiHex(s.key), "a new key, not the current one");
    assert.equal(keptKey.asymmetricKeyDetails?.namedCurve, "prime256v1", "of the current key's type");

    await assert.rejects(renew(loadState(dir), { clock: f.clock }), /HTTP 500/);
    f.clock.t = s.notAfter.getTime() + MINUTE; // the next retry goes the after-expiry way
    const r = await renew(loadState(dir), { clock: f.clock });
    assert.equal(r.afterExpiry, true);
    assert.deepEqual(renewalCsrKeys(f), [spkiHex(keptKey), spkiHex(keptKey), spkiHex(keptKey)], "one key for all three attempts");
    const after = loadState(dir);
    assert.equal(after.serial, r.serial);
    assert.equal(spkiHex(after.key), spkiHex(keptKey), "the committed key is the kept one");
    assert.deepEqual(readdirSync(dir).sort(), agentFiles, "the kept key is gone once committed");
  });

  it("a crash after keeping the key, before sending: the next attempt sends that key", async () => {
    const f = await fake();
    const dir = await enrolled(f, "robot-0401");
    const s = loadState(dir);
    await assert.rejects(renew(s, { clock: f.clock, onStep: crashAt("key kept") }), /crash at key kept/);
    assert.deepEqual(
      f.calls.filter((c) => c.path.startsWith("/api/v1/renew")),
      [],
      "nothing was sent",
    );
    const keptKey = createPrivateKey(readFileSync(keptFile(dir, s.serial), "utf8"));
    assert.equal(recoverState(dir), "clean", "the kept key is no leftover of an unfinished commit");
    await renew(loadState(dir), { clock: f.clock });
    assert.deepEqual(renewalCsrKeys(f), [spkiHex(keptKey)]);
    assert.equal(spkiHex(loadState(dir).key), spkiHex(keptKey));
    assert.deepEqual(readdirSync(dir).sort(), agentFiles);
  });

  it("a crash after the answer, before the commit point: the old pair stays and the retry sends the same key", async () => {
    for (const step of ["answered", "staged key.pem", "staged chain.pem"]) {
      const f = await fake();
      const dir = await enrolled(f, "robot-0402");
      const s = loadState(dir);
      const crash = step === "answered" ? { onStep: crashAt(step) } : { commit: { onStep: crashAt(step) } };
      await assert.rejects(renew(s, { clock: f.clock, ...crash }), /crash at/);
      recoverState(dir);
      assert.equal(loadState(dir).serial, s.serial, `crash at ${step}: still the old certificate`);
      await renew(loadState(dir), { clock: f.clock });
      const [first, second] = renewalCsrKeys(f);
      assert.equal(second, first, `crash at ${step}: the retry sent the key of the lost answer`);
      assert.equal(spkiHex(loadState(dir).key), first);
      assert.deepEqual(readdirSync(dir).sort(), agentFiles);
    }
  });

  it("a crash after the commit: the kept key (now the current key) is removed, never reused for the next renewal", async () => {
    const f = await fake();
    const dir = await enrolled(f, "robot-0403");
    const s = loadState(dir);
    await assert.rejects(renew(s, { clock: f.clock, commit: { onStep: crashAt("done") } }), /crash at done/);
    recoverState(dir);
    const current = loadState(dir);
    assert.notEqual(current.serial, s.serial, "committed");
    assert.ok(existsSync(keptFile(dir, s.serial)), "the crash left the kept key behind");
    // agent run removes it at start-up...
    const { log, lines } = captureLog();
    await runAgent({ dir, clock: f.clock, log, signal: AbortSignal.abort() });
    assert.deepEqual(readdirSync(dir).sort(), agentFiles);
    assert.ok(lines.some((l) => JSON.parse(l).msg === "removed the key of a finished renewal"));
    // ...and so does a renewal, which makes a new key (the kept key put back as the crash left it).
    writeFileSync(keptFile(dir, s.serial), current.keyPem, { mode: 0o600 });
    await renew(loadState(dir), { clock: f.clock });
    const sent = renewalCsrKeys(f).at(-1)!;
    assert.notEqual(sent, spkiHex(current.key), "the next renewal has a new key");
    assert.deepEqual(readdirSync(dir).sort(), agentFiles);
  });

  it("replaces a kept key that cannot be this renewal's: the current key, another key type, unreadable", async () => {
    const f = await fake();
    const dir = await enrolled(f, "robot-0404");
    const cases: [string, () => string][] = [
      ["the current key", () => loadState(dir).keyPem],
      ["a P-384 key for a P-256 certificate", () => privateKeyPem(generateKey("p384"))],
      ["an Ed25519 key", () => privateKeyPem(generateKey("ed25519"))],
      ["garbage", () => "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
    ];
    for (const [what, pem] of cases) {
      const s = loadState(dir);
      writeFileSync(keptFile(dir, s.serial), pem(), { mode: 0o600 });
      const { log, lines } = captureLog();
      await renew(s, { clock: f.clock, log });
      const after = loadState(dir);
      assert.notEqual(spkiHex(after.key), spkiHex(s.key), `${what}: a new key`);
      assert.equal(after.key.asymmetricKeyDetails?.namedCurve, "prime256v1", `${what}: of the certificate's type`);
      const warned = lines.map((l) => JSON.parse(l)).find((e) => e.msg === "replacing an unusable kept renewal key");
      assert.ok(warned, `${what}: logged`);
      assert.ok(!lines.join("\n").includes("PRIVATE KEY-----\nM"), "no key material in the log");
      assert.deepEqual(readdirSync(dir).sort(), agentFiles);
    }
  });

  it("removes the kept key on re-enroll-required, keeps it through other refusals", async () => {
    const f = await fake({ behaviour: { failRenewals: [403] } });
    const dir = await enrolled(f, "robot-0405");
    const s = loadState(dir);
    await assert.rejects(renew(s, { clock: f.clock }), /HTTP 403/);
    assert.ok(existsSync(keptFile(dir, s.serial)), "a refusal that may pass (a held device) keeps the key");
    f.clock.t = s.notAfter.getTime() + 30 * DAY; // beyond the grace: final
    await assert.rejects(renew(loadState(dir), { clock: f.clock }), (e: Error) => e instanceof ReEnrollRequired);
    assert.deepEqual(readdirSync(dir).sort(), agentFiles, "the kept key is of no more use");
    assert.equal(loadState(dir).serial, s.serial);
  });
});
