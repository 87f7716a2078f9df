// Revocation end to end (issue 4): the CLI revokes, holds and releases while `serve` runs; the
// served CRLs and OCSP answers change within a second; openssl verifies against them.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { addDevice } from "../src/authority/devices.js";
import type { FleetServices } from "../src/authority/services.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { parseCrl } from "../src/x509/crl.js";
import { CLI, vectorPath, assertOk, assertOneLineError, cliAsync, openssl, opensslCsr, tempDir, tempFleet } from "./helpers.js";
import { devicesCaPemPath, editConfig, rootPemPath, run, sleep } from "./server-helpers.js";
import { ManualClock } from "./support/clock.js";
import { parseOcspResponse } from "./support/ocsp-response.js";
import { sqliteStore } from "./support/sqlite.js";

interface Leaf {
  id: string;
  serial: string;
  certPath: string;
}

async function fetchBytes(url: string, init?: RequestInit): Promise<{ status: number; type: string; body: Buffer }> {
  const r = await fetch(url, init);
  return { status: r.status, type: r.headers.get("content-type") ?? "", body: Buffer.from(await r.arrayBuffer()) };
}

describe("revocation: CLI -> running server -> CRLs and OCSP -> openssl", { concurrency: false }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let fleet: FleetServices;
  let server: FleetServer;
  let work: { path: string; cleanup: () => void };
  let base: string;
  const leaves: Record<string, Leaf> = {};

  const startServer = async () => {
    server = await startFleetServer({ dir: f.dir, only: ["status"], statusListen: "127.0.0.1:0", logger: silentLogger });
    base = `http://127.0.0.1:${server.status!.port}`;
  };

  before(async () => {
    f = await tempFleet();
    fleet = f.fleet;
    work = tempDir("fleetpki-revocation-");
    for (const id of ["rev-a", "rev-b", "rev-c"]) {
      await addDevice(fleet, { id, actor: "test" });
      const { csr } = opensslCsr(work.path, id);
      const cert = await issueDeviceCertificate(fleet, { deviceId: id, csr: readFileSync(csr), actor: "test" });
      const certPath = join(work.path, `${id}.pem`);
      writeFileSync(certPath, cert.certificatePem);
      leaves[id] = { id, serial: cert.serial, certPath };
    }
    await startServer();
  });
  after(async () => {
    await server?.close();
    await f?.close();
    work?.cleanup();
  });

  /** The served CRLs of the root and the devices CA, as PEM files for openssl. */
  async function servedCrls(): Promise<string[]> {
    const paths: string[] = [];
    for (const ca of ["root", "devices"]) {
      const r = await fetchBytes(`${base}/crl/${ca}.pem`);
      assert.equal(r.status, 200);
      const p = join(work.path, `served-${ca}.crl.pem`);
      writeFileSync(p, r.body);
      paths.push(p);
    }
    return paths;
  }

  async function verify(leaf: Leaf): Promise<{ ok: boolean; output: string }> {
    const crls = await servedCrls();
    const r = openssl([
      "verify",
      "-crl_check_all",
      "-CAfile",
      rootPemPath(f.dir),
      "-untrusted",
      devicesCaPemPath(f.dir),
      ...crls.flatMap((c) => ["-CRLfile", c]),
      leaf.certPath,
    ]);
    return { ok: r.status === 0, output: r.stdout + r.stderr };
  }

  /** Asynchronous: the server runs in this process, so a blocking openssl would wait for itself. */
  async function ocsp(leaf: Leaf, extra: string[] = []): Promise<{ status: number; output: string }> {
    // openssl wants the digest option before -cert.
    const r = await run("openssl", [
      "ocsp",
      "-url",
      `${base}/ocsp`,
      ...extra,
      "-issuer",
      devicesCaPemPath(f.dir),
      "-cert",
      leaf.certPath,
      "-CAfile",
      rootPemPath(f.dir),
    ]);
    return { status: r.status, output: r.stdout + r.stderr };
  }

  it("serves each CA's CRL as DER and PEM; openssl reads them and every leaf verifies with -crl_check_all", async () => {
    const der = await fetchBytes(`${base}/crl/devices.crl`);
    assert.equal(der.status, 200);
    assert.equal(der.type, "application/pkix-crl");
    const parsed = parseCrl(der.body);
    assert.ok(parsed.crlNumber! >= 1n);
    assert.equal(parsed.entries.length, 0);
    const text = openssl(["crl", "-inform", "DER", "-noout", "-text"], der.body);
    assertOk(text, "openssl crl -text");
    assert.match(text.stdout, /X509v3 CRL Number/);
    assert.match(text.stdout, /X509v3 Authority Key Identifier/);
    for (const ca of ["root", "services", "operators"]) assert.equal((await fetchBytes(`${base}/crl/${ca}.crl`)).status, 200, ca);
    assert.equal((await fetchBytes(`${base}/crl/nope.crl`)).status, 404);
    for (const leaf of Object.values(leaves)) assert.ok((await verify(leaf)).ok, leaf.id);
  });

  it("openssl ocsp: good with and without a nonce and with SHA-256 CertIDs; unknown for a serial we never issued", async () => {
    for (const extra of [[], ["-no_nonce"], ["-sha256"]]) {
      const r = await ocsp(leaves["rev-c"]!, extra);
      assert.equal(r.status, 0, r.output);
      assert.match(r.output, /Response verify OK/, extra.join(" "));
      assert.match(r.output, /: good/, extra.join(" "));
    }
    const unknown = await run("openssl", [
      "ocsp",
      "-url",
      `${base}/ocsp`,
      "-issuer",
      devicesCaPemPath(f.dir),
      "-serial",
      "0x0123456789abcdef",
      "-CAfile",
      rootPemPath(f.dir),
    ]);
    assert.match(unknown.stdout + unknown.stderr, /: unknown/);
  });

  it("GET /ocsp/<base64> answers like POST; the delegated responder certificate is recorded, OCSPSigning only, ocsp-nocheck", async () => {
    const reqPath = join(work.path, "get.req");
    assertOk(
      openssl(["ocsp", "-issuer", devicesCaPemPath(f.dir), "-cert", leaves["rev-c"]!.certPath, "-no_nonce", "-reqout", reqPath]),
      "openssl ocsp -reqout",
    );
    const get = await fetchBytes(`${base}/ocsp/${encodeURIComponent(readFileSync(reqPath).toString("base64"))}`);
    assert.equal(get.status, 200);
    const parsed = parseOcspResponse(get.body);
    assert.ok("responses" in parsed, "successful");
    assert.equal(parsed.responses[0]!.status.status, "good");
    const rows = await sqliteStore(fleet)
      .db.selectFrom("certificates")
      .select(["serial", "der"])
      .where("kind", "=", "ocsp-responder")
      .where("issuer_ca", "=", "devices")
      .execute();
    assert.equal(rows.length, 1, "one responder certificate for the devices CA, recorded");
    assert.ok(
      parsed.certs.some((c) => c.equals(Buffer.from(rows[0]!.der))),
      "the response carries the recorded responder certificate",
    );
    const text = openssl(["x509", "-inform", "DER", "-noout", "-text"], Buffer.from(rows[0]!.der));
    assertOk(text, "openssl x509 -text");
    assert.match(text.stdout, /X509v3 Extended Key Usage: \n\s+OCSP Signing\n/);
    assert.match(text.stdout, /OCSP No Check/);
  });

  it("GET /ocsp/<base64>: standard base64, percent-encoded or not; anything else is a 400 naming the problem", async () => {
    // A request whose base64 holds "+" and "/" (a fresh nonce each time), so that escaping them matters.
    const reqPath = join(work.path, "get-nonce.req");
    let der = Buffer.alloc(0);
    for (let i = 0; i < 50 && !/[+/]/.test(der.toString("base64")); i++) {
      const made = openssl(["ocsp", "-issuer", devicesCaPemPath(f.dir), "-cert", leaves["rev-c"]!.certPath, "-reqout", reqPath]);
      assertOk(made, "openssl ocsp -reqout");
      der = readFileSync(reqPath);
    }
    const b64 = der.toString("base64");
    assert.match(b64, /[+/]/);
    const good = async (encoded: string, what: string) => {
      const r = await fetchBytes(`${base}/ocsp/${encoded}`);
      assert.equal(r.status, 200, `${what}: ${r.body.toString()}`);
      const parsed = parseOcspResponse(r.body);
      assert.ok("responses" in parsed, `${what}: a signed answer`);
      assert.equal(parsed.responses[0]!.status.status, "good", what);
    };
    await good(encodeURIComponent(b64), "percent-encoded");
    await good(b64, "raw (+, / and = as they are)");
    await good(
      b64.replace(/[+/=]/g, (c) => `%${c.charCodeAt(0).toString(16)}`),
      "lower-case escapes",
    );

    const junk: Array<[string, string, RegExp]> = [
      ["%%%", "a broken %-escape", /malformed %-escape/],
      [der.toString("base64url"), "base64url", /character "[-_]" at offset \d+ is not base64|not a multiple of 4/],
      [`${b64.slice(0, 8)}%20${b64.slice(8)}`, "an encoded space", /character 0x20 at offset 8 is not base64/],
      [`${encodeURIComponent(b64)}%0A`, "a trailing encoded newline", /character 0x0a/],
      [b64.slice(0, -1), "a truncated value", /not a multiple of 4/],
      [`${b64.slice(0, 8)}%C3%A9${b64.slice(8)}`, "non-ASCII", /character 0xe9 at offset 8/],
      [encodeURIComponent(encodeURIComponent(b64)), "encoded twice", /character "%"/],
      [`${b64.replace(/=+$/, "")}==AA`, "data after padding", /data after "=" padding/],
      ["", "an empty value", /empty/],
    ];
    for (const [encoded, what, detail] of junk) {
      const r = await fetchBytes(`${base}/ocsp/${encoded}`);
      assert.equal(r.status, 400, `${what}: HTTP ${r.status}`);
      assert.equal(r.type, "application/problem+json", what);
      const problem = JSON.parse(r.body.toString()) as { type: string; detail: string };
      assert.match(problem.type, /invalid-ocsp-get$/, what);
      assert.match(problem.detail, detail, what);
    }
    assert.equal((await fetchBytes(`${base}/healthz`)).status, 200);
  });

  it("`fleetpki device revoke` while serve runs: the feed's own poll brings OCSP `revoked` (reason, time) and the CRL entry", async (t) => {
    const revoke = await cliAsync(["device", "revoke", "rev-a", "--reason", "keyCompromise", "--dir", f.dir]);
    assertOk(revoke, "device revoke");
    // No changes.poll() here: the server's own interval (200 ms) must pick the change up. The
    // latency is reported; the bound only catches a feed that does not poll at all, since a loaded
    // machine can take seconds for what takes milliseconds on a quiet one.
    const started = Date.now();
    let crlSeen: number | undefined;
    let ocspSeen: number | undefined;
    while (Date.now() - started < 30_000 && (crlSeen === undefined || ocspSeen === undefined)) {
      if (crlSeen === undefined) {
        const crl = parseCrl((await fetchBytes(`${base}/crl/devices.crl`)).body);
        if (crl.entries.some((e) => e.serialHex === leaves["rev-a"]!.serial)) crlSeen = Date.now() - started;
      }
      if (ocspSeen === undefined) {
        const req = openssl([
          "ocsp",
          "-issuer",
          devicesCaPemPath(f.dir),
          "-cert",
          leaves["rev-a"]!.certPath,
          "-no_nonce",
          "-reqout",
          join(work.path, "a.req"),
        ]);
        assertOk(req, "openssl ocsp -reqout");
        const resp = await fetchBytes(`${base}/ocsp`, {
          method: "POST",
          headers: { "content-type": "application/ocsp-request" },
          body: readFileSync(join(work.path, "a.req")),
        });
        const parsed = parseOcspResponse(resp.body);
        if ("responses" in parsed && parsed.responses[0]?.status.status === "revoked") ocspSeen = Date.now() - started;
      }
      if (crlSeen === undefined || ocspSeen === undefined) await sleep(25);
    }
    t.diagnostic(`after the CLI exited: the served CRL listed the serial after ${crlSeen} ms, OCSP said revoked after ${ocspSeen} ms`);
    assert.ok(crlSeen !== undefined, "the served CRL never listed the revocation (30 s)");
    assert.ok(ocspSeen !== undefined, "OCSP never said revoked (30 s)");
    const r = await ocsp(leaves["rev-a"]!);
    assert.match(r.output, /Response verify OK/);
    assert.match(r.output, /: revoked/);
    assert.match(r.output, /Reason: keyCompromise/);
    assert.match(r.output, /Revocation Time: /);
    const v = await verify(leaves["rev-a"]!);
    assert.equal(v.ok, false);
    assert.match(v.output, /certificate revoked/);
    assert.ok((await verify(leaves["rev-b"]!)).ok, "other leaves still verify");
  });

  it("hold makes a leaf fail verification and OCSP say revoked (certificateHold); unhold makes it pass again", async () => {
    assertOk(await cliAsync(["device", "hold", "rev-b", "--dir", f.dir]), "device hold");
    await server.changes.poll();
    const held = await verify(leaves["rev-b"]!);
    assert.equal(held.ok, false, held.output);
    assert.match(held.output, /certificate revoked/);
    assert.match((await ocsp(leaves["rev-b"]!)).output, /Reason: certificateHold/);
    assertOk(await cliAsync(["device", "unhold", "rev-b", "--dir", f.dir]), "device unhold");
    await server.changes.poll();
    const released = await verify(leaves["rev-b"]!);
    assert.ok(released.ok, released.output);
    assert.match((await ocsp(leaves["rev-b"]!)).output, /: good/);
  });

  it(
    "every pyca OCSP request vector gets a response (successful, unauthorized or malformedRequest); " + "none crashes the responder",
    async () => {
      const dir = vectorPath("pyca", "x509", "ocsp");
      const requests = readdirSync(dir).filter((n) => n.startsWith("req-") || n.endsWith("-req.der"));
      assert.ok(requests.length >= 8);
      for (const name of requests) {
        const r = await fetchBytes(`${base}/ocsp`, {
          method: "POST",
          headers: { "content-type": "application/ocsp-request" },
          body: readFileSync(join(dir, name)),
        });
        assert.equal(r.status, 200, name);
        assert.equal(r.type, "application/ocsp-response", name);
        const parsed = parseOcspResponse(r.body);
        const status = "responseStatus" in parsed ? parsed.responseStatus : "successful";
        // These requests name other CAs (or are malformed): never a signed answer from us.
        assert.ok(["unauthorized", "malformedRequest"].includes(status), `${name}: ${status}`);
        if (name === "req-duplicate-ext.der") assert.equal(status, "malformedRequest");
      }
      for (const garbage of [Buffer.alloc(0), Buffer.from("not der"), Buffer.from([0x30, 0x82, 0xff, 0xff])]) {
        const r = await fetchBytes(`${base}/ocsp`, {
          method: "POST",
          headers: { "content-type": "application/ocsp-request" },
          body: garbage,
        });
        const parsed = parseOcspResponse(r.body);
        assert.equal("responseStatus" in parsed && parsed.responseStatus, "malformedRequest");
      }
      const big = await fetchBytes(`${base}/ocsp`, {
        method: "POST",
        headers: { "content-type": "application/ocsp-request" },
        body: Buffer.alloc(64 * 1024),
      });
      assert.equal(big.status, 413);
      assert.equal((await fetchBytes(`${base}/healthz`)).status, 200);
    },
  );

  it("CRLNumber keeps increasing across a restart", async () => {
    const before = parseCrl((await fetchBytes(`${base}/crl/devices.crl`)).body).crlNumber!;
    await server.close();
    await startServer();
    assertOk(await cliAsync(["cert", "revoke", leaves["rev-c"]!.serial, "--dir", f.dir]), "cert revoke");
    await server.changes.poll();
    const crl = parseCrl((await fetchBytes(`${base}/crl/devices.crl`)).body);
    assert.ok(crl.crlNumber! > before, `${crl.crlNumber} > ${before}`);
    assert.ok(crl.entries.some((e) => e.serialHex === leaves["rev-c"]!.serial));
  });
});

