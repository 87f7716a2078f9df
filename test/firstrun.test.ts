// A first run that reaches real robots (issue 9, section 3): the fleet `start` creates serves this
// host's name to clients that trust only the root, the certificates it issues point at this host,
// a changed server.names or server.public_url gets a new server certificate at the next start
// (or at once with `server reissue`), the documented curl recipe fails loudly, a pinned
// fingerprint mismatch never suggests the server's, and a closed stdout ends commands quietly.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { X509Certificate, generateKeyPairSync } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { after, before, describe, it } from "node:test";
import { addDevice } from "../src/authority/devices.js";
import { initFleet } from "../src/authority/ca/init.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { CLI, ROOT, cliAsync, opensslCsr, tempDir, tempFleet, type RunResult } from "./helpers.js";
import { editConfig, run, startTestServer } from "./server-helpers.js";

const HOST = hostname().toLowerCase();
const HOST_OK = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/.test(HOST) && HOST !== "localhost";
const skipHost = HOST_OK ? false : `the host name "${HOST}" is not a DNS name fleetpki would use`;

interface Running {
  child: ChildProcess;
  registrationPort: number;
  statusPort: number;
  fingerprint: string;
  output: () => { stdout: string; stderr: string };
  stop(): Promise<RunResult>;
}

/** Starts a long-running CLI command (start/serve) on 127.0.0.1:0 and waits for its banner. */
function startCli(args: readonly string[]): Promise<Running> {
  return new Promise((resolve, reject) => {
    const listen = [
      "--listen",
      "127.0.0.1:0",
      "--status-listen",
      "127.0.0.1:0",
      "--gateway-listen",
      "127.0.0.1:0",
      "--admin-listen",
      "127.0.0.1:0",
    ];
    const child = spawn(process.execPath, [CLI, ...args, ...listen], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let up = false;
    const exited = new Promise<RunResult>((done) => child.on("close", (code) => done({ status: code ?? -1, stdout, stderr })));
    const timer = setTimeout(() => child.kill("SIGKILL"), 180_000);
    void exited.then((r) => {
      clearTimeout(timer);
      if (!up) reject(new Error(`${args.join(" ")} exited (${r.status}) before serving:\n${r.stdout}\n${r.stderr}`));
    });
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
      const reg = /registration .*\(listening on 127\.0\.0\.1:(\d+)\)/.exec(stderr);
      const status = /status .*\(listening on 127\.0\.0\.1:(\d+)\)/.exec(stderr);
      const fp = /root fingerprint: (sha256:[0-9a-f]{64})/.exec(stderr);
      if (up || !reg || !status || !fp) return;
      up = true;
      resolve({
        child,
        registrationPort: Number(reg[1]),
        statusPort: Number(status[1]),
        fingerprint: fp[1]!,
        output: () => ({ stdout, stderr }),
        stop: () => {
          child.kill("SIGTERM");
          return exited;
        },
      });
    });
  });
}

/** Serial numbers as compared here: lower-case hex without leading zeros. */
const serial = (hex: string): string => hex.toLowerCase().replace(/^0+/, "");

/** The serial of the certificate a TLS server presents for `servername`, trusting only `ca`. */
function presentedSerial(port: number, servername: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, servername, ca, rejectUnauthorized: true }, () => {
      const presented = serial(socket.getPeerCertificate().serialNumber);
      socket.end();
      resolve(presented);
    });
    socket.on("error", reject);
  });
}

const cdpAndOcsp = async (pemFile: string): Promise<string> =>
  (await run("openssl", ["x509", "-in", pemFile, "-noout", "-ext", "crlDistributionPoints,authorityInfoAccess"])).stdout;

