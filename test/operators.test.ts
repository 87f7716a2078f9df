// Operators (issue 11): roles, certificates with a PKCS#12 for browsers, one-time login links and
// browser sessions, on a real fleet and SQLite database, with openssl checking the PKCS#12 and a
// real gateway applying role rules. Time moves through the fleet's clock; nothing sleeps.
import assert from "node:assert/strict";
import { X509Certificate, createHmac } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import Database from "better-sqlite3";
import mqtt, { type MqttClient } from "mqtt";
import { AccessPolicy } from "../src/access/policy.js";
import { CSRF_HEADER, SESSION_COOKIE } from "../src/admin/auth.js";
import { addDevice } from "../src/authority/devices.js";
import { AuthenticationFailed, InvalidArgument, OperatorExists, UnknownOperator } from "../src/authority/errors.js";
import { ChangeFeed } from "../src/authority/events/change-feed.js";
import {
  createLoginLink,
  endOperatorSession,
  loginUrl,
  operatorSession,
  redeemLoginLink,
} from "../src/authority/identities/operator-sessions.js";
import {
  OperatorDirectory,
  addOperator,
  listOperators,
  removeOperator,
  roleAtLeast,
  setOperatorRole,
} from "../src/authority/identities/operators.js";
import { FleetServices } from "../src/authority/services.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { sqlitePath } from "../src/store/open.js";
import { assertOk, assertOneLineError, cliAsync, openssl, tempDir, tempFleet } from "./helpers.js";
import { assertProblem, https, postJson } from "./server-helpers.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/** A clock that stands still until a test moves it. */
class TestClock {
  private readonly base = Date.now();
  offsetMs = 0;
  now(): Date {
    return new Date(this.base + this.offsetMs);
  }
}

const isLoginInvalid = (e: unknown) => e instanceof AuthenticationFailed && e.reason === "login-invalid";

