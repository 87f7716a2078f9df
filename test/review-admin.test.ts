// Attack review of the admin listener (issue 11), against a real server (real TLS, real SQLite):
// privilege escalation through the certificate revoke route, CSRF in its forms, session fixation,
// login-link replay and guessing, path traversal in /assets, secrets in GET answers, hostile JSON,
// cursor forgery, a revoked operator on a kept-alive connection and on a resumed TLS session, and
// X-Forwarded-For at /metrics.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { Agent, request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { after, before, describe, test } from "node:test";
import { addDevice } from "../src/authority/devices.js";
import { createLoginLink } from "../src/authority/identities/operator-sessions.js";
import { addOperator } from "../src/authority/identities/operators.js";
import { revokeCertificate } from "../src/authority/status/revocation.js";
import { SESSION_COOKIE } from "../src/admin/auth.js";
import { assertProblem, https, type HttpResult } from "./server-helpers.js";
import { startAdminFleet, type AdminFleet, type Credential } from "./support/admin-fleet.js";

describe("admin listener under attack", () => {
  let a: AdminFleet;
  const tempDirs: string[] = [];
  const head = async () => (await a.f.fleet.store.ops.audit.head())!.seq;
  const serialOf = async (kind: "operator" | "service" | "server", subject?: string) => {
    const rows = await a.f.fleet.store.ops.certificates.ofKind(kind, subject);
    const live = rows.find((r) => r.status !== "revoked");
    assert.ok(live, `a live ${kind} certificate${subject ? ` of ${subject}` : ""}`);
    return live.serial;
  };
  const statusOf = async (serial: string) => (await a.f.fleet.store.ops.certificates.bySerial(serial))!.status;

  /** A browser session of operator `name`: the cookie header and its CSRF token. */
  async function login(name: string): Promise<{ cookie: string; csrf: string; secret: string }> {
    const { token } = await createLoginLink(a.f.fleet, { name, actor: "test" });
    const res = await https(`${a.base}/api/session`, {
      ca: a.ca,
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token }),
    });
    assert.equal(res.status, 200, res.text);
    const cookie = String(res.headers["set-cookie"]).split(";")[0]!;
    return { cookie, csrf: res.json().csrf, secret: cookie.slice(cookie.indexOf("=") + 1) };
  }

  before(async () => {
    a = await startAdminFleet();
  });
  after(async () => {
    await a?.close();
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  describe("escalation", () => {
    const revoke = (serial: string, who: "operator" | "admin") =>
      https(`${a.base}/api/certificates/${serial}/revoke`, {
        ...a.as(who),
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      });

    test("role operator cannot revoke an admin's, a service's or a server's certificate (admin-only identities)", async () => {
      for (const [kind, subject] of [
        ["operator", "admin"],
        ["service", "telemetry"],
        ["server", undefined],
      ] as const) {
        const serial = await serialOf(kind, subject);
        const seq = await head();
        assertProblem(await revoke(serial, "operator"), 403, "role-too-weak");
        assert.equal(await statusOf(serial), "valid", `${kind} certificate untouched`);
        assert.equal(await head(), seq, "nothing audited");
      }
      // The admin API still works with the admin's certificate.
      assert.equal((await https(`${a.base}/api/operators`, a.as("admin"))).status, 200);
    });

    test("role operator still revokes a device's certificate; an admin may revoke a service's", async () => {
      const device = (await a.f.fleet.store.ops.certificates.ofKind("device", "robot-1")).find((r) => r.status !== "revoked")!;
      const res = await revoke(device.serial, "operator");
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json().kind, "device");
      const service = await serialOf("service", "telemetry");
      assert.equal((await revoke(service, "admin")).status, 200);
      assert.equal(await statusOf(service), "revoked");
    });

    test("a viewer session cannot replace the policy, add or remove operators, or make login links", async () => {
      const viewer = await login("alice");
      const seq = await head();
      const as = (method: string, path: string, body: unknown) =>
        https(`${a.base}${path}`, {
          ca: a.ca,
          method,
          headers: { cookie: viewer.cookie, "x-csrf-token": viewer.csrf, "content-type": "application/json" },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
      assertProblem(await as("PUT", "/api/policy", { yaml: "mode: allow-all\n" }), 403, "role-too-weak");
      assertProblem(await as("POST", "/api/operators", { name: "mallory", role: "admin" }), 403, "role-too-weak");
      assertProblem(await as("DELETE", "/api/operators/admin", undefined), 403, "role-too-weak");
      assertProblem(await as("POST", "/api/operators/alice/login-link", {}), 403, "role-too-weak");
      assert.equal(await head(), seq, "nothing audited");
    });

    test("an admin cannot mint a login link for another admin (it would act, and be audited, as them)", async () => {
      const post = (path: string, body: unknown) =>
        https(`${a.base}${path}`, {
          ...a.as("admin"),
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
      const invited = await post("/api/operators", { name: "dora", role: "admin" });
      assert.equal(invited.status, 201, invited.text);
      const seq = await head();
      assertProblem(await post("/api/operators/dora/login-link", {}), 403, "other-admin");
      assert.equal(await head(), seq, "nothing audited");
      assert.equal((await post("/api/operators/alice/login-link", {})).status, 201, "a viewer's link: allowed");
      assert.equal((await post("/api/operators/admin/login-link", {})).status, 201, "one's own link: allowed");
    });
  });

  describe("sessions and CSRF", () => {
    test("a session's cookie alone, another session's token, or a cross-origin form cannot change anything", async () => {
      const bob = await login("bob");
      const other = await login("admin");
      const seq = await head();
      const post = (headers: Record<string, string>, body: string) =>
        https(`${a.base}/api/devices`, { ca: a.ca, method: "POST", headers: { cookie: bob.cookie, ...headers }, body });
      assertProblem(await post({ "content-type": "application/json" }, '{"id":"csrf-1"}'), 403, "csrf-missing");
      assertProblem(await post({ "content-type": "application/json", "x-csrf-token": other.csrf }, '{"id":"csrf-2"}'), 403, "csrf-invalid");
      // What an HTML form on another origin can send: no custom header, a "simple" content type.
      assertProblem(await post({ "content-type": "text/plain", origin: "https://evil.example" }, '{"id":"csrf-3"}'), 403, "csrf-missing");
      assertProblem(await post({ "content-type": "application/x-www-form-urlencoded" }, "id=csrf-4"), 403, "csrf-missing");
      assertProblem(await post({ "content-type": "multipart/form-data; boundary=x" }, "--x--"), 403, "csrf-missing");
      for (const id of ["csrf-1", "csrf-2", "csrf-3", "csrf-4"]) assert.equal(await a.f.fleet.store.ops.devices.get(id), undefined);
      assert.equal(await head(), seq, "nothing audited");
      // With its own token the same session may (the check is not a blanket refusal).
      const ok = await post({ "content-type": "application/json", "x-csrf-token": bob.csrf }, '{"id":"csrf-ok"}');
      assert.equal(ok.status, 201, ok.text);
    });

    test("removing an operator voids its unused login links: re-added (even as admin), an old link opens nothing", async () => {
      const invited = await https(`${a.base}/api/operators`, {
        ...a.as("admin"),
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: "frank", role: "viewer" }),
      });
      assert.equal(invited.status, 201, invited.text);
      const leaked: string = invited.json().loginUrl.split("#")[1];
      const removed = await https(`${a.base}/api/operators/frank`, { ...a.as("admin"), method: "DELETE" });
      assert.equal(removed.status, 200, removed.text);
      const again = await https(`${a.base}/api/operators`, {
        ...a.as("admin"),
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: "frank", role: "admin" }),
      });
      assert.equal(again.status, 201, again.text);
      const res = await https(`${a.base}/api/session`, {
        ca: a.ca,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ token: leaked }),
      });
      assertProblem(res, 401, "login-invalid");
      // The link given with the new invitation works.
      const fresh = await https(`${a.base}/api/session`, {
        ca: a.ca,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ token: again.json().loginUrl.split("#")[1] }),
      });
      assert.equal(fresh.status, 200, fresh.text);
      assert.equal(fresh.json().role, "admin");
    });

    test("a guessed login token is refused without taking the database's write lock (no rate limit: it must stay cheap)", async () => {
      const store = a.server.fleet.store;
      const original = store.transaction.bind(store);
      let writes = 0;
      store.transaction = ((fn: Parameters<typeof original>[0]) => (writes++, original(fn))) as typeof store.transaction;
      try {
        for (let i = 0; i < 5; i++) {
          const res = await https(`${a.base}/api/session`, {
            ca: a.ca,
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ token: randomBytes(32).toString("base64url") }),
          });
          assertProblem(res, 401, "login-invalid");
        }
        assert.equal(writes, 0, "no write transaction for a token that matches no link");
        // A spent link is refused the same way and as cheaply.
        const { token } = await createLoginLink(a.f.fleet, { name: "alice", actor: "test" });
        const redeem = () =>
          https(`${a.base}/api/session`, {
            ca: a.ca,
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ token }),
          });
        assert.equal((await redeem()).status, 200);
        assert.equal(writes, 1, "the real redeem writes");
        assertProblem(await redeem(), 401, "login-invalid");
        assert.equal(writes, 1);
      } finally {
        store.transaction = original;
      }
    });

    test("POST /api/session (public) reads at most a few KiB: a large unauthenticated body is 413 before parsing", async () => {
      const res = await https(`${a.base}/api/session`, {
        ca: a.ca,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ token: "x".repeat(64 * 1024) }),
      });
      assertProblem(res, 413, "body-too-large");
    });

    test("login CSRF: a cross-origin form cannot post a token (only application/json is parsed)", async () => {
      const { token } = await createLoginLink(a.f.fleet, { name: "alice", actor: "test" });
      for (const [type, body] of [
        ["text/plain", JSON.stringify({ token })],
        ["application/x-www-form-urlencoded", `token=${token}`],
      ] as const) {
        const res = await https(`${a.base}/api/session`, { ca: a.ca, method: "POST", headers: { "content-type": type }, body });
        assertProblem(res, 415, "unsupported-media-type");
        assert.equal(res.headers["set-cookie"], undefined);
      }
    });

    test("with an operator certificate in a browser (no CSRF header), no cross-site simple request reaches a POST", async () => {
      // Certificates are ambient like cookies but SameSite does not apply to them: the guard is that
      // every POST wants a JSON body (a cross-site page can send only none, text/plain, a form or
      // multipart without a preflight), and other unsafe methods always need a preflight.
      const doc = (await https(`${a.base}/api/openapi.json`, { ca: a.ca })).json();
      const params: Record<string, string> = { id: "robot-1", serial: "0a0b0c", name: "alice", clientId: "robot-1" };
      const posts = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
        .filter(([, ops]) => "post" in ops)
        .map(([p]) => p.replace(/\{(\w+)\}/g, (_m, k: string) => params[k]!));
      assert.ok(posts.length >= 10);
      const seq = await head();
      for (const path of posts)
        for (const [type, body] of [
          [undefined, undefined],
          ["text/plain", '{"id":"xsite"}'],
          ["application/x-www-form-urlencoded", "id=xsite"],
          ["multipart/form-data; boundary=b", '--b\r\ncontent-disposition: form-data; name="id"\r\n\r\nxsite\r\n--b--\r\n'],
        ] as const) {
          const headers: Record<string, string> = { origin: "https://evil.example", "sec-fetch-site": "cross-site" };
          if (type) headers["content-type"] = type;
          const res = await https(`${a.base}${path}`, { ...a.as("admin"), method: "POST", headers, ...(body ? { body } : {}) });
          assert.ok(res.status === 400 || res.status === 415, `${path} (${type ?? "no body"}): ${res.status} ${res.text.slice(0, 100)}`);
        }
      assert.equal(await head(), seq, "nothing changed");
    });

    test("session fixation: a cookie the client picks is no session, and a login never adopts it", async () => {
      const planted = randomBytes(32).toString("base64url");
      const cookie = `${SESSION_COOKIE}=${planted}`;
      assertProblem(await https(`${a.base}/api/session`, { ca: a.ca, headers: { cookie } }), 401, "unauthenticated");
      const { token } = await createLoginLink(a.f.fleet, { name: "alice", actor: "test" });
      const res = await https(`${a.base}/api/session`, {
        ca: a.ca,
        method: "POST",
        headers: { cookie, "content-type": "application/json" },
        body: JSON.stringify({ token }),
      });
      assert.equal(res.status, 200, res.text);
      const set = String(res.headers["set-cookie"]);
      assert.match(set, /^__Host-fleetpki-session=[A-Za-z0-9_-]{43}; Path=\/; .*HttpOnly; Secure; SameSite=Strict/);
      assert.ok(!set.includes(planted), "a new secret, not the planted one");
      assertProblem(await https(`${a.base}/api/session`, { ca: a.ca, headers: { cookie } }), 401, "unauthenticated");
    });

    test("a login link works once; guessed tokens all get the same 401 and spend nothing", async () => {
      const { token } = await createLoginLink(a.f.fleet, { name: "alice", actor: "test" });
      const redeem = (t: string) =>
        https(`${a.base}/api/session`, {
          ca: a.ca,
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ token: t }),
        });
      const seq = await head();
      for (let i = 0; i < 20; i++) assertProblem(await redeem(randomBytes(32).toString("base64url")), 401, "login-invalid");
      assertProblem(await redeem(`${token.slice(0, -1)}${token.endsWith("A") ? "B" : "A"}`), 401, "login-invalid");
      assert.equal(await head(), seq, "failed guesses write nothing");
      assert.equal((await redeem(token)).status, 200);
      assertProblem(await redeem(token), 401, "login-invalid");
    });
  });

  describe("what a viewer can read", () => {
    test("no GET answer of the API holds a private key, a login token, a session secret or a passphrase", async () => {
      const viewer = await login("alice");
      const { token } = await createLoginLink(a.f.fleet, { name: "bob", actor: "test" });
      const doc = (await https(`${a.base}/api/openapi.json`, { ca: a.ca })).json();
      const paths = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
        .filter(([p, ops]) => "get" in ops && !p.includes("{"))
        .map(([p]) => p);
      assert.ok(paths.length >= 8, paths.join(" "));
      const created = await https(`${a.base}/api/devices/robot-1/tokens`, {
        ...a.as("operator"),
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      assert.equal(created.status, 201, created.text);
      const secrets = [token, viewer.secret, a.f.fleet.passphrase(), created.json().token as string];
      for (const path of [...paths, "/api/devices/robot-1", "/api/operators"]) {
        for (const who of ["viewer", "admin"] as const) {
          const res: HttpResult = await https(
            `${a.base}${path}`,
            who === "viewer" ? { ca: a.ca, headers: { cookie: viewer.cookie } } : a.as("admin"),
          );
          assert.doesNotMatch(res.text, /PRIVATE KEY/, `${path} as ${who}`);
          for (const s of secrets) assert.ok(!res.text.includes(s), `${path} as ${who} holds a secret`);
        }
      }
    });
  });

  describe("hostile requests", () => {
    test("other spellings of a route and other methods get no way around its role", async () => {
      const viewer = a.as("viewer");
      assert.equal((await https(`${a.base}/api/operators`, { ...viewer, method: "HEAD" })).status, 403, "HEAD of an admin route");
      assert.equal((await https(`${a.base}/api/operators`, { ca: a.ca, method: "HEAD" })).status, 401);
      const seq = await head();
      const override = { "x-http-method-override": "DELETE", "x-method-override": "DELETE", "content-type": "application/json" };
      const res = await https(`${a.base}/api/operators/bob`, { ...viewer, method: "GET", headers: override });
      assert.ok(res.status === 404 || res.status === 405, `GET with a method override: ${res.status}`);
      assert.equal(await head(), seq, "nothing removed");
      for (const path of ["//api/operators", "/API/operators", "/api/operators/", "/api/./operators", "/api/%6fperators"]) {
        const r = await https(`${a.base}${path}`, viewer);
        assert.ok(r.status === 403 || r.status === 404, `${path}: ${r.status} ${r.text.slice(0, 80)}`);
      }
      for (const path of ["/documentation", "/documentation/json", "/documentation/static/index.html"])
        assert.equal((await https(`${a.base}${path}`, { ca: a.ca })).status, 404, path);
    });

    test("path traversal in /assets: never a file outside the dashboard, never index.html by name", async () => {
      for (const path of [
        "/assets/..%2F..%2F..%2Fpackage.json",
        "/assets/%2e%2e%2fauth.ts",
        "/assets/..\\server.ts",
        "/assets/index.html",
        "/assets/style.css%00.js",
        "/assets/./app.js/..",
      ]) {
        const res = await https(`${a.base}${path}`, { ca: a.ca });
        assert.ok(res.status === 400 || res.status === 404, `${path}: ${res.status}`);
        assert.doesNotMatch(res.text, /"dependencies"|import |<html/i, path);
      }
      assert.equal((await https(`${a.base}/assets/app.js`, { ca: a.ca })).status, 200);
    });

    test("deeply nested, oversized and prototype-polluting JSON: 400/413 and the server keeps answering", async () => {
      const post = (body: string) =>
        https(`${a.base}/api/policy/test`, { ...a.as("viewer"), method: "POST", headers: { "content-type": "application/json" }, body });
      const deep = "[".repeat(500_000) + "]".repeat(500_000);
      assert.ok([400, 413].includes((await post(deep)).status));
      assertProblem(await post(`{"device":"robot-1","action":"publish","topic":${JSON.stringify("t".repeat(1024 * 1024 + 8192))}}`), 413);
      assertProblem(await post('{"__proto__":{"admin":true},"device":"robot-1","action":"publish","topic":"a"}'), 400);
      assertProblem(await post('{"constructor":{"prototype":{"x":1}},"device":"robot-1","action":"publish","topic":"a"}'), 400);
      assert.equal(({} as Record<string, unknown>).admin, undefined);
      assert.equal((await https(`${a.base}/api/session`, a.as("viewer"))).status, 200);
    });

    test("cursor forgery: an altered key, another list's cursor, another filter's cursor are refused", async () => {
      for (let i = 0; i < 3; i++) await addDevice(a.f.fleet, { id: `cur-${i}`, actor: "test" });
      const page = await https(`${a.base}/api/devices?limit=1`, a.as("viewer"));
      const cursor: string = page.json().nextCursor;
      assert.ok(cursor);
      const [body, mac] = cursor.split(".") as [string, string];
      const decoded = JSON.parse(Buffer.from(body, "base64url").toString());
      const forged = `${Buffer.from(JSON.stringify({ ...decoded, k: "zzz" })).toString("base64url")}.${mac}`;
      assertProblem(await https(`${a.base}/api/devices?limit=1&cursor=${forged}`, a.as("viewer")), 400, "invalid-cursor");
      assertProblem(await https(`${a.base}/api/devices?limit=1&state=active&cursor=${cursor}`, a.as("viewer")), 400, "invalid-cursor");
      assertProblem(await https(`${a.base}/api/certificates?limit=1&cursor=${cursor}`, a.as("viewer")), 400, "invalid-cursor");
      assert.equal((await https(`${a.base}/api/devices?limit=1&cursor=${cursor}`, a.as("viewer"))).status, 200);
    });

    test("/metrics ignores X-Forwarded-For and Forwarded from an address outside the allow-list", async () => {
      const spoofs: Record<string, string>[] = [
        { "x-forwarded-for": "127.0.0.1" },
        { forwarded: "for=127.0.0.1" },
        { "x-real-ip": "127.0.0.1" },
      ];
      for (const headers of spoofs)
        assertProblem(await https(`${a.base}/metrics`, { ca: a.ca, localAddress: "127.0.0.2", headers }), 401, "unauthenticated");
      assert.equal((await https(`${a.base}/metrics`, { ca: a.ca })).status, 200, "127.0.0.1 itself is allowed");
    });
  });

  test("/metrics on a dual-stack listener: IPv4 peers arrive IPv4-mapped and match the allow-list as IPv4", async (t) => {
    const { startFleetServer } = await import("../src/server.js");
    const { silentLogger } = await import("../src/log.js");
    let dual: Awaited<ReturnType<typeof startFleetServer>>;
    try {
      dual = await startFleetServer({ dir: a.f.dir, only: ["admin"], adminListen: "[::]:0", logger: silentLogger });
    } catch (e) {
      t.skip(`no IPv6 listener here: ${(e as Error).message}`);
      return;
    }
    try {
      const url = `https://127.0.0.1:${dual.admin!.address.port}/metrics`;
      assert.equal((await https(url, { ca: a.ca })).status, 200, "::ffff:127.0.0.1 is 127.0.0.1");
      assertProblem(await https(url, { ca: a.ca, localAddress: "127.0.0.2" }), 401, "unauthenticated");
      const spoofed = { ca: a.ca, localAddress: "127.0.0.2", headers: { "x-forwarded-for": "::1, 127.0.0.1" } };
      assertProblem(await https(url, spoofed), 401, "unauthenticated");
    } finally {
      await dual.close();
    }
  });

  // After the tests that need other admins: it removes every admin but "admin".
  test("the last active admin cannot remove itself through the API (nothing changes)", async () => {
    const list = (await https(`${a.base}/api/operators`, a.as("admin"))).json() as { name: string; role: string; status: string }[];
    for (const o of list.filter((x) => x.role === "admin" && x.status === "active" && x.name !== "admin")) {
      const gone = await https(`${a.base}/api/operators/${o.name}`, { ...a.as("admin"), method: "DELETE" });
      assert.equal(gone.status, 200, gone.text);
    }
    const seq = await head();
    const res = await https(`${a.base}/api/operators/admin`, { ...a.as("admin"), method: "DELETE" });
    assert.match(assertProblem(res, 400, "invalid-argument").detail, /last active admin/);
    assert.equal(await head(), seq, "nothing audited");
    assert.equal((await https(`${a.base}/api/operators`, a.as("admin"))).status, 200, "the admin still works");
  });

  describe("a revoked operator certificate", () => {
    /** A new viewer operator with its credential and serial (each test revokes its own). */
    async function newViewer(name: string): Promise<{ cred: Credential; serial: string }> {
      const outDir = mkdtempSync(join(tmpdir(), "review-op-"));
      tempDirs.push(outDir);
      const added = await addOperator(a.f.fleet, { name, role: "viewer", outDir, actor: "test" });
      const pem = (f: string) => readFileSync(join(added.dir, f), "utf8");
      await a.server.changes.poll();
      return { cred: { cert: pem("cert.pem") + pem("chain.pem"), key: pem("key.pem") }, serial: added.serial };
    }

    /** GET through `agent`: the status and whether the socket was reused / the TLS session resumed. */
    function get(agent: Agent, cred: Credential, path: string): Promise<{ status: number; reused: boolean; resumed: boolean }> {
      const u = new URL(a.base + path);
      return new Promise((resolve, reject) => {
        const req = httpsRequest(
          { host: u.hostname, port: u.port, path: u.pathname, agent, ca: a.ca, ...cred, servername: "localhost" },
          (res) => {
            // Read now: a kept-alive socket is detached from the response by its end.
            const resumed = (res.socket as TLSSocket).isSessionReused();
            res.resume();
            res.on("end", () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket, resumed }));
          },
        );
        req.on("error", reject);
        req.end();
      });
    }

    test("stops working on a connection kept alive across the revocation (auth is per request)", async () => {
      const { cred, serial } = await newViewer("dave");
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const first = await get(agent, cred, "/api/session");
        assert.equal(first.status, 200);
        await revokeCertificate(a.f.fleet, { serial, actor: "test" });
        await a.server.changes.poll();
        const second = await get(agent, cred, "/api/session");
        assert.equal(second.reused, true, "the same TLS connection");
        assert.equal(second.status, 401);
      } finally {
        agent.destroy();
      }
    });

    test("stops working on a resumed TLS session", async () => {
      const { cred, serial } = await newViewer("erin");
      const agent = new Agent({ keepAlive: false, maxCachedSessions: 10 });
      try {
        assert.equal((await get(agent, cred, "/api/session")).status, 200);
        // TLS 1.3 tickets arrive after the handshake: a second full request makes sure one is cached.
        await get(agent, cred, "/api/session");
        await revokeCertificate(a.f.fleet, { serial, actor: "test" });
        await a.server.changes.poll();
        const later = await get(agent, cred, "/api/session");
        assert.equal(later.resumed, true, "the TLS session was resumed");
        assert.equal(later.status, 401);
      } finally {
        agent.destroy();
      }
    });
  });
});