/** The curl + openssl recipe of docs/enrollment.md, exactly as written there. */
function documentedRecipe(): string {
  const doc = readFileSync(join(ROOT, "docs", "enrollment.md"), "utf8");
  const block = /Example with nothing but curl and openssl[\s\S]*?```sh\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(block, "docs/enrollment.md has the curl recipe");
  return block;
}

describe("first run: a fleet made by `start` on this host", { skip: skipHost }, () => {
  const tmp = tempDir("fleetpki-firstrun-");
  const dir = join(tmp.path, "fleet");
  const root = join(dir, "ca", "root", "cert.pem");
  let server: Running;

  before(async () => {
    server = await startCli(["start", "--dir", dir]);
  });
  after(async () => {
    await server?.stop();
    tmp.cleanup();
  });

  const addDevice = async (id: string): Promise<string> => {
    const r = await cliAsync(["device", "add", id, "--dir", dir]);
    assert.equal(r.status, 0, r.stderr);
    const token = r.stdout.trim().split("\n").pop()!;
    assert.match(token, /^\S{20,}$/);
    return token;
  };

  it(`serves https://${HOST}:PORT to a client that trusts only the root (curl --resolve)`, async () => {
    const url = `https://${HOST}:${server.registrationPort}/.well-known/est/cacerts`;
    const r = await run("curl", [
      "--fail",
      "-sS",
      "--resolve",
      `${HOST}:${server.registrationPort}:127.0.0.1`,
      "--cacert",
      root,
      "-o",
      "/dev/null",
      url,
    ]);
    assert.equal(r.status, 0, `curl ${url}: ${r.stderr}`);
  });

  it(`the documented curl recipe enrolls, and the certificate's CRL/OCSP URLs are on ${HOST}; a wrong token stops at the 401`, async () => {
    const work = join(tmp.path, "robot");
    mkdirSync(work);
    copyFileSync(root, join(work, "root.pem"));
    const token = await addDevice("robot-0001");
    // The recipe as documented; only the server's address differs (curl resolves it to the test server).
    const port = server.registrationPort;
    const script =
      `curl() { command curl -sS --resolve ${HOST}:${port}:127.0.0.1 "$@"; }\n` +
      documentedRecipe().replaceAll("https://pki.example:8443", `https://${HOST}:${port}`);
    const ok = await run("bash", ["-e", "-o", "pipefail", "-c", `cd '${work}' && TOKEN='${token}' && ${script}`]);
    assert.equal(ok.status, 0, ok.stderr);
    const ext = await cdpAndOcsp(join(work, "cert.pem"));
    assert.ok(ext.includes(`URI:http://${HOST}:8080/crl/devices.crl`), ext);
    assert.ok(ext.includes(`OCSP - URI:http://${HOST}:8080/ocsp`), ext);

    const bad = await run("bash", ["-c", `cd '${work}' && rm -f cert.pem && TOKEN=wrong-token && ${script}`]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /error: 401/, `curl names the status:\n${bad.stderr}`);
    assert.doesNotMatch(bad.stderr, /base64: invalid input/);
  });

  it("a pinned fingerprint that does not match is refused without showing the one the server offers", async () => {
    const wrong = `sha256:${"ab".repeat(32)}`;
    const r = await cliAsync([
      "agent",
      "enroll",
      "--server",
      `https://127.0.0.1:${server.registrationPort}`,
      "--root-fingerprint",
      wrong,
      "--id",
      "robot-0009",
      "--token",
      "t",
      "--dir",
      join(tmp.path, "never"),
    ]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /root fingerprint mismatch/);
    assert.match(r.stderr, /from your fleet operator through another channel/);
    // Pasting what the server offers would defeat the pin: it must not be offered.
    assert.ok(!r.stderr.includes(server.fingerprint.slice("sha256:".length)), r.stderr);
  });

  it("a closed stdout ends audit list, ca list and agent status quietly (EPIPE, exit 0, nothing on stderr)", async () => {
    const agentDir = join(tmp.path, "agent");
    const token = await addDevice("robot-0002");
    const enrolled = await cliAsync([
      "agent",
      "enroll",
      "--server",
      `https://127.0.0.1:${server.registrationPort}`,
      "--root-fingerprint",
      server.fingerprint,
      "--id",
      "robot-0002",
      "--token",
      token,
      "--dir",
      agentDir,
    ]);
    assert.equal(enrolled.status, 0, enrolled.stderr);
    for (const args of [
      ["audit", "list", "--dir", dir],
      ["ca", "list", "--dir", dir],
      ["agent", "status", "--dir", agentDir],
    ]) {
      const r = await new Promise<RunResult>((resolve) => {
        const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
        // The reader is gone before the command writes a byte, as when `| head -2` has had its lines.
        child.stdout!.destroy();
        let stderr = "";
        child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
        child.on("close", (code) => resolve({ status: code ?? -1, stdout: "", stderr }));
      });
      assert.equal(r.stderr, "", `${args.join(" ")}: nothing on stderr`);
      assert.equal(r.status, 0, args.join(" "));
    }
  });

  it("`server reissue` while serving: the running server presents the new certificate to new connections", async () => {
    const ca = readFileSync(root, "utf8");
    const before = await presentedSerial(server.registrationPort, HOST, ca);
    const r = await cliAsync(["server", "reissue", "--dir", dir, "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const issued = JSON.parse(r.stdout) as { serial: string; previousSerial: string; names: string[] };
    assert.equal(serial(issued.previousSerial), before);
    assert.notEqual(serial(issued.serial), before);
    // The server looks at its files every second; poll (bounded) to allow for a loaded machine.
    let now = before;
    for (let i = 0; i < 60 && now !== serial(issued.serial); i++) {
      await new Promise((r) => setTimeout(r, 500));
      now = await presentedSerial(server.registrationPort, HOST, ca);
    }
    assert.equal(now, serial(issued.serial), "the new certificate is served without a restart");
  });

  it("changing server.names and restarting serves the new names under the same root (audited, logged)", async () => {
    await server.stop();
    const rootBefore = readFileSync(root);
    const file = join(dir, "fleetpki.yaml");
    const text = readFileSync(file, "utf8");
    const edited = text.replace(/^(\s*names: \[)/m, '$1"pki.new.example", ');
    assert.notEqual(edited, text);
    writeFileSync(file, edited);
    server = await startCli(["start", "--dir", dir]);
    // pino's JSON lines go to stdout.
    const log = server
      .output()
      .stdout.split("\n")
      .find((l) => l.includes("server certificate reissued from the services CA"));
    assert.ok(log, server.output().stdout);
    assert.deepEqual(JSON.parse(log).names.slice(0, 2), ["pki.new.example", HOST]);
    const url = `https://pki.new.example:${server.registrationPort}/.well-known/est/cacerts`;
    const r = await run("curl", [
      "--fail",
      "-sS",
      "--resolve",
      `pki.new.example:${server.registrationPort}:127.0.0.1`,
      "--cacert",
      root,
      "-o",
      "/dev/null",
      url,
    ]);
    assert.equal(r.status, 0, `curl ${url}: ${r.stderr}`);
    assert.ok(readFileSync(root).equals(rootBefore), "the same root");
    const cert = new X509Certificate(readFileSync(join(dir, "server", "cert.pem")));
    assert.match(cert.subject, /CN=pki\.new\.example/);
    const audit = await cliAsync(["audit", "list", "--dir", dir, "--json"]);
    const events = JSON.parse(audit.stdout) as {
      action: string;
      actor: string;
      subject: string;
      details: string | Record<string, unknown>;
    }[];
    const reissue = events.filter((e) => e.action === "certificate.issue" && e.subject === "server:pki.new.example");
    assert.equal(reissue.length, 1, audit.stdout);
    assert.equal(reissue[0]!.actor, "serve");
    assert.match(JSON.stringify(reissue[0]!.details), /server\.names/);
  });
});

describe("serve checks its certificate against fleetpki.yaml at start", () => {
  it("a key that does not match the certificate (a reissue cut short) is repaired by a new certificate", async () => {
    const f = await tempFleet({ serverNames: ["localhost"], publicUrl: "http://localhost:8080" });
    try {
      const keyFile = join(f.dir, "server", "key.pem");
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      writeFileSync(keyFile, privateKey.export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: f.fleet.passphrase() }));
      const oldSerial = serial(new X509Certificate(readFileSync(join(f.dir, "server", "cert.pem"))).serialNumber);
      const s = await startTestServer(f.dir);
      try {
        const presented = await presentedSerial(s.port, "localhost", readFileSync(join(f.dir, "ca", "root", "cert.pem"), "utf8"));
        assert.notEqual(presented, oldSerial);
      } finally {
        await s.close();
      }
    } finally {
      await f.close();
    }
  });

  it("a changed server.public_url gets a server certificate with the new URLs, and devices issued afterwards carry them", async () => {
    const f = await tempFleet({ serverNames: ["localhost"], publicUrl: "http://localhost:8080" });
    try {
      editConfig(f.dir, (doc) => (doc.server.public_url = "https://status.fleet.example"));
      const s = await startTestServer(f.dir);
      try {
        const ext = await cdpAndOcsp(join(f.dir, "server", "cert.pem"));
        assert.ok(ext.includes("URI:https://status.fleet.example/crl/services.crl"), ext);
        assert.ok(ext.includes("OCSP - URI:https://status.fleet.example/ocsp"), ext);
        // The running server's fleet issues device certificates with the new URLs too.
        const { csr } = opensslCsr(f.dir, "robot-0001");
        await addDevice(s.server.fleet, { id: "robot-0001", actor: "test" });
        const issued = await issueDeviceCertificate(s.server.fleet, {
          deviceId: "robot-0001",
          actor: "test",
          csr: readFileSync(csr, "utf8"),
        });
        const device = await run("openssl", ["x509", "-noout", "-ext", "crlDistributionPoints,authorityInfoAccess"], issued.certificatePem);
        assert.ok(device.stdout.includes("URI:https://status.fleet.example/crl/devices.crl"), device.stdout);
        assert.ok(device.stdout.includes("OCSP - URI:https://status.fleet.example/ocsp"), device.stdout);
      } finally {
        await s.close();
      }
    } finally {
      await f.close();
    }
  });

  it("an unchanged certificate is kept", async () => {
    const f = await tempFleet({ serverNames: ["localhost", "127.0.0.1"], publicUrl: "http://localhost:8080" });
    try {
      const before = readFileSync(join(f.dir, "server", "cert.pem"));
      const s = await startTestServer(f.dir);
      await s.close();
      assert.ok(readFileSync(join(f.dir, "server", "cert.pem")).equals(before));
    } finally {
      await f.close();
    }
  });
});