describe("a revoked local (factory) CA", () => {
  it("its certificate lands on the root's CRL, its bundles fail openssl -crl_check_all, and factory enrollment is refused", async () => {
    const f = await tempFleet();
    const out = tempDir("fleetpki-revoked-local-");
    let server: FleetServer | undefined;
    try {
      assertOk(await cliAsync(["ca", "create-local", "--dir", f.dir, "--name", "line1"]), "ca create-local");
      assertOk(
        await cliAsync(["ca", "issue-batch", "--dir", f.dir, "--local", "line1", "--ids", "fab-0001..fab-0001", "--out", out.path]),
        "ca issue-batch",
      );
      server = await startFleetServer({
        dir: f.dir,
        registrationListen: "127.0.0.1:0",
        statusListen: "127.0.0.1:0",
        gatewayListen: "127.0.0.1:0",
        adminListen: "127.0.0.1:0",
        logger: silentLogger,
      });
      const status = `http://127.0.0.1:${server.status!.port}`;
      const bundle = join(out.path, "fab-0001");
      const localCa = join(f.dir, "ca", "local-line1", "cert.pem");
      const verifyBundle = async () => {
        const rootCrl = join(out.path, "root.crl.pem");
        const localCrl = join(out.path, "local.crl.pem");
        writeFileSync(rootCrl, Buffer.from(await (await fetch(`${status}/crl/root.pem`)).arrayBuffer()));
        writeFileSync(localCrl, Buffer.from(await (await fetch(`${status}/crl/local-line1.pem`)).arrayBuffer()));
        return openssl([
          "verify",
          "-crl_check_all",
          "-CAfile",
          rootPemPath(f.dir),
          "-untrusted",
          localCa,
          "-CRLfile",
          rootCrl,
          "-CRLfile",
          localCrl,
          join(bundle, "cert.pem"),
        ]);
      };
      assertOk(await verifyBundle(), "the factory bundle verifies before the revocation");

      assertOk(await cliAsync(["ca", "revoke-local", "line1", "--dir", f.dir]), "ca revoke-local");
      await server.changes.poll();
      const after = await verifyBundle();
      assert.notEqual(after.status, 0);
      assert.match(after.stdout + after.stderr, /certificate revoked/);
      const rootCrl = parseCrl(Buffer.from(await (await fetch(`${status}/crl/root.crl`)).arrayBuffer()));
      const caSerial = (
        await sqliteStore(f.fleet).db.selectFrom("cas").select("serial").where("id", "=", "local-line1").executeTakeFirstOrThrow()
      ).serial;
      assert.deepEqual(rootCrl.entries.find((e) => e.serialHex === caSerial)?.reason, "cACompromise");

      // The factory certificate can no longer buy an operational certificate.
      const { csr } = opensslCsr(out.path, "fab-0001");
      const enroll = await run("curl", [
        "-sS",
        "--cacert",
        rootPemPath(f.dir),
        "--cert",
        join(bundle, "cert.pem"),
        "--key",
        join(bundle, "key.pem"),
        "-H",
        "content-type: application/json",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--data-binary",
        JSON.stringify({ device_id: "fab-0001", csr: readFileSync(csr, "utf8") }),
        `https://localhost:${server.registration!.port}/api/v1/enroll`,
      ]);
      const code = enroll.stdout.trim().split("\n").pop();
      assert.ok(code === "403" || code === "401", `factory enrollment after revoke-local answered ${code}: ${enroll.stdout}`);
    } finally {
      await server?.close();
      await f.close();
      out.cleanup();
    }
  });
});

