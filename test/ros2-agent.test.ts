// `agent run --ros2-keystore`: the agent keeps its device's SROS2 enclaves renewed and their CRLs
// fresh, against the real registration and status servers (127.0.0.1:0, real TLS) on a moved clock.
// The keystore is made on "the CA machine" (KS_CA) and copied to "the robot" (KS_R), as an operator
// would; only the robot's copy is the agent's. openssl checks the result independently.
import assert from "node:assert/strict";
import { X509Certificate, createPublicKey, generateKeyPairSync } from "node:crypto";
import { cpSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { initFleet } from "../src/authority/ca/init.js";
import { createLogger, type Logger } from "../src/agent/log.js";
import type { Clock as AgentClock } from "../src/agent/clock.js";
import {
  Ros2Keeper,
  checkIdentityCrl,
  commitEnclave,
  crlDistributionUri,
  enclaveFilesFrom,
  enclaveKeyMatches,
  openKeystore,
  recoverEnclave,
  scanEnclaves,
  syncCrls,
  type EnclaveRenewal,
} from "../src/agent/ros2.js";
import { runAgent } from "../src/agent/runner.js";
import { loadState } from "../src/agent/state.js";
import { createEnclave, revokeEnclave } from "../src/ros2/keystore/enclaves.js";
import { initKeystore } from "../src/ros2/keystore/keystore.js";
import { signCrl } from "../src/authority/status/crls.js";
import { parseCrl } from "../src/x509/crl.js";
import { fromPem } from "../src/x509/pem.js";
import { ManualClock } from "./support/clock.js";
import { enrollRobots } from "./support/robots.js";
import { openssl, opensslCsr, tempDir } from "./helpers.js";
import { assertProblem, editConfig, makeCsr, postJson, startTestServer, type TestServer } from "./server-helpers.js";

const DAY = 86_400_000;
const ENCLAVE_FILE_NAMES = [
  "cert.pem",
  "key.pem",
  "identity_ca.cert.pem",
  "permissions_ca.cert.pem",
  "governance.p7s",
  "permissions.xml",
  "permissions.p7s",
  "crl.pem",
];

/** The agent's clock on the authority's ManualClock: sleep waits until the test moves time (or the signal aborts). */
class SharedClock implements AgentClock {
  private waiters: { at: number; done: () => void }[] = [];
  constructor(readonly manual: ManualClock) {}
  now(): number {
    return this.manual.now().getTime();
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const w = { at: this.now() + ms, done: resolve };
      this.waiters.push(w);
      signal?.addEventListener(
        "abort",
        () => {
          this.waiters = this.waiters.filter((x) => x !== w);
          resolve();
        },
        { once: true },
      );
    });
  }
  /** How many sleeps are waiting (the loops are idle when both wait). */
  get waiting(): number {
    return this.waiters.length;
  }
  advance(ms: number): void {
    this.manual.advance(ms);
    const now = this.now();
    const due = this.waiters.filter((w) => w.at <= now);
    this.waiters = this.waiters.filter((w) => w.at > now);
    for (const w of due) w.done();
  }
}

/** A logger that keeps the lines (parsed) for assertions. */
function memoryLogger(): { log: Logger; lines: Record<string, any>[] } {
  const lines: Record<string, any>[] = [];
  return { log: createLogger({ level: "debug", write: (l) => void lines.push(JSON.parse(l)) }), lines };
}

interface Snapshot {
  [file: string]: { bytes: string; mode: number };
}

function snapshot(dir: string): Snapshot {
  const out: Snapshot = {};
  for (const name of readdirSync(dir)) {
    const st = statSync(join(dir, name));
    if (st.isFile()) out[name] = { bytes: readFileSync(join(dir, name), "latin1"), mode: st.mode & 0o777 };
  }
  out["."] = { bytes: "", mode: statSync(dir).mode & 0o777 };
  return out;
}

function without(s: Snapshot, ...names: string[]): Snapshot {
  const copy = { ...s };
  for (const n of names) delete copy[n];
  return copy;
}

const certOf = (dir: string) => new X509Certificate(readFileSync(join(dir, "cert.pem")));
const serialOf = (dir: string) =>
  certOf(dir)
    .serialNumber.toLowerCase()
    .replace(/^(00)+/, "");
const epoch = (ms: number) => String(Math.floor(ms / 1000));

