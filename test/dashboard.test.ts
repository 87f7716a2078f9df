// The dashboard in a real browser (Debian's chromium driven by playwright-core) against a real
// server, database and gateway: an operator logs in from a one-time link, finds a device, revokes
// it with confirmation, and sees it revoked and its MQTT session gone; a viewer sees no revoke
// button, and forged requests (the viewer's session with its CSRF token; an operator's session
// without one) get 403 and change nothing. Plus the session API itself over plain HTTPS.
import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import mqtt from "mqtt";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { enroll } from "../src/agent/enroll.js";
import { addDevice } from "../src/authority/devices.js";
import { createLoginLink } from "../src/authority/identities/operator-sessions.js";
import { addOperator } from "../src/authority/identities/operators.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { sha256Fingerprint } from "../src/x509/certificate.js";
import { fromPem } from "../src/x509/pem.js";
import { tempFleet } from "./helpers.js";
import { assertProblem, https, postJson, rootPemPath } from "./server-helpers.js";

const CHROMIUM = "/usr/bin/chromium";
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)`;

/** base64 SHA-256 of the server certificate's SubjectPublicKeyInfo: what Chromium's SPKI pin list takes. */
function spkiPin(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

describe("dashboard in a real browser", { skip, timeout: 120_000 }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let browser: Browser;
  let base: string;
  let ca: string;
  let out: string;
  const contexts: BrowserContext[] = [];
  const clients: mqtt.MqttClient[] = [];

  before(async () => {
    f = await tempFleet();
    ca = readFileSync(rootPemPath(f.dir), "utf8");
    out = mkdtempSync(join(tmpdir(), "fleetpki-dashboard-"));
    await addOperator(f.fleet, { name: "olga", role: "operator", outDir: join(out, "olga"), actor: "test" });
    await addOperator(f.fleet, { name: "vera", role: "viewer", outDir: join(out, "vera"), actor: "test" });
    server = await startFleetServer({
      dir: f.dir,
      only: ["registration", "gateway", "admin"],
      registrationListen: "127.0.0.1:0",
      gatewayListen: "127.0.0.1:0",
      adminListen: "127.0.0.1:0",
      logger: silentLogger,
    });
    // localhost is one of the server certificate's names; Chromium trusts exactly this server's key.
    base = `https://localhost:${server.admin!.address.port}`;
    const serverCert = readFileSync(join(f.dir, "server", "cert.pem"), "utf8");
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", `--ignore-certificate-errors-spki-list=${spkiPin(serverCert)}`],
    });
  });

  after(async () => {
    for (const c of clients) c.end(true);
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await server?.close();
    await f?.close();
    if (out) rmSync(out, { recursive: true, force: true });
  });

  /** Enrolls a device with the agent and connects it to the gateway with an MQTT client. */
  async function connectedDevice(id: string): Promise<{ closed: Promise<void> }> {
    const added = await addDevice(server.fleet, { id, actor: "test", token: {} });
    const dir = join(out, `agent-${id}`);
    const rootFp = `sha256:${sha256Fingerprint(fromPem(ca, ["CERTIFICATE"]))}`;
    await enroll({
      server: `https://127.0.0.1:${server.registration!.port}`,
      rootFingerprint: rootFp,
      deviceId: id,
      mode: { kind: "token", token: added.token!.token },
      dir,
    });
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${server.gateway!.address.port}`, {
      clientId: id,
      key: readFileSync(join(dir, "key.pem")),
      cert: readFileSync(join(dir, "cert.pem")),
      ca: readFileSync(join(dir, "ca.pem")),
      servername: "localhost",
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    clients.push(client);
    const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
    assert.ok(
      server.gateway!.sessions().some((s) => s.id === id),
      `${id} is connected`,
    );
    return { closed };
  }

  /** A fresh browser profile logged in through `/login#<token>`. */
  async function loggedIn(name: string): Promise<Page> {
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    const link = await createLoginLink(server.fleet, { name, actor: "test" });
    await page.goto(`${base}/login#${link.token}`);
    await page.locator("#operator").waitFor();
    assert.ok(!page.url().includes(link.token), `the token is gone from the address bar: ${page.url()}`);
    return page;
  }

  test("an operator logs in, finds a device, revokes it; it shows revoked and its gateway session is gone", async () => {
    await addDevice(server.fleet, { id: "robot-2", actor: "test" });
    const robot = await connectedDevice("robot-7");
    const page = await loggedIn("olga");
    assert.equal(await page.locator("#operator").textContent(), "olga (operator)");

    const cookies = await page.context().cookies();
    const cookie = cookies.find((c) => c.name === "__Host-fleetpki-session");
    assert.ok(cookie, "the session cookie is set");
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.secure, true);
    assert.equal(cookie.sameSite, "Strict");
    assert.equal(cookie.path, "/");
    assert.equal(await page.evaluate(() => document.cookie), "", "scripts cannot read the session cookie");

    await page.click('nav a[href="/devices"]');
    await page.fill('#device-search input[name="q"]', "robot-7");
    await page.press('#device-search input[name="q"]', "Enter");
    // The search answers from GET /api/devices: robot-7 alone, connected to the gateway now.
    await page.locator("#device-results tbody tr").first().waitFor();
    assert.equal(await page.locator("#device-results tbody tr").count(), 1);
    assert.match((await page.locator("#device-results tbody tr").textContent()) ?? "", /robot-7.*active.*yes/);
    await page.click('#device-results a[href="/devices/robot-7"]');
    await page.locator("#device-status").waitFor();
    assert.equal(await page.locator("#device-status").textContent(), "active");
    assert.equal(await page.locator("#device-connected").getAttribute("data-connected"), "true");

    // Cancel first: nothing happens.
    await page.click("#device-revoke");
    await page.click("#confirm-cancel");
    assert.equal((await server.fleet.store.ops.devices.get("robot-7"))!.status, "active");

    await page.click("#device-revoke");
    await page.click("#confirm-ok");
    await page.locator("#device-status", { hasText: "revoked" }).waitFor();
    assert.equal((await server.fleet.store.ops.devices.get("robot-7"))!.status, "revoked");
    const row = (await server.fleet.store.ops.audit.list({})).find((r) => r.action === "device.revoke" && r.subject === "device:robot-7");
    assert.equal(row?.actor, "operator:olga");

    // The gateway follows the change feed and closes the session (within a second on an idle machine).
    await robot.closed;
    assert.ok(!server.gateway!.sessions().some((s) => s.id === "robot-7"), "no gateway session of robot-7");
    await page.reload();
    await page.locator("#device-status", { hasText: "revoked" }).waitFor();
    assert.equal(await page.locator("#device-connected").getAttribute("data-connected"), "false", "the page shows it disconnected");
    assert.equal(await page.locator("#device-revoke").count(), 0, "a revoked device offers no revoke");
    const shown = (await page.locator("main").textContent()) ?? "";
    assert.match(shown, /revoked/, "its certificate shows revoked");
    assert.match(shown, /operator:olga\s*device\.revoke/, "the recent events name the revoke and who did it");

    // An operator's session without the CSRF header: 403, nothing changes.
    const noCsrf = await page.evaluate(async () => {
      const r = await fetch("/api/devices/robot-2/hold", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
      return { status: r.status, body: await r.json() };
    });
    assert.equal(noCsrf.status, 403);
    assert.match(noCsrf.body.type, /csrf-missing$/);
    assert.equal((await server.fleet.store.ops.devices.get("robot-2"))!.status, "active");

    // Logging out ends the session on the server too.
    await page.click("#logout");
    await page.locator("h1", { hasText: "Log in" }).waitFor();
    const after = await page.evaluate(async () => (await fetch("/api/session")).status);
    assert.equal(after, 401);
  });

  test("a viewer sees no revoke button; a forged revoke with the viewer's session and CSRF token gets 403", async () => {
    await addDevice(server.fleet, { id: "robot-8", actor: "test" });
    const page = await loggedIn("vera");
    await page.goto(`${base}/devices/robot-8`);
    await page.locator("#device-status").waitFor();
    assert.equal(await page.locator("#device-revoke").count(), 0);
    assert.equal(await page.locator("#device-actions").count(), 0);

    const forged = await page.evaluate(async () => {
      const me = await (await fetch("/api/session")).json();
      const r = await fetch("/api/devices/robot-8/revoke", {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": me.csrf },
        body: "{}",
      });
      return { role: me.role, csrf: typeof me.csrf, status: r.status, body: await r.json() };
    });
    assert.equal(forged.role, "viewer");
    assert.equal(forged.csrf, "string");
    assert.equal(forged.status, 403);
    assert.match(forged.body.type, /role-too-weak$/);
    const forgedCsrf = await page.evaluate(async () => {
      const r = await fetch("/api/devices/robot-8/revoke", {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": "forged" },
        body: "{}",
      });
      return r.status;
    });
    assert.equal(forgedCsrf, 403);
    assert.equal((await server.fleet.store.ops.devices.get("robot-8"))!.status, "active");
  });

  test("every page loads under the CSP without errors; an endpoint the server lacks reads 'not available'", async () => {
    const page = await loggedIn("olga");
    const errors: string[] = [];
    page.on("console", (m) => {
      // A 404 of an endpoint this server lacks is logged by the browser as a failed resource; that is expected.
      if (m.type() === "error" && !/404/.test(m.text())) errors.push(m.text());
    });
    page.on("pageerror", (e) => errors.push(e.message));
    for (const path of ["/", "/devices", "/approvals", "/cas", "/audit", "/policy", "/gateway"]) {
      await page.goto(`${base}${path}`);
      await page.locator("main h1").first().waitFor();
      assert.equal(await page.locator("main .notice.error").count(), 0, `${path}: ${await page.locator("main").textContent()}`);
    }
    assert.deepEqual(errors, [], "no script error and no CSP violation");
    // A server without the CAs route (an older or partial deployment) answers 404 not-found.
    await page.route("**/api/cas", (route) =>
      route.fulfill({
        status: 404,
        contentType: "application/problem+json",
        body: JSON.stringify({ type: "https://fleetpki.dev/problems/not-found", title: "Not Found", status: 404, detail: "no" }),
      }),
    );
    await page.goto(`${base}/cas`);
    await page.locator("main .notice.unavailable", { hasText: "not available" }).waitFor();
  });
});