describe("operators: roles, certificates and PKCS#12", { concurrency: false }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let fleet: FleetServices;
  let work: { path: string; cleanup: () => void };
  let feed: ChangeFeed;
  let directory: OperatorDirectory;
  const clock = new TestClock();
  /** Every secret handed out in this suite: none may reach the audit log. */
  const secrets: string[] = [];
  const d = () => ["--dir", f.dir];
  const head = () => fleet.store.ops.changes.headSeq();
  const operatorRows = () => fleet.store.ops.operators.list();

  before(async () => {
    f = await tempFleet();
    fleet = await FleetServices.open(f.dir, { clock });
    work = tempDir("fleetpki-operators-");
    feed = new ChangeFeed(fleet.store, 3_600_000); // polled by hand
    await feed.start();
    directory = await OperatorDirectory.load(fleet);
    directory.follow(feed);
  });
  after(async () => {
    await feed?.stop();
    await fleet?.close();
    await f?.close();
    work?.cleanup();
  });

  it("init makes the admin operator an admin, audited; the directory knows it", async () => {
    const [admin] = await listOperators(fleet);
    assert.deepEqual(
      [admin?.name, admin?.role, admin?.status, admin?.certificateStatus, admin?.identity],
      ["admin", "admin", "active", "valid", "spiffe://fleet.example/operator/admin"],
    );
    const audit = (await fleet.store.ops.audit.list({})).filter((a) => a.subject === "operator:admin");
    assert.deepEqual(
      audit.map((a) => a.action),
      ["certificate.issue", "operator.add"],
    );
    assert.equal(JSON.parse(audit[1]!.details).role, "admin");
    assert.equal(directory.role("admin"), "admin");
    assert.equal(directory.role("nobody"), null);
    assert.ok(roleAtLeast("admin", "operator") && roleAtLeast("operator", "operator") && !roleAtLeast("viewer", "operator"));
    assert.ok(!roleAtLeast(null, "viewer") && !roleAtLeast("root" as never, "viewer"));
  });

  it("add: PEM files (key 0600, dir 0700) and a PKCS#12 that openssl opens with the passphrase and refuses without it", async () => {
    const out = join(work.path, "alice");
    const r = await cliAsync(["operator", "add", "alice", "--role", "viewer", "--out", out, "--json", ...d()]);
    assertOk(r, "operator add");
    const added = JSON.parse(r.stdout);
    const passphrase: string = added.p12Passphrase;
    secrets.push(passphrase);
    assert.equal(added.identity, "spiffe://fleet.example/operator/alice");
    assert.equal(added.role, "viewer");
    assert.match(passphrase, /^[A-Za-z0-9_-]{32}$/, "192 random bits, base64url");
    assert.equal(statSync(out).mode & 0o777, 0o700);
    assert.equal(statSync(join(out, "key.pem")).mode & 0o777, 0o600);
    assert.equal(statSync(join(out, "alice.p12")).mode & 0o777, 0o600);
    assert.equal(readFileSync(join(out, "ca.pem"), "utf8"), readFileSync(join(f.dir, "ca", "root", "cert.pem"), "utf8"));
    assert.equal(readFileSync(join(out, "chain.pem"), "utf8"), readFileSync(join(f.dir, "ca", "operators", "cert.pem"), "utf8"));

    const files = ["-CAfile", join(out, "ca.pem"), "-untrusted", join(out, "chain.pem"), join(out, "cert.pem")];
    assertOk(openssl(["verify", "-x509_strict", "-purpose", "sslclient", ...files]), "openssl verify sslclient");
    const ext = openssl(["x509", "-in", join(out, "cert.pem"), "-noout", "-subject", "-ext", "subjectAltName,extendedKeyUsage"]);
    assert.match(ext.stdout, /URI:spiffe:\/\/fleet\.example\/operator\/alice/);
    assert.match(ext.stdout, /TLS Web Client Authentication/);
    assert.doesNotMatch(ext.stdout, /TLS Web Server Authentication/);

    const p12 = join(out, "alice.p12");
    const info = openssl(["pkcs12", "-info", "-noout", "-in", p12, "-passin", `pass:${passphrase}`]);
    assertOk(info, "openssl pkcs12 -info with the passphrase");
    assert.match(info.stderr + info.stdout, /AES-256-CBC/);
    const wrong = openssl(["pkcs12", "-info", "-noout", "-in", p12, "-passin", "pass:not-the-passphrase"]);
    assert.notEqual(wrong.status, 0, "a wrong passphrase is refused");
    assert.match(wrong.stderr, /mac verify|invalid password/i);
    // Inside: the key of key.pem, the certificate and the operators CA.
    const key = openssl(["pkcs12", "-in", p12, "-passin", `pass:${passphrase}`, "-nocerts", "-nodes"]);
    assertOk(key, "openssl pkcs12 -nocerts");
    const keyPub = openssl(["pkey", "-pubout"], key.stdout);
    const cert = new X509Certificate(readFileSync(join(out, "cert.pem")));
    assert.equal(keyPub.stdout, cert.publicKey.export({ type: "spki", format: "pem" }).toString());
    const certs = openssl(["pkcs12", "-in", p12, "-passin", `pass:${passphrase}`, "-nokeys"]);
    assert.equal(certs.stdout.match(/BEGIN CERTIFICATE/g)?.length, 2);

    assert.deepEqual(
      (await fleet.store.ops.certificates.ofKind("operator", "alice")).map((c) => [c.serial, c.issuer_ca, c.status]),
      [[added.serial, "operators", "valid"]],
    );
    const audit = (await fleet.store.ops.audit.list({})).filter((a) => a.subject === "operator:alice");
    assert.deepEqual(
      audit.map((a) => a.action),
      ["certificate.issue", "operator.add"],
    );
    assert.equal(JSON.parse(audit[1]!.details).role, "viewer");
    await feed.poll();
    assert.equal(directory.role("alice"), "viewer");
  });

  it("--p12-passphrase-file: that passphrase, never printed; a too short one is refused before anything is written", async () => {
    const file = join(work.path, "bob-passphrase");
    const chosen = "bob's long passphrase 1";
    secrets.push(chosen);
    writeFileSync(file, `${chosen}\n`, { mode: 0o600 });
    const out = join(work.path, "bob");
    const r = await cliAsync(["operator", "add", "bob", "--role", "operator", "--out", out, "--p12-passphrase-file", file, ...d()]);
    assertOk(r, "operator add --p12-passphrase-file");
    assert.doesNotMatch(r.stdout + r.stderr, /long passphrase/);
    assertOk(openssl(["pkcs12", "-info", "-noout", "-in", join(out, "bob.p12"), "-passin", `file:${file}`]), "the chosen passphrase");

    const short = join(work.path, "short");
    writeFileSync(short, "short\n");
    const seq = await head();
    const out2 = join(work.path, "carl");
    assertOneLineError(
      await cliAsync(["operator", "add", "carl", "--role", "viewer", "--out", out2, "--p12-passphrase-file", short, ...d()]),
      /shorter than 8/,
    );
    await assert.rejects(
      addOperator(fleet, { name: "carl", role: "viewer", outDir: out2, actor: "test", p12Passphrase: "ünïcödé passphrase" }),
      InvalidArgument,
    );
    assert.equal(existsSync(out2), false);
    assert.equal(await head(), seq);
  });

  it("refusals (taken name, existing key file, hostile names and roles) leave no file, row or audit event", async () => {
    const seq = await head();
    const before = await operatorRows();
    const out = join(work.path, "refused");
    assertOneLineError(
      await cliAsync(["operator", "add", "alice", "--role", "viewer", "--out", out, ...d()]),
      /operator "alice" already exists/,
    );
    await assert.rejects(addOperator(fleet, { name: "alice", role: "admin", outDir: out, actor: "test" }), OperatorExists);
    // Someone's key is never replaced.
    const occupied = join(work.path, "occupied");
    mkdirSync(occupied);
    writeFileSync(join(occupied, "key.pem"), "someone's key");
    await assert.rejects(addOperator(fleet, { name: "dora", role: "viewer", outDir: occupied, actor: "test" }), /already exists/);
    assert.equal(readFileSync(join(occupied, "key.pem"), "utf8"), "someone's key");

    const names = ["", "Alice", "a".repeat(64), "x".repeat(100_000), "../etc", "a/b", "a b", "é", "admin\n", "-a", "a\u0000b"];
    for (const name of names) {
      await assert.rejects(addOperator(fleet, { name, role: "viewer", outDir: out, actor: "test" }), InvalidArgument, name.slice(0, 20));
      await assert.rejects(removeOperator(fleet, { name, actor: "test" }), InvalidArgument);
      await assert.rejects(setOperatorRole(fleet, { name, role: "viewer", actor: "test" }), InvalidArgument);
      await assert.rejects(createLoginLink(fleet, { name, actor: "test" }), InvalidArgument);
    }
    const error = await addOperator(fleet, { name: "y".repeat(100_000), role: "viewer", outDir: out, actor: "test" }).catch((e) => e);
    assert.ok((error as Error).message.length < 300, "a huge name is not echoed whole");
    const roles = ["", "root", "Admin", "viewer ", "x".repeat(100_000), undefined, 1, null];
    for (const role of roles) {
      await assert.rejects(addOperator(fleet, { name: "erin", role: role as never, outDir: out, actor: "test" }), InvalidArgument);
      await assert.rejects(setOperatorRole(fleet, { name: "alice", role: role as never, actor: "test" }), InvalidArgument);
    }
    assertOneLineError(await cliAsync(["operator", "add", "erin", "--role", "root", "--out", out, ...d()]), /invalid operator role "root"/);
    assertOneLineError(await cliAsync(["operator", "add", "../x", "--role", "viewer", "--out", out, ...d()]), /invalid operator name/);
    assertOneLineError(await cliAsync(["operator", "role", "alice", "superuser", ...d()]), /invalid operator role/);
    assertOneLineError(await cliAsync(["operator", "remove", "nobody", ...d()]), /unknown operator "nobody"/);
    assertOneLineError(await cliAsync(["operator", "login", "nobody", ...d()]), /unknown operator "nobody"/);
    assert.equal(existsSync(out), false);
    assert.equal(await head(), seq);
    assert.deepEqual(await operatorRows(), before);
  });

  it("role: changed and audited, a no-op records nothing; the directory follows the feed; list shows it", async () => {
    assert.equal(await setOperatorRole(fleet, { name: "alice", role: "operator", actor: "test" }), true);
    const seq = await head();
    assert.equal(await setOperatorRole(fleet, { name: "alice", role: "operator", actor: "test" }), false);
    assert.equal(await head(), seq);
    const [row] = (await fleet.store.ops.audit.list({})).filter((a) => a.action === "operator.role");
    assert.deepEqual(JSON.parse(row!.details), { previous: "viewer", role: "operator" });
    assert.equal(directory.role("alice"), "viewer", "from memory: not yet delivered");
    await feed.poll();
    assert.equal(directory.role("alice"), "operator");
    const r = await cliAsync(["operator", "list", "--json", ...d()]);
    assertOk(r, "operator list");
    const list = JSON.parse(r.stdout) as { name: string; role: string; status: string }[];
    assert.deepEqual(
      list.map((o) => [o.name, o.role, o.status]),
      [
        ["admin", "admin", "active"],
        ["alice", "operator", "active"],
        ["bob", "operator", "active"],
      ],
    );
  });

  it("the last active admin can be neither removed nor demoted; with a second admin it can", async () => {
    const seq = await head();
    await assert.rejects(removeOperator(fleet, { name: "admin", actor: "test" }), /last active admin/);
    await assert.rejects(setOperatorRole(fleet, { name: "admin", role: "viewer", actor: "test" }), /last active admin/);
    assertOneLineError(await cliAsync(["operator", "remove", "admin", ...d()]), /last active admin/);
    assert.equal(await head(), seq);
    assert.equal((await fleet.store.ops.certificates.ofKind("operator", "admin"))[0]!.status, "valid");

    const carol = await addOperator(fleet, { name: "carol", role: "admin", outDir: join(work.path, "carol"), actor: "test" });
    secrets.push(carol.p12Passphrase);
    assert.equal(await setOperatorRole(fleet, { name: "admin", role: "viewer", actor: "test" }), true);
    await assert.rejects(setOperatorRole(fleet, { name: "carol", role: "operator", actor: "test" }), /last active admin/);
    await assert.rejects(removeOperator(fleet, { name: "carol", actor: "test" }), /last active admin/);
    assert.equal(await setOperatorRole(fleet, { name: "admin", role: "admin", actor: "test" }), true);
  });

  it("login link: one-time even when redeemed concurrently, for 10 minutes by the clock", async () => {
    const link = await createLoginLink(fleet, { name: "alice", actor: "test" });
    secrets.push(link.token);
    assert.match(link.token, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(link.expiresAt.getTime() - clock.now().getTime(), 10 * MINUTE);
    const session = await redeemLoginLink(fleet, { token: link.token, address: "127.0.0.1" });
    secrets.push(session.secret, session.csrf);
    assert.deepEqual([session.operator, session.role], ["alice", "operator"]);
    await assert.rejects(redeemLoginLink(fleet, { token: link.token }), isLoginInvalid, "a second redeem fails");

    const raced = await createLoginLink(fleet, { name: "alice", actor: "test" });
    secrets.push(raced.token);
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => redeemLoginLink(fleet, { token: raced.token })));
    const won = results.filter((r) => r.status === "fulfilled");
    assert.equal(won.length, 1, "exactly one redeem wins");
    for (const r of won) secrets.push(r.value.secret, r.value.csrf);
    for (const r of results) if (r.status === "rejected") assert.ok(isLoginInvalid(r.reason));

    const late = await createLoginLink(fleet, { name: "alice", actor: "test" });
    const inTime = await createLoginLink(fleet, { name: "alice", actor: "test" });
    secrets.push(late.token, inTime.token);
    clock.offsetMs += 9 * MINUTE + 59_000;
    const ok = await redeemLoginLink(fleet, { token: inTime.token });
    secrets.push(ok.secret, ok.csrf);
    clock.offsetMs += 2_000;
    await assert.rejects(redeemLoginLink(fleet, { token: late.token }), isLoginInvalid, "expired after 10 minutes");
  });

  it("hostile tokens: the same clean login-invalid, nothing recorded", async () => {
    const seq = await head();
    const tokens: unknown[] = [
      "",
      "a".repeat(1_000_000),
      "!".repeat(43),
      "A".repeat(43), // well-formed, unknown
      "A".repeat(42) + "=",
      "a+b/".repeat(11).slice(0, 43),
      " " + "A".repeat(42),
      undefined,
      null,
      42,
      { token: "x" },
      ["A".repeat(43)],
    ];
    for (const token of tokens) {
      const e = await redeemLoginLink(fleet, { token }).catch((x) => x);
      assert.ok(isLoginInvalid(e), `token ${JSON.stringify(token)?.slice(0, 30)}: ${e}`);
      assert.equal((e as Error).message, "the login link is invalid, expired or already used");
      assert.equal(await operatorSession(fleet, token), undefined);
      assert.equal(await endOperatorSession(fleet, token, "test"), false);
    }
    assert.equal(await head(), seq);
  });

  it("sessions: csrf fixed per session, role read fresh, ended by logout, by the clock at admin.session_lifetime", async () => {
    const link = await createLoginLink(fleet, { name: "alice", actor: "test" });
    const start = await redeemLoginLink(fleet, { token: link.token });
    secrets.push(link.token, start.secret, start.csrf);
    assert.equal(start.csrf, createHmac("sha256", start.secret).update("csrf").digest("base64url"));
    assert.equal(start.expiresAt.getTime() - clock.now().getTime(), 12 * HOUR);
    const seen = await operatorSession(fleet, start.secret);
    assert.deepEqual([seen?.operator, seen?.role, seen?.csrf], ["alice", "operator", start.csrf]);
    await setOperatorRole(fleet, { name: "alice", role: "viewer", actor: "test" });
    assert.equal((await operatorSession(fleet, start.secret))?.role, "viewer", "a role change applies at once");

    clock.offsetMs += 12 * HOUR - 1000;
    assert.ok(await operatorSession(fleet, start.secret));
    clock.offsetMs += 2000;
    assert.equal(await operatorSession(fleet, start.secret), undefined, "expired");

    const link2 = await createLoginLink(fleet, { name: "alice", actor: "test" });
    const second = await redeemLoginLink(fleet, { token: link2.token });
    secrets.push(link2.token, second.secret, second.csrf);
    assert.equal(await endOperatorSession(fleet, second.secret, "operator:alice"), true);
    assert.equal(await endOperatorSession(fleet, second.secret, "operator:alice"), false);
    assert.equal(await operatorSession(fleet, second.secret), undefined, "logged out");
    const audit = await fleet.store.ops.audit.list({});
    assert.ok(audit.some((a) => a.action === "operator.session-start" && JSON.parse(a.details).address === "127.0.0.1"));
    assert.ok(audit.some((a) => a.action === "operator.session-end" && a.actor === "operator:alice"));
  });

  it("remove: certificates revoked, sessions ended, links useless, the directory forgets; the name may come back", async () => {
    const link = await createLoginLink(fleet, { name: "alice", actor: "test" });
    const open = await redeemLoginLink(fleet, { token: link.token });
    const unused = await createLoginLink(fleet, { name: "alice", actor: "test" });
    secrets.push(link.token, open.secret, open.csrf, unused.token);
    const r = await cliAsync(["operator", "remove", "alice", "--json", ...d()]);
    assertOk(r, "operator remove");
    const change = JSON.parse(r.stdout);
    assert.deepEqual(change.cas, ["operators"]);
    for (const c of await fleet.store.ops.certificates.ofKind("operator", "alice")) assert.equal(c.status, "revoked");
    assert.equal(await operatorSession(fleet, open.secret), undefined, "its open session ended");
    await assert.rejects(redeemLoginLink(fleet, { token: unused.token }), isLoginInvalid);
    await assert.rejects(createLoginLink(fleet, { name: "alice", actor: "test" }), /removed/);
    await assert.rejects(setOperatorRole(fleet, { name: "alice", role: "admin", actor: "test" }), /removed/);
    await assert.rejects(removeOperator(fleet, { name: "alice", actor: "test" }), /already removed/);
    await assert.rejects(removeOperator(fleet, { name: "nobody", actor: "test" }), UnknownOperator);
    const audit = await fleet.store.ops.audit.list({});
    const removal = audit.find((a) => a.action === "operator.remove" && a.subject === "operator:alice")!;
    assert.deepEqual(JSON.parse(removal.details).serials, change.serials);
    assert.ok(JSON.parse(removal.details).sessions_ended >= 1);
    for (const serial of change.serials)
      assert.ok(audit.some((a) => a.action === "certificate.revoke" && a.subject === `certificate:${serial}`));
    await feed.poll();
    assert.equal(directory.role("alice"), null);
    assert.equal((await listOperators(fleet)).find((o) => o.name === "alice")?.certificateStatus, "revoked");

    const again = await addOperator(fleet, { name: "alice", role: "viewer", outDir: join(work.path, "alice-again"), actor: "test" });
    secrets.push(again.p12Passphrase);
    await feed.poll();
    assert.equal(directory.role("alice"), "viewer");
    assert.ok(!change.serials.includes(again.serial));
  });

  it("login URL: admin.public_url, else https://<first server name>:<admin port>, token in the fragment", async () => {
    clock.offsetMs = 0; // the CLI's link is made on the system clock
    const r = await cliAsync(["operator", "login", "bob", "--json", ...d()]);
    assertOk(r, "operator login");
    const { url } = JSON.parse(r.stdout) as { url: string };
    const m = /^https:\/\/([^/]+)\/login#([A-Za-z0-9_-]{43})$/.exec(url);
    assert.ok(m, url);
    assert.equal(m![1], `${fleet.config.server.names[0]}:9443`);
    m!.splice(1, 1);
    secrets.push(m![1]!);
    const start = await redeemLoginLink(fleet, { token: m![1] });
    secrets.push(start.secret, start.csrf);
    assert.equal(start.operator, "bob");
    const config = { ...fleet.config, admin: { ...fleet.config.admin, public_url: "https://pki.example/" } };
    const withPublic = Object.create(fleet, { config: { value: config } }) as FleetServices;
    assert.equal(loginUrl(withPublic, "T"), "https://pki.example/login#T");
  });

  it("no token, session secret, CSRF value or PKCS#12 passphrase in any audit row or stored in the clear", async () => {
    assert.ok(secrets.length > 20);
    const rows = await fleet.store.ops.audit.list({});
    const text = rows.map((r) => JSON.stringify(r)).join("\n");
    for (const secret of secrets) assert.ok(!text.includes(secret), `secret ${secret.slice(0, 6)}... in the audit log`);
    const db = new Database(sqlitePath(fleet.config.database.url, f.dir)!, { readonly: true });
    try {
      const stored = JSON.stringify([
        db.prepare("select * from operator_logins").all(),
        db.prepare("select * from operator_sessions").all(),
      ]);
      assert.match(stored, /[0-9a-f]{64}/);
      for (const secret of secrets) assert.ok(!stored.includes(secret));
    } finally {
      db.close();
    }
  });
});