describe("agent run --ros2-keystore against a running server", { timeout: 300_000 }, () => {
  const tmp = tempDir("fleetpki-ros2-agent-");
  const dir = join(tmp.path, "fleet");
  const KS_CA = join(tmp.path, "ks-ca");
  const KS_R = join(tmp.path, "ks-robot");
  const A1 = join(tmp.path, "agent-robot1");
  const A2 = join(tmp.path, "agent-robot2");
  const clock = new ManualClock(Date.now());
  const agentClock = new SharedClock(clock);
  let server: TestServer;
  let crlUrl: URL;
  let keystoreId: string;
  let rootPem: string;
  /** The identity CA's CRL before any revocation: a replay of it must never replace a newer one. */
  let initialCrl: string;
  const enclave = (ks: string, path: string) => join(ks, "enclaves", ...path.slice(1).split("/"));

  before(async () => {
    await initFleet({ dir, name: "ROS Robots", domain: "fleet.example", serverNames: ["localhost", "127.0.0.1"], clock });
    // Short enclave certificates: 2/3 of them is well inside the device certificate's 30 days.
    editConfig(dir, (doc) => ((doc.validity ??= {}).ros2_enclave = "3d"));
    server = await startTestServer(dir, { clock });
    const fleet = server.server.fleet;
    crlUrl = new URL(`http://127.0.0.1:${server.server.status!.port}/crl/ros2-identity.pem`);
    rootPem = await enrollRobots(fleet, server.url, dir, [
      ["robot1", A1],
      ["robot2", A2],
    ]);
    keystoreId = (await initKeystore(fleet, { dir: KS_CA, domainId: 7, actor: "test" })).keystoreId;
    const create = (path: string, deviceId?: string) => createEnclave(fleet, { dir: KS_CA, path, deviceId, allowAll: true, actor: "test" });
    await create("/tl/talker", "robot1");
    await create("/tl/listener", "robot1");
    await create("/nav", "robot1");
    await create("/nav/planner", "robot1"); // nested inside an enclave: a directory swap of /nav would move it
    await create("/other/node", "robot2");
    await create("/shared/nobody"); // no --device: no agent may renew it
    cpSync(KS_CA, KS_R, { recursive: true, preserveTimestamps: true });
    initialCrl = readFileSync(join(KS_R, "public", "identity_ca.crl.pem"), "utf8");
  });

  after(async () => {
    await server?.close();
    tmp.cleanup();
  });

  const keeper = (log: Logger, agentDir = A1, extra: Partial<ConstructorParameters<typeof Ros2Keeper>[0]> = {}) =>
    new Ros2Keeper({
      keystoreDir: KS_R,
      crlUrl,
      log,
      clock: agentClock,
      random: () => 0.5,
      loadState: () => loadState(agentDir),
      ...extra,
    });

  it("leaves everything alone before 2/3 of the lifetime", async () => {
    const before = snapshot(enclave(KS_R, "/tl/talker"));
    const { log, lines } = memoryLogger();
    const next = await keeper(log).cycle();
    assert.deepEqual(snapshot(enclave(KS_R, "/tl/talker")), before);
    assert.ok(!lines.some((l) => l.msg === "renewing enclave"), "no renewal");
    const renewAt = lines.find((l) => l.msg === "enclave renewal scheduled" && l.enclave === "/tl/talker");
    const cert = certOf(enclave(KS_R, "/tl/talker"));
    const nominal = Date.parse(cert.validFrom) + (2 / 3) * (Date.parse(cert.validTo) - Date.parse(cert.validFrom));
    assert.ok(Math.abs(Date.parse(renewAt!.renew_at) - nominal) < 2000, `renew_at ${renewAt!.renew_at} is 2/3 of the lifetime`);
    assert.ok(next <= Date.parse(renewAt!.renew_at), "the loop wakes up in time");
  });

  it("renews this device's enclaves at 2/3: new serial and key, re-signed permissions, modes kept; others untouched", async () => {
    const mine = ["/tl/talker", "/tl/listener", "/nav", "/nav/planner"];
    const others = ["/other/node", "/shared/nobody"];
    const old = Object.fromEntries([...mine, ...others].map((p) => [p, snapshot(enclave(KS_R, p))]));
    const oldSerials = Object.fromEntries(mine.map((p) => [p, serialOf(enclave(KS_R, p))]));
    agentClock.advance(2.2 * DAY);
    const { log, lines } = memoryLogger();
    const renewed: EnclaveRenewal[] = [];
    const k = keeper(log, A1, { onRenewed: (r) => void renewed.push(r) });
    await k.cycle();
    assert.deepEqual(renewed.map((r) => r.path).sort(), [...mine].sort(), JSON.stringify(lines.filter((l) => l.level !== "info")));
    const at = epoch(agentClock.now());
    for (const p of mine) {
      const d = enclave(KS_R, p);
      const now = snapshot(d);
      assert.notEqual(serialOf(d), oldSerials[p], `${p}: new serial`);
      assert.notEqual(now["key.pem"]!.bytes, old[p]!["key.pem"]!.bytes, `${p}: new key`);
      assert.ok(enclaveKeyMatches(d), `${p}: key.pem matches cert.pem`);
      assert.equal(createPublicKey(readFileSync(join(d, "key.pem"))).asymmetricKeyDetails?.namedCurve, "prime256v1");
      assert.equal(certOf(d).subject, `CN=${p}`);
      // Modes of the layout.
      assert.equal(now["."]!.mode, 0o700, `${p}: enclave dir 0700`);
      assert.equal(now["key.pem"]!.mode, 0o600, `${p}: key.pem 0600`);
      for (const f of ENCLAVE_FILE_NAMES.filter((n) => n !== "key.pem")) assert.equal(now[f]?.mode, 0o644, `${p}: ${f} 0644`);
      assert.deepEqual(Object.keys(now).sort(), [".", ...ENCLAVE_FILE_NAMES].sort(), `${p}: no leftovers`);
      // openssl: the certificate chains to the identity CA alone (as DDS loads it).
      const v = openssl(["verify", "-attime", at, "-CAfile", join(d, "identity_ca.cert.pem"), join(d, "cert.pem")]);
      assert.equal(v.status, 0, `${p}: openssl verify: ${v.stderr}`);
      // permissions.p7s is signed by the permissions CA, over the new permissions.xml, whose grant has the new validity.
      const s = openssl([
        "smime",
        "-verify",
        "-text",
        "-attime",
        at,
        "-in",
        join(d, "permissions.p7s"),
        "-CAfile",
        join(d, "permissions_ca.cert.pem"),
      ]);
      assert.equal(s.status, 0, `${p}: openssl smime -verify: ${s.stderr}`);
      const xml = readFileSync(join(d, "permissions.xml"), "utf8");
      assert.equal(s.stdout.replace(/\r\n/g, "\n"), xml.replace(/\r\n/g, "\n"), `${p}: p7s signs permissions.xml`);
      const cert = certOf(d);
      // The grant starts 14 h before the certificate and ends 14 h after it (Fast DDS reads it in local time).
      const grant = (iso: string, shift = 0) => new Date(Date.parse(iso) - shift).toISOString().slice(0, 19);
      const notBefore = `<not_before>${grant(cert.validFrom, 14 * 3600_000)}</not_before>`;
      assert.ok(xml.includes(notBefore), `${p}: not_before is 14 h before the new certificate's`);
      const notAfter = `<not_after>${grant(cert.validTo, -14 * 3600_000)}</not_after>`;
      assert.ok(xml.includes(notAfter), `${p}: not_after is 14 h after the new certificate's`);
      assert.notEqual(xml, old[p]!["permissions.xml"]!.bytes, `${p}: permissions re-rendered`);
    }
    // Nested /nav/planner survived the renewal of /nav (and was renewed itself).
    assert.ok(existsSync(join(enclave(KS_R, "/nav/planner"), "cert.pem")));
    for (const p of others) {
      // Untouched but for crl.pem, which is the current CRL (re-signed meanwhile: time moved) in every enclave.
      assert.deepEqual(without(snapshot(enclave(KS_R, p)), "crl.pem"), without(old[p]!, "crl.pem"), `${p}: untouched`);
      assert.equal(
        readFileSync(join(enclave(KS_R, p), "crl.pem"), "utf8"),
        readFileSync(join(KS_R, "public", "identity_ca.crl.pem"), "utf8"),
      );
      assert.equal(lines.filter((l) => l.enclave === p && /left alone/.test(l.msg)).length, 1, `${p}: logged once`);
      const refused = lines.find((l) => l.enclave === p && /left alone/.test(l.msg));
      assert.equal(refused!.status, 403, `${p}: the server said 403`);
    }
    // A second cycle asks nothing again and logs nothing more about the others.
    const count = lines.length;
    await k.cycle();
    assert.ok(!lines.slice(count).some((l) => /left alone|renewing/.test(l.msg)), JSON.stringify(lines.slice(count)));
    // Audited as ros2.enclave.renew by the device.
    const events = (await server.server.fleet.store.ops.audit.list({ limit: 100_000 })).filter((e) => e.action === "ros2.enclave.renew");
    assert.equal(
      events.filter((e) => e.actor === "device:robot1").length,
      mine.length,
      "one ros2.enclave.renew per enclave, by the device",
    );
  });

  it("refreshes the CRL into every enclave after a revocation; a revoked enclave gets 409 and is left as it is", async () => {
    const listener = enclave(KS_R, "/tl/listener");
    const listenerSerial = serialOf(listener);
    await revokeEnclave(server.server.fleet, { dir: KS_CA, path: "/tl/listener", actor: "test" });
    const before = snapshot(listener);
    agentClock.advance(2.2 * DAY);
    const { log, lines } = memoryLogger();
    await keeper(log).cycle();
    // The listener: 409, its files untouched but for the fresh CRL.
    const refusal = lines.find((l) => l.enclave === "/tl/listener" && /revoked/.test(l.msg));
    assert.equal(refusal?.status, 409, JSON.stringify(lines.filter((l) => l.level !== "info")));
    assert.equal(refusal?.level, "error");
    assert.deepEqual(without(snapshot(listener), "crl.pem"), without(before, "crl.pem"));
    assert.equal(serialOf(listener), listenerSerial);
    // Every enclave's crl.pem (and public/) is the new CRL, and openssl refuses the listener's certificate with it.
    const publicCrl = readFileSync(join(KS_R, "public", "identity_ca.crl.pem"), "utf8");
    const at = epoch(agentClock.now());
    const scan = scanEnclaves(openKeystore(KS_R, loadState(A1).root));
    assert.equal(scan.enclaves.length, 6);
    for (const e of scan.enclaves) {
      assert.equal(readFileSync(join(e.dir, "crl.pem"), "utf8"), publicCrl, `${e.path}: crl.pem is the current CRL`);
      const v = openssl([
        "verify",
        "-crl_check",
        "-attime",
        at,
        "-CAfile",
        join(e.dir, "identity_ca.cert.pem"),
        "-CRLfile",
        join(e.dir, "crl.pem"),
        join(listener, "cert.pem"),
      ]);
      assert.notEqual(v.status, 0, `${e.path}: the revoked certificate must fail`);
      assert.match(v.stdout + v.stderr, /revoked/);
    }
    // The other enclaves of robot1 still verify with the CRL.
    const talker = enclave(KS_R, "/tl/talker");
    const ok = openssl([
      "verify",
      "-crl_check",
      "-attime",
      at,
      "-CAfile",
      join(talker, "identity_ca.cert.pem"),
      "-CRLfile",
      join(talker, "crl.pem"),
      join(talker, "cert.pem"),
    ]);
    assert.equal(ok.status, 0, ok.stderr);
  });

  it("refuses a CRL that is not signed by the identity CA, and never replaces a newer CRL by an older one", async () => {
    const publicPath = join(KS_R, "public", "identity_ca.crl.pem");
    const current = readFileSync(publicPath, "utf8");
    const talkerCrl = join(enclave(KS_R, "/tl/talker"), "crl.pem");
    // The devices CA's CRL is a real fleet CRL, from the same server, of another CA.
    const { log, lines } = memoryLogger();
    const foreign = new URL(crlUrl.href.replace("ros2-identity", "devices"));
    await keeper(log, A1, { crlUrl: foreign }).cycle();
    assert.equal(readFileSync(publicPath, "utf8"), current);
    assert.equal(readFileSync(talkerCrl, "utf8"), current);
    assert.ok(
      lines.some((l) => l.msg === "CRL refused; keeping the one in place" && /not signed by the keystore's identity CA/.test(l.error)),
      `the foreign CRL is refused: ${JSON.stringify(lines.filter((l) => /CRL/.test(l.msg)))}`,
    );
    // An older CRL of the identity CA (the one from before the revocation) in an enclave is replaced, never the reverse.
    const older = initialCrl;
    assert.notEqual(older, current);
    writeFileSync(talkerCrl, older);
    await keeper(log).cycle();
    assert.equal(readFileSync(talkerCrl, "utf8"), current, "the stale enclave CRL is brought up to date");
    // Offered the older CRL (a replay would un-revoke /tl/listener), nothing changes.
    const ks = openKeystore(KS_R, loadState(A1).root);
    const scan = scanEnclaves(ks);
    assert.deepEqual(syncCrls(ks, scan.enclaves, checkIdentityCrl(ks, older, "older"), log), []);
    assert.equal(readFileSync(publicPath, "utf8"), current, "public/ keeps the newer CRL");
    for (const e of scan.enclaves) assert.equal(readFileSync(join(e.dir, "crl.pem"), "utf8"), current, `${e.path} keeps the newer CRL`);
  });

  it("takes from an answer only CAs chained to the pinned root or exactly the keystore's own self-signed anchors", () => {
    const ks = openKeystore(KS_R, loadState(A1).root);
    const anchor = (name: string) => readFileSync(join(KS_R, "public", `${name}_ca.cert.pem`), "utf8");
    // The keystore ships self-signed anchors (no partial chain in DDS), which the agent opens without the root.
    assert.ok(ks.identityCa.checkIssued(ks.identityCa), "public/identity_ca.cert.pem is self-signed");
    assert.ok(ks.permissionsAnchor, "public/permissions_ca.cert.pem is kept as the permissions anchor");
    const foreignPem = join(tmp.path, "foreign-ca.pem");
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", join(tmp.path, "foreign-ca.key")];
    const made = openssl(["req", "-x509", ...ec, "-out", foreignPem, "-subj", "/CN=ROS Robots ROS 2 Identity CA", "-days", "30"]);
    assert.equal(made.status, 0, made.stderr);
    const foreign = readFileSync(foreignPem, "utf8");
    const { privateKey: key } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const attempt =
      (body: Record<string, string>, keystore = ks) =>
      () =>
        enclaveFilesFrom({ certificate: foreign, ...body }, { path: "/tl/talker", key, root: loadState(A1).root, ks: keystore });
    const refused = (what: string) => new RegExp(`: ${what} is not issued by the pinned fleet root, nor the keystore's own trust anchor$`);
    assert.throws(attempt({ identity_ca: foreign, permissions_ca: anchor("permissions") }), refused("identity_ca"));
    assert.throws(attempt({ identity_ca: anchor("identity"), permissions_ca: foreign }), refused("permissions_ca"));
    // A keystore whose anchor was swapped on the robot: the fleet's real anchor in the answer is refused.
    const swapped = { ...ks, identityCa: new X509Certificate(foreign) };
    assert.throws(attempt({ identity_ca: anchor("identity"), permissions_ca: anchor("permissions") }, swapped), refused("identity_ca"));
    // The keystore's own anchors pass the CA checks (the forged certificate is then refused for its key).
    assert.throws(attempt({ identity_ca: anchor("identity"), permissions_ca: anchor("permissions") }), /does not carry the key/);
  });

  it("a crash while replacing an enclave leaves the old set or the new one, never a mix", () => {
    const d = enclave(KS_R, "/tl/talker");
    const old = snapshot(d);
    const files = { "key.pem": "NEW KEY\n", "cert.pem": "NEW CERT\n", "permissions.xml": "<new/>\n" };
    const crashAt = (step: string) => () =>
      commitEnclave(d, files, {
        onStep: (s) => {
          if (s === step) throw new Error(`crash at ${s}`);
        },
      });
    // Before the commit point: rolled back, the old enclave as it was.
    assert.throws(crashAt("staged cert.pem"), /crash/);
    assert.equal(recoverEnclave(d), "rolled-back");
    assert.deepEqual(snapshot(d), old);
    // After the commit point, half applied: rolled forward to the new set.
    assert.throws(crashAt("applied key.pem"), /crash/);
    assert.equal(recoverEnclave(d), "rolled-forward");
    const now = snapshot(d);
    assert.equal(now["key.pem"]!.bytes, "NEW KEY\n");
    assert.equal(now["key.pem"]!.mode, 0o600);
    assert.equal(now["cert.pem"]!.bytes, "NEW CERT\n");
    assert.equal(now["permissions.xml"]!.bytes, "<new/>\n");
    assert.deepEqual(
      without(now, "key.pem", "cert.pem", "permissions.xml", "."),
      without(old, "key.pem", "cert.pem", "permissions.xml", "."),
    );
    // Put the real files back for the tests after this one.
    commitEnclave(d, Object.fromEntries(["key.pem", "cert.pem", "permissions.xml"].map((f) => [f, old[f]!.bytes])));
    assert.deepEqual(snapshot(d), old);
  });

  it("the device certificate names where the status server is", () => {
    const state = loadState(A1);
    assert.match(crlDistributionUri(state.parsed) ?? "", /^http:\/\/.+\/crl\/devices\.crl$/);
  });

  describe("POST /api/v1/ros2/enclaves/renew refuses", () => {
    const url = () => `${server.url}/api/v1/ros2/enclaves/renew`;
    const tls = (agentDir: string) => {
      const s = loadState(agentDir);
      return { ca: rootPem, cert: s.certPem + s.chainPem, key: s.keyPem };
    };
    const good = async (path = "/tl/talker") => ({ keystore: keystoreId, enclave: path, csr: (await makeCsr(path)).csr.b64 });

    it("hostile bodies with 400 problems", async () => {
      const base = await good();
      const cases: [unknown, string][] = [
        [{ ...base, extra: 1 }, "unknown-field"],
        [JSON.parse(`{"keystore":"${base.keystore}","enclave":"/tl/talker","csr":"${base.csr}","constructor":"x"}`), "unknown-field"],
        [JSON.parse(`{"keystore":"${base.keystore}","enclave":"/tl/talker","csr":"${base.csr}","__proto__":{"a":1}}`), "unknown-field"],
        [{ ...base, keystore: 5 }, "invalid-field"],
        [{ ...base, enclave: ["/tl/talker"] }, "invalid-field"],
        [{ ...base, csr: null }, "missing-field"],
        [{ keystore: base.keystore, enclave: base.enclave }, "missing-field"],
        [{ ...base, keystore: "not-a-uuid" }, "invalid-field"],
        [{ ...base, enclave: "/" + "a".repeat(300) }, "invalid-field"],
        [{ ...base, csr: "A".repeat(5000) }, "invalid-field"],
        [{ ...base, csr: "-----BEGIN CERTIFICATE REQUEST-----" }, "invalid-base64"],
        [{ ...base, csr: Buffer.from("not a csr").toString("base64") }, ""],
        [{ ...base, enclave: "/tl/../etc" }, "invalid-argument"],
        [[base], "invalid-json"],
      ];
      for (const [body, type] of cases) {
        const r = await postJson(url(), body, tls(A1));
        const p = assertProblem(r, 400, type || undefined);
        assert.ok(p.type.length > 0, JSON.stringify(body).slice(0, 80));
      }
      // A P-384 key: DDS takes P-256 only.
      const { csr } = opensslCsr(tmp.path, "p384", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]);
      const pem = readFileSync(csr, "utf8").replace(/-----[^-]+-----|\s/g, "");
      assertProblem(await postJson(url(), { ...base, csr: pem }, tls(A1)), 400, "key-type-not-allowed");
    });

    it("403 for another device's enclave, 404 for an unknown one, 409 for a revoked one, 401 without a certificate", async () => {
      assertProblem(await postJson(url(), await good("/tl/talker"), tls(A2)), 403, "enclave-not-owned");
      assertProblem(await postJson(url(), await good("/shared/nobody"), tls(A1)), 403, "enclave-not-owned");
      assertProblem(await postJson(url(), await good("/no/such"), tls(A1)), 404, "unknown-enclave");
      const unknownKs = { ...(await good()), keystore: "00000000-0000-4000-8000-000000000000" };
      assertProblem(await postJson(url(), unknownKs, tls(A1)), 404, "unknown-enclave");
      assertProblem(await postJson(url(), await good("/tl/listener"), tls(A1)), 409, "enclave-revoked");
      assertProblem(await postJson(url(), await good(), { ca: rootPem }), 401, "certificate-required");
    });
  });

  it("runAgent refuses at start a directory that is not a keystore, or another fleet's keystore", async () => {
    await assert.rejects(runAgent({ dir: A1, clock: agentClock, ros2Keystore: join(tmp.path, "fleet") }), /is not a fleetpki keystore/);
    const foreign = join(tmp.path, "ks-foreign");
    cpSync(KS_R, foreign, { recursive: true });
    const marker = JSON.parse(readFileSync(join(foreign, ".fleetpki-keystore.json"), "utf8"));
    writeFileSync(join(foreign, ".fleetpki-keystore.json"), JSON.stringify({ ...marker, fleet: "ab".repeat(32) }));
    await assert.rejects(runAgent({ dir: A1, clock: agentClock, ros2Keystore: foreign }), /is a keystore of another fleet/);
  });

  it("runAgent --ros2-keystore renews in its loop, runs the hook with the enclave, and stops with the signal", async () => {
    const controller = new AbortController();
    const hookOut = join(tmp.path, "hook.out");
    const renewed: EnclaveRenewal[] = [];
    let resolveRenewed: () => void = () => {};
    const gotOne = new Promise<void>((r) => (resolveRenewed = r));
    const { log, lines } = memoryLogger();
    const running = runAgent({
      dir: A1,
      clock: agentClock,
      random: () => 0.5,
      log,
      signal: controller.signal,
      onRenew: `printf '%s %s\\n' "$FLEETPKI_ROS2_EVENT" "$FLEETPKI_ROS2_ENCLAVE" >> ${JSON.stringify(hookOut)}`,
      ros2Keystore: KS_R,
      ros2CrlUrl: crlUrl,
      onEnclaveRenewed: (r) => {
        renewed.push(r);
        if (renewed.length >= 3) resolveRenewed();
      },
    });
    // Wait until the loop sleeps, then move past the enclaves' 2/3 (not the device certificate's).
    // (Polling the clock's state, not a timing: both loops are asleep once two sleeps wait.)
    for (let i = 0; i < 2000 && agentClock.waiting < 2; i++) await new Promise((r) => setImmediate(r));
    assert.equal(agentClock.waiting, 2, JSON.stringify(lines));
    agentClock.advance(2.2 * DAY);
    await gotOne;
    controller.abort();
    await running;
    assert.deepEqual(renewed.map((r) => r.path).sort(), ["/nav", "/nav/planner", "/tl/talker"]);
    assert.deepEqual(readFileSync(hookOut, "utf8").trim().split("\n").sort(), ["renew /nav", "renew /nav/planner", "renew /tl/talker"]);
  });
  it("backs off on network errors like the device renewal, and leaves the enclave as it is", async () => {
    // The same device, its agent.json pointing at a port where nothing listens.
    const offline = join(tmp.path, "agent-offline");
    cpSync(A1, offline, { recursive: true });
    const config = JSON.parse(readFileSync(join(offline, "agent.json"), "utf8"));
    writeFileSync(join(offline, "agent.json"), JSON.stringify({ ...config, server: "https://127.0.0.1:1" }));
    agentClock.advance(2.2 * DAY);
    const talker = enclave(KS_R, "/tl/talker");
    const before = snapshot(talker);
    const { log, lines } = memoryLogger();
    const k = keeper(log, offline);
    const start = agentClock.now();
    const next = await k.cycle();
    const failures = lines.filter((l) => l.msg === "enclave renewal failed; retrying" && l.enclave === "/tl/talker");
    assert.equal(failures.length, 1, JSON.stringify(lines));
    assert.equal(failures[0]!.kind, "network");
    // First retry after 0.5-1 s (base 1 s, equal jitter), and the loop wakes up for it.
    assert.ok(failures[0]!.retry_in_ms >= 500 && failures[0]!.retry_in_ms <= 1000, String(failures[0]!.retry_in_ms));
    assert.ok(next <= start + 1000, "the next cycle is the retry");
    assert.deepEqual(without(snapshot(talker), "crl.pem"), without(before, "crl.pem"));
    // The second failure waits longer (doubling).
    agentClock.advance(1000);
    await k.cycle();
    const again = lines.filter((l) => l.msg === "enclave renewal failed; retrying" && l.enclave === "/tl/talker");
    assert.equal(again.length, 2);
    assert.ok(again[1]!.retry_in_ms >= 1000 && again[1]!.retry_in_ms <= 2000, String(again[1]!.retry_in_ms));
  });

  it("the ros2-identity CRL lives revocation.ros2_crl_validity, the devices CA's crl_validity", async () => {
    const fleet = server.server.fleet;
    const now = clock.now();
    const ros2 = await signCrl(fleet, "ros2-identity", now);
    const devices = await signCrl(fleet, "devices", now);
    const thisUpdate = Math.floor(now.getTime() / 1000) * 1000;
    assert.equal(ros2.thisUpdate.getTime(), thisUpdate);
    assert.equal(ros2.nextUpdate.getTime() - ros2.thisUpdate.getTime(), 45 * DAY);
    assert.equal(devices.nextUpdate.getTime() - devices.thisUpdate.getTime(), DAY);
    // What robots fetch (the status listener's publisher) says the same, read by openssl.
    writeFileSync(join(tmp.path, "served.crl.pem"), await (await fetch(crlUrl)).text());
    const text = openssl(["crl", "-noout", "-nextupdate", "-lastupdate", "-in", join(tmp.path, "served.crl.pem")]).stdout;
    const next = Date.parse(/nextUpdate=(.+)/.exec(text)![1]!);
    const last = Date.parse(/lastUpdate=(.+)/.exec(text)![1]!);
    assert.equal(next - last, 45 * DAY, text);
  });

  it("runs the --on-renew hook once with FLEETPKI_ROS2_EVENT=crl after a revocation, not again for the same CRL", async () => {
    const fleet = server.server.fleet;
    const controller = new AbortController();
    const hookOut = join(tmp.path, "hook-crl.out");
    const hook =
      `printf '%s|%s|%s|%s\\n' "$FLEETPKI_ROS2_EVENT" "$FLEETPKI_ROS2_ENCLAVES" "$FLEETPKI_ROS2_CRL_NUMBER" "$FLEETPKI_ROS2_CRL" ` +
      `>> ${JSON.stringify(hookOut)}`;
    const { log, lines } = memoryLogger();
    const running = runAgent({
      dir: A1,
      clock: agentClock,
      random: () => 0.5,
      log,
      signal: controller.signal,
      onRenew: hook,
      ros2Keystore: KS_R,
      ros2CrlUrl: crlUrl,
      ros2CrlIntervalMs: 60_000,
    });
    // Both loops asleep means a keeper cycle (and its hook) is over; poll the clock's state, no timing.
    const idle = async () => {
      for (let i = 0; i < 4000 && agentClock.waiting < 2; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(agentClock.waiting, 2, JSON.stringify(lines.filter((l) => l.level !== "debug")));
    };
    const hookLines = () => (existsSync(hookOut) ? readFileSync(hookOut, "utf8").trim().split("\n") : []);
    try {
      await idle();
      const before = hookLines().length; // the first cycle may install a CRL re-signed meanwhile
      // A revocation on the CA machine: a new CRL, fetched on the next cycle.
      await createEnclave(fleet, { dir: KS_CA, path: "/gone/node", allowAll: true, actor: "test" });
      const gone = serialOf(enclave(KS_CA, "/gone/node"));
      const publicCrl = join(KS_R, "public", "identity_ca.crl.pem");
      const readCrl = () => parseCrl(fromPem(readFileSync(publicCrl, "utf8"), ["X509 CRL"]));
      const old = readCrl();
      await revokeEnclave(fleet, { dir: KS_CA, path: "/gone/node", actor: "test" });
      // The status listener learns of the change through the audit feed and re-signs: wait until the CRL it
      // serves lists the revoked certificate. (Not "the number revokeEnclave signed": the listener may re-sign
      // before revokeEnclave does, and then serves an equally good CRL with a lower number.)
      const served = async () => parseCrl(fromPem(await (await fetch(crlUrl)).text(), ["X509 CRL"]));
      const lists = async () => (await served()).entries.some((e) => e.serialHex === gone);
      for (let i = 0; i < 3000 && !(await lists()); i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(await lists(), "the server serves a CRL that lists the revoked enclave");
      agentClock.advance(60_000);
      await idle();
      const after = hookLines().slice(before);
      // The CRL the hook was told about is the one now in place, newer, and it lists the revoked enclave.
      const installed = readCrl();
      assert.ok(installed.crlNumber! > old.crlNumber!);
      assert.ok(installed.entries.some((e) => e.serialHex === gone));
      const number = installed.crlNumber!.toString();
      const enclaves = scanEnclaves(openKeystore(KS_R, loadState(A1).root))
        .enclaves.map((e) => e.path)
        .join(" ");
      assert.deepEqual(after, [`crl|${enclaves}|${number}|${publicCrl}`], JSON.stringify(lines.filter((l) => /CRL|hook/.test(l.msg))));
      // The same CRL on the next cycles: nothing written, no hook.
      agentClock.advance(60_000);
      await idle();
      agentClock.advance(60_000);
      await idle();
      assert.equal(hookLines().length, before + 1);
    } finally {
      controller.abort();
      await running;
    }
  });

  it("an enclave parked as revoked is renewed again once it is created again and copied to the robot", async () => {
    // Last in this suite: it moves the clock and renews what is due. Its own enclave, so earlier state does not matter.
    const fleet = server.server.fleet;
    const path = "/again/node";
    const onRobot = enclave(KS_R, path);
    const copy = () => cpSync(enclave(KS_CA, path), onRobot, { recursive: true, preserveTimestamps: true });
    await createEnclave(fleet, { dir: KS_CA, path, deviceId: "robot1", allowAll: true, actor: "test" });
    copy();
    await revokeEnclave(fleet, { dir: KS_CA, path, actor: "test" });
    agentClock.advance(2.5 * DAY);
    const { log, lines } = memoryLogger();
    const k = keeper(log);
    await k.cycle();
    assert.ok(
      lines.some((l) => l.enclave === path && l.status === 409),
      JSON.stringify(lines.filter((l) => l.level !== "info")),
    );
    // On the CA machine: the revoked path is created again for the same robot, then copied to it.
    await createEnclave(fleet, { dir: KS_CA, path, deviceId: "robot1", allowAll: true, actor: "test" });
    const fresh = serialOf(enclave(KS_CA, path));
    copy();
    await k.cycle();
    assert.equal(serialOf(onRobot), fresh, "not due yet: the copied enclave is left as it is");
    agentClock.advance(2.5 * DAY);
    await k.cycle();
    assert.notEqual(serialOf(onRobot), fresh, JSON.stringify(lines.filter((l) => l.enclave === path)));
  });
});
