// EST (RFC 7030) against a running registration server, with a client made only of curl and
// openssl: no fleetpki code runs on the client side. Real TLS, real SQLite, port 0 on 127.0.0.1.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect as netConnect } from "node:net";
import { connect } from "node:tls";
import { after, before, describe, it } from "node:test";
import { issueBatch } from "../src/authority/issue/batch.js";
import { createLocalCa } from "../src/authority/ca/cas.js";
import { addDevice } from "../src/authority/devices.js";
import { decideRequest, listPendingRequests } from "../src/authority/enroll/enrollment.js";
import type { FleetServices } from "../src/authority/services.js";
import { createToken } from "../src/authority/enroll/tokens.js";
import { opensslCsr, vectorPath, tempDir, tempFleet } from "./helpers.js";
import {
  assertProblem,
  curl,
  devicesCaPemPath,
  editConfig,
  opensslOk,
  rootPemPath,
  startTestServer,
  type CurlResult,
  type TestServer,
} from "./server-helpers.js";
import { sqliteStore } from "./support/sqlite.js";

const EST = "/.well-known/est";
const LIBEST = vectorPath("libest");
const GLOBALSIGN = vectorPath("globalsign");

type TempFleet = Awaited<ReturnType<typeof tempFleet>>;

async function deviceWithToken(fleet: FleetServices, id: string): Promise<string> {
  await addDevice(fleet, { id, actor: "test" });
  return (await createToken(fleet, { deviceId: id, actor: "test" })).token;
}

/** `openssl req -new` for a fresh P-256 key; returns the key file and the base64 DER body file. */
async function opensslRequest(work: string, name: string, cn: string): Promise<{ key: string; b64: string }> {
  const key = join(work, `${name}.key.pem`);
  const der = join(work, `${name}.req.der`);
  const b64 = join(work, `${name}.req.b64`);
  await opensslOk([
    "req",
    "-new",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    key,
    "-subj",
    `/CN=${cn}`,
    "-outform",
    "DER",
    "-out",
    der,
  ]);
  await opensslOk(["base64", "-in", der, "-out", b64]);
  return { key, b64 };
}

/** base64 certs-only PKCS#7 body -> the PEM certificates it holds (openssl base64 -d | openssl pkcs7 -print_certs). */
async function pkcs7Certs(body: Buffer): Promise<string[]> {
  const der = await opensslOk(["base64", "-d"], body);
  assert.ok(der.stdoutBytes.length > 0, "base64 body decodes to nothing");
  const printed = await opensslOk(["pkcs7", "-inform", "DER", "-print_certs"], der.stdoutBytes);
  return printed.stdout.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
}

const normalizePem = (pem: string): string => pem.replace(/\r/g, "").trim();

async function certField(certFile: string, ...args: string[]): Promise<string> {
  return (await opensslOk(["x509", "-in", certFile, "-noout", ...args])).stdout.trim();
}

/** The SubjectPublicKeyInfo PEM of a private key, certificate or request file. */
async function pubkeyOf(file: string, kind: "key" | "cert" | "req", form = "PEM"): Promise<string> {
  if (kind === "key") return (await opensslOk(["pkey", "-in", file, "-pubout"])).stdout.trim();
  if (kind === "cert") return (await opensslOk(["x509", "-in", file, "-noout", "-pubkey"])).stdout.trim();
  return (await opensslOk(["req", "-in", file, "-inform", form, "-noout", "-pubkey"])).stdout.trim();
}

function assertPkcs7Response(r: CurlResult): void {
  assert.equal(r.status, 200, `expected 200, got ${r.status}: ${r.text}`);
  assert.match(r.headers["content-type"] ?? "", /^application\/pkcs7-mime; ?smime-type=certs-only/);
  assert.equal(r.headers["content-transfer-encoding"], "base64");
}

function assertBasicChallenge(r: CurlResult): void {
  assert.match(r.headers["www-authenticate"] ?? "", /^Basic realm="fleetpki"/, "401 must carry WWW-Authenticate: Basic");
}