describe("operators: migration of a fleet made before roles", () => {
  it("every operator with a certificate becomes an admin (active unless all its certificates are revoked)", async () => {
    const f = await tempFleet();
    try {
      // gone: an operator whose only certificate is revoked.
      const work = tempDir("fleetpki-operators-mig-");
      const gone = await addOperator(f.fleet, { name: "gone", role: "viewer", outDir: join(work.path, "gone"), actor: "test" });
      work.cleanup();
      const file = sqlitePath(f.fleet.config.database.url, f.dir)!;
      const db = new Database(file);
      db.prepare("update certificates set status = 'revoked' where serial = ?").run(gone.serial);
      db.exec("drop table operators; drop table operator_logins; drop table operator_sessions");
      db.prepare("delete from kysely_migration where name = ?").run("0008_operators");
      db.close();
      const reopened = await FleetServices.open(f.dir);
      try {
        assert.deepEqual(
          (await reopened.store.ops.operators.list()).map((o) => [o.name, o.role, o.status]),
          [
            ["admin", "admin", "active"],
            ["gone", "admin", "removed"],
          ],
        );
      } finally {
        await reopened.close();
      }
    } finally {
      await f.close();
    }
  });
});

describe("operators: the gateway applies role rules and follows role changes", { concurrency: false }, () => {
  const policy = AccessPolicy.parse(
    `version: 1
mode: enforce
rules:
  - name: admins-sys
    operators: { roles: [admin] }
    subscribe: ["$SYS/#"]
  - name: viewers-read
    operators: { roles: [viewer] }
    subscribe: ["fleet/#"]
`,
    "policy.yaml",
  );
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let work: { path: string; cleanup: () => void };
  let client: MqttClient | undefined;

  before(async () => {
    f = await tempFleet();
    work = tempDir("fleetpki-operators-gw-");
    server = await startFleetServer({
      dir: f.dir,
      only: ["gateway"],
      gatewayListen: "127.0.0.1:0",
      policy,
      logger: silentLogger,
    });
  });
  after(async () => {
    await client?.endAsync(true).catch(() => {});
    await server?.close();
    await f?.close();
    work?.cleanup();
  });

  it("a viewer reads fleet/# but not $SYS/#; made admin, the reverse; removed, disconnected", async () => {
    const out = join(work.path, "vic");
    await addOperator(server.fleet, { name: "vic", role: "viewer", outDir: out, actor: "test" });
    await server.changes.poll();
    assert.equal(server.operators.role("vic"), "viewer");
    client = mqtt.connect(`mqtts://127.0.0.1:${server.gateway!.address.port}`, {
      ca: readFileSync(join(out, "ca.pem")),
      cert: readFileSync(join(out, "cert.pem")) + readFileSync(join(out, "chain.pem"), "utf8"),
      key: readFileSync(join(out, "key.pem")),
      servername: "localhost",
      protocolVersion: 4,
      clientId: "vic",
      reconnectPeriod: 0,
    });
    await new Promise<void>((resolve, reject) => (client!.once("connect", () => resolve()), client!.once("error", reject)));
    const granted = (filter: string) =>
      client!.subscribeAsync(filter).then(
        (g) => g[0]!.qos,
        () => 128,
      );
    assert.equal(await granted("fleet/#"), 0);
    assert.equal(await granted("$SYS/#"), 128);

    await setOperatorRole(server.fleet, { name: "vic", role: "admin", actor: "test" });
    await server.changes.poll();
    assert.equal(server.operators.role("vic"), "admin");
    await server.gateway!.recheck();
    assert.equal(await granted("$SYS/#"), 0, "the new role applies to the open session");
    assert.equal(await granted("fleet/#"), 128);

    const closed = new Promise<void>((resolve) => client!.once("close", () => resolve()));
    await removeOperator(server.fleet, { name: "vic", actor: "test" });
    await server.changes.poll();
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error("still connected after 10 s")), 10_000).unref());
    await Promise.race([closed, timeout]);
    assert.equal(server.operators.role("vic"), null);
  });
});