describe("fleetpki.yaml keys and the passphrase at CLI start", () => {
  const tmp = tempDir("fleetpki-firstrun-cfg-");
  const dir = join(tmp.path, "fleet");
  const passphrase = join(tmp.path, "passphrase");
  let config = "";

  before(async () => {
    writeFileSync(passphrase, "a passphrase for the credential test\n", { mode: 0o600 });
    await initFleet({
      dir,
      domain: "fleet.example",
      passphraseFile: passphrase,
      serverNames: ["localhost"],
      publicUrl: "http://localhost:8080",
    });
    config = readFileSync(join(dir, "fleetpki.yaml"), "utf8");
  });
  after(() => tmp.cleanup());

  it("a misspelt key stops every command with its line; a key nothing reads is a warning, once", async () => {
    writeFileSync(join(dir, "fleetpki.yaml"), config.replace(/^  token: true/m, "  tokn: false"));
    const typo = await cliAsync(["ca", "list", "--dir", dir]);
    assert.equal(typo.status, 1);
    assert.match(typo.stderr, /^fleetpki: fleetpki\.yaml line \d+: unknown key "enrollment\.tokn" \(did you mean enrollment\.token\?\)/);
    // A file from before server.public_url: its urls section still works, and urls.est (read by nothing) is a warning.
    const legacy =
      config.replace(/^  public_url: .*\n/m, "") +
      'urls:\n  crl_base: "http://localhost:8080/crl"\n  ocsp: "http://localhost:8080/ocsp"\n  est: "https://localhost:8443"\n';
    writeFileSync(join(dir, "fleetpki.yaml"), legacy);
    const unused = await cliAsync(["ca", "list", "--dir", dir]);
    assert.equal(unused.status, 0, unused.stderr);
    assert.equal(unused.stderr.match(/warning: fleetpki\.yaml line \d+: urls\.est has no effect/g)?.length, 1, unused.stderr);
    writeFileSync(join(dir, "fleetpki.yaml"), config);
  });

  it("FLEETPKI_PASSPHRASE_FILE (systemd: %d/passphrase) replaces keys.passphrase_file", async () => {
    const credentials = join(tmp.path, "credentials");
    mkdirSync(credentials, { mode: 0o700 });
    copyFileSync(passphrase, join(credentials, "passphrase"));
    writeFileSync(join(dir, "fleetpki.yaml"), config.replace(/^(\s*passphrase_file: ).*$/m, '$1"/nonexistent/passphrase"'));
    const without = await cliAsync(["server", "reissue", "--dir", dir]);
    assert.notEqual(without.status, 0);
    assert.match(without.stderr, /passphrase file \/nonexistent\/passphrase/);
    const withEnv = await new Promise<RunResult>((resolve) => {
      const child = spawn(process.execPath, [CLI, "server", "reissue", "--dir", dir], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, FLEETPKI_PASSPHRASE_FILE: join(credentials, "passphrase") },
      });
      let stdout = "";
      let stderr = "";
      child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
      child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      child.on("close", (code) => resolve({ status: code ?? -1, stdout, stderr }));
    });
    assert.equal(withEnv.status, 0, withEnv.stderr);
    assert.match(withEnv.stdout, /server certificate [0-9a-f]+ issued by the services CA/);
    writeFileSync(join(dir, "fleetpki.yaml"), config);
  });
});