describe("fleetpki serve --only status", () => {
  it("runs the status listener alone (curl fetches a CRL), and refuses an unknown listener name", async () => {
    const f = await tempFleet();
    const child = spawn(process.execPath, [CLI, "serve", "--dir", f.dir, "--only", "status", "--status-listen", "127.0.0.1:0"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      let stderr = "";
      child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      const deadline = Date.now() + 30_000;
      let port: string | undefined;
      while (!port && Date.now() < deadline) {
        port = /status \(CRLs, OCSP\): +http:\/\/127\.0\.0\.1:(\d+)/.exec(stderr)?.[1];
        if (!port) await sleep(50);
      }
      assert.ok(port, `no status banner:\n${stderr}`);
      assert.doesNotMatch(stderr, /registration \(EST/);
      const crl = await run("curl", ["-sS", "-o", "-", "-w", "\n%{http_code} %{content_type}", `http://127.0.0.1:${port}/crl/devices.crl`]);
      assert.match(crl.stdout, /\n200 application\/pkix-crl$/);
      child.kill("SIGTERM");
      assert.equal(await exited, 0);
    } finally {
      child.kill("SIGKILL");
      await f.close();
    }
    assertOneLineError(
      await cliAsync(["serve", "--dir", "/nonexistent", "--only", "dashboard,status"]),
      /--only takes registration, status, gateway, admin/,
    );
  });
});

describe("OCSP responder rotation", () => {
  it("a new delegated responder at half of its lifetime (4 s, on the injected clock), each recorded; answers verify", async () => {
    const f = await tempFleet();
    const clock = new ManualClock();
    let server: FleetServer | undefined;
    const work = tempDir("fleetpki-ocsp-rotation-");
    try {
      editConfig(f.dir, (doc) => (doc.revocation = { ocsp_responder_validity: "4s" }));
      await addDevice(f.fleet, { id: "rot-1", actor: "test" });
      const { csr } = opensslCsr(work.path, "rot-1");
      const cert = await issueDeviceCertificate(f.fleet, { deviceId: "rot-1", csr: readFileSync(csr), actor: "test" });
      const certPath = join(work.path, "rot-1.pem");
      writeFileSync(certPath, cert.certificatePem);
      server = await startFleetServer({ dir: f.dir, only: ["status"], statusListen: "127.0.0.1:0", logger: silentLogger, clock });
      const url = `http://127.0.0.1:${server.status!.port}/ocsp`;
      const responderOf = async () => {
        const r = await run("openssl", [
          "ocsp",
          "-url",
          url,
          "-issuer",
          devicesCaPemPath(f.dir),
          "-cert",
          certPath,
          "-CAfile",
          rootPemPath(f.dir),
          "-resp_text",
        ]);
        assert.match(r.stdout + r.stderr, /Response verify OK/);
        assert.match(r.stdout + r.stderr, /: good/);
        return /Responder Id: (\S+)/.exec(r.stdout)?.[1];
      };
      const first = await responderOf();
      // Its notAfter is rounded down to the second: half-life falls 1.5-2 s after it was made.
      clock.advance(1400);
      assert.equal(await responderOf(), first, "the same responder within its first half");
      // Past half-life; openssl checks at the real time, which the responder's backdated notBefore
      // and OCSP's validity leeway (5 minutes) cover.
      clock.advance(900);
      const second = await responderOf();
      assert.ok(first && second && first !== second, `rotated: ${first} -> ${second}`);
      const recorded = await sqliteStore(f.fleet)
        .db.selectFrom("certificates")
        .select("serial")
        .where("kind", "=", "ocsp-responder")
        .where("issuer_ca", "=", "devices")
        .execute();
      assert.equal(recorded.length, 2);
    } finally {
      await server?.close();
      await f.close();
      work.cleanup();
    }
  });
});

describe("CRL freshness with a short validity", () => {
  it("the served CRLs never pass their nextUpdate while the server runs (validity 4 s, 6 s of the injected clock)", async () => {
    const f = await tempFleet();
    const clock = new ManualClock();
    let server: FleetServer | undefined;
    try {
      editConfig(f.dir, (doc) => (doc.revocation = { crl_validity: "4s" }));
      server = await startFleetServer({ dir: f.dir, only: ["status"], statusListen: "127.0.0.1:0", logger: silentLogger, clock });
      const url = `http://127.0.0.1:${server.status!.port}/crl/devices.crl`;
      const numbers = new Set<bigint>();
      for (let step = 0; step <= 30; step++) {
        const crl = parseCrl(Buffer.from(await (await fetch(url)).arrayBuffer()));
        const now = clock.now();
        assert.ok(
          crl.nextUpdate!.getTime() > now.getTime(),
          `at ${now.toISOString()}: served a CRL whose nextUpdate ${crl.nextUpdate!.toISOString()} has passed`,
        );
        assert.ok(crl.thisUpdate.getTime() <= now.getTime(), "signed at the injected clock's time, not later");
        numbers.add(crl.crlNumber!);
        clock.advance(200);
      }
      assert.ok(numbers.size >= 3, `re-signed at each half-life (CRL numbers ${[...numbers].join(", ")})`);
    } finally {
      await server?.close();
      await f.close();
    }
  });
});
