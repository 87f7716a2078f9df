// The device commands and general CLI behaviour: tables and --json, certificates issued by hand,
// one-line errors (stack traces only with --debug), FLEETPKI_DIR, --help, `start`.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { cpSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import Database from "better-sqlite3";
import { initFleet } from "../src/authority/ca/init.js";
import { CLI, openssl, opensslCsr, tempDir, writeTemp, type RunResult } from "./helpers.js";

interface Run {
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** SIGTERM the process once stderr matches (for commands that keep running, like start). */
  stopWhen?: RegExp;
}

/** Runs the CLI with no stdin, like helpers' cli(), but asynchronously and with env/cwd. */
function run({ args, env = {}, cwd, stopWhen }: Run): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    // An env value of undefined removes the variable.
    const merged = Object.fromEntries(Object.entries({ ...process.env, ...env }).filter(([, v]) => v !== undefined));
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"], env: merged, cwd });
    let stdout = "";
    let stderr = "";
    let signalled = false;
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
      // A long-running command (start serves): stop it gracefully once it says it is up.
      if (stopWhen && !signalled && stopWhen.test(stderr)) {
        signalled = true;
        child.kill("SIGTERM");
      }
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ status: code ?? -1, stdout, stderr });
    });
  });
}

/** Runs many CLI invocations, a few at a time (each one is CPU-bound at start-up). */
async function runAll(runs: Record<string, Run>, limit = 4): Promise<Map<string, RunResult>> {
  const entries = Object.entries(runs);
  const results = new Map<string, RunResult>();
  let next = 0;
  const worker = async () => {
    while (next < entries.length) {
      const [key, r] = entries[next++]!;
      results.set(key, await run(r));
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, entries.length) }, worker));
  return results;
}

function assertOk(r: RunResult | undefined, what: string): RunResult {
  assert.ok(r, `${what} did not run`);
  assert.equal(r.status, 0, `${what} failed (${r.status}):\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r;
}

/** Non-zero exit and exactly one clean line on stderr: "fleetpki: ...", no stack trace. */
function assertOneLineError(r: RunResult | undefined, pattern?: RegExp): string {
  assert.ok(r, "did not run");
  assert.notEqual(r.status, 0, `expected a non-zero exit; stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `expected exactly one line on stderr, got:\n${r.stderr}`);
  const line = lines[0]!;
  assert.match(line, /^fleetpki: \S/, line);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  assert.doesNotMatch(line, /--debug/, "an expected error does not suggest --debug");
  if (pattern) assert.match(line, pattern);
  return line;
}