describe("session API", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let base: string;
  let ca: string;
  let out: string;

  before(async () => {
    f = await tempFleet();
    ca = readFileSync(rootPemPath(f.dir), "utf8");
    out = mkdtempSync(join(tmpdir(), "fleetpki-session-"));
    await addOperator(f.fleet, { name: "olga", role: "operator", outDir: join(out, "olga"), actor: "test" });
    server = await startFleetServer({ dir: f.dir, only: ["admin"], adminListen: "127.0.0.1:0", logger: silentLogger });
    base = `https://127.0.0.1:${server.admin!.address.port}`;
  });
  after(async () => {
    await server?.close();
    await f?.close();
    if (out) rmSync(out, { recursive: true, force: true });
  });

  test("a login token starts one session: cookie attributes, GET, DELETE; the token works once", async () => {
    const { token } = await createLoginLink(server.fleet, { name: "olga", actor: "test" });
    const started = await postJson(`${base}/api/session`, { token }, { ca });
    assert.equal(started.status, 200, started.text);
    const body = started.json();
    assert.equal(body.operator, "olga");
    assert.equal(body.role, "operator");
    assert.equal(typeof body.csrf, "string");
    const setCookie = String(started.headers["set-cookie"]);
    assert.match(setCookie, /^__Host-fleetpki-session=[A-Za-z0-9_-]{43}; Path=\/; Max-Age=43200; HttpOnly; Secure; SameSite=Strict$/);
    assert.ok(!setCookie.includes(token));
    const cookie = setCookie.split(";")[0]!;

    const me = await https(`${base}/api/session`, { ca, headers: { cookie } });
    assert.equal(me.status, 200, me.text);
    assert.equal(me.json().csrf, body.csrf);
    assertProblem(await postJson(`${base}/api/session`, { token }, { ca }), 401, "login-invalid");

    assertProblem(await https(`${base}/api/session`, { ca, method: "DELETE", headers: { cookie } }), 403, "csrf-missing");
    const out = await https(`${base}/api/session`, { ca, method: "DELETE", headers: { cookie, "x-csrf-token": body.csrf } });
    assert.equal(out.status, 204, out.text);
    assert.match(String(out.headers["set-cookie"]), /Max-Age=0/);
    assertProblem(await https(`${base}/api/session`, { ca, headers: { cookie } }), 401, "unauthenticated");
    const rows = await server.fleet.store.ops.audit.list({});
    assert.ok(rows.some((r) => r.action === "operator.session-end" && r.actor === "operator:olga"));
    assert.ok(!JSON.stringify(rows).includes(token), "no token in the audit log");
    assert.ok(!JSON.stringify(rows).includes(cookie.split("=")[1]!), "no session secret in the audit log");
  });

  test("bad login input: unknown, malformed, unknown field, wrong type; no cookie, no session", async () => {
    const before = (await server.fleet.store.ops.audit.list({})).length;
    for (const token of ["A".repeat(43), "not a token", "x"]) {
      const res = await postJson(`${base}/api/session`, { token }, { ca });
      assertProblem(res, 401, "login-invalid");
      assert.equal(res.headers["set-cookie"], undefined);
    }
    assertProblem(await postJson(`${base}/api/session`, { token: "x".repeat(300) }, { ca }), 400, "invalid-request");
    assertProblem(await postJson(`${base}/api/session`, { token: "A".repeat(43), role: "admin" }, { ca }), 400, "invalid-request");
    assertProblem(await postJson(`${base}/api/session`, { token: 42 }, { ca }), 400, "invalid-request");
    assertProblem(await postJson(`${base}/api/session`, {}, { ca }), 400, "invalid-request");
    assert.equal((await server.fleet.store.ops.audit.list({})).length, before);
  });

  test("the dashboard's files are served with the CSP; no other file is", async () => {
    for (const path of ["/", "/login", "/devices", "/devices/robot-1", "/audit"]) {
      const res = await https(`${base}${path}`, { ca });
      assert.equal(res.status, 200, path);
      assert.match(String(res.headers["content-type"]), /^text\/html/);
      assert.match(String(res.headers["content-security-policy"]), /script-src 'self'; style-src 'self'/);
      assert.ok(!/<script>|\sstyle=|\son[a-z]+=/i.test(res.text), "no inline script, style or handler");
    }
    const js = await https(`${base}/assets/app.js`, { ca });
    assert.equal(js.status, 200);
    assert.match(String(js.headers["content-type"]), /^text\/javascript/);
    for (const path of ["/assets/..%2Fserver.js", "/assets/index.html", "/assets/nope.js", "/assets/%2e%2e%2f%2e%2e%2fpackage.json"])
      assert.ok([400, 404].includes((await https(`${base}${path}`, { ca })).status), path);
    assertProblem(await https(`${base}/devices/Not!An!Id`, { ca }), 400, "invalid-request");
  });
});
