// The CLI acting through the admin API (--server URL --operator DIR) against a real server, real
// TLS and a real fleet: the same output as the local command for the same fleet state, and clear
// one-line errors for a wrong CA, a missing operator directory, an encrypted key, a role too weak,
// an endpoint the server does not have, and a hostile answer.
import assert from "node:assert/strict";
import { chmodSync, copyFileSync, cpSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import type { OperatorRole } from "../src/access/identity.js";
import { addDevice } from "../src/authority/devices.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { addOperator } from "../src/authority/identities/operators.js";
import { layout } from "../src/authority/layout.js";
import { readPrivateKey } from "../src/keys/keys.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { assertOneLineError, cliAsync, openssl, tempDir, tempFleet, type RunResult } from "./helpers.js";
import { https, makeCsr, rootPemPath } from "./server-helpers.js";

describe("CLI through the admin API (--server --operator)", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let tmp: ReturnType<typeof tempDir>;
  let server: FleetServer;
  let base: string;
  let passphraseFile: string;
  const dirs: Record<string, string> = {};
  let paths: Record<string, { get?: unknown; post?: unknown; delete?: unknown }> = {};

  /** An operator bundle written by the operators domain, as `fleetpki operator add --out` does: key.pem, cert, chain, ca.pem. */
  async function operatorDir(name: string, role: OperatorRole): Promise<string> {
    const out = join(tmp.path, name);
    await addOperator(f.fleet, { name, role, outDir: out, actor: "test" });
    return out;
  }

  async function deviceWithCertificate(id: string, group?: string): Promise<void> {
    await addDevice(f.fleet, { id, group, labels: { site: "lab" }, actor: "test" });
    const { csr } = await makeCsr(id);
    await issueDeviceCertificate(f.fleet, { deviceId: id, csr: csr.der, actor: "test", context: { via: "cli" } });
  }

  // `policy test` has its own --operator NAME (the identity tested): its bundle option is --operator-dir.
  const remote = (who: string, args: readonly string[]): Promise<RunResult> =>
    cliAsync([...args, "--server", base, args[0] === "policy" && args[1] === "test" ? "--operator-dir" : "--operator", dirs[who]!]);
  const local = (args: readonly string[]): Promise<RunResult> => cliAsync([...args, "--dir", f.dir]);

  function ok(r: RunResult, what: string): string {
    assert.equal(r.status, 0, `${what} failed (${r.status}):\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    return r.stdout;
  }

  /** The serials of a device's certificates, to compare two devices' outputs with names and serials blanked. */
  async function blanked(text: string, id: string): Promise<string> {
    let out = text.split(id).join("<device>");
    for (const c of await f.fleet.store.ops.certificates.ofDevice(id)) out = out.split(c.serial).join("<serial>");
    return out;
  }

  const auditHead = async () => (await f.fleet.store.ops.audit.list({})).length;
  const hasRoute = (method: "get" | "post" | "delete", path: string) => paths[path]?.[method] !== undefined;

  before(async () => {
    f = await tempFleet();
    tmp = tempDir("fleetpki-remote-");
    passphraseFile = resolve(f.dir, f.fleet.config.keys.passphrase_file);
    dirs.bob = await operatorDir("bob", "operator");
    dirs.alice = await operatorDir("alice", "viewer");
    for (const id of ["robot-1", "hold-local", "hold-remote", "json-local", "json-remote"]) await deviceWithCertificate(id, "lab");
    server = await startFleetServer({
      dir: f.dir,
      only: ["admin"],
      adminListen: "127.0.0.1:0",
      logger: silentLogger,
    });
    await server.changes.poll();
    base = `https://127.0.0.1:${server.admin!.address.port}`;
    const doc = await https(`${base}/api/openapi.json`, { ca: readFileSync(rootPemPath(f.dir), "utf8") });
    paths = doc.json().paths;
  });
  after(async () => {
    await server?.close();
    await f?.close();
    tmp?.cleanup();
  });

  test("device show: the same text and JSON as the local command", async () => {
    for (const json of [[], ["--json"]]) {
      const here = ok(await local(["device", "show", "robot-1", ...json]), "local device show");
      const there = ok(await remote("alice", ["device", "show", "robot-1", ...json]), "remote device show");
      assert.equal(there, here);
    }
    assert.match(ok(await remote("alice", ["device", "show", "robot-1"]), "show"), /identity: spiffe:\/\/fleet\.example\/device\/robot-1/);
  });

  test("device hold, unhold, revoke: the same output as locally, audited as the operator", async () => {
    const pairs: [string[], string, string][] = [
      [["device", "hold"], "hold-local", "hold-remote"],
      [["device", "unhold"], "hold-local", "hold-remote"],
      [["device", "revoke", "--reason", "keyCompromise"], "hold-local", "hold-remote"],
      [["device", "hold", "--json"], "json-local", "json-remote"],
      [["device", "revoke", "--json"], "json-local", "json-remote"],
    ];
    for (const [[group, verb, ...rest], here, there] of pairs) {
      const a = ok(await local([group!, verb!, here, ...rest]), `local ${verb}`);
      const b = ok(await remote("bob", [group!, verb!, there, ...rest]), `remote ${verb}`);
      assert.equal(await blanked(b, there), await blanked(a, here), `${verb} ${rest.join(" ")}`);
    }
    assert.equal((await f.fleet.store.ops.devices.get("hold-remote"))!.status, "revoked");
    const rows = await f.fleet.store.ops.audit.list({});
    assert.equal(rows.find((r) => r.action === "device.revoke" && r.subject.includes("hold-remote"))?.actor, "operator:bob");
  });

  test("device add, set, token create, cert revoke, device remove: the same output as locally", async () => {
    // Tokens and their expiry differ by nature; serials and ids are blanked as above.
    const noToken = (out: string) => out.replace(/"token": "[^"]+"/g, '"token": "<t>"').replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, "<time>");
    for (const json of [[], ["--json"]]) {
      const [here, there] = json.length ? ["add-local-j", "add-remote-j"] : ["add-local", "add-remote"];
      const a = ok(await local(["device", "add", here, "--group", "lab", "--label", "site=lab", ...json]), "local add");
      const b = ok(await remote("bob", ["device", "add", there, "--group", "lab", "--label", "site=lab", ...json]), "remote add");
      if (json.length) assert.equal(noToken(await blanked(b, there)), noToken(await blanked(a, here)));
      else {
        const text = (out: string, id: string) => noToken(out.split(id).join("<d>")).replace(/\n\S+\n$/, "\n<t>\n");
        assert.equal(text(b, there), text(a, here));
      }
      const set = ["--group", "yard", "--label", "color=red", "--unlabel", "site", ...json];
      const sa = ok(await local(["device", "set", here, ...set]), "local set");
      const sb = ok(await remote("bob", ["device", "set", there, ...set]), "remote set");
      assert.equal(noToken(await blanked(sb, there)), noToken(await blanked(sa, here)));
      const ta = JSON.parse(ok(await local(["token", "create", here, "--ttl", "1h", "--json"]), "local token"));
      const tb = JSON.parse(ok(await remote("bob", ["token", "create", there, "--ttl", "1h", "--json"]), "remote token"));
      assert.deepEqual(Object.keys(tb), Object.keys(ta));
      assert.equal(tb.device_id, there);
      assert.ok(Math.abs(Date.parse(tb.expires_at) - Date.parse(ta.expires_at)) < 120_000);
    }
    for (const json of [[], ["--json"]]) {
      await deviceWithCertificate(`cert-local${json.length}`);
      await deviceWithCertificate(`cert-remote${json.length}`);
      const [sa, sb] = [
        (await f.fleet.store.ops.certificates.ofDevice(`cert-local${json.length}`))[0]!.serial,
        (await f.fleet.store.ops.certificates.ofDevice(`cert-remote${json.length}`))[0]!.serial,
      ];
      const a = ok(await local(["cert", "revoke", sa, "--reason", "superseded", ...json]), "local cert revoke");
      const b = ok(await remote("bob", ["cert", "revoke", sb, "--reason", "superseded", ...json]), "remote cert revoke");
      assert.equal(await blanked(b, `cert-remote${json.length}`), await blanked(a, `cert-local${json.length}`));
      const ra = ok(await local(["device", "remove", `cert-local${json.length}`, ...json]), "local remove");
      const rb = ok(await remote("bob", ["device", "remove", `cert-remote${json.length}`, ...json]), "remote remove");
      assert.equal(await blanked(rb, `cert-remote${json.length}`), await blanked(ra, `cert-local${json.length}`));
    }
    assert.equal((await f.fleet.store.ops.devices.get("cert-remote0"))!.status, "removed");
    // Removed devices are listed with --all, as locally.
    const all = ["device", "list", "--all"];
    assert.equal(ok(await remote("alice", all), "remote list --all"), ok(await local(all), "local list --all"));
  });

  test("policy check: the server's policy, ok with its rule count", async () => {
    const r = await remote("alice", ["policy", "check"]);
    assert.match(ok(r, "remote policy check"), /^ok: https:\/\/127\.0\.0\.1:\d+\/api\/policy: \d+ rules?, mode \S+\n$/);
    const here = ok(await local(["policy", "check"]), "local policy check");
    assert.equal(r.stdout.replace(/^ok: \S+:/, ""), here.replace(/^ok: \S+:/, ""));
  });

  test("a viewer revoking: 403 as one line, exit 1, nothing changes", async () => {
    const head = await auditHead();
    const r = await remote("alice", ["device", "revoke", "robot-1"]);
    assert.equal(r.status, 1);
    assertOneLineError(r, /needs role operator; alice is viewer \(403 role-too-weak from https:\/\/127\.0\.0\.1:\d+\)$/);
    assert.equal(r.stdout, "");
    assert.equal((await f.fleet.store.ops.devices.get("robot-1"))!.status, "active");
    assert.equal(await auditHead(), head);
  });

  test("an unknown device: the server's 404 as one line", async () => {
    const r = await remote("alice", ["device", "show", "robot-404"]);
    assertOneLineError(r, /robot-404.*\(404 unknown-device from /);
  });

  test("a server whose certificate does not chain to DIR/ca.pem is refused before anything is sent", async () => {
    const wrong = join(tmp.path, "wrong-ca");
    cpSync(dirs.bob!, wrong, { recursive: true });
    const made = openssl([
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=Other Root", "-days", "1",
      "-keyout", join(tmp.path, "other.key"), "-out", join(wrong, "ca.pem"),
    ]);
    assert.equal(made.status, 0, made.stderr);
    const head = await auditHead();
    const r = await cliAsync(["device", "revoke", "robot-1", "--server", base, "--operator", wrong]);
    assertOneLineError(r, /cannot verify https:\/\/127\.0\.0\.1:\d+: its certificate does not chain to .*wrong-ca\/ca\.pem/);
    assert.equal((await f.fleet.store.ops.devices.get("robot-1"))!.status, "active");
    assert.equal(await auditHead(), head);
  });

  test("operator directory problems: missing, no ca.pem, encrypted key without its passphrase, wrong passphrase", async () => {
    const missing = await cliAsync(["device", "show", "robot-1", "--server", base, "--operator", join(tmp.path, "nope")]);
    assertOneLineError(missing, /operator directory .*nope does not exist/);
    // The init-made admin: encrypted key.pem and no ca.pem.
    const admin = f.fleet.path(layout.operatorDir("admin"));
    const args = ["device", "show", "robot-1", "--server", base, "--operator", admin];
    assertOneLineError(await cliAsync(args), /admin\/ca\.pem is missing: put the fleet's root certificate there/);
    copyFileSync(rootPemPath(f.dir), join(admin, "ca.pem"));
    assertOneLineError(await cliAsync(args), /admin\/key\.pem is encrypted: give its passphrase with --operator-passphrase-file FILE/);
    const wrongPass = join(tmp.path, "wrong-pass");
    writeFileSync(wrongPass, "not the passphrase\n", { mode: 0o600 });
    const bad = await cliAsync([...args, "--operator-passphrase-file", wrongPass]);
    const line = assertOneLineError(bad, /cannot decrypt private key .*wrong passphrase/);
    assert.doesNotMatch(line, /not the passphrase/);
    const shown = ok(await cliAsync([...args, "--operator-passphrase-file", passphraseFile, "--json"]), "admin with passphrase");
    assert.equal(JSON.parse(shown).id, "robot-1");
  });

  test("option misuse: --server without --operator, --dir with --server, http://", async () => {
    assertOneLineError(await cliAsync(["device", "show", "robot-1", "--server", base]), /--server needs --operator DIR/);
    assertOneLineError(await cliAsync(["device", "show", "robot-1", "--operator", dirs.bob!]), /--operator needs --server URL/);
    assertOneLineError(await remote("bob", ["device", "show", "robot-1", "--dir", f.dir]), /give one or the other/);
    const plain = await cliAsync(["device", "show", "robot-1", "--server", base.replace("https:", "http:"), "--operator", dirs.bob!]);
    assertOneLineError(plain, /must be an https:\/\/ URL/);
  });

  test("commands that only run on the CA machine refuse --server by name, never run locally", async () => {
    const head = await auditHead();
    const r = await remote("bob", ["device", "reprovision", "robot-1"]);
    assertOneLineError(r, /`fleetpki device reprovision` has no admin API endpoint .*run it on the CA machine with --dir/);
    assertOneLineError(await remote("bob", ["audit", "checkpoint", "--out", tmp.path]), /`fleetpki audit checkpoint` has no admin API/);
    assert.equal(await auditHead(), head);
  });

  test("audit list --since a time inside the log: the same rows, prev_hash included", async () => {
    if (!hasRoute("get", "/api/audit")) return;
    const rows = await f.fleet.store.ops.audit.list({});
    const since = rows[Math.floor(rows.length / 2)]!.at;
    const args = ["audit", "list", "--since", since, "--limit", "3", "--json"];
    const there = ok(await remote("alice", args), "remote audit list --since");
    assert.equal(there, ok(await local(args), "local audit list --since"));
    assert.equal(JSON.parse(there).length, 3);
  });

  // The list and query endpoints come from other branches: while the server lacks one, the command
  // names it and fails; once it is there, the output must equal the local command's.
  const compared: [string, "get" | "post", string, string[], ((out: string) => string)?][] = [
    ["device list", "get", "/api/devices", ["device", "list", "--json"]],
    ["device list (text)", "get", "/api/devices", ["device", "list", "--all"]],
    ["audit list", "get", "/api/audit", ["audit", "list", "--json", "--limit", "5"]],
    ["audit list (text, since)", "get", "/api/audit", ["audit", "list", "--since", "2000-01-01T00:00:00Z"]],
    // The API's report leaves out the chain verdict: the text is the same, --json is not.
    ["audit verify", "get", "/api/audit/verify", ["audit", "verify"]],
    ["policy test", "post", "/api/policy/test", ["policy", "test", "--device", "robot-1", "--publish", "devices/robot-1/telemetry"]],
    ["policy test (service)", "post", "/api/policy/test", ["policy", "test", "--service", "backend", "--subscribe", "devices/+/telemetry"]],
    // Where the policy is read differs (a path here, the API's URL there); the rest is the same.
    [
      "policy test (json)",
      "post",
      "/api/policy/test",
      ["policy", "test", "--device", "robot-1", "--receive", "devices/robot-1/cmd", "--json"],
      (out) => JSON.stringify({ ...JSON.parse(out), policy: "<policy>" }),
    ],
  ];
  for (const [name, method, path, args, normal = (out: string) => out] of compared)
    test(`${name}: the local command's output, or the missing ${method.toUpperCase()} ${path} named`, async () => {
      const there = await remote("alice", args);
      if (!hasRoute(method, path)) {
        assertOneLineError(there, new RegExp(`has no endpoint ${method.toUpperCase()} ${path.replace(/\//g, "\\/")} `));
        return;
      }
      assert.equal(normal(ok(there, `remote ${name}`)), normal(ok(await local(args), `local ${name}`)));
    });

  test("cert expiring: the same table and exit status 1 as locally; --json the same but for seconds left", async () => {
    if (!hasRoute("get", "/api/certificates/expiring")) {
      assertOneLineError(await remote("alice", ["cert", "expiring"]), /has no endpoint GET \/api\/certificates\/expiring /);
      return;
    }
    const none = [await local(["cert", "expiring", "--within", "1h"]), await remote("alice", ["cert", "expiring", "--within", "1h"])];
    for (const r of none) assert.equal(r.status, 0, r.stderr);
    assert.equal(none[1]!.stdout, none[0]!.stdout);
    // Device and operator certificates end in 30 days: inside a 5-week window (given in weeks, sent as days).
    const here = await local(["cert", "expiring", "--within", "5w"]);
    const there = await remote("alice", ["cert", "expiring", "--within", "5w"]);
    assert.equal(here.status, 1, here.stderr);
    assert.equal(there.status, 1, there.stderr);
    assert.equal(there.stdout, here.stdout);
    assert.match(there.stdout, /device\s+robot-1\s/);
    const expiring = ["cert", "expiring", "--within", "5w", "--json"];
    const [a, b] = [await local(expiring), await remote("alice", expiring)];
    const [ja, jb] = [JSON.parse(a.stdout), JSON.parse(b.stdout)] as { secondsLeft: number }[][];
    assert.equal(jb!.length, ja!.length);
    jb!.forEach((c, i) => assert.ok(Math.abs(c.secondsLeft - ja![i]!.secondsLeft) < 120, "seconds left, counted by each side's clock"));
    const blank = (list: { secondsLeft: number }[]) => list.map((c) => ({ ...c, secondsLeft: 0 }));
    assert.deepEqual(blank(jb!), blank(ja!));
  });

  test("token create: a token for the device, or the missing endpoint named", async () => {
    const r = await remote("bob", ["token", "create", "robot-1", "--json"]);
    if (!hasRoute("post", "/api/devices/{id}/tokens")) {
      assertOneLineError(r, /has no endpoint POST \/api\/devices\/:id\/tokens/);
      return;
    }
    const t = JSON.parse(ok(r, "remote token create"));
    assert.equal(t.device_id, "robot-1");
    assert.match(t.token, /\S{16,}/);
    assert.ok(Date.parse(t.expires_at) > Date.now());
  });
});

describe("CLI through the admin API: a hostile or wrong server", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let fake: Server;
  let base: string;
  let operator: string;
  let serverTls: { key: string; cert: string };
  let answer: { status: number; type: string; body: string } = { status: 200, type: "application/json", body: "{}" };

  before(async () => {
    f = await tempFleet();
    const server = f.fleet.path(layout.serverDir);
    const key = readPrivateKey(join(server, "key.pem"), f.fleet.passphrase()).export({ type: "pkcs8", format: "pem" }).toString();
    const cert = readFileSync(join(server, "cert.pem"), "utf8") + readFileSync(join(server, "chain.pem"), "utf8");
    serverTls = { key, cert };
    fake = createServer(serverTls, (_req, res) => {
      res.writeHead(answer.status, { "content-type": answer.type });
      res.end(answer.body);
    });
    await new Promise<void>((r) => fake.listen(0, "127.0.0.1", r));
    base = `https://127.0.0.1:${(fake.address() as AddressInfo).port}`;
    operator = f.fleet.path(layout.operatorDir("admin"));
    copyFileSync(rootPemPath(f.dir), join(operator, "ca.pem"));
    chmodSync(join(operator, "ca.pem"), 0o644);
  });
  after(async () => {
    await new Promise((r) => fake?.close(r));
    await f?.close();
  });

  const run = () =>
    cliAsync([
      "device", "show", "robot-1", "--server", base, "--operator", operator,
      "--operator-passphrase-file", resolve(f.dir, f.fleet.config.keys.passphrase_file),
    ]);

  test("a problem detail with terminal escapes and newlines is printed as one clean line", async () => {
    answer = {
      status: 409,
      type: "application/problem+json",
      body: JSON.stringify({ type: "x/evil", title: "t", status: 409, detail: "\u001b[2J\u001b]0;owned\u0007bad\nfleetpki: forged line" }),
    };
    const r = await run();
    const line = assertOneLineError(r, /bad fleetpki: forged line \(409 evil from /);
    assert.doesNotMatch(r.stderr, /\u001b|\u0007/);
    assert.ok(line.length < 600);
  });

  test("a certificate from the fleet's CAs that is not this server's is refused", async () => {
    // The operator's own certificate chains to ca.pem but is not for servers (clientAuth only).
    const key = readPrivateKey(join(operator, "key.pem"), f.fleet.passphrase()).export({ type: "pkcs8", format: "pem" }).toString();
    const cert = readFileSync(join(operator, "cert.pem"), "utf8") + readFileSync(join(operator, "chain.pem"), "utf8");
    // A device certificate is for servers too (serverAuth) but names the robot, not 127.0.0.1.
    await addDevice(f.fleet, { id: "robot-x", actor: "test" });
    const { key: deviceKey, csr } = await makeCsr("robot-x");
    const issued = await issueDeviceCertificate(f.fleet, { deviceId: "robot-x", csr: csr.der, actor: "test", context: { via: "cli" } });
    const deviceCert = issued.certificatePem + (await f.fleet.chainPem("devices")).chain;
    try {
      fake.setSecureContext({ key, cert });
      const notForServers = /cannot verify https:\/\/127\.0\.0\.1:\d+: its certificate is not valid for a server here \(INVALID_PURPOSE\)/;
      assertOneLineError(await run(), notForServers);
      fake.setSecureContext({ key: deviceKey.keyPem, cert: deviceCert });
      assertOneLineError(await run(), /the certificate of https:\/\/127\.0\.0\.1:\d+ does not name that host/);
    } finally {
      fake.setSecureContext(serverTls);
    }
  });

  test("an answer that is not the admin API's JSON", async () => {
    answer = { status: 200, type: "text/html", body: "<html>hello</html>" };
    assertOneLineError(await run(), /answered GET \/api\/devices\/:id with text\/html, not JSON: not the admin API\?/);
    answer = { status: 502, type: "text/html", body: "<html>bad gateway</html>" };
    assertOneLineError(await run(), /HTTP 502 \(502 from https:/);
  });
});