describe("fleetpki CLI", () => {
  const tmp = tempDir("fleetpki-cli-");
  // Not called "fleet": the default --dir is ./fleet and must not match by accident.
  const dir = join(tmp.path, "acme");
  const started = join(tmp.path, "started");
  const outCert = join(tmp.path, "robot-0001.crt");
  let r = new Map<string, RunResult>();
  let startFirst: RunResult;
  let startSecond: RunResult;
  let rootBeforeSecondStart: Buffer | undefined;

  before(async () => {
    await initFleet({ dir, name: "Acme Robots", domain: "fleet.example" });
    const { csr } = opensslCsr(tmp.path, "robot-0001");
    const { csr: csr2 } = opensslCsr(tmp.path, "robot-0001-b", ["-newkey", "ed25519"]);
    const garbage = writeTemp(tmp.path, "garbage.csr", "this is not a certificate request\n");
    // A database whose schema was altered behind fleetpki's back: an error no code path expects.
    const damaged = join(tmp.path, "damaged");
    cpSync(dir, damaged, { recursive: true });
    const altered = new Database(join(damaged, "fleetpki.db"));
    altered.exec("ALTER TABLE devices RENAME TO devices_gone");
    altered.close();
    // A file that is not a database at all: an expected, clearly reported error.
    const corrupt = join(tmp.path, "corrupt");
    cpSync(dir, corrupt, { recursive: true });
    writeFileSync(join(corrupt, "fleetpki.db"), Buffer.alloc(4096, 0x5a));

    const add = await run({
      args: ["device", "add", "robot-0001", "--dir", dir, "--group", "lab", "--label", "site=berlin", "--label", "floor=2"],
    });
    r.set("add", add);
    assertOk(add, "device add");

    const d = ["--dir", dir];
    const startChain = (async () => {
      startFirst = await run({
        args: ["start", "--dir", started, "--listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        stopWhen: /root fingerprint: sha256:[0-9a-f]{64}/,
      });
      rootBeforeSecondStart = existsSync(join(started, "ca/root/cert.pem")) ? readFileSync(join(started, "ca/root/cert.pem")) : undefined;
      startSecond = await run({
        args: ["start", "--dir", started, "--listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        stopWhen: /root fingerprint: sha256:[0-9a-f]{64}/,
      });
    })();
    const phase2 = runAll(
      {
        issueOut: { args: ["device", "issue", "robot-0001", ...d, "--csr", csr, "--out", outCert] },
        issueStdout: { args: ["device", "issue", "robot-0001", ...d, "--csr", csr2] },
        duplicate: { args: ["device", "add", "robot-0001", ...d] },
        badId1: { args: ["device", "add", "Robot_1!", ...d] },
        badId2: { args: ["device", "add", "robot.01", ...d] },
        badLabel1: { args: ["device", "add", "robot-0002", ...d, "--label", "noequals"] },
        badLabel2: { args: ["device", "add", "robot-0003", ...d, "--label", "BAD=x"] },
        badTtl: { args: ["device", "add", "robot-ttl", ...d, "--ttl", "soon"] },
        unknownIssue: { args: ["device", "issue", "robot-9999", ...d, "--csr", csr] },
        unknownShow: { args: ["device", "show", "robot-9999", ...d] },
        missingCsr: { args: ["device", "issue", "robot-0001", ...d, "--csr", join(tmp.path, "nope.csr")] },
        garbageCsr: { args: ["device", "issue", "robot-0001", ...d, "--csr", garbage] },
        unexpected: { args: ["device", "list", "--dir", damaged] },
        corruptDb: { args: ["device", "list", "--dir", corrupt] },
        unexpectedDebug: { args: ["device", "list", "--dir", damaged, "--debug"] },
        envDir: { args: ["device", "list", "--json"], env: { FLEETPKI_DIR: dir }, cwd: tmp.path },
        noEnvDir: { args: ["device", "list", "--json"], env: { FLEETPKI_DIR: undefined }, cwd: tmp.path },
        help: { args: ["--help"] },
        deviceHelp: { args: ["device", "--help"] },
      },
      3,
    );
    const [p2] = await Promise.all([phase2, startChain]);
    for (const [k, v] of p2) r.set(k, v);
    // After both certificates exist.
    const p3 = await runAll({
      list: { args: ["device", "list", ...d] },
      listJson: { args: ["device", "list", ...d, "--json"] },
      show: { args: ["device", "show", "robot-0001", ...d] },
      showJson: { args: ["device", "show", "robot-0001", ...d, "--json"] },
      badTtlShow: { args: ["device", "show", "robot-ttl", ...d] },
    });
    for (const [k, v] of p3) r.set(k, v);
  });
  after(() => tmp.cleanup());

  it("device add with a group and labels", () => {
    const add = r.get("add")!;
    assert.match(add.stdout, /robot-0001 added to group lab/);
  });

  it("device list prints a table with the labels", () => {
    const list = assertOk(r.get("list"), "device list");
    const lines = list.stdout.trimEnd().split("\n");
    assert.match(lines[0]!, /^ID\s+STATUS\s+GROUP\s+LABELS\s+CREATED$/);
    assert.equal(lines.length, 2, `only robot-0001 exists (failed adds added nothing):\n${list.stdout}`);
    assert.match(lines[1]!, /^robot-0001\s+active\s+lab\s+site=berlin,floor=2\s+\d{4}-\d\d-\d\dT/);
  });

  it("device list --json", () => {
    const list = assertOk(r.get("listJson"), "device list --json");
    const devices = JSON.parse(list.stdout);
    assert.equal(devices.length, 1);
    assert.equal(devices[0].id, "robot-0001");
    assert.equal(devices[0].group, "lab");
    assert.deepEqual(devices[0].labels, { site: "berlin", floor: "2" });
    assert.equal(devices[0].status, "active");
    assert.ok(Math.abs(Date.parse(devices[0].createdAt) - Date.now()) < 10 * 60_000);
  });

  it("device issue --out writes a certificate that openssl verifies", () => {
    const issue = assertOk(r.get("issueOut"), "device issue --out");
    assert.equal(issue.stdout, "", "nothing on stdout when --out is given");
    const cert = new X509Certificate(readFileSync(outCert));
    assert.ok(issue.stderr.includes(cert.serialNumber.toLowerCase()), `stderr names the serial: ${issue.stderr}`);
    assert.equal(cert.subject, "CN=robot-0001");
    assert.equal(cert.subjectAltName, "URI:spiffe://fleet.example/device/robot-0001, DNS:robot-0001.devices.fleet.example");
    const v = openssl([
      "verify",
      "-x509_strict",
      "-purpose",
      "sslclient",
      "-CAfile",
      join(dir, "ca/root/cert.pem"),
      "-untrusted",
      join(dir, "ca/devices/chain.pem"),
      outCert,
    ]);
    assert.equal(v.status, 0, v.stdout + v.stderr);
  });

  it("device issue without --out prints exactly one PEM certificate", () => {
    const issue = assertOk(r.get("issueStdout"), "device issue");
    assert.match(issue.stdout, /^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n$/);
    const cert = new X509Certificate(issue.stdout);
    assert.equal(cert.subject, "CN=robot-0001");
    assert.equal(cert.publicKey.asymmetricKeyType, "ed25519", "the CSR's key");
    const v = openssl(["verify", "-CAfile", join(dir, "ca/root/cert.pem"), "-untrusted", join(dir, "ca/devices/cert.pem")], issue.stdout);
    assert.equal(v.status, 0, v.stdout + v.stderr);
  });

  it("device show lists the device's certificates with status and expiry", () => {
    const a = new X509Certificate(readFileSync(outCert));
    const b = new X509Certificate(r.get("issueStdout")!.stdout);
    const show = assertOk(r.get("show"), "device show");
    assert.match(show.stdout, /^id:\s+robot-0001$/m);
    assert.match(show.stdout, /^group:\s+lab$/m);
    assert.match(show.stdout, /^labels:\s+site=berlin, floor=2$/m);
    assert.match(show.stdout, /spiffe:\/\/fleet\.example\/device\/robot-0001/);
    for (const c of [a, b]) {
      const line = show.stdout.split("\n").find((l) => l.startsWith(c.serialNumber.toLowerCase()));
      assert.ok(line, `certificate ${c.serialNumber} listed:\n${show.stdout}`);
      assert.match(line, /\bvalid\b/);
      assert.match(line, /\bdevices\b/);
      assert.ok(line.includes(new Date(c.validTo).toISOString()), `expiry ${new Date(c.validTo).toISOString()} in: ${line}`);
    }

    const json = JSON.parse(assertOk(r.get("showJson"), "device show --json").stdout);
    assert.equal(json.id, "robot-0001");
    assert.deepEqual(json.labels, { site: "berlin", floor: "2" });
    assert.equal(json.certificates.length, 2);
    for (const c of [a, b]) {
      const entry = json.certificates.find((x: { serial: string }) => x.serial === c.serialNumber.toLowerCase());
      assert.ok(entry, `${c.serialNumber} in --json`);
      assert.equal(entry.status, "valid");
      assert.equal(entry.issuer, "devices");
      assert.equal(Date.parse(entry.notAfter), Date.parse(c.validTo));
      assert.equal(entry.fingerprintSha256, c.fingerprint256.replace(/:/g, "").toLowerCase());
      const days = (Date.parse(entry.notAfter) - Date.now()) / 86_400_000;
      assert.ok(days > 29 && days < 31, `device certificates last 30 days (${days})`);
    }
  });

  it("each user error is one line on stderr, non-zero exit, no stack trace", () => {
    assertOneLineError(r.get("duplicate"), /device "robot-0001" already exists/);
    assertOneLineError(r.get("badId1"), /invalid device id "Robot_1!"/);
    assertOneLineError(r.get("badId2"), /invalid device id "robot\.01"/);
    assertOneLineError(r.get("badLabel1"), /label "noequals"/);
    assertOneLineError(r.get("badLabel2"), /label key "BAD"/);
    assertOneLineError(r.get("unknownIssue"), /unknown device "robot-9999"/);
    assertOneLineError(r.get("unknownShow"), /unknown device "robot-9999"/);
    assertOneLineError(r.get("missingCsr"), /nope\.csr/);
    assertOneLineError(r.get("garbageCsr"), /CSR/);
    assertOneLineError(r.get("corruptDb"), /cannot open database .*fleetpki\.db/);
  });

  it("device add with a bad --ttl exits 1 and leaves no device behind (device and token are one transaction)", () => {
    const bad = r.get("badTtl")!;
    assert.equal(bad.status, 1);
    assertOneLineError(bad, /--ttl: .*soon/);
    assertOneLineError(r.get("badTtlShow"), /unknown device "robot-ttl"/);
  });

  it("an unexpected error is one line pointing at --debug; --debug adds the stack trace", () => {
    const plain = r.get("unexpected")!;
    assert.notEqual(plain.status, 0);
    const lines = plain.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, plain.stderr);
    assert.match(lines[0]!, /^fleetpki: .*\(run with --debug for details\)$/);
    const debug = r.get("unexpectedDebug")!;
    assert.notEqual(debug.status, 0);
    assert.match(debug.stderr, /^fleetpki: /);
    assert.match(debug.stderr, /^\s+at /m, `a stack trace with --debug:\n${debug.stderr}`);
  });

  it("FLEETPKI_DIR is the default --dir", () => {
    const withEnv = assertOk(r.get("envDir"), "device list with FLEETPKI_DIR");
    assert.deepEqual(
      JSON.parse(withEnv.stdout).map((x: { id: string }) => x.id),
      ["robot-0001"],
    );
    // Without it the default ./fleet is used, and there is none in that directory.
    const without = r.get("noEnvDir")!;
    assert.notEqual(without.status, 0);
    assert.match(without.stderr, /\.\/fleet/);
  });

  it("--help and device --help exit 0", () => {
    const help = assertOk(r.get("help"), "--help");
    assert.match(help.stdout, /Usage: fleetpki/);
    for (const c of ["init", "start", "ca", "device", "audit"]) assert.match(help.stdout, new RegExp(`^\\s+${c}\\b`, "m"));
    const dh = assertOk(r.get("deviceHelp"), "device --help");
    for (const c of ["add", "list", "show", "issue"]) assert.match(dh.stdout, new RegExp(`^\\s+${c}\\b`, "m"));
  });

  it("start initializes a missing directory, prints the hierarchy and serves; a second start does not re-create", () => {
    assertOk(startFirst, "first start");
    assert.match(startFirst.stderr, /registration \(EST \+ JSON\): https:\/\/127\.0\.0\.1:\d+/);
    assert.match(startFirst.stderr, / agent enroll --server https:\/\/127\.0\.0\.1:\d+ --root-fingerprint sha256:[0-9a-f]{64}/);
    // The development fleet's domain is a labelled placeholder, not a silent fleet.example.
    assert.match(startFirst.stdout, /DEVELOPMENT FLEET: its trust domain is the placeholder dev\.fleet\.invalid/);
    assert.match(startFirst.stdout, / init --domain <your domain>/);
    assert.match(startFirst.stderr, /SIGTERM received, shutting down/);
    assert.match(startFirst.stdout, /Fleet created/);
    assert.match(startFirst.stdout, /DEVELOPMENT SETUP/);
    for (const id of ["root", "devices", "services", "operators"])
      assert.match(startFirst.stdout, new RegExp(`^(\\s*└─ )?${id}\\s`, "m"), `${id} in:\n${startFirst.stdout}`);
    assert.ok(existsSync(join(started, "server/cert.pem")));
    assertOk(startSecond, "second start");
    assert.doesNotMatch(startSecond.stdout, /Fleet created|DEVELOPMENT/);
    for (const id of ["root", "devices", "services", "operators"]) assert.match(startSecond.stdout, new RegExp(`^(\\s*└─ )?${id}\\s`, "m"));
    const fp = new X509Certificate(readFileSync(join(started, "ca/root/cert.pem"))).fingerprint256.replace(/:/g, "").toLowerCase();
    assert.ok(startSecond.stdout.includes(fp.slice(0, 16)), "the same root");
    assert.ok(
      rootBeforeSecondStart?.equals(readFileSync(join(started, "ca/root/cert.pem"))),
      "the second start did not re-create the root",
    );
  });

  it("the next-step commands start prints work as printed (no bare fleetpki that is not on the PATH)", () => {
    const line = /^\s+(\S.* device add robot-0001 --dir \S+)/m.exec(startSecond.stderr)?.[1];
    assert.ok(line, `a device add command in:\n${startSecond.stderr}`);
    // Run exactly that text through a shell, from the directory start ran in, with a PATH that has no fleetpki.
    const shell = spawnSync("/bin/sh", ["-c", line], {
      encoding: "utf8",
      env: { ...process.env, PATH: `${dirname(process.execPath)}:/usr/bin:/bin` },
      timeout: 120_000,
    });
    assert.equal(shell.status, 0, `${line}\n${shell.stdout}${shell.stderr}`);
    assert.match(shell.stdout, /token/i);
  });
});
