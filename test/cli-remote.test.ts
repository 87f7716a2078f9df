// The CLI acting through the admin API (--server URL --operator DIR) against a real server, real
// TLS and a real fleet: the same output as the local command for the same fleet state, and clear
// one-line errors for a wrong CA, a missing operator directory, an encrypted key, a role too weak,
// an endpoint the server does not have, and a hostile answer.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import type { OperatorRole } from "../src/access/identity.js";
import { addDevice } from "../src/authority/devices.js";
import { fileApprovalRequest, keyFingerprint } from "../src/authority/enroll/approval-requests.js";
import { issueDeviceCertificate, keyFromCsr } from "../src/authority/issue/issuance.js";
import { addOperator } from "../src/authority/identities/operators.js";
import { layout } from "../src/authority/layout.js";
import { readPrivateKey } from "../src/keys/keys.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { assertOneLineError, cliAsync, openssl, opensslCsr, tempDir, tempFleet, type RunResult } from "./helpers.js";
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

  /** Request ids, key fingerprints and filing times differ between the local and the remote device; the rest must not. */
  const blankRequests = (out: string, id: string) =>
    out
      .split(id)
      .join("<device>")
      .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, "<request>")
      .replace(/sha256:[0-9a-f]{64}/g, "<key>")
      .replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, "<time>");
  /** The local error line, and the remote one without the server's " (status type from URL)" suffix. */
  const remoteLine = (line: string) => line.replace(/ \(\d{3} [a-z-]+ from https:\/\/127\.0\.0\.1:\d+\)$/, "");

  /** Files a waiting enrollment request for a fresh key, as the enrollment endpoints do; returns its id and fingerprint. */
  async function fileRequest(id: string, address: string): Promise<{ id: string; fingerprint: string }> {
    const { csr } = await makeCsr(id);
    const key = await keyFromCsr(csr.der);
    const fingerprint = keyFingerprint(key.spki);
    const source = { via: "api", address };
    const { requestId } = await fileApprovalRequest(f.fleet, { deviceId: id, csr: csr.der, source }, key, fingerprint, new Date());
    return { id: requestId, fingerprint };
  }

  test("device requests, approve, deny: the same output as locally, audited as the operator", async () => {
    const sides = { l: "local", r: "remote" } as const;
    const filed: Record<string, { id: string; fingerprint: string }[]> = {};
    for (const side of Object.keys(sides)) {
      filed[`fp-${side}`] = [await fileRequest(`fp-${side}`, "10.0.1.1"), await fileRequest(`fp-${side}`, "10.0.1.2")];
      filed[`rq-${side}`] = [await fileRequest(`rq-${side}`, "10.0.1.3")];
      filed[`dn-${side}`] = [await fileRequest(`dn-${side}`, "10.0.2.1"), await fileRequest(`dn-${side}`, "10.0.2.2")];
      filed[`dn-${side}`]!.push(await fileRequest(`dn-${side}`, "10.0.2.3"));
      filed[`one-${side}`] = [await fileRequest(`one-${side}`, "10.0.3.1")];
    }
    for (const json of [[], ["--json"]]) {
      const here = ok(await local(["device", "requests", ...json]), "local requests");
      assert.equal(ok(await remote("alice", ["device", "requests", ...json]), "remote requests"), here);
      assert.match(here, new RegExp(filed["dn-r"]![2]!.fingerprint));
    }
    const both = async (args: (side: "l" | "r") => string[], id: string) => {
      const a = await local(args("l"));
      const b = await remote("bob", args("r"));
      return { a, b, here: blankRequests(a.stdout, `${id}-l`), there: blankRequests(b.stdout, `${id}-r`) };
    };
    // Approve by the key's fingerprint: the device's other request is denied.
    let r = await both((s) => ["device", "approve", `fp-${s}`, "--fingerprint", filed[`fp-${s}`]![1]!.fingerprint], "fp");
    ok(r.a, "local approve");
    ok(r.b, "remote approve");
    assert.equal(r.there, r.here);
    assert.match(r.here, /approved: request <request> \(key <key>, from 10\.0\.1\.2\).*\ndenied request <request> .*10\.0\.1\.1/);
    // Approve by request id.
    r = await both((s) => ["device", "approve", `rq-${s}`, "--request", filed[`rq-${s}`]![0]!.id], "rq");
    assert.equal(blankRequests(ok(r.b, "remote approve --request"), "rq-r"), blankRequests(ok(r.a, "local approve --request"), "rq-l"));
    // A denial naming nothing while three wait: the same refusal, listing them, nothing decided.
    const head = await auditHead();
    r = await both((s) => ["device", "deny", `dn-${s}`], "dn");
    const refusal = [assertOneLineError(r.a, /3 enrollment requests for "dn-l" are waiting/), assertOneLineError(r.b)];
    assert.equal(blankRequests(remoteLine(refusal[1]!), "dn-r"), blankRequests(refusal[0]!, "dn-l"));
    assert.equal(await auditHead(), head);
    // By fingerprint, then all the rest.
    r = await both((s) => ["device", "deny", `dn-${s}`, "--fingerprint", filed[`dn-${s}`]![0]!.fingerprint], "dn");
    assert.equal(blankRequests(ok(r.b, "remote deny --fingerprint"), "dn-r"), blankRequests(ok(r.a, "local deny --fingerprint"), "dn-l"));
    r = await both((s) => ["device", "deny", `dn-${s}`, "--all"], "dn");
    assert.equal(blankRequests(ok(r.b, "remote deny --all"), "dn-r"), blankRequests(ok(r.a, "local deny --all"), "dn-l"));
    assert.match(r.here, /\n2 requests denied\n$/);
    // Naming nothing when exactly one waits denies that one (not "all", the API's default without a request).
    r = await both((s) => ["device", "deny", `one-${s}`], "one");
    assert.equal(blankRequests(ok(r.b, "remote deny"), "one-r"), blankRequests(ok(r.a, "local deny"), "one-l"));
    assert.match(r.here, /^enrollment of <device> denied: request <request>/);
    const allFrom = await remote("bob", ["device", "deny", "--all-from", "10.0.9.0/24"]);
    assertOneLineError(allFrom, /`fleetpki device deny --all-from` has no admin API endpoint/);
    const rows = await f.fleet.store.ops.audit.list({});
    const decided = rows.filter((row) => row.subject === "device:fp-r" && row.action.startsWith("enrollment."));
    assert.deepEqual(
      decided.map((row) => [row.action, row.actor]),
      [
        ["enrollment.request", "approval:fp-r"],
        ["enrollment.request", "approval:fp-r"],
        ["enrollment.approve", "operator:bob"],
        ["enrollment.deny", "operator:bob"],
      ],
    );
    assert.equal(ok(await remote("alice", ["device", "requests", "--json"]), "requests at the end"), "[]\n");
  });

  test("device issue: the same certificate and message as locally, audited as the operator; a DER CSR too", async () => {
    for (const id of ["issue-l", "issue-r", "issue-d"]) await addDevice(f.fleet, { id, actor: "test" });
    const csrL = opensslCsr(tmp.path, "issue-l").csr;
    const csrR = opensslCsr(tmp.path, "issue-r").csr;
    const [outL, outR] = [join(tmp.path, "issue-l.pem"), join(tmp.path, "issue-r.pem")];
    const a = await local(["device", "issue", "issue-l", "--csr", csrL, "--out", outL]);
    const b = await remote("bob", ["device", "issue", "issue-r", "--csr", csrR, "--out", outR]);
    ok(a, "local issue");
    ok(b, "remote issue");
    const blank = (text: string, id: string, out: string) =>
      text
        .split(out)
        .join("<out>")
        .split(id)
        .join("<device>")
        .replace(/certificate [0-9a-f]+/, "certificate <serial>")
        .replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/, "<time>");
    assert.equal(blank(b.stderr, "issue-r", outR), blank(a.stderr, "issue-l", outL));
    assert.equal(b.stdout, "");
    const cert = new X509Certificate(readFileSync(outR));
    assert.match(cert.subjectAltName ?? "", /URI:spiffe:\/\/fleet\.example\/device\/issue-r/);
    assert.equal((await f.fleet.store.ops.certificates.ofDevice("issue-r")).length, 1);
    const issued = (await f.fleet.store.ops.audit.list({})).find((e) => e.action === "certificate.issue" && e.subject.includes("issue-r"));
    assert.equal(issued?.actor, "operator:bob");
    // A DER CSR file is sent as PEM; the certificate goes to stdout, as locally without --out.
    const der = join(tmp.path, "issue-d.der");
    const conv = openssl(["req", "-in", opensslCsr(tmp.path, "issue-d").csr, "-outform", "DER", "-out", der]);
    assert.equal(conv.status, 0, conv.stderr);
    const d = ok(await remote("bob", ["device", "issue", "issue-d", "--csr", der]), "remote issue (DER)");
    assert.match(new X509Certificate(d).subjectAltName ?? "", /device\/issue-d/);
  });

  test("device issue with a hostile CSR (a key the policy refuses, a forged signature): the local error, nothing recorded", async () => {
    await addDevice(f.fleet, { id: "issue-h", actor: "test" });
    const weak = opensslCsr(tmp.path, "weak", ["-newkey", "rsa:1024"]).csr;
    const good = readFileSync(opensslCsr(tmp.path, "forged").csr, "utf8");
    const der = Buffer.from(good.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
    der.writeUInt8(der.readUInt8(der.length - 5) ^ 0x01, der.length - 5);
    const forged = join(tmp.path, "forged.der");
    writeFileSync(forged, der);
    const head = await auditHead();
    for (const [csr, pattern] of [
      [weak, /key type not allowed/i],
      [forged, /signature does not verify/],
    ] as const) {
      const args = ["device", "issue", "issue-h", "--csr", csr];
      const here = assertOneLineError(await local(args), pattern);
      const there = assertOneLineError(await remote("bob", args), / \(400 (key-type-not-allowed|csr-invalid) from https:/);
      assert.equal(remoteLine(there), here);
    }
    assert.deepEqual(await f.fleet.store.ops.certificates.ofDevice("issue-h"), []);
    assert.equal(await auditHead(), head);
  });

  test("GET /api/devices items carry createdAt and updatedAt (the remote list reads no device one by one)", async () => {
    const page = await https(`${base}/api/devices?q=robot-1`, {
      ca: readFileSync(rootPemPath(f.dir), "utf8"),
      key: readFileSync(join(dirs.alice!, "key.pem"), "utf8"),
      cert: readFileSync(join(dirs.alice!, "cert.pem"), "utf8") + readFileSync(join(dirs.alice!, "chain.pem"), "utf8"),
    });
    assert.equal(page.status, 200, page.text);
    const item = page.json().items.find((d: { id: string }) => d.id === "robot-1");
    const stored = (await f.fleet.store.ops.devices.get("robot-1"))!;
    assert.deepEqual([item.createdAt, item.updatedAt], [stored.created_at, stored.updated_at]);
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
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-subj",
      "/CN=Other Root",
      "-days",
      "1",
      "-keyout",
      join(tmp.path, "other.key"),
      "-out",
      join(wrong, "ca.pem"),
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
    const noCa = join(tmp.path, "no-ca");
    cpSync(dirs.bob!, noCa, { recursive: true });
    rmSync(join(noCa, "ca.pem"));
    const withoutCa = await cliAsync(["device", "show", "robot-1", "--server", base, "--operator", noCa]);
    assertOneLineError(withoutCa, /no-ca\/ca\.pem is missing: the server is verified against the fleet's root certificate there/);
    // The init-made admin is a whole bundle (init writes its ca.pem), with a key encrypted under the fleet passphrase.
    const admin = f.fleet.path(layout.operatorDir("admin"));
    assert.equal(readFileSync(join(admin, "ca.pem"), "utf8"), readFileSync(rootPemPath(f.dir), "utf8"));
    const args = ["device", "show", "robot-1", "--server", base, "--operator", admin];
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
    // As init wrote it: key (encrypted), cert, chain and ca.pem.
    operator = f.fleet.path(layout.operatorDir("admin"));
  });
  after(async () => {
    await new Promise((r) => fake?.close(r));
    await f?.close();
  });

  const run = () =>
    cliAsync([
      "device",
      "show",
      "robot-1",
      "--server",
      base,
      "--operator",
      operator,
      "--operator-passphrase-file",
      resolve(f.dir, f.fleet.config.keys.passphrase_file),
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