describe("operators: the admin listener reads stored roles and browser sessions", { concurrency: false }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let work: { path: string; cleanup: () => void };
  let base: string;
  let ca: string;
  let vera: { cert: string; key: string };

  before(async () => {
    f = await tempFleet();
    work = tempDir("fleetpki-operators-admin-");
    const out = join(work.path, "vera");
    await addOperator(f.fleet, { name: "vera", role: "viewer", outDir: out, actor: "test" });
    const pem = (name: string) => readFileSync(join(out, name), "utf8");
    vera = { cert: pem("cert.pem") + pem("chain.pem"), key: pem("key.pem") };
    ca = readFileSync(join(out, "ca.pem"), "utf8");
    await addDevice(f.fleet, { id: "robot-1", actor: "test" });
    server = await startFleetServer({ dir: f.dir, only: ["admin"], adminListen: "127.0.0.1:0", logger: silentLogger });
    base = `https://127.0.0.1:${server.admin!.address.port}`;
  });
  after(async () => {
    await server?.close();
    await f?.close();
    work?.cleanup();
  });

  it("certificate and session: the stored role decides, a role change applies, removal ends both", async () => {
    const withCert = { ca, ...vera };
    assert.equal((await https(`${base}/api/devices/robot-1`, withCert)).status, 200);
    assertProblem(await postJson(`${base}/api/devices/robot-1/hold`, {}, withCert), 403, "role-too-weak");

    const link = await createLoginLink(server.fleet, { name: "vera", actor: "test" });
    const session = await redeemLoginLink(server.fleet, { token: link.token });
    const cookie = { ca, headers: { cookie: `${SESSION_COOKIE}=${session.secret}` } };
    assert.equal((await https(`${base}/api/devices/robot-1`, cookie)).status, 200);

    await setOperatorRole(server.fleet, { name: "vera", role: "operator", actor: "test" });
    await server.changes.poll();
    const hold = await postJson(`${base}/api/devices/robot-1/hold`, {}, withCert);
    assert.equal(hold.status, 200, hold.text);
    assertProblem(await postJson(`${base}/api/devices/robot-1/unhold`, {}, cookie), 403, "csrf-missing");
    const csrf = { ...cookie, headers: { ...cookie.headers, [CSRF_HEADER]: session.csrf } };
    const unhold = await postJson(`${base}/api/devices/robot-1/unhold`, {}, csrf);
    assert.equal(unhold.status, 200, unhold.text);

    // Another admin exists (init's), so vera may go.
    await removeOperator(server.fleet, { name: "vera", actor: "test" });
    await server.changes.poll();
    assertProblem(await https(`${base}/api/devices/robot-1`, cookie), 401, "unauthenticated");
    assertProblem(await https(`${base}/api/devices/robot-1`, withCert), 401, "unauthenticated");
  });
});
