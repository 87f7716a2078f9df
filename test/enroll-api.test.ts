// The JSON enrollment API (/api/v1/...) over real HTTPS with a node:https client: token,
// factory and approval provisioners, renewal with mTLS and after expiry, a one-token race, and
// the audit trail it leaves. Each suite has its own fleet and server; they run side by side so
// the wait for a certificate to expire overlaps the rest.
import assert from "node:assert/strict";
import { X509Certificate, createHash, createPublicKey, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { verifyAudit } from "../src/audit/log.js";
import { verifyFleetAudit } from "../src/authority/audit-checkpoints.js";
import { addDevice } from "../src/authority/devices.js";
import { enrollByApproval, listPendingRequests, sourceOf } from "../src/authority/enroll/enrollment.js";
import { TooManyRequests } from "../src/authority/errors.js";
import { FleetServices } from "../src/authority/services.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { holdDevice, revokeCertificate } from "../src/authority/status/revocation.js";
import { createToken } from "../src/authority/enroll/tokens.js";
import { cliAsync, tempDir, tempFleet } from "./helpers.js";
import {
  assertProblem,
  curl,
  devicesCaPemPath,
  editConfig,
  https,
  makeCsr,
  newP256Key,
  pool,
  postJson,
  rootPemPath,
  startTestServer,
  type ClientKey,
  type HttpResult,
  type TestServer,
} from "./server-helpers.js";
import { ManualClock } from "./support/clock.js";
import { sqliteStore } from "./support/sqlite.js";

type TempFleet = Awaited<ReturnType<typeof tempFleet>>;

async function deviceWithToken(fleet: FleetServices, id: string): Promise<string> {
  await addDevice(fleet, { id, actor: "test" });
  return (await createToken(fleet, { deviceId: id, actor: "test" })).token;
}

const normalizeSerial = (hex: string): string => hex.toLowerCase().replace(/^(00)+/, "");

interface Issued {
  certificate: string;
  chain: string;
  ca_bundle: string;
  not_after: string;
  serial: string;
}

/** Checks the success shape and the certificate itself; returns the body. */
function assertIssued(res: HttpResult, dir: string, deviceId: string, key?: ClientKey): Issued {
  assert.equal(res.status, 200, `expected 200, got ${res.status}: ${res.text}`);
  assert.match(String(res.headers["content-type"]), /^application\/json/);
  const body = res.json() as Issued;
  assert.deepEqual(Object.keys(body).sort(), ["ca_bundle", "certificate", "chain", "not_after", "serial"]);
  const cert = new X509Certificate(body.certificate);
  const issuer = new X509Certificate(body.chain);
  const root = new X509Certificate(body.ca_bundle);
  assert.equal(
    issuer.raw.toString("base64"),
    new X509Certificate(readFileSync(devicesCaPemPath(dir))).raw.toString("base64"),
    "chain is the devices CA",
  );
  assert.equal(
    root.raw.toString("base64"),
    new X509Certificate(readFileSync(rootPemPath(dir))).raw.toString("base64"),
    "ca_bundle is the fleet root",
  );
  assert.ok(cert.checkIssued(issuer) && cert.verify(issuer.publicKey), "signed by the devices CA");
  assert.ok(issuer.verify(root.publicKey), "devices CA signed by the root");
  assert.equal(cert.subject, `CN=${deviceId}`);
  assert.ok(cert.subjectAltName?.split(", ").includes(`URI:spiffe://fleet.example/device/${deviceId}`), `SAN of ${cert.subjectAltName}`);
  assert.equal(normalizeSerial(cert.serialNumber), normalizeSerial(body.serial));
  assert.equal(new Date(cert.validTo).getTime(), new Date(body.not_after).getTime());
  if (key) assert.ok(cert.publicKey.equals(createPublicKey(key.privateKey)), "the certificate carries the CSR's key");
  return body;
}

/** Client certificate as TLS wants it: leaf followed by its chain. */
const tlsCert = (issued: Issued): string => issued.certificate + issued.chain;

/** fleetpki-renew-expired/v1 \n id \n nonce \n hex SHA-256 of the CSR DER, ECDSA-SHA256 (DER) for P-256. */
const expiredProof = (key: ClientKey, id: string, nonce: string, csrDer: Buffer): string =>
  sign(
    "sha256",
    Buffer.from(`fleetpki-renew-expired/v1\n${id}\n${nonce}\n${createHash("sha256").update(csrDer).digest("hex")}`, "utf8"),
    key.privateKey,
  ).toString("base64");

/**
 * A device whose certificate (for a key the test holds) expired `agoMs` ago: issued with a clock
 * set in the past, so nothing waits for it to expire.
 */
async function deviceWithExpiredCertificate(
  fleet: FleetServices,
  id: string,
  agoMs = 10 * 60_000,
): Promise<{ issued: Issued; key: ClientKey }> {
  await addDevice(fleet, { id, actor: "test" });
  const { key, csr } = await makeCsr(id);
  const lifetimeMs = 60_000;
  const c = await issueDeviceCertificate(fleet, {
    deviceId: id,
    actor: "test",
    csr: csr.der,
    now: new Date(Date.now() - agoMs - lifetimeMs),
    lifetimeMs,
  });
  assert.ok(c.notAfter.getTime() < Date.now());
  return {
    issued: { certificate: c.certificatePem, chain: c.chainPem, ca_bundle: c.caPem, not_after: c.notAfter.toISOString(), serial: c.serial },
    key,
  };
}

const countRows = async (fleet: FleetServices, table: "renewal_nonces" | "certificates", deviceId?: string): Promise<number> => {
  let q = sqliteStore(fleet)
    .db.selectFrom(table)
    .select((eb) => eb.fn.countAll().as("n"));
  if (deviceId) q = q.where("device_id", "=", deviceId);
  return Number((await q.executeTakeFirstOrThrow()).n);
};

const auditRows = (fleet: FleetServices, action: string, deviceId: string) =>
  sqliteStore(fleet)
    .db.selectFrom("audit_log")
    .selectAll()
    .where("action", "=", action)
    .where("subject", "=", `device:${deviceId}`)
    .execute();

describe("JSON enrollment API over HTTPS", { concurrency: true }, () => {
  // ---- token, factory, renewal, errors ----------------------------------------------------
  describe("token, factory, renewal and errors", { concurrency: false }, () => {
    let f: TempFleet;
    let server: TestServer;
    let out: { path: string; cleanup: () => void };
    let ca: string;
    const tokens: Record<string, string> = {};
    let enrolled: { issued: Issued; key: ClientKey } | undefined;
    const api = (path: string) => `${server.url}${path}`;

    before(async () => {
      f = await tempFleet();
      out = tempDir("fleetpki-api-factory-");
      ca = readFileSync(rootPemPath(f.dir), "utf8");
      for (const id of ["api-0001", "api-rev", "api-err"]) tokens[id] = await deviceWithToken(f.fleet, id);
      // Factory bundles with the real CLI, before the server starts (it loads local CAs as client trust).
      const local = await cliAsync(["ca", "create-local", "--dir", f.dir, "--name", "f1"]);
      assert.equal(local.status, 0, local.stderr);
      const batch = await cliAsync([
        "ca",
        "issue-batch",
        "--dir",
        f.dir,
        "--local",
        "f1",
        "--ids",
        "robot-0001..robot-0002",
        "--out",
        out.path,
      ]);
      assert.equal(batch.status, 0, batch.stderr);
      server = await startTestServer(f.dir);
    });
    after(async () => {
      await server?.close();
      await f?.close();
      out?.cleanup();
    });

    it("GET /healthz -> 200 {status: ok}", async () => {
      const r = await https(api("/healthz"), { ca });
      assert.equal(r.status, 200);
      assert.match(String(r.headers["content-type"]), /^application\/json/);
      assert.deepEqual(r.json(), { status: "ok" });
      const post = await https(api("/healthz"), { ca, method: "POST" });
      assertProblem(post, 405, "method-not-allowed");
      assert.equal(post.headers["allow"], "GET");
    });

    it("POST /api/v1/enroll with a token -> {certificate, chain, ca_bundle, not_after, serial}", async () => {
      const { key, csr } = await makeCsr("whatever-the-csr-says");
      const r = await postJson(api("/api/v1/enroll"), { device_id: "api-0001", token: tokens["api-0001"], csr: csr.pem }, { ca });
      const issued = assertIssued(r, f.dir, "api-0001", key);
      const row = await sqliteStore(f.fleet)
        .db.selectFrom("certificates")
        .selectAll()
        .where("serial", "=", issued.serial)
        .executeTakeFirstOrThrow();
      assert.equal(row.device_id, "api-0001");
      assert.equal(row.kind, "device");
      assert.ok(Buffer.from(row.der).equals(new X509Certificate(issued.certificate).raw), "the recorded DER is what was handed out");
      enrolled = { issued, key };
    });

    it("errors are application/problem+json with type, title, status, detail", async () => {
      const { csr } = await makeCsr("api-err");
      const enroll = (body: unknown, headers?: Record<string, string>) => postJson(api("/api/v1/enroll"), body, { ca, headers });
      assertProblem(await enroll({ device_id: "api-0001", token: tokens["api-0001"], csr: csr.pem }), 401, "token-used");
      assertProblem(await enroll({ device_id: "api-err", token: "fpt_not-the-token", csr: csr.pem }), 401, "token-invalid");
      assertProblem(await enroll({ device_id: "api-err", csr: csr.pem }), 401, "credentials-required");
      assertProblem(await enroll({ token: tokens["api-err"], csr: csr.pem }), 400, "missing-field");
      assertProblem(await enroll({ device_id: "api-err", token: tokens["api-err"] }), 400, "missing-field");
      assertProblem(await enroll({ device_id: "api-err", token: tokens["api-err"], csr: 42 }), 400, "invalid-field");
      assertProblem(
        await enroll({
          device_id: "api-err",
          token: tokens["api-err"],
          csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        }),
        400,
        "csr-malformed",
      );
      assertProblem(await enroll({ device_id: "Bad Id", token: tokens["api-err"], csr: csr.pem }), 400, "invalid-device-id");
      assertProblem(await enroll([1, 2]), 400, "invalid-json");
      assertProblem(
        await https(api("/api/v1/enroll"), { ca, method: "POST", headers: { "content-type": "application/json" }, body: "{not json" }),
        400,
        "invalid-json",
      );
      assertProblem(
        await https(api("/api/v1/enroll"), { ca, method: "POST", headers: { "content-type": "text/plain" }, body: "{}" }),
        415,
        "unsupported-media-type",
      );
      assertProblem(
        await https(api("/api/v1/enroll"), {
          ca,
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ csr: "x".repeat(70_000) }),
        }),
        413,
        "body-too-large",
      );
      const get = await https(api("/api/v1/enroll"), { ca });
      assertProblem(get, 405, "method-not-allowed");
      assert.equal(get.headers["allow"], "POST");
      assertProblem(await https(api("/api/v1/nothing"), { ca }), 404, "not-found");
      assertProblem(await postJson(api("/api/v1/renew"), { csr: csr.pem }, { ca }), 401, "certificate-required");
      // None of the refusals consumed api-err's token.
      const { key, csr: good } = await makeCsr("api-err");
      assertIssued(await enroll({ device_id: "api-err", token: tokens["api-err"], csr: good.pem }), f.dir, "api-err", key);
    });

    it(
      "factory: mTLS with the issue-batch bundle -> devices-CA certificate for robot-0001; asking for " +
        "robot-0002 -> 403 identity-mismatch",
      async () => {
        const bundle = join(out.path, "robot-0001");
        const cert = readFileSync(join(bundle, "cert.pem"), "utf8") + readFileSync(join(bundle, "chain.pem"), "utf8");
        const key = readFileSync(join(bundle, "key.pem"), "utf8");
        const { key: newKey, csr } = await makeCsr("robot-0001");
        const mismatch = await postJson(api("/api/v1/enroll"), { device_id: "robot-0002", csr: csr.pem }, { ca, cert, key });
        assertProblem(mismatch, 403, "identity-mismatch");
        const r = await postJson(api("/api/v1/enroll"), { device_id: "robot-0001", csr: csr.pem }, { ca, cert, key });
        const issued = assertIssued(r, f.dir, "robot-0001", newKey);
        const row = await sqliteStore(f.fleet)
          .db.selectFrom("certificates")
          .select(["issuer_ca", "kind"])
          .where("serial", "=", issued.serial)
          .executeTakeFirstOrThrow();
        assert.deepEqual(row, { issuer_ca: "devices", kind: "device" });
        // The factory certificate is not an operational identity: it cannot renew.
        assertProblem(await postJson(api("/api/v1/renew"), { csr: csr.pem }, { ca, cert, key }), 403, "wrong-issuer");
      },
    );

    it(
      "a factory bundle enrolls its device once: 5 enrollments -> one 200, four 403 " +
        "factory-already-enrolled, each audited; reprovision allows one more",
      async () => {
        const bundle = join(out.path, "robot-0002");
        const cert = readFileSync(join(bundle, "cert.pem"), "utf8") + readFileSync(join(bundle, "chain.pem"), "utf8");
        const key = readFileSync(join(bundle, "key.pem"), "utf8");
        const enroll = (csr: string) => postJson(api("/api/v1/enroll"), { device_id: "robot-0002", csr }, { ca, cert, key });
        const csrs = await Promise.all(Array.from({ length: 5 }, () => makeCsr("robot-0002")));
        // At the same time, as copies of one bundle would.
        const results = await Promise.all(csrs.map((c) => enroll(c.csr.pem)));
        const winners = results.flatMap((r, i) => (r.status === 200 ? [i] : []));
        assert.equal(winners.length, 1, results.map((r) => `${r.status} ${r.text}`).join("\n"));
        const winner = winners[0]!;
        const issued = assertIssued(results[winner]!, f.dir, "robot-0002", csrs[winner]!.key);
        for (const r of results.filter((x) => x.status !== 200)) {
          const p = assertProblem(r, 403, "factory-already-enrolled");
          assert.match(p.detail, /fleetpki device reprovision robot-0002/);
        }
        const deviceCerts = () =>
          sqliteStore(f.fleet)
            .db.selectFrom("certificates")
            .select("serial")
            .where("device_id", "=", "robot-0002")
            .where("kind", "=", "device")
            .execute();
        assert.deepEqual(
          (await deviceCerts()).map((r) => r.serial),
          [issued.serial],
        );
        // Refusals are audited as a tally per source, device and bundle (one row with a count when
        // the server flushes its tallies) and counted against the source: test/enroll-bounds.test.ts.

        // The same enrollment repeated (its answer lost): the certificate already issued, no new one.
        const retry = assertIssued(await enroll(csrs[winner]!.csr.pem), f.dir, "robot-0002", csrs[winner]!.key);
        assert.equal(retry.serial, issued.serial);
        assert.equal((await deviceCerts()).length, 1);

        // The operator allows one more (a repaired robot), audited; then it is once again.
        const noFactory = await cliAsync(["device", "reprovision", "api-0001", "--dir", f.dir]);
        assert.equal(noFactory.status, 1);
        assert.match(noFactory.stderr, /^fleetpki: device "api-0001" has not enrolled with a factory certificate/);
        const reprovisioned = await cliAsync(["device", "reprovision", "robot-0002", "--dir", f.dir]);
        assert.equal(reprovisioned.status, 0, reprovisioned.stderr);
        const audit = await sqliteStore(f.fleet)
          .db.selectFrom("audit_log")
          .selectAll()
          .where("action", "=", "device.reprovision")
          .where("subject", "=", "device:robot-0002")
          .execute();
        assert.equal(audit.length, 1);
        assert.equal(audit[0]!.actor, "cli");
        assert.equal(JSON.parse(audit[0]!.details).certificate_serial, issued.serial);
        const again = await makeCsr("robot-0002");
        assertIssued(await enroll(again.csr.pem), f.dir, "robot-0002", again.key);
        assertProblem(await enroll((await makeCsr("robot-0002")).csr.pem), 403, "factory-already-enrolled");
        // Nor does another factory certificate for the same device.
        const second = join(out.path, "second-batch");
        const batch = await cliAsync([
          "ca",
          "issue-batch",
          "--dir",
          f.dir,
          "--local",
          "f1",
          "--ids",
          "robot-0002..robot-0002",
          "--out",
          second,
        ]);
        assert.equal(batch.status, 0, batch.stderr);
        const otherBundle = join(second, "robot-0002");
        const otherCert = readFileSync(join(otherBundle, "cert.pem"), "utf8") + readFileSync(join(otherBundle, "chain.pem"), "utf8");
        const viaOther = await postJson(
          api("/api/v1/enroll"),
          { device_id: "robot-0002", csr: (await makeCsr("robot-0002")).csr.pem },
          { ca, cert: otherCert, key: readFileSync(join(otherBundle, "key.pem"), "utf8") },
        );
        assertProblem(viaOther, 403, "factory-already-enrolled");
        assert.equal((await deviceCerts()).length, 2);
        const verdict = await verifyAudit(f.fleet.store.ops.audit);
        assert.ok(verdict.ok, JSON.stringify(verdict));
      },
    );

    it("POST /api/v1/renew with mTLS -> a new certificate (new serial, new key)", async () => {
      assert.ok(enrolled, "needs the token enrollment");
      const { key, csr } = await makeCsr("api-0001");
      const r = await postJson(
        api("/api/v1/renew"),
        { csr: csr.pem },
        { ca, cert: tlsCert(enrolled.issued), key: enrolled.key.privateKey },
      );
      const renewed = assertIssued(r, f.dir, "api-0001", key);
      assert.notEqual(renewed.serial, enrolled.issued.serial);
      // The renewed certificate is itself a working identity.
      const { csr: again } = await makeCsr("api-0001", key);
      assertIssued(
        await postJson(api("/api/v1/renew"), { csr: again.pem }, { ca, cert: tlsCert(renewed), key: key.privateKey }),
        f.dir,
        "api-0001",
        key,
      );
    });

    it("renewal with a certificate whose row is 'revoked' -> 403", async () => {
      const { key, csr } = await makeCsr("api-rev");
      const issued = assertIssued(
        await postJson(api("/api/v1/enroll"), { device_id: "api-rev", token: tokens["api-rev"], csr: csr.pem }, { ca }),
        f.dir,
        "api-rev",
        key,
      );
      await sqliteStore(f.fleet)
        .db.updateTable("certificates")
        .set({ status: "revoked", revoked_at: new Date().toISOString(), revocation_reason: "keyCompromise" })
        .where("serial", "=", issued.serial)
        .execute();
      const r = await postJson(api("/api/v1/renew"), { csr: csr.pem }, { ca, cert: tlsCert(issued), key: key.privateKey });
      assertProblem(r, 403, "certificate-revoked");
    });
  });

  // ---- approval ---------------------------------------------------------------------------
  describe("approval: pending, approve, deny (fleetpki device requests/approve/deny)", { concurrency: false }, () => {
    let f: TempFleet;
    let server: TestServer;
    let twin: Awaited<ReturnType<typeof makeCsr>> | undefined;

    before(async () => {
      f = await tempFleet();
      editConfig(f.dir, (doc) => {
        doc.enrollment = { ...(doc.enrollment ?? {}), approval: true };
      });
      server = await startTestServer(f.dir);
    });
    after(async () => {
      await server?.close();
      await f?.close();
    });

    it("202 pending -> approve -> 200; another device: deny -> 403", async () => {
      const ca = readFileSync(rootPemPath(f.dir), "utf8");
      const a = await makeCsr("robot-app1");
      const d = await makeCsr("robot-den1");
      twin = await makeCsr("robot-app2");
      const poll = (id: string, csr: string) => postJson(`${server.url}/api/v1/enroll`, { device_id: id, csr }, { ca });

      const rids = new Map<string, string>();
      for (const [id, csr] of [
        ["robot-app1", a.csr.pem],
        ["robot-den1", d.csr.pem],
        ["robot-app2", twin.csr.pem],
      ] as const) {
        const r = await poll(id, csr);
        rids.set(id, r.json().request_id);
        assert.equal(r.status, 202, r.text);
        const body = r.json();
        assert.equal(body.status, "pending");
        assert.equal(typeof body.request_id, "string");
        assert.ok(body.retry_after > 0);
        assert.equal(r.headers["retry-after"], String(body.retry_after));
        // Polling again is the same request.
        const again = await poll(id, csr);
        assert.equal(again.status, 202);
        assert.equal(again.json().request_id, body.request_id);
      }

      const listed = await cliAsync(["device", "requests", "--dir", f.dir, "--json"]);
      assert.equal(listed.status, 0, listed.stderr);
      const pending = JSON.parse(listed.stdout) as { deviceId: string; source: string }[];
      assert.deepEqual(pending.map((p) => p.deviceId).sort(), ["robot-app1", "robot-app2", "robot-den1"]);
      assert.ok(
        pending.every((p) => /127\.0\.0\.1/.test(p.source)),
        "the operator sees where requests came from",
      );

      const decisions = await Promise.all([
        cliAsync(["device", "approve", "robot-app1", "--request", rids.get("robot-app1")!, "--dir", f.dir]),
        cliAsync(["device", "deny", "robot-den1", "--dir", f.dir]),
        cliAsync(["device", "approve", "robot-app2", "--request", rids.get("robot-app2")!, "--dir", f.dir]),
      ]);
      for (const r of decisions) assert.equal(r.status, 0, r.stderr);

      const issued = assertIssued(await poll("robot-app1", a.csr.pem), f.dir, "robot-app1", a.key);
      // The answer can be fetched again (a lost response is not a lost certificate) ...
      const repeat = assertIssued(await poll("robot-app1", a.csr.pem), f.dir, "robot-app1", a.key);
      assert.equal(repeat.serial, issued.serial);
      assertProblem(await poll("robot-den1", d.csr.pem), 403, "enrollment-denied");
      const rows = await sqliteStore(f.fleet)
        .db.selectFrom("certificates")
        .select("serial")
        .where("device_id", "in", ["robot-app1", "robot-den1"])
        .execute();
      assert.deepEqual(
        rows.map((r) => r.serial),
        [issued.serial],
      );
    });

    // A device that repeats its poll while the first one is still being answered (a client
    // timeout and retry) must not be told "denied": the approval was granted, and a repeated
    // poll is answered with the same certificate (enrollByApproval's "issued" branch).
    it("simultaneous polls after approval all get the one certificate, not 403 enrollment-denied", async () => {
      assert.ok(twin, "needs the approved robot-app2 request");
      const ca = readFileSync(rootPemPath(f.dir), "utf8");
      const both = await Promise.all(
        [0, 1, 2, 3].map(() => postJson(`${server.url}/api/v1/enroll`, { device_id: "robot-app2", csr: twin!.csr.pem }, { ca })),
      );
      const rows = await sqliteStore(f.fleet)
        .db.selectFrom("certificates")
        .select("serial")
        .where("device_id", "=", "robot-app2")
        .execute();
      assert.equal(rows.length, 1, "one certificate for one approval");
      assert.deepEqual(
        both.map((r) => r.status),
        [200, 200, 200, 200],
        both.map((r) => (r.status === 200 ? "200" : `${r.status} ${r.text}`)).join("\n"),
      );
      for (const r of both) {
        const issued = assertIssued(r, f.dir, "robot-app2", twin!.key);
        assert.equal(issued.serial, rows[0]!.serial);
      }
    });
  });

  // ---- approval cannot be hijacked (issue 9, 1.3) -----------------------------------------
  describe("approval: requests are decided one by one, by key; bounded per id and per source", { concurrency: false }, () => {
    let f: TempFleet;
    let server: TestServer;
    let ca: string;
    // The authority as another process on the fleet sees it (opened after approval was switched on).
    let fleet: FleetServices;
    // The robot connects from 127.0.0.1, the attacker from 127.0.0.2 (both loopback).
    const ATTACKER = "127.0.0.2";
    const poll = (id: string, csr: string, localAddress?: string) =>
      postJson(`${server.url}/api/v1/enroll`, { device_id: id, csr }, { ca, localAddress });
    const fingerprintOf = (key: ClientKey) =>
      `sha256:${createHash("sha256")
        .update(createPublicKey(key.privateKey).export({ type: "spki", format: "der" }))
        .digest("hex")}`;
    const requests = async () => {
      const r = await cliAsync(["device", "requests", "--dir", f.dir, "--json"]);
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as {
        id: string;
        deviceId: string;
        keyFingerprint: string;
        address: string;
        source: string;
        createdAt: string;
      }[];
    };
    const auditOf = async (action: string, subject: string) =>
      (
        await sqliteStore(f.fleet)
          .db.selectFrom("audit_log")
          .selectAll()
          .where("action", "=", action)
          .where("subject", "=", subject)
          .orderBy("seq")
          .execute()
      ).map((r) => JSON.parse(r.details));

    before(async () => {
      f = await tempFleet();
      editConfig(f.dir, (doc) => {
        doc.enrollment = { ...(doc.enrollment ?? {}), approval: true, approval_request_ttl: "2h" };
      });
      ca = readFileSync(rootPemPath(f.dir), "utf8");
      fleet = await FleetServices.open(f.dir);
      server = await startTestServer(f.dir);
    });
    after(async () => {
      await server?.close();
      await fleet?.close();
      await f?.close();
    });

    it(
      "a second request for the same id is its own request; approving by id alone is refused; the key the " +
        "operator names gets the certificate",
      async () => {
        const robot = await makeCsr("robot-h1");
        const attacker = await makeCsr("robot-h1");
        const first = await poll("robot-h1", robot.csr.pem);
        assert.equal(first.status, 202, first.text);
        const rid = first.json().request_id as string;
        const raced = await poll("robot-h1", attacker.csr.pem, ATTACKER);
        assert.equal(raced.status, 202, raced.text);
        const attackerRid = raced.json().request_id as string;
        assert.notEqual(attackerRid, rid, "the attacker's request has its own id");
        // The robot's request is still there, unchanged.
        assert.equal((await poll("robot-h1", robot.csr.pem)).json().request_id, rid);

        const listed = (await requests()).filter((p) => p.deviceId === "robot-h1");
        assert.deepEqual(
          listed.map((p) => [p.id, p.keyFingerprint, p.address]).sort(),
          [
            [rid, fingerprintOf(robot.key), "127.0.0.1"],
            [attackerRid, fingerprintOf(attacker.key), ATTACKER],
          ].sort(),
          "device requests shows each request with its key fingerprint and source address",
        );
        assert.ok(listed.every((p) => !Number.isNaN(Date.parse(p.createdAt))));
        const table = await cliAsync(["device", "requests", "--dir", f.dir]);
        assert.match(table.stdout, /^DEVICE\s+REQUEST\s+KEY FINGERPRINT\s+FROM\s+REQUESTED\s+EXPIRES$/m);
        assert.ok(table.stdout.includes(fingerprintOf(robot.key)) && table.stdout.includes(ATTACKER), table.stdout);

        const ambiguous = await cliAsync(["device", "approve", "robot-h1", "--dir", f.dir]);
        assert.equal(ambiguous.status, 1);
        assert.equal(ambiguous.stderr.trimEnd().split("\n").length, 1, ambiguous.stderr);
        assert.match(ambiguous.stderr, /2 enrollment requests for "robot-h1" are waiting/);
        assert.ok(
          ambiguous.stderr.includes(rid) &&
            ambiguous.stderr.includes(attackerRid) &&
            ambiguous.stderr.includes(fingerprintOf(attacker.key)),
          "lists them",
        );
        const wrongKey = await cliAsync(["device", "approve", "robot-h1", "--fingerprint", `sha256:${"ab".repeat(32)}`, "--dir", f.dir]);
        assert.equal(wrongKey.status, 1);
        assert.match(wrongKey.stderr, /no pending request of "robot-h1" is for key sha256:abab/);

        // The operator compared fingerprints with the robot (colons and upper case are accepted).
        const given =
          "SHA256:" +
          fingerprintOf(robot.key)
            .slice("sha256:".length)
            .toUpperCase()
            .replace(/(..)(?=.)/g, "$1:");
        const approved = await cliAsync(["device", "approve", "robot-h1", "--fingerprint", given, "--dir", f.dir]);
        assert.equal(approved.status, 0, approved.stderr);
        assert.match(approved.stdout, new RegExp(`approved: request ${rid}`));
        assert.match(approved.stdout, new RegExp(`denied request ${attackerRid}`));
        assertProblem(await poll("robot-h1", attacker.csr.pem, ATTACKER), 403, "enrollment-denied");
        assertIssued(await poll("robot-h1", robot.csr.pem), f.dir, "robot-h1", robot.key);

        const approvals = await auditOf("enrollment.approve", "device:robot-h1");
        assert.deepEqual(
          approvals.map((d) => [d.request, d.key_fingerprint]),
          [[rid, fingerprintOf(robot.key)]],
        );
        const denials = await auditOf("enrollment.deny", "device:robot-h1");
        assert.deepEqual(
          denials.map((d) => [d.request, d.key_fingerprint, d.approved_request]),
          [[attackerRid, fingerprintOf(attacker.key), rid]],
        );
      },
    );

    it("a denial is for that request's key: the real device, with its own key, can still ask and be approved (by request id)", async () => {
      const attacker = await makeCsr("robot-h2");
      const robot = await makeCsr("robot-h2");
      assert.equal((await poll("robot-h2", attacker.csr.pem, ATTACKER)).status, 202);
      const denied = await cliAsync(["device", "deny", "robot-h2", "--dir", f.dir]);
      assert.equal(denied.status, 0, denied.stderr);
      assertProblem(await poll("robot-h2", attacker.csr.pem, ATTACKER), 403, "enrollment-denied");

      const asked = await poll("robot-h2", robot.csr.pem);
      assert.equal(asked.status, 202, asked.text);
      const rid = asked.json().request_id as string;
      const approved = await cliAsync(["device", "approve", "robot-h2", "--request", rid, "--dir", f.dir]);
      assert.equal(approved.status, 0, approved.stderr);
      assertIssued(await poll("robot-h2", robot.csr.pem), f.dir, "robot-h2", robot.key);
      // The denied key stays denied.
      assertProblem(await poll("robot-h2", attacker.csr.pem, ATTACKER), 403, "enrollment-denied");
      assert.equal((await auditOf("enrollment.deny", "device:robot-h2")).length, 1);
      assert.deepEqual(
        (await auditOf("enrollment.approve", "device:robot-h2")).map((d) => d.request),
        [rid],
      );
    });

    it(
      "1,000 junk requests from one address do not make a real robot from another address get 429; one " + "command denies them all",
      async () => {
        const junk = await makeCsr("junk");
        const source = { via: "api", address: "::ffff:198.51.100.7" };
        let accepted = 0;
        let refused = 0;
        for (let i = 0; i < 1000; i++) {
          try {
            await enrollByApproval(fleet, { deviceId: `junk-${i}`, csr: junk.csr.der, source });
            accepted++;
          } catch (e) {
            assert.ok(e instanceof TooManyRequests, String(e));
            assert.match(e.message, /from 198\.51\.100\.7 already wait/);
            refused++;
          }
        }
        assert.equal(accepted + refused, 1000);
        assert.ok(accepted <= 20, `at most 20 waiting requests from one source (${accepted})`);
        // The same over HTTPS: the server counts the peer address it saw.
        const overHttp = await Promise.all(Array.from({ length: 25 }, (_, i) => poll(`junk-http-${i}`, junk.csr.pem, ATTACKER)));
        assert.ok(
          overHttp.some((r) => r.status === 429),
          overHttp.map((r) => r.status).join(","),
        );
        for (const r of overHttp.filter((x) => x.status !== 202)) assertProblem(r, 429, "too-many-requests");

        const robot = await makeCsr("robot-h3");
        const real = await poll("robot-h3", robot.csr.pem);
        assert.equal(real.status, 202, real.text);

        const before = (await requests()).filter((p) => p.address === "198.51.100.7");
        assert.equal(before.length, accepted);
        const bulk = await cliAsync(["device", "deny", "--all-from", "198.51.100.7", "--dir", f.dir]);
        assert.equal(bulk.status, 0, bulk.stderr);
        assert.match(bulk.stdout, new RegExp(`^${accepted} requests denied$`, "m"));
        const after = await requests();
        assert.equal(after.filter((p) => p.address === "198.51.100.7").length, 0);
        assert.ok(
          after.some((p) => p.deviceId === "robot-h3"),
          "other sources' requests are untouched",
        );
        const denials = await sqliteStore(f.fleet)
          .db.selectFrom("audit_log")
          .select("details")
          .where("action", "=", "enrollment.deny")
          .where("details", "like", "%198.51.100.7%")
          .execute();
        assert.equal(denials.length, accepted, "every denial is audited");
      },
    );

    it("one IPv6 host (a /64) counts as one source", async () => {
      const junk = await makeCsr("junk6");
      const outcomes = await Promise.allSettled(
        Array.from({ length: 30 }, (_, i) =>
          enrollByApproval(fleet, {
            deviceId: `junk6-${i}`,
            csr: junk.csr.der,
            source: { via: "api", address: `2001:db8:1:2::${(i + 1).toString(16)}` },
          }),
        ),
      );
      assert.equal(outcomes.filter((o) => o.status === "fulfilled").length, 20);
      assert.ok(
        outcomes.filter((o) => o.status === "rejected").every((o) => (o as PromiseRejectedResult).reason instanceof TooManyRequests),
      );
      assert.deepEqual(sourceOf("2001:db8:1:2:aa::1"), { address: "2001:db8:1:2:aa::1", group: "2001:0db8:0001:0002::/64" });
      assert.deepEqual(sourceOf("::ffff:10.1.2.3"), { address: "10.1.2.3", group: "10.1.2.3" });
    });

    it("re-requesting one id with new keys 500 times adds a bounded number of rows and audit rows", async () => {
      const keys = await Promise.all(Array.from({ length: 500 }, () => makeCsr("robot-churn")));
      let refused = 0;
      for (const k of keys) {
        try {
          await enrollByApproval(fleet, { deviceId: "robot-churn", csr: k.csr.der, source: { via: "api", address: "192.0.2.9" } });
        } catch (e) {
          assert.ok(e instanceof TooManyRequests, String(e));
          refused++;
        }
      }
      const rows = await sqliteStore(f.fleet)
        .db.selectFrom("enrollment_requests")
        .select("id")
        .where("device_id", "=", "robot-churn")
        .execute();
      assert.equal(rows.length, 2, "two waiting requests per id and source; later ones are refused, never swapped in");
      assert.equal(refused, 498);
      assert.equal((await auditOf("enrollment.request", "device:robot-churn")).length, 2);
      // Other sources still reach the operator, up to the cap per id.
      for (const [i, address] of ["192.0.2.10", "192.0.2.11", "192.0.2.12"].entries()) {
        await enrollByApproval(fleet, { deviceId: "robot-churn", csr: keys[10 + i]!.csr.der, source: { via: "api", address } });
      }
      // A sixth source displaces the oldest request of the source holding two (192.0.2.9), not a
      // source's only request; a further source then finds every source at one: 429.
      await enrollByApproval(fleet, { deviceId: "robot-churn", csr: keys[20]!.csr.der, source: { via: "api", address: "192.0.2.13" } });
      assert.equal((await listPendingRequests(f.fleet, { deviceId: "robot-churn" })).filter((p) => p.address === "192.0.2.9").length, 1);
      await assert.rejects(
        enrollByApproval(fleet, { deviceId: "robot-churn", csr: keys[21]!.csr.der, source: { via: "api", address: "192.0.2.14" } }),
        /5 enrollment requests for "robot-churn" already wait/,
      );
      const all = await cliAsync(["device", "deny", "robot-churn", "--all", "--dir", f.dir]);
      assert.equal(all.status, 0, all.stderr);
      assert.match(all.stdout, /^5 requests denied$/m);
      assert.equal((await listPendingRequests(f.fleet, { deviceId: "robot-churn" })).length, 0);
    });

    // Security review, approval hardening (finding 1): the only request waiting for an id may be
    // the attacker's, e.g. when the robot behind a NAT full of junk was refused.
    it(
      "approving by device id alone is refused even with one request waiting; a registered robot behind a " +
        "full NAT still files one request",
      async () => {
        const NAT = "127.0.0.20";
        const junk = await makeCsr("junk-nat");
        for (let i = 0; i < 20; i++) assert.equal((await poll(`junk-nat-${i}`, junk.csr.pem, NAT)).status, 202);
        // An unregistered id behind the full NAT is refused (nothing bounds junk ids otherwise) ...
        const unregistered = await makeCsr("robot-n1");
        assertProblem(await poll("robot-n1", unregistered.csr.pem, NAT), 429, "too-many-requests");
        // ... a device the operator registered gets exactly one request through, not two.
        await addDevice(f.fleet, { id: "robot-n2", actor: "test" });
        const registered = await makeCsr("robot-n2");
        const through = await poll("robot-n2", registered.csr.pem, NAT);
        assert.equal(through.status, 202, through.text);
        assert.equal(
          (await poll("robot-n2", registered.csr.pem, NAT)).json().request_id,
          through.json().request_id,
          "the robot's polls are one request",
        );
        assertProblem(await poll("robot-n2", (await makeCsr("robot-n2")).csr.pem, NAT), 429, "too-many-requests");

        // The attacker files the only request for robot-n1, from elsewhere.
        const attacker = await makeCsr("robot-n1");
        const filed = await poll("robot-n1", attacker.csr.pem, "127.0.0.21");
        assert.equal(filed.status, 202, filed.text);
        for (const id of ["robot-n1", "robot-n2"]) {
          const byId = await cliAsync(["device", "approve", id, "--dir", f.dir]);
          assert.equal(byId.status, 1, `approve ${id} by id alone: ${byId.stdout}`);
          assert.equal(byId.stderr.trimEnd().split("\n").length, 1, byId.stderr);
          assert.match(
            byId.stderr,
            new RegExp(`1 enrollment request for "${id}" is waiting; approve one with --request ID or --fingerprint`),
          );
          assert.match(byId.stderr, /comparing its key fingerprint with the one the robot prints/);
        }
        const refusal = (await cliAsync(["device", "approve", "robot-n1", "--dir", f.dir])).stderr;
        assert.ok(
          refusal.includes(filed.json().request_id) && refusal.includes(fingerprintOf(attacker.key)) && refusal.includes("127.0.0.21"),
          refusal,
        );
        assert.equal((await poll("robot-n1", attacker.csr.pem, "127.0.0.21")).status, 202, "nothing was approved");
        assert.deepEqual(await auditOf("enrollment.approve", "device:robot-n1"), []);
        // Denying the only waiting request by id stays possible (it certifies nothing).
        assert.equal((await cliAsync(["device", "deny", "robot-n1", "--dir", f.dir])).status, 0);
        await cliAsync(["device", "deny", "--all-from", NAT, "--dir", f.dir]);
      },
    );

    // Finding 2: 5 requests for an id from 3 addresses used to shut the real robot out for good.
    it(
      "junk for a robot's id from a few addresses cannot fill its requests: a new source evicts the oldest " + "of the biggest source",
      async () => {
        const froms = ["127.0.0.31", "127.0.0.31", "127.0.0.32", "127.0.0.32", "127.0.0.33"];
        const junk = await Promise.all(froms.map(() => makeCsr("robot-c1")));
        const rids: string[] = [];
        for (const [i, from] of froms.entries()) {
          const r = await poll("robot-c1", junk[i]!.csr.pem, from);
          assert.equal(r.status, 202, r.text);
          rids.push(r.json().request_id);
        }
        const robot = await makeCsr("robot-c1");
        const real = await poll("robot-c1", robot.csr.pem, "127.0.0.39");
        assert.equal(real.status, 202, real.text);
        const waiting = (await requests()).filter((p) => p.deviceId === "robot-c1");
        assert.deepEqual(
          waiting.map((p) => p.id).sort(),
          [...rids.slice(1), real.json().request_id].sort(),
          "the oldest of 127.0.0.31 made room",
        );
        assert.equal(
          (await sqliteStore(f.fleet).db.selectFrom("enrollment_requests").select("id").where("id", "=", rids[0]!).execute()).length,
          0,
          "evicted rows are deleted",
        );
        const evictions = await auditOf("enrollment.evict", "device:robot-c1");
        assert.deepEqual(
          evictions.map((d) => [d.request, d.key_fingerprint, d.by_request]),
          [[rids[0], fingerprintOf(junk[0]!.key), real.json().request_id]],
        );
        // The evicted junk key cannot push back in from its source (it still holds one), and the
        // robot's request stays the same request.
        assertProblem(await poll("robot-c1", junk[0]!.csr.pem, "127.0.0.31"), 429, "too-many-requests");
        assert.equal((await poll("robot-c1", robot.csr.pem, "127.0.0.39")).json().request_id, real.json().request_id);
        const approved = await cliAsync(["device", "approve", "robot-c1", "--fingerprint", fingerprintOf(robot.key), "--dir", f.dir]);
        assert.equal(approved.status, 0, approved.stderr);
        assertIssued(await poll("robot-c1", robot.csr.pem, "127.0.0.39"), f.dir, "robot-c1", robot.key);
      },
    );

    it(
      "waiting requests expire (enrollment.approval_request_ttl: 2h): they stop counting, are purged and " +
        "audited, and cannot be approved",
      async () => {
        const source = { via: "api", address: "192.0.2.50" };
        const old = new Date(Date.now() - 3 * 3600_000);
        const stale = await Promise.all([0, 1].map(() => makeCsr("robot-e1")));
        const staleIds: string[] = [];
        for (const k of stale) {
          const r = await enrollByApproval(fleet, { deviceId: "robot-e1", csr: k.csr.der, source, now: old });
          assert.equal(r.status, "pending");
          staleIds.push((r as { requestId: string }).requestId);
        }
        assert.equal((await listPendingRequests(fleet, { deviceId: "robot-e1", now: old })).length, 2, "waiting while fresh");
        assert.deepEqual(await listPendingRequests(fleet, { deviceId: "robot-e1" }), [], "expired requests are not listed");
        const byRequest = await cliAsync(["device", "approve", "robot-e1", "--request", staleIds[0]!, "--dir", f.dir]);
        assert.equal(byRequest.status, 1);
        assert.match(byRequest.stderr, /no pending enrollment request for "robot-e1"/);

        // Two requests from this source would be its bound; expired ones do not count.
        const fresh = await makeCsr("robot-e1");
        const r = await enrollByApproval(fleet, { deviceId: "robot-e1", csr: fresh.csr.der, source });
        assert.equal(r.status, "pending");
        const rows = await sqliteStore(f.fleet)
          .db.selectFrom("enrollment_requests")
          .select("id")
          .where("device_id", "=", "robot-e1")
          .execute();
        assert.deepEqual(
          rows.map((x) => x.id),
          [(r as { requestId: string }).requestId],
          "expired rows are purged",
        );
        assert.deepEqual((await auditOf("enrollment.expire", "device:robot-e1")).map((d) => d.request).sort(), [...staleIds].sort());
        // The robot still polling with an expired request's key files a new request (same key).
        const again = await enrollByApproval(fleet, { deviceId: "robot-e1", csr: stale[0]!.csr.der, source });
        assert.equal(again.status, "pending");
        assert.ok(!staleIds.includes((again as { requestId: string }).requestId));
      },
    );

    it("deny --all-from takes a prefix: an IPv6 /64 (as the bounds count) or an IPv4 prefix", async () => {
      const k = await makeCsr("pfx");
      for (const [id, address] of [
        ["pfx-1", "2001:db8:7:7::1"],
        ["pfx-2", "2001:db8:7:7:ffff::2"],
        ["pfx-3", "2001:db8:7:8::1"],
        ["pfx-4", "203.0.113.5"],
        ["pfx-5", "::ffff:203.0.113.200"],
        ["pfx-6", "203.0.114.1"],
      ] as const)
        await enrollByApproval(fleet, { deviceId: id, csr: k.csr.der, source: { via: "api", address } });
      const six = await cliAsync(["device", "deny", "--all-from", "2001:db8:7:7::/64", "--dir", f.dir]);
      assert.equal(six.status, 0, six.stderr);
      assert.match(six.stdout, /^2 requests denied$/m);
      const four = await cliAsync(["device", "deny", "--all-from", "203.0.113.0/24", "--dir", f.dir]);
      assert.equal(four.status, 0, four.stderr);
      assert.match(four.stdout, /^2 requests denied$/m);
      const left = (await requests()).filter((p) => p.deviceId.startsWith("pfx-")).map((p) => p.deviceId);
      assert.deepEqual(left.sort(), ["pfx-3", "pfx-6"]);
      const denials = await sqliteStore(f.fleet)
        .db.selectFrom("audit_log")
        .select("details")
        .where("action", "=", "enrollment.deny")
        .where("details", "like", "%all from 2001:db8:7:7::/64%")
        .execute();
      assert.equal(denials.length, 2);
      for (const bad of ["203.0.113.0/33", "2001:db8::/129", "10.0.0.0/8/8", "not-an-address", "10.0.0.0/x"]) {
        const r = await cliAsync(["device", "deny", "--all-from", bad, "--dir", f.dir]);
        assert.equal(r.status, 1, bad);
        assert.match(r.stderr, /is not an IP address or prefix/, bad);
      }
    });

    // Finding 3: a repeated poll after the certificate was issued used to get it with 200 even
    // when it had been revoked or the device held since.
    it("a repeated poll is not answered with a revoked certificate, or for a held device", async () => {
      const issue = async (id: string) => {
        const k = await makeCsr(id);
        const rid = (await poll(id, k.csr.pem)).json().request_id as string;
        assert.equal((await cliAsync(["device", "approve", id, "--request", rid, "--dir", f.dir])).status, 0);
        return { k, issued: assertIssued(await poll(id, k.csr.pem), f.dir, id, k.key) };
      };
      const revoked = await issue("robot-r1");
      await revokeCertificate(f.fleet, { serial: revoked.issued.serial, actor: "test" });
      assertProblem(await poll("robot-r1", revoked.k.csr.pem), 403, "certificate-revoked");
      const held = await issue("robot-r2");
      await holdDevice(f.fleet, { deviceId: "robot-r2", actor: "test" });
      // Holding the device holds its certificates: the poll is told so.
      const onHold = assertProblem(await poll("robot-r2", held.k.csr.pem), 403, "certificate-revoked");
      assert.match(onHold.detail, /on hold/);
    });

    it("audit verify replays everything above (requests made, approved, denied, evicted, expired) without a false alarm", async () => {
      const report = await verifyFleetAudit(f.fleet);
      assert.deepEqual(report.problems, []);
      assert.ok(report.ok);
    });
  });

  // ---- renewal after expiry ---------------------------------------------------------------
  describe("renewal after expiry (validity.device 20s, after_expiry_grace 1h)", { concurrency: false }, () => {
    let f: TempFleet;
    let server: TestServer | undefined;
    let ca: string;
    const clock = new ManualClock();
    const devices: Record<string, { issued: Issued; key: ClientKey }> = {};
    const api = (path: string) => `${server!.url}${path}`;

    /** fleetpki-renew-expired/v1 \n id \n nonce \n hex SHA-256 of the CSR DER, ECDSA-SHA256 (DER) for P-256. */
    const proof = (key: ClientKey, id: string, nonce: string, csrDer: Buffer): string =>
      sign(
        "sha256",
        Buffer.from(`fleetpki-renew-expired/v1\n${id}\n${nonce}\n${createHash("sha256").update(csrDer).digest("hex")}`, "utf8"),
        key.privateKey,
      ).toString("base64");

    async function challenge(id: string): Promise<string> {
      const r = await postJson(api("/api/v1/renew/challenge"), { device_id: id }, { ca });
      assert.equal(r.status, 200, r.text);
      const body = r.json();
      assert.equal(typeof body.nonce, "string");
      const ttl = new Date(body.expires_at).getTime() - clock.now().getTime();
      assert.ok(ttl > 4 * 60_000 && ttl <= 5 * 60_000 + 1000, `nonce valid for 5 minutes (${ttl} ms)`);
      return body.nonce;
    }

    before(async () => {
      f = await tempFleet();
      editConfig(f.dir, (doc) => {
        doc.validity.device = "20s";
        doc.renewal.after_expiry_grace = "1h";
      });
      ca = readFileSync(rootPemPath(f.dir), "utf8");
      const ids = ["exp-ok", "exp-revoked", "exp-late"];
      const tokens: Record<string, string> = {};
      for (const id of ids) tokens[id] = await deviceWithToken(f.fleet, id);
      server = await startTestServer(f.dir, { clock });
      for (const id of ids) {
        const { key, csr } = await makeCsr(id);
        const issued = assertIssued(
          await postJson(api("/api/v1/enroll"), { device_id: id, token: tokens[id], csr: csr.pem }, { ca }),
          f.dir,
          id,
          key,
        );
        const lifetime = new Date(issued.not_after).getTime() - clock.now().getTime();
        assert.ok(lifetime > 10_000 && lifetime <= 20_000, `validity.device 20s gives ~20 s (${lifetime} ms)`);
        devices[id] = { issued, key };
      }
      await sqliteStore(f.fleet)
        .db.updateTable("certificates")
        .set({ status: "revoked", revoked_at: new Date().toISOString(), revocation_reason: "superseded" })
        .where("serial", "=", devices["exp-revoked"]!.issued.serial)
        .execute();
      // Every certificate expires (plus a margin for second-granular notAfter): the server's clock
      // moves on, nothing waits. TLS still sees them valid (real time); the server's own expiry check answers.
      const last = Math.max(...Object.values(devices).map((d) => new Date(d.issued.not_after).getTime()));
      clock.set(last + 1_500);
    });
    after(async () => {
      await server?.close();
      await f?.close();
    });

    it("an expired certificate no longer renews over mTLS: 403 certificate-expired", async () => {
      const { issued, key } = devices["exp-ok"]!;
      const { csr } = await makeCsr("exp-ok");
      assertProblem(
        await postJson(api("/api/v1/renew"), { csr: csr.pem }, { ca, cert: tlsCert(issued), key: key.privateKey }),
        403,
        "certificate-expired",
      );
    });

    it(
      "challenge + signed proof within the grace -> 200; the same request again -> the same certificate; a " + "bad signature -> 401",
      async () => {
        const { issued, key: oldKey } = devices["exp-ok"]!;
        assert.ok(clock.now().getTime() > new Date(issued.not_after).getTime(), "the certificate has expired");

        // A bad signature (made with a different key) -> 401, and the nonce is not spent by it.
        const nonce = await challenge("exp-ok");
        const { key: newKey, csr } = await makeCsr("exp-ok");
        const stranger = await newP256Key();
        const bad = await postJson(
          api("/api/v1/renew/expired"),
          { certificate: issued.certificate, csr: csr.pem, nonce, signature: proof(stranger, "exp-ok", nonce, csr.der) },
          { ca },
        );
        assertProblem(bad, 401, "proof-invalid");
        // A signature over another CSR does not fit this one either.
        const other = await makeCsr("exp-ok");
        assertProblem(
          await postJson(
            api("/api/v1/renew/expired"),
            { certificate: issued.certificate, csr: csr.pem, nonce, signature: proof(oldKey, "exp-ok", nonce, other.csr.der) },
            { ca },
          ),
          401,
          "proof-invalid",
        );

        const good = { certificate: issued.certificate, csr: csr.pem, nonce, signature: proof(oldKey, "exp-ok", nonce, csr.der) };
        const renewed = assertIssued(await postJson(api("/api/v1/renew/expired"), good, { ca }), f.dir, "exp-ok", newKey);
        assert.notEqual(renewed.serial, issued.serial);
        assert.ok(new Date(renewed.not_after).getTime() > clock.now().getTime());

        // Sent again (the answer was lost): the renewal already issued, not a second one.
        const again = assertIssued(await postJson(api("/api/v1/renew/expired"), good, { ca }), f.dir, "exp-ok", newKey);
        assert.equal(again.certificate, renewed.certificate);
        // The certificate was replaced: with another key it no longer renews.
        const { csr: otherCsr } = await makeCsr("exp-ok");
        const rekey = {
          certificate: issued.certificate,
          csr: otherCsr.pem,
          nonce,
          signature: proof(oldKey, "exp-ok", nonce, otherCsr.der),
        };
        assertProblem(await postJson(api("/api/v1/renew/expired"), rekey, { ca }), 403, "re-enroll-required");
        // A nonce handed out for another device does not work either.
        const foreign = await challenge("exp-late");
        assertProblem(
          await postJson(
            api("/api/v1/renew/expired"),
            { ...good, nonce: foreign, signature: proof(oldKey, "exp-ok", foreign, csr.der) },
            { ca },
          ),
          401,
          "nonce-invalid",
        );
      },
    );

    it("a revoked (status 'revoked') expired certificate -> 403 re-enroll-required", async () => {
      const { issued, key } = devices["exp-revoked"]!;
      const nonce = await challenge("exp-revoked");
      const { csr } = await makeCsr("exp-revoked");
      const r = await postJson(
        api("/api/v1/renew/expired"),
        { certificate: issued.certificate, csr: csr.pem, nonce, signature: proof(key, "exp-revoked", nonce, csr.der) },
        { ca },
      );
      assertProblem(r, 403, "re-enroll-required");
    });

    it("outside the grace (restart with after_expiry_grace 1s) -> 403 re-enroll-required", async () => {
      await server!.close();
      server = undefined;
      editConfig(f.dir, (doc) => {
        doc.renewal.after_expiry_grace = "1s";
      });
      server = await startTestServer(f.dir, { clock });
      const { issued, key } = devices["exp-late"]!;
      assert.ok(clock.now().getTime() > new Date(issued.not_after).getTime() + 1_000, "expired more than 1 s ago");
      const nonce = await challenge("exp-late");
      const { csr } = await makeCsr("exp-late");
      const r = await postJson(
        api("/api/v1/renew/expired"),
        { certificate: issued.certificate, csr: csr.pem, nonce, signature: proof(key, "exp-late", nonce, csr.der) },
        { ca },
      );
      const p = assertProblem(r, 403, "re-enroll-required");
      assert.match(p.detail, /grace/);
    });
  });

  // ---- renewal challenges (issue 9, item 1.4) ----------------------------------------------
  describe("renewal challenges: stored only for renewable certificates, bounded, rate-limited per address", { concurrency: false }, () => {
    let f: TempFleet;
    let server: TestServer;
    let ca: string;
    const api = (path: string) => `${server.url}${path}`;

    const challenge = async (id: string): Promise<{ nonce: string; expires_at: string }> => {
      const r = await postJson(api("/api/v1/renew/challenge"), { device_id: id }, { ca });
      assert.equal(r.status, 200, r.text);
      return r.json();
    };
    const renewAfterExpiry = async (id: string, dev: { issued: Issued; key: ClientKey }, nonce: string) => {
      const { key, csr } = await makeCsr(id);
      const r = await postJson(
        api("/api/v1/renew/expired"),
        { certificate: dev.issued.certificate, csr: csr.pem, nonce, signature: expiredProof(dev.key, id, nonce, csr.der) },
        { ca },
      );
      return { r, key };
    };

    before(async () => {
      f = await tempFleet();
      ca = readFileSync(rootPemPath(f.dir), "utf8");
      server = await startTestServer(f.dir);
    });
    after(async () => {
      await server?.close();
      await f?.close();
    });

    it(
      "junk ids, devices with nothing to renew and revoked or too old certificates get the same answer, and " + "nothing is stored",
      async () => {
        await addDevice(f.fleet, { id: "ch-nocert", actor: "test" });
        const token = await deviceWithToken(f.fleet, "ch-valid");
        const { csr } = await makeCsr("ch-valid");
        assertIssued(await postJson(api("/api/v1/enroll"), { device_id: "ch-valid", token, csr: csr.pem }, { ca }), f.dir, "ch-valid");
        const revoked = await deviceWithExpiredCertificate(f.fleet, "ch-revoked");
        await revokeCertificate(f.fleet, { serial: revoked.issued.serial, actor: "test" });
        await deviceWithExpiredCertificate(f.fleet, "ch-late", 8 * 24 * 3_600_000); // the grace is 7 days
        const junk = ["no-such-robot", "robot-0001", "x", "ch-nocert", "ch-valid", "ch-revoked", "ch-late"];
        for (const id of junk) {
          const body = await challenge(id);
          assert.deepEqual(Object.keys(body).sort(), ["expires_at", "nonce"]);
          assert.match(body.nonce, /^[A-Za-z0-9_-]{43}$/, "a nonce like any other");
          const ttl = new Date(body.expires_at).getTime() - Date.now();
          assert.ok(ttl > 4 * 60_000 && ttl <= 5 * 60_000 + 1000, `valid for 5 minutes like any other (${ttl} ms)`);
        }
        assert.equal(await countRows(f.fleet, "renewal_nonces"), 0, "no challenge stored for ids that cannot renew after expiry");
        // The revoked certificate's own checks still answer specifically.
        const nonce = (await challenge("ch-revoked")).nonce;
        assertProblem((await renewAfterExpiry("ch-revoked", revoked, nonce)).r, 403, "re-enroll-required");
        // A device that can renew gets a stored challenge.
        await deviceWithExpiredCertificate(f.fleet, "ch-real");
        await challenge("ch-real");
        assert.equal(await countRows(f.fleet, "renewal_nonces"), 1);
      },
    );

    it("expired challenges do not count: 25 left over from a flood neither block the device nor stay in the table", async () => {
      const dev = await deviceWithExpiredCertificate(f.fleet, "ch-flooded");
      const past = new Date(Date.now() - 60_000).toISOString();
      await sqliteStore(f.fleet)
        .db.insertInto("renewal_nonces")
        .values(Array.from({ length: 25 }, (_, i) => ({ nonce: `old-${i}`, device_id: "ch-flooded", expires_at: past, used_at: null })))
        .execute();
      const { nonce } = await challenge("ch-flooded");
      const { r, key } = await renewAfterExpiry("ch-flooded", dev, nonce);
      assertIssued(r, f.dir, "ch-flooded", key);
      const left = await sqliteStore(f.fleet)
        .db.selectFrom("renewal_nonces")
        .select("nonce")
        .where("expires_at", "<=", new Date().toISOString())
        .execute();
      assert.deepEqual(left, [], "expired challenges are purged");
    });

    it("a third party asking for 40 challenges for a device does not stop its renewal, and its rows stay bounded", async () => {
      const dev = await deviceWithExpiredCertificate(f.fleet, "ch-target");
      await pool(Array.from({ length: 40 }), 8, () => challenge("ch-target"));
      assert.ok((await countRows(f.fleet, "renewal_nonces", "ch-target")) <= 20, "at most 20 open challenges per device");
      const { nonce } = await challenge("ch-target");
      const { r, key } = await renewAfterExpiry("ch-target", dev, nonce);
      assertIssued(r, f.dir, "ch-target", key);
      assert.ok((await countRows(f.fleet, "renewal_nonces", "ch-target")) <= 20);
    });

    it("60 challenges a minute per source address, then 429 with Retry-After; other addresses are not affected", async () => {
      const root = rootPemPath(f.dir);
      const from = (address: string, id: string) =>
        curl([
          "--cacert",
          root,
          "--interface",
          address,
          "-H",
          "content-type: application/json",
          "--data-binary",
          JSON.stringify({ device_id: id }),
          api("/api/v1/renew/challenge"),
        ]);
      const statuses = (
        await pool(
          Array.from({ length: 60 }, (_, i) => `ch-junk-${i}`),
          4,
          (id) => from("127.0.0.2", id),
        )
      ).map((r) => r.status);
      assert.deepEqual(new Set(statuses), new Set([200]), `the first 60: ${statuses.join(",")}`);
      const limited = await from("127.0.0.2", "ch-junk-60");
      assertProblem(limited, 429, "too-many-requests");
      const retry = Number(limited.headers["retry-after"]);
      assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 60, `Retry-After ${limited.headers["retry-after"]}`);
      assert.equal((await from("127.0.0.3", "ch-junk-61")).status, 200, "another address still gets challenges");
      const stored = await sqliteStore(f.fleet)
        .db.selectFrom("renewal_nonces")
        .select("nonce")
        .where("device_id", "like", "ch-junk-%")
        .execute();
      assert.deepEqual(stored, []);
    });
  });

  // ---- retries after a lost answer (issue 9, item 1.10) -------------------------------------
  describe(
    "a request whose answer was lost can be repeated: same credential and key -> the same certificate",
    { concurrency: false },
    () => {
      let f: TempFleet;
      let server: TestServer;
      let ca: string;
      const api = (path: string) => `${server.url}${path}`;

      before(async () => {
        f = await tempFleet();
        ca = readFileSync(rootPemPath(f.dir), "utf8");
        server = await startTestServer(f.dir);
      });
      after(async () => {
        await server?.close();
        await f?.close();
      });

      it(
        "token: the same token and key again -> identical certificate (audited as a re-delivery); another " + "key -> 401 token-used",
        async () => {
          const token = await deviceWithToken(f.fleet, "retry-tok");
          const { key, csr } = await makeCsr("retry-tok");
          const lost = assertIssued(
            await postJson(api("/api/v1/enroll"), { device_id: "retry-tok", token, csr: csr.pem }, { ca }),
            f.dir,
            "retry-tok",
            key,
          );
          const again = assertIssued(
            await postJson(api("/api/v1/enroll"), { device_id: "retry-tok", token, csr: csr.pem }, { ca }),
            f.dir,
            "retry-tok",
            key,
          );
          assert.equal(again.certificate, lost.certificate, "the certificate already issued, byte for byte");
          // A new CSR for the same key is the same request.
          const { csr: sameKey } = await makeCsr("retry-tok", key);
          assert.equal(
            assertIssued(
              await postJson(api("/api/v1/enroll"), { device_id: "retry-tok", token, csr: sameKey.pem }, { ca }),
              f.dir,
              "retry-tok",
              key,
            ).certificate,
            lost.certificate,
          );
          const { csr: otherKey } = await makeCsr("retry-tok");
          assertProblem(
            await postJson(api("/api/v1/enroll"), { device_id: "retry-tok", token, csr: otherKey.pem }, { ca }),
            401,
            "token-used",
          );
          assert.equal(await countRows(f.fleet, "certificates", "retry-tok"), 1, "one certificate for one token");
          const redelivered = await auditRows(f.fleet, "certificate.redeliver", "retry-tok");
          assert.equal(redelivered.length, 1, "re-deliveries of one certificate to one key are audited once per window");
          for (const row of redelivered) {
            assert.equal(JSON.parse(row.details).serial, lost.serial);
            assert.equal(row.actor, "token:retry-tok");
          }
          assert.ok((await verifyAudit(f.fleet.store.ops.audit)).ok);
        },
      );

      it("token: 8 simultaneous requests with one token and one key all get the one certificate", async () => {
        const token = await deviceWithToken(f.fleet, "retry-race");
        const { key, csr } = await makeCsr("retry-race");
        const results = await Promise.all(
          Array.from({ length: 8 }, () => postJson(api("/api/v1/enroll"), { device_id: "retry-race", token, csr: csr.pem }, { ca })),
        );
        const bodies = results.map((r) => assertIssued(r, f.dir, "retry-race", key));
        assert.equal(new Set(bodies.map((b) => b.certificate)).size, 1, "identical answers");
        assert.equal(await countRows(f.fleet, "certificates", "retry-race"), 1);
      });

      it(
        "mTLS renewal: the same certificate and key again -> the renewal already issued; another key -> 403; " +
          "the renewal itself renews on",
        async () => {
          const token = await deviceWithToken(f.fleet, "retry-ren");
          const first = await makeCsr("retry-ren");
          const current = assertIssued(
            await postJson(api("/api/v1/enroll"), { device_id: "retry-ren", token, csr: first.csr.pem }, { ca }),
            f.dir,
            "retry-ren",
            first.key,
          );
          const tls = { ca, cert: tlsCert(current), key: first.key.privateKey };
          const next = await makeCsr("retry-ren");
          const lost = assertIssued(await postJson(api("/api/v1/renew"), { csr: next.csr.pem }, tls), f.dir, "retry-ren", next.key);
          const again = assertIssued(await postJson(api("/api/v1/renew"), { csr: next.csr.pem }, tls), f.dir, "retry-ren", next.key);
          assert.equal(again.certificate, lost.certificate, "the renewal already issued, byte for byte");
          const other = await makeCsr("retry-ren");
          const refused = assertProblem(await postJson(api("/api/v1/renew"), { csr: other.csr.pem }, tls), 403, "re-enroll-required");
          assert.match(refused.detail, /already renewed/);
          assert.equal(await countRows(f.fleet, "certificates", "retry-ren"), 2, "the enrollment and one renewal");
          const redelivered = await auditRows(f.fleet, "certificate.redeliver", "retry-ren");
          assert.deepEqual(
            redelivered.map((r) => JSON.parse(r.details).serial),
            [lost.serial],
          );
          // The renewal is the identity now, and renews with any key.
          assertIssued(
            await postJson(api("/api/v1/renew"), { csr: other.csr.pem }, { ca, cert: tlsCert(lost), key: next.key.privateKey }),
            f.dir,
            "retry-ren",
            other.key,
          );
        },
      );

      it(
        "renewal after expiry: a new challenge signed with the old key, same new key -> the renewal already " +
          "issued; another key -> 403",
        async () => {
          const dev = await deviceWithExpiredCertificate(f.fleet, "retry-exp");
          const next = await makeCsr("retry-exp");
          const renewExpired = async (csr: { pem: string; der: Buffer }) => {
            const r = await postJson(api("/api/v1/renew/challenge"), { device_id: "retry-exp" }, { ca });
            assert.equal(r.status, 200, r.text);
            const nonce = r.json().nonce as string;
            return postJson(
              api("/api/v1/renew/expired"),
              { certificate: dev.issued.certificate, csr: csr.pem, nonce, signature: expiredProof(dev.key, "retry-exp", nonce, csr.der) },
              { ca },
            );
          };
          const lost = assertIssued(await renewExpired(next.csr), f.dir, "retry-exp", next.key);
          const again = assertIssued(await renewExpired(next.csr), f.dir, "retry-exp", next.key);
          assert.equal(again.certificate, lost.certificate);
          const other = await makeCsr("retry-exp");
          assertProblem(await renewExpired(other.csr), 403, "re-enroll-required");
          assert.equal(await countRows(f.fleet, "certificates", "retry-exp"), 2);
          assert.equal((await auditRows(f.fleet, "certificate.redeliver", "retry-exp")).length, 1);
        },
      );

      it("a renewal revoked since is not handed out again", async () => {
        const token = await deviceWithToken(f.fleet, "retry-rev");
        const first = await makeCsr("retry-rev");
        const current = assertIssued(
          await postJson(api("/api/v1/enroll"), { device_id: "retry-rev", token, csr: first.csr.pem }, { ca }),
          f.dir,
          "retry-rev",
          first.key,
        );
        const tls = { ca, cert: tlsCert(current), key: first.key.privateKey };
        const next = await makeCsr("retry-rev");
        const lost = assertIssued(await postJson(api("/api/v1/renew"), { csr: next.csr.pem }, tls), f.dir, "retry-rev", next.key);
        await revokeCertificate(f.fleet, { serial: lost.serial, actor: "test" });
        assertProblem(await postJson(api("/api/v1/renew"), { csr: next.csr.pem }, tls), 403, "certificate-revoked");
      });
    },
  );

  // ---- one token, fifty requests ----------------------------------------------------------
  describe("50 concurrent enrollments with ONE token", { concurrency: false }, () => {
    let f: TempFleet;
    let server: TestServer | undefined;
    let results: HttpResult[] = [];

    before(async () => {
      f = await tempFleet();
      // The per-source failure limit (10/min) would otherwise turn late losers into 429s: this
      // suite is about the token condition, so it lifts the limit.
      editConfig(f.dir, (doc) => {
        doc.enrollment = { ...(doc.enrollment ?? {}), failed_auth_per_minute: 1000 };
      });
      server = await startTestServer(f.dir);
    });
    after(async () => {
      await server?.close();
      await f?.close();
    });

    it("exactly one 200, 49 x 401, one certificate row, audit intact", async () => {
      const ca = readFileSync(rootPemPath(f.dir), "utf8");
      const token = await deviceWithToken(f.fleet, "race-0001");
      const csrs = await Promise.all(Array.from({ length: 50 }, () => makeCsr("race-0001")));
      results = await Promise.all(
        csrs.map(({ csr }) =>
          postJson(`${server!.url}/api/v1/enroll`, { device_id: "race-0001", token, csr: csr.pem }, { ca, timeoutMs: 60_000 }),
        ),
      );
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((s) => s === 200).length, 1, `statuses: ${statuses.join(",")}`);
      assert.equal(statuses.filter((s) => s === 401).length, 49, `statuses: ${statuses.join(",")}`);
      const winner = results.findIndex((r) => r.status === 200);
      const issued = assertIssued(results[winner]!, f.dir, "race-0001", csrs[winner]!.key);
      for (const r of results.filter((x) => x.status === 401)) assertProblem(r, 401, "token-used");

      const rows = await sqliteStore(f.fleet)
        .db.selectFrom("certificates")
        .select(["serial", "der"])
        .where("device_id", "=", "race-0001")
        .execute();
      assert.equal(rows.length, 1, "exactly one certificate row for the device");
      assert.equal(rows[0]!.serial, issued.serial);
      const tokenRow = await sqliteStore(f.fleet)
        .db.selectFrom("enrollment_tokens")
        .select("used_at")
        .where("device_id", "=", "race-0001")
        .executeTakeFirstOrThrow();
      assert.notEqual(tokenRow.used_at, null);
      const verdict = await verifyAudit(f.fleet.store.ops.audit);
      assert.ok(verdict.ok, JSON.stringify(verdict));
    });

    it("after the server closes, the failures are in the audit log as aggregated auth.failure rows", async () => {
      assert.equal(results.length, 50, "needs the race");
      await server!.close(); // flushes the failure tallies
      server = undefined;
      const rows = await sqliteStore(f.fleet).db.selectFrom("audit_log").selectAll().where("action", "=", "auth.failure").execute();
      assert.ok(rows.length >= 1 && rows.length <= 2, `aggregated, not one row per failure (${rows.length} rows)`);
      let total = 0;
      for (const row of rows) {
        const details = JSON.parse(row.details);
        assert.equal(row.subject, "device:race-0001");
        assert.equal(row.actor, "address:127.0.0.1");
        assert.equal(details.reason, "token-used");
        assert.equal(details.via, "api-token");
        assert.ok(Number.isInteger(details.count) && details.count > 0);
        assert.ok(details.first <= details.last);
        total += details.count;
      }
      assert.equal(total, 49, "one failure counted per refused request");
      const verdict = await verifyAudit(f.fleet.store.ops.audit);
      assert.ok(verdict.ok, JSON.stringify(verdict));
      assert.equal((await cliAsync(["audit", "verify", "--dir", f.dir])).status, 0);
    });
  });
});