describe("EST over HTTPS, client = curl + openssl", { concurrency: true }, () => {
  describe("enrollment, re-enrollment and every error status", { concurrency: false }, () => {
    let f: TempFleet;
    let server: TestServer;
    let work: { path: string; cleanup: () => void };
    let root: string;
    let devicesCa: string;
    const tokens: Record<string, string> = {};
    let url: (path: string) => string;
    // State carried between the sequential steps.
    let firstCert = "";
    let firstKey = "";
    let firstSerial = "";

    /** curl to the EST server trusting only the fleet root. */
    const est = (path: string, args: string[] = [], input?: string | Buffer) => curl(["--cacert", root, ...args, url(path)], input);
    const enrollArgs = (user: string | undefined, bodyFile: string, contentType = "application/pkcs10"): string[] => [
      ...(user ? ["-u", user] : []),
      "-H",
      `Content-Type: ${contentType}`,
      "--data-binary",
      `@${bodyFile}`,
    ];

    before(async () => {
      f = await tempFleet();
      work = tempDir("fleetpki-est-");
      root = rootPemPath(f.dir);
      devicesCa = devicesCaPemPath(f.dir);
      for (const id of ["est-0001", "est-lib894", "est-lib5052", "est-gs", "est-bad", "est-disabled", "est-revoked", "est-retry"])
        tokens[id] = await deviceWithToken(f.fleet, id);
      // A factory bundle: what `ca create-local` + `ca issue-batch` do, through the same library
      // calls (the CLI itself is exercised in enroll-api.test.ts), before the server starts.
      await createLocalCa(f.fleet, { name: "line1", actor: "test" });
      await issueBatch(f.fleet, { localName: "line1", ids: ["robot-f001"], outDir: join(work.path, "factory"), actor: "test" });
      server = await startTestServer(f.dir);
      url = (path) => `${server.url}${EST}/${path}`;
    });

    after(async () => {
      await server?.close();
      await f?.close();
      work?.cleanup();
    });

    it("cacerts: base64 certs-only PKCS#7 holding the devices CA and the root", async () => {
      const r = await est("cacerts");
      assertPkcs7Response(r);
      const certs = await pkcs7Certs(r.body);
      assert.equal(certs.length, 2, `expected 2 certificates, got ${certs.length}`);
      const got = new Set(certs.map(normalizePem));
      assert.ok(got.has(normalizePem(readFileSync(devicesCa, "utf8"))), "the devices CA is in cacerts");
      assert.ok(got.has(normalizePem(readFileSync(root, "utf8"))), "the root is in cacerts");
    });

    it("simpleenroll with HTTP Basic (id:token) and an openssl CSR -> a certificate openssl verifies", async () => {
      const req = await opensslRequest(work.path, "first", "est-0001");
      const r = await est("simpleenroll", enrollArgs(`est-0001:${tokens["est-0001"]}`, req.b64));
      assertPkcs7Response(r);
      const certs = await pkcs7Certs(r.body);
      assert.equal(certs.length, 1);
      firstCert = join(work.path, "first.cert.pem");
      firstKey = req.key;
      writeFileSync(firstCert, certs[0]!);
      const v = await opensslOk(["verify", "-CAfile", root, "-untrusted", devicesCa, firstCert]);
      assert.match(v.stdout, /: OK$/m);
      assert.match(await certField(firstCert, "-subject", "-nameopt", "RFC2253"), /^subject=CN=est-0001$/);
      assert.match(await certField(firstCert, "-ext", "subjectAltName"), /URI:spiffe:\/\/fleet\.example\/device\/est-0001\b/);
      assert.equal(await pubkeyOf(firstCert, "cert"), await pubkeyOf(firstKey, "key"), "the certificate carries the CSR's key");
      firstSerial = await certField(firstCert, "-serial");
    });

    it("the same token again -> 401 token-used with WWW-Authenticate: Basic", async () => {
      const req = await opensslRequest(work.path, "again", "est-0001");
      const r = await est("simpleenroll", enrollArgs(`est-0001:${tokens["est-0001"]}`, req.b64));
      assertProblem(r, 401, "token-used");
      assertBasicChallenge(r);
    });

    it("simplereenroll with --cert/--key of the new certificate and a NEW key -> new serial carrying the new key", async () => {
      assert.ok(firstCert, "needs the certificate from simpleenroll");
      const req = await opensslRequest(work.path, "rekey", "est-0001");
      const r = await est("simplereenroll", ["--cert", firstCert, "--key", firstKey, ...enrollArgs(undefined, req.b64)]);
      assertPkcs7Response(r);
      const certs = await pkcs7Certs(r.body);
      assert.equal(certs.length, 1);
      const renewed = join(work.path, "rekey.cert.pem");
      writeFileSync(renewed, certs[0]!);
      assert.match((await opensslOk(["verify", "-CAfile", root, "-untrusted", devicesCa, renewed])).stdout, /: OK$/m);
      assert.notEqual(await certField(renewed, "-serial"), firstSerial, "a new serial");
      assert.equal(await pubkeyOf(renewed, "cert"), await pubkeyOf(req.key, "key"), "the renewed certificate carries the new key");
      assert.notEqual(await pubkeyOf(renewed, "cert"), await pubkeyOf(firstKey, "key"));
      assert.match(await certField(renewed, "-subject", "-nameopt", "RFC2253"), /^subject=CN=est-0001$/);
      assert.match(await certField(renewed, "-ext", "subjectAltName"), /URI:spiffe:\/\/fleet\.example\/device\/est-0001\b/);
    });

    it(
      "a repeated request whose answer was lost gets the same certificate (simpleenroll and simplereenroll); " + "another key is refused",
      async () => {
        const certOf = async (r: CurlResult) => {
          assertPkcs7Response(r);
          return (await pkcs7Certs(r.body))[0]!;
        };
        const req = await opensslRequest(work.path, "retry", "est-retry");
        const enroll = () => est("simpleenroll", enrollArgs(`est-retry:${tokens["est-retry"]}`, req.b64));
        const enrolled = await certOf(await enroll());
        assert.equal(await certOf(await enroll()), enrolled, "the same token and key: the certificate already issued");
        const cert = join(work.path, "retry.cert.pem");
        writeFileSync(cert, enrolled);

        const next = await opensslRequest(work.path, "retry-next", "est-retry");
        const reenroll = (b64: string) => est("simplereenroll", ["--cert", cert, "--key", req.key, ...enrollArgs(undefined, b64)]);
        const renewed = await certOf(await reenroll(next.b64));
        assert.equal(await certOf(await reenroll(next.b64)), renewed, "the same certificate and key: the renewal already issued");
        const other = await opensslRequest(work.path, "retry-other", "est-retry");
        assertProblem(await reenroll(other.b64), 403, "re-enroll-required");
        assertProblem(await est("simpleenroll", enrollArgs(`est-retry:${tokens["est-retry"]}`, other.b64)), 401, "token-used");
      },
    );

    it("csrattrs: application/csrattrs, base64 DER that openssl asn1parse reads", async () => {
      const r = await est("csrattrs");
      assert.equal(r.status, 200);
      assert.match(r.headers["content-type"] ?? "", /^application\/csrattrs/);
      const der = await opensslOk(["base64", "-d"], r.body);
      const parsed = await opensslOk(["asn1parse", "-inform", "DER"], der.stdoutBytes);
      assert.match(parsed.stdout, /^\s*0:d=0\s+hl=\d+ l=\s*\d+ cons: SEQUENCE/m);
      for (const name of ["ecdsa-with-SHA256", "id-ecPublicKey", "prime256v1", "secp384r1", "ED25519", "rsaEncryption"])
        assert.match(parsed.stdout, new RegExp(`:${name}\\b`), `csrattrs names ${name}`);
    });

    it("libest US894 req.p10 (base64 DER, RSA-2048 signed with sha1WithRSAEncryption) -> 400: SHA-1 signatures are refused", async () => {
      // The file is already an EST body: base64 of a DER PKCS#10. Its key (RSA 2048) is allowed;
      // its signature algorithm (sha1WithRSAEncryption) is not in the accepted list.
      const r = await est("simpleenroll", enrollArgs(`est-lib894:${tokens["est-lib894"]}`, join(LIBEST, "US894__req.p10")));
      const p = assertProblem(r, 400, "csr-signature-algorithm-not-allowed");
      assert.match(p.detail, /sha1/i);
    });

    it("libest US5052 midsize.csr is PEM, not an EST body -> 400 invalid-base64; as base64 DER (P-256, ECDSA-SHA256) -> 200", async () => {
      const pemFile = join(LIBEST, "US5052__midsize.csr");
      const asPem = await est("simpleenroll", enrollArgs(`est-lib5052:${tokens["est-lib5052"]}`, pemFile));
      const p = assertProblem(asPem, 400, "invalid-base64");
      assert.match(p.detail, /"-"/, "names the offending character");
      // The refused body did not consume the token: convert and send again.
      const der = join(work.path, "us5052.der");
      const b64 = join(work.path, "us5052.b64");
      await opensslOk(["req", "-in", pemFile, "-outform", "DER", "-out", der]);
      await opensslOk(["base64", "-in", der, "-out", b64]);
      const r = await est("simpleenroll", enrollArgs(`est-lib5052:${tokens["est-lib5052"]}`, b64));
      assertPkcs7Response(r);
      const cert = join(work.path, "us5052.cert.pem");
      writeFileSync(cert, (await pkcs7Certs(r.body))[0]!);
      // The profile decides the subject (CN=localhost.cisco.com in the CSR is ignored); the key is the CSR's.
      assert.match(await certField(cert, "-subject", "-nameopt", "RFC2253"), /^subject=CN=est-lib5052$/);
      assert.equal(await pubkeyOf(cert, "cert"), await pubkeyOf(pemFile, "req"));
      assert.match((await opensslOk(["verify", "-CAfile", root, "-untrusted", devicesCa, cert])).stdout, /: OK$/m);
    });

    it("globalsign test_csr.pem (RSA-2048, sha256WithRSAEncryption) as base64 DER -> 200 with its key", async () => {
      const pemFile = join(GLOBALSIGN, "test_csr.pem");
      const der = await opensslOk(["req", "-in", pemFile, "-outform", "DER"]);
      const b64 = await opensslOk(["base64"], der.stdoutBytes);
      const body = join(work.path, "gs.b64");
      writeFileSync(body, b64.stdout);
      const r = await est("simpleenroll", enrollArgs(`est-gs:${tokens["est-gs"]}`, body));
      assertPkcs7Response(r);
      const cert = join(work.path, "gs.cert.pem");
      writeFileSync(cert, (await pkcs7Certs(r.body))[0]!);
      assert.match(await certField(cert, "-subject", "-nameopt", "RFC2253"), /^subject=CN=est-gs$/);
      assert.equal(await pubkeyOf(cert, "cert"), await pubkeyOf(pemFile, "req"));
      assert.match((await opensslOk(["verify", "-CAfile", root, "-untrusted", devicesCa, cert])).stdout, /: OK$/m);
    });

    it("400 bad base64 and 400 bad CSR (valid base64 of garbage); neither consumes the token", async () => {
      const user = `est-bad:${tokens["est-bad"]}`;
      const notB64 = join(work.path, "notbase64.txt");
      writeFileSync(notB64, "!!!notbase64");
      assertProblem(await est("simpleenroll", enrollArgs(user, notB64)), 400, "invalid-base64");
      const garbage = join(work.path, "garbage.b64");
      writeFileSync(garbage, Buffer.from("this is not a certification request at all").toString("base64"));
      const p = assertProblem(await est("simpleenroll", enrollArgs(user, garbage)), 400, "csr-malformed");
      assert.match(p.detail, /CSR/);
      // Whitespace inside the base64 is allowed, and the token still works.
      const req = await opensslRequest(work.path, "bad-then-good", "est-bad");
      const spaced = join(work.path, "spaced.b64");
      writeFileSync(spaced, readFileSync(req.b64, "utf8").replace(/\n/g, "\r\n  \t"));
      assertPkcs7Response(await est("simpleenroll", enrollArgs(user, spaced)));
    });

    it("401 without credentials and 401 with a wrong token or unknown device, each with WWW-Authenticate", async () => {
      const req = await opensslRequest(work.path, "nocreds", "est-0001");
      const none = await est("simpleenroll", enrollArgs(undefined, req.b64));
      assertProblem(none, 401, "credentials-required");
      assertBasicChallenge(none);
      const wrong = await est("simpleenroll", enrollArgs("est-bad:fpt_wrongwrongwrong", req.b64));
      assertProblem(wrong, 401, "token-invalid");
      assertBasicChallenge(wrong);
      // An unknown device gets the very same answer as a wrong token.
      const unknown = await est("simpleenroll", enrollArgs("no-such-device:fpt_wrongwrongwrong", req.b64));
      const p = assertProblem(unknown, 401, "token-invalid");
      assertBasicChallenge(unknown);
      assert.equal(p.detail.replace("no-such-device", "est-bad"), JSON.parse(wrong.text).detail, "does not tell whether the device exists");
      // simplereenroll without a client certificate
      assertProblem(await est("simplereenroll", enrollArgs(undefined, req.b64)), 401, "certificate-required");
    });

    // docs/enrollment.md: "401 | missing or wrong credentials; carries WWW-Authenticate"; RFC 9110
    // 11.6.1: a 401 MUST carry WWW-Authenticate. simplereenroll without a certificate is a 401 too.
    it("every 401 carries WWW-Authenticate, also simplereenroll without a client certificate", async () => {
      const req = await opensslRequest(work.path, "nocert", "est-0001");
      const r = await est("simplereenroll", enrollArgs(undefined, req.b64));
      assertProblem(r, 401, "certificate-required");
      assert.ok(r.headers["www-authenticate"], "a 401 without WWW-Authenticate");
    });

    it("factory certificate: simpleenroll -> 200 for its id; simplereenroll -> 403 wrong-issuer", async () => {
      const bundle = join(work.path, "factory", "robot-f001");
      const req = await opensslRequest(work.path, "factory", "robot-f001");
      const tls = ["--cert", join(bundle, "cert.pem"), "--key", join(bundle, "key.pem")];
      const re = await est("simplereenroll", [...tls, ...enrollArgs(undefined, req.b64)]);
      assertProblem(re, 403, "wrong-issuer");
      const en = await est("simpleenroll", [...tls, ...enrollArgs(undefined, req.b64)]);
      assertPkcs7Response(en);
      const cert = join(work.path, "factory.cert.pem");
      writeFileSync(cert, (await pkcs7Certs(en.body))[0]!);
      assert.match((await opensslOk(["verify", "-CAfile", root, "-untrusted", devicesCa, cert])).stdout, /: OK$/m);
      assert.match(await certField(cert, "-ext", "subjectAltName"), /URI:spiffe:\/\/fleet\.example\/device\/robot-f001\b/);
      // A factory certificate enrolls its device once: a copied bundle with a new key is refused.
      const copy = await opensslRequest(work.path, "factory-copy", "robot-f001");
      assertProblem(await est("simpleenroll", [...tls, ...enrollArgs(undefined, copy.b64)]), 403, "factory-already-enrolled");
    });

    it("403 for a disabled device (token and certificate) and for a revoked certificate", async () => {
      // Enroll both while active.
      const issued: Record<string, { cert: string; key: string }> = {};
      for (const id of ["est-disabled", "est-revoked"]) {
        const req = await opensslRequest(work.path, id, id);
        const r = await est("simpleenroll", enrollArgs(`${id}:${tokens[id]}`, req.b64));
        assertPkcs7Response(r);
        const cert = join(work.path, `${id}.cert.pem`);
        writeFileSync(cert, (await pkcs7Certs(r.body))[0]!);
        issued[id] = { cert, key: req.key };
      }
      await sqliteStore(f.fleet).db.updateTable("devices").set({ status: "disabled" }).where("id", "=", "est-disabled").execute();
      const rows = await sqliteStore(f.fleet)
        .db.updateTable("certificates")
        .set({ status: "revoked", revoked_at: new Date().toISOString(), revocation_reason: "keyCompromise" })
        .where("device_id", "=", "est-revoked")
        .executeTakeFirst();
      assert.equal(Number(rows.numUpdatedRows), 1, "the one certificate of est-revoked");

      const req = await opensslRequest(work.path, "after-change", "x");
      const disabledRe = await est("simplereenroll", [
        "--cert",
        issued["est-disabled"]!.cert,
        "--key",
        issued["est-disabled"]!.key,
        ...enrollArgs(undefined, req.b64),
      ]);
      assertProblem(disabledRe, 403, "device-not-active");
      const newToken = (await createToken(f.fleet, { deviceId: "est-disabled", actor: "test" })).token;
      assertProblem(await est("simpleenroll", enrollArgs(`est-disabled:${newToken}`, req.b64)), 403, "device-not-active");
      const revokedRe = await est("simplereenroll", [
        "--cert",
        issued["est-revoked"]!.cert,
        "--key",
        issued["est-revoked"]!.key,
        ...enrollArgs(undefined, req.b64),
      ]);
      assertProblem(revokedRe, 403, "certificate-revoked");
    });

    it("404 unknown path", async () => {
      assertProblem(await est("no-such-operation"), 404, "not-found");
      assertProblem(await curl(["--cacert", root, `${server.url}/nothing/here`]), 404, "not-found");
    });

    it("405 wrong method, with Allow", async () => {
      const get = await est("simpleenroll");
      assertProblem(get, 405, "method-not-allowed");
      assert.equal(get.headers["allow"], "POST");
      const post = await est("cacerts", ["-X", "POST", "-H", "Content-Type: application/pkcs10", "--data-binary", "AAAA"]);
      assertProblem(post, 405, "method-not-allowed");
      assert.equal(post.headers["allow"], "GET");
      const reGet = await est("simplereenroll");
      assertProblem(reGet, 405);
      assert.equal(reGet.headers["allow"], "POST");
    });

    it("413 for a body over 64 KiB (declared length and chunked)", async () => {
      const big = join(work.path, "big.b64");
      writeFileSync(big, "QUFB\n".repeat(14_000)); // 70,000 bytes of valid base64
      assertProblem(await est("simpleenroll", enrollArgs(`est-bad:${tokens["est-bad"]}`, big)), 413, "body-too-large");
      const chunked = await est("simpleenroll", ["-H", "Transfer-Encoding: chunked", ...enrollArgs(undefined, big)]);
      assertProblem(chunked, 413, "body-too-large");
      // A body of exactly 64 KiB is read (and refused only for lacking credentials).
      const limit = join(work.path, "limit.b64");
      writeFileSync(limit, "QUFB".repeat(16_384));
      assertProblem(await est("simpleenroll", enrollArgs(undefined, limit)), 401, "credentials-required");
    });

    it("415 for a wrong content type", async () => {
      const req = await opensslRequest(work.path, "ctype", "est-0001");
      assertProblem(await est("simpleenroll", enrollArgs(undefined, req.b64, "text/plain")), 415, "unsupported-media-type");
      // curl's default for --data-binary is application/x-www-form-urlencoded
      assertProblem(await est("simpleenroll", ["--data-binary", `@${req.b64}`]), 415, "unsupported-media-type");
      // parameters and case are allowed
      assertProblem(
        await est("simpleenroll", enrollArgs(undefined, req.b64, "Application/PKCS10; charset=x")),
        401,
        "credentials-required",
      );
    });
  });

  describe("failed authentications: 429 per source after 10 a minute, never for a valid credential", { concurrency: false }, () => {
    let f: TempFleet;
    let server: TestServer;
    let work: { path: string; cleanup: () => void };
    let root: string;

    /** simpleenroll with HTTP Basic from a given loopback address (curl --interface). */
    const enrollFrom = (address: string, user: string, b64: string) =>
      curl([
        "--cacert",
        root,
        "--interface",
        address,
        "-u",
        user,
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        `@${b64}`,
        `${server.url}${EST}/simpleenroll`,
      ]);

    before(async () => {
      f = await tempFleet();
      work = tempDir("fleetpki-est429-");
      root = rootPemPath(f.dir);
      server = await startTestServer(f.dir);
    });
    after(async () => {
      await server?.close();
      await f?.close();
      work?.cleanup();
    });

    it(
      "after 10 failures from one source, its next failure gets 429 + Retry-After, while a valid token from " + "it still enrolls",
      async () => {
        const goodToken = await deviceWithToken(f.fleet, "rl-good");
        const req = await opensslRequest(work.path, "rl", "rl-good");
        // Ten failures for ten different device ids: the per-source limit is what trips.
        for (let i = 0; i < 10; i++) assertProblem(await enrollFrom("127.0.0.1", `rl-${i}:fpt_wrong${i}`, req.b64), 401, "token-invalid");
        const blocked = await enrollFrom("127.0.0.1", "rl-good:fpt_stillwrong", req.b64);
        assertProblem(blocked, 429, "too-many-requests");
        const retry = Number(blocked.headers["retry-after"]);
        assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 60, `Retry-After ${blocked.headers["retry-after"]}`);
        // The refused request did not consume the good token, which still works from that source.
        const row = await sqliteStore(f.fleet)
          .db.selectFrom("enrollment_tokens")
          .select("used_at")
          .where("device_id", "=", "rl-good")
          .executeTakeFirstOrThrow();
        assert.equal(row.used_at, null);
        assertPkcs7Response(await enrollFrom("127.0.0.1", `rl-good:${goodToken}`, req.b64));
        // Unauthenticated resources stay available.
        assert.equal((await curl(["--cacert", root, `${server.url}${EST}/cacerts`])).status, 200);
      },
    );

    it("ten wrong tokens for a device from one address do not lock out its correct token from another", async () => {
      const token = await deviceWithToken(f.fleet, "rl-victim");
      const req = await opensslRequest(work.path, "victim", "rl-victim");
      for (let i = 0; i < 10; i++) assertProblem(await enrollFrom("127.0.0.2", `rl-victim:fpt_guess${i}`, req.b64), 401, "token-invalid");
      assertProblem(await enrollFrom("127.0.0.2", "rl-victim:fpt_guess10", req.b64), 429, "too-many-requests");
      assertPkcs7Response(await enrollFrom("127.0.0.3", `rl-victim:${token}`, req.b64));
    });

    it("ten bad logins from an address do not refuse valid mTLS renewals from it (EST and JSON)", async () => {
      const token = await deviceWithToken(f.fleet, "rl-nat");
      const req = await opensslRequest(work.path, "nat", "rl-nat");
      const first = await enrollFrom("127.0.0.4", `rl-nat:${token}`, req.b64);
      assertPkcs7Response(first);
      const cert = join(work.path, "nat.cert.pem");
      writeFileSync(cert, (await pkcs7Certs(first.body))[0]!);
      // Another robot behind the same address keeps failing its logins.
      for (let i = 0; i < 12; i++) {
        const r = await enrollFrom("127.0.0.4", `rl-other-${i}:fpt_wrong`, req.b64);
        assert.equal(r.status, i < 10 ? 401 : 429, r.text);
      }
      const next = await opensslRequest(work.path, "nat-next", "rl-nat");
      const re = await curl([
        "--cacert",
        root,
        "--interface",
        "127.0.0.4",
        "--cert",
        cert,
        "--key",
        req.key,
        ...["-H", "Content-Type: application/pkcs10", "--data-binary", `@${next.b64}`],
        `${server.url}${EST}/simplereenroll`,
      ]);
      assertPkcs7Response(re);
      const renewed = join(work.path, "nat-next.cert.pem");
      writeFileSync(renewed, (await pkcs7Certs(re.body))[0]!);
      // The JSON renewal, with a PEM CSR.
      const { csr: pemCsr } = opensslCsr(work.path, "rl-nat");
      const body = JSON.stringify({ csr: readFileSync(pemCsr, "utf8") });
      const api = await curl([
        "--cacert",
        root,
        "--interface",
        "127.0.0.4",
        "--cert",
        renewed,
        "--key",
        next.key,
        "-H",
        "content-type: application/json",
        "--data-binary",
        body,
        `${server.url}/api/v1/renew`,
      ]);
      assert.equal(api.status, 200, api.text);
    });
  });

  describe("approval: 202 + Retry-After while pending", { concurrency: false }, () => {
    let f: TempFleet;
    let server: TestServer;
    let work: { path: string; cleanup: () => void };

    before(async () => {
      f = await tempFleet();
      work = tempDir("fleetpki-est202-");
      editConfig(f.dir, (doc) => {
        doc.enrollment = { ...(doc.enrollment ?? {}), approval: true };
      });
      server = await startTestServer(f.dir);
    });
    after(async () => {
      await server?.close();
      await f?.close();
      work?.cleanup();
    });

    it("no credentials, CSR CN = device id -> 202 + Retry-After; approve -> next poll 200", async () => {
      const root = rootPemPath(f.dir);
      const req = await opensslRequest(work.path, "ap", "robot-ap1");
      const poll = () =>
        curl([
          "--cacert",
          root,
          "-H",
          "Content-Type: application/pkcs10",
          "--data-binary",
          `@${req.b64}`,
          `${server.url}${EST}/simpleenroll`,
        ]);
      const first = await poll();
      assert.equal(first.status, 202, first.text);
      assert.equal(first.headers["retry-after"], "10");
      const again = await poll();
      assert.equal(again.status, 202);
      assert.ok(Number(again.headers["retry-after"]) > 0);

      // The operator side (`device requests`, `device approve`; the CLI is exercised in enroll-api.test.ts).
      const pending = await listPendingRequests(f.fleet);
      assert.deepEqual(
        pending.map((p) => p.deviceId),
        ["robot-ap1"],
        "one pending request (the repeated poll did not add one)",
      );
      await decideRequest(f.fleet, { deviceId: "robot-ap1", requestId: pending[0]!.id, approve: true, actor: "test" });

      const done = await poll();
      assertPkcs7Response(done);
      const cert = join(work.path, "ap.cert.pem");
      writeFileSync(cert, (await pkcs7Certs(done.body))[0]!);
      assert.match(await certField(cert, "-ext", "subjectAltName"), /URI:spiffe:\/\/fleet\.example\/device\/robot-ap1\b/);
      assert.equal(await pubkeyOf(cert, "cert"), await pubkeyOf(req.key, "key"));
    });

    it("a CSR whose CN is not a device id -> 400", async () => {
      const root = rootPemPath(f.dir);
      const req = await opensslRequest(work.path, "badcn", "Not A Device");
      const r = await curl([
        "--cacert",
        root,
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        `@${req.b64}`,
        `${server.url}${EST}/simpleenroll`,
      ]);
      assertProblem(r, 400, "invalid-device-id");
    });
  });

  describe("slow clients", { concurrency: true }, () => {
    let f: TempFleet;
    let server: TestServer;

    before(async () => {
      f = await tempFleet();
      server = await startTestServer(f.dir);
    });
    after(async () => {
      await server?.close();
      await f?.close();
    });

    // server.headersTimeout is 10 s. A connection that sends part of a request line and then
    // nothing must be closed within ~15 s. The test gives up after 16 s (it must stay short).
    it("a connection that never finishes its headers is closed within 15 s", { timeout: 25_000 }, async () => {
      const started = Date.now();
      const closedAfter = await new Promise<number | undefined>((resolve, reject) => {
        const socket = connect(
          { host: "127.0.0.1", port: server.port, ca: readFileSync(rootPemPath(f.dir), "utf8"), servername: "localhost" },
          () => {
            socket.write("POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: loc");
          },
        );
        const deadline = setTimeout(() => {
          socket.destroy();
          resolve(undefined);
        }, 16_000);
        socket.on("data", () => {});
        socket.on("error", () => {});
        socket.on("close", () => {
          clearTimeout(deadline);
          resolve(Date.now() - started);
        });
        socket.on("timeout", () => reject(new Error("unexpected")));
      });
      assert.ok(
        closedAfter !== undefined && closedAfter <= 15_000,
        `the server kept a connection with incomplete headers open for ${closedAfter ?? "more than 16000"} ms ` +
          `(headersTimeout is 10 s, but node checks it only every connectionsCheckingInterval, 30 s by default)`,
      );
      assert.ok(closedAfter >= 9_000, `closed after ${closedAfter} ms, before headersTimeout`);
    });

    // handshakeTimeout is 10 s: a TCP connection that never starts TLS must be dropped as well.
    it("a TCP connection that never sends a TLS ClientHello is closed within 15 s", { timeout: 25_000 }, async () => {
      const started = Date.now();
      const closedAfter = await new Promise<number | undefined>((resolve) => {
        const socket = netConnect({ host: "127.0.0.1", port: server.port });
        const deadline = setTimeout(() => {
          socket.destroy();
          resolve(undefined);
        }, 16_000);
        socket.on("data", () => {});
        socket.on("error", () => {});
        socket.on("close", () => {
          clearTimeout(deadline);
          resolve(Date.now() - started);
        });
      });
      assert.ok(
        closedAfter !== undefined && closedAfter <= 15_000,
        `a silent TCP connection stayed open for ${closedAfter ?? "more than 16000"} ms`,
      );
    });
  });
});
