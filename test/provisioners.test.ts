// The provisioners behind one interface: the registry the registration server consults, each
// method switched off in fleetpki.yaml (refused with its own error while the others still work),
// and token expiry on an injected clock (no waiting). Real TLS servers on 127.0.0.1:0.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { addDevice } from "../src/authority/devices.js";
import type { FleetServices } from "../src/authority/services.js";
import { createToken } from "../src/authority/enroll/tokens.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer } from "../src/server.js";
import { ManualClock } from "./support/clock.js";
import { ROOT, cliAsync, tempDir, tempFleet } from "./helpers.js";
import { assertProblem, editConfig, https, makeCsr, postJson, rootPemPath, type HttpResult } from "./server-helpers.js";
import { sqliteStore } from "./support/sqlite.js";

type TempFleet = Awaited<ReturnType<typeof tempFleet>>;

async function serve(dir: string, clock?: ManualClock) {
  const server = await startFleetServer({
    dir,
    registrationListen: "127.0.0.1:0",
    statusListen: "127.0.0.1:0",
    gatewayListen: "127.0.0.1:0",
    adminListen: "127.0.0.1:0",
    logger: silentLogger,
    clock,
  });
  return { url: `https://127.0.0.1:${server.registration!.port}`, close: () => server.close() };
}

async function deviceWithToken(fleet: FleetServices, id: string): Promise<string> {
  await addDevice(fleet, { id, actor: "test" });
  return (await createToken(fleet, { deviceId: id, actor: "test" })).token;
}

/** EST simpleenroll with HTTP Basic device-id:token (or none), as an EST client sends it. */
function estEnroll(url: string, ca: string, csrB64: string, basic?: string, tls?: { cert: string; key: string }): Promise<HttpResult> {
  const headers: Record<string, string> = { "content-type": "application/pkcs10" };
  if (basic) headers.authorization = `Basic ${Buffer.from(basic).toString("base64")}`;
  return https(`${url}/.well-known/est/simpleenroll`, { ca, method: "POST", headers, body: csrB64, ...tls });
}

describe("provisioners", { concurrency: true }, () => {
  describe("token expiry on the fleet's clock", { concurrency: false }, () => {
    let f: TempFleet;
    const clock = new ManualClock();
    let server: Awaited<ReturnType<typeof serve>>;
    let ca: string;
    const tokens: Record<string, string> = {};

    before(async () => {
      f = await tempFleet();
      ca = readFileSync(rootPemPath(f.dir), "utf8");
      // Made now, with the default enrollment.token_ttl of 24 h.
      for (const id of ["ttl-early", "ttl-late", "ttl-est"]) tokens[id] = await deviceWithToken(f.fleet, id);
      // The server's time starts after the tokens were made (by the system clock).
      clock.set(Date.now());
      server = await serve(f.dir, clock);
    });
    after(async () => {
      await server?.close();
      await f?.close();
    });

    it("a token used within its TTL enrolls", async () => {
      const { csr } = await makeCsr("ttl-early");
      const r = await postJson(`${server.url}/api/v1/enroll`, { device_id: "ttl-early", token: tokens["ttl-early"], csr: csr.pem }, { ca });
      assert.equal(r.status, 200, r.text);
    });

    it("a token used after its TTL (the server's clock moved 24 h) -> 401 token-expired over JSON and EST, still unspent", async () => {
      clock.advance(24 * 3_600_000 + 1_000);
      const { csr } = await makeCsr("ttl-late");
      const late = { device_id: "ttl-late", token: tokens["ttl-late"], csr: csr.pem };
      const p = assertProblem(await postJson(`${server.url}/api/v1/enroll`, late, { ca }), 401, "token-expired");
      assert.match(p.detail, /expired at/);
      const est = await estEnroll(server.url, ca, (await makeCsr("ttl-est")).csr.b64, `ttl-est:${tokens["ttl-est"]}`);
      assertProblem(est, 401, "token-expired");
      const rows = await sqliteStore(f.fleet).db.selectFrom("enrollment_tokens").select(["device_id", "used_at"]).execute();
      assert.deepEqual(
        rows.filter((r) => r.used_at !== null).map((r) => r.device_id),
        ["ttl-early"],
        "an expired token is not spent",
      );
      const issued = await sqliteStore(f.fleet)
        .db.selectFrom("certificates")
        .select("device_id")
        .where("device_id", "in", ["ttl-late", "ttl-est"])
        .execute();
      assert.deepEqual(issued, [], "nothing issued for an expired token");
    });
  });

  describe("each provisioner switched off in fleetpki.yaml, the others still working", { concurrency: false }, () => {
    let f: TempFleet;
    let out: { path: string; cleanup: () => void };
    let ca: string;
    const bundles: Record<string, { cert: string; key: string }> = {};
    const tokens: Record<string, string> = {};
    let renewable: { cert: string; key: string } | undefined;

    const setSwitches = (s: { token: boolean; factory: boolean; approval: boolean }) =>
      editConfig(f.dir, (doc) => {
        doc.enrollment = { ...(doc.enrollment ?? {}), ...s };
      });

    before(async () => {
      f = await tempFleet();
      out = tempDir("fleetpki-provisioners-");
      ca = readFileSync(rootPemPath(f.dir), "utf8");
      for (const id of ["sw-token1", "sw-token2"]) tokens[id] = await deviceWithToken(f.fleet, id);
      const local = await cliAsync(["ca", "create-local", "--dir", f.dir, "--name", "line1"]);
      assert.equal(local.status, 0, local.stderr);
      const batch = await cliAsync([
        "ca",
        "issue-batch",
        "--dir",
        f.dir,
        "--local",
        "line1",
        "--ids",
        "sw-robot1..sw-robot2",
        "--out",
        out.path,
      ]);
      assert.equal(batch.status, 0, batch.stderr);
      for (const id of ["sw-robot1", "sw-robot2"])
        bundles[id] = {
          cert: readFileSync(join(out.path, id, "cert.pem"), "utf8") + readFileSync(join(out.path, id, "chain.pem"), "utf8"),
          key: readFileSync(join(out.path, id, "key.pem"), "utf8"),
        };
    });
    after(async () => {
      await f?.close();
      out?.cleanup();
    });

    it("token off: a token -> 403 provisioner-disabled (JSON and EST); factory and approval still serve", async () => {
      setSwitches({ token: false, factory: true, approval: true });
      const server = await serve(f.dir);
      try {
        const { csr } = await makeCsr("sw-token1");
        const json = await postJson(
          `${server.url}/api/v1/enroll`,
          { device_id: "sw-token1", token: tokens["sw-token1"], csr: csr.pem },
          { ca },
        );
        const p = assertProblem(json, 403, "provisioner-disabled");
        assert.match(p.detail, /enrollment\.token/);
        assertProblem(await estEnroll(server.url, ca, csr.b64, `sw-token1:${tokens["sw-token1"]}`), 403, "provisioner-disabled");
        // Factory over EST, with the bundle as TLS client certificate.
        const fromFactory = await estEnroll(server.url, ca, (await makeCsr("sw-robot1")).csr.b64, undefined, bundles["sw-robot1"]);
        assert.equal(fromFactory.status, 200, fromFactory.text);
        // Approval: a request without credentials waits for an operator.
        const asked = await postJson(
          `${server.url}/api/v1/enroll`,
          { device_id: "sw-new1", csr: (await makeCsr("sw-new1")).csr.pem },
          { ca },
        );
        assert.equal(asked.status, 202, asked.text);
        // The refused token was not spent: with the switch on again it enrolls (next test).
      } finally {
        await server.close();
      }
    });

    it("factory off: a factory certificate -> 403 provisioner-disabled, a token enrolls; approval off -> 401", async () => {
      setSwitches({ token: true, factory: false, approval: false });
      const server = await serve(f.dir);
      try {
        const second = bundles["sw-robot2"]!;
        const csr2 = (await makeCsr("sw-robot2")).csr;
        const est = await estEnroll(server.url, ca, csr2.b64, undefined, second);
        assert.match(assertProblem(est, 403, "provisioner-disabled").detail, /enrollment\.factory/);
        const json = await https(`${server.url}/api/v1/enroll`, {
          ca,
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ csr: csr2.pem }),
          ...second,
        });
        assertProblem(json, 403, "provisioner-disabled");
        const { key, csr } = await makeCsr("sw-token1");
        const viaToken = await postJson(
          `${server.url}/api/v1/enroll`,
          { device_id: "sw-token1", token: tokens["sw-token1"], csr: csr.pem },
          { ca },
        );
        assert.equal(viaToken.status, 200, viaToken.text);
        const body = viaToken.json() as { certificate: string; chain: string };
        renewable = { cert: body.certificate + body.chain, key: key.keyPem };
        // Approval off: a request without credentials is told what it may present, over EST and JSON.
        const none = await estEnroll(server.url, ca, (await makeCsr("sw-new2")).csr.b64);
        const p = assertProblem(none, 401, "credentials-required");
        assert.match(String(none.headers["www-authenticate"]), /^Basic /);
        assert.doesNotMatch(p.detail, /factory/, "a switched-off method is not offered");
        const noneJson = await postJson(
          `${server.url}/api/v1/enroll`,
          { device_id: "sw-new2", csr: (await makeCsr("sw-new2")).csr.pem },
          { ca },
        );
        assertProblem(noneJson, 401, "credentials-required");
      } finally {
        await server.close();
      }
    });

    it("token, factory and approval all off: renewal over mTLS still works", async () => {
      setSwitches({ token: false, factory: false, approval: false });
      const server = await serve(f.dir);
      try {
        assert.ok(renewable, "the token enrollment above ran");
        const { csr } = await makeCsr("sw-token1");
        const r = await https(`${server.url}/api/v1/renew`, {
          ca,
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ csr: csr.pem }),
          ...renewable,
        });
        assert.equal(r.status, 200, r.text);
        const none = await estEnroll(server.url, ca, (await makeCsr("sw-new3")).csr.b64);
        assert.match(assertProblem(none, 401, "credentials-required").detail, /switched off/);
      } finally {
        await server.close();
      }
    });
  });

  describe("the registry", () => {
    let f: TempFleet;
    before(async () => {
      f = await tempFleet();
    });
    after(async () => {
      await f?.close();
    });

    it("lists one provisioner per file in authority/enroll/provisioners/, and the server's Enrollment consults exactly those", async () => {
      const { Enrollment } = await import("../src/authority/enroll/enrollment.js");
      const { PROVISIONERS } = await import("../src/authority/enroll/provisioners/index.js");
      const dir = join(ROOT, "src", "authority", "enroll", "provisioners");
      const files = readdirSync(dir)
        .filter((n) => n.endsWith(".ts") && n !== "index.ts")
        .map((n) => n.slice(0, -3))
        .sort();
      const enrollment = new Enrollment(f.fleet);
      try {
        const listed = enrollment.list();
        assert.deepEqual(listed.map((p) => p.name).sort(), files);
        assert.deepEqual(
          listed.map((p) => p.name),
          PROVISIONERS.map((p) => p.name),
        );
        // Each file exports the provisioner registered under its name.
        for (const name of files) {
          const module = (await import(join(dir, `${name}.ts`))) as Record<string, unknown>;
          const exported = Object.values(module).filter((v) => PROVISIONERS.includes(v as never));
          assert.equal(exported.length, 1, `${name}.ts exports one registered provisioner`);
          assert.equal((exported[0] as { name: string }).name, name);
        }
        // The default configuration: token and factory on, approval off; renewals have no switch.
        assert.deepEqual(Object.fromEntries(listed.map((p) => [p.name, p.enabled])), {
          token: true,
          factory: true,
          approval: false,
          renewal: true,
          "expired-renewal": true,
        });
      } finally {
        await enrollment.close();
      }
    });

    it("a request is served only by a provisioner of the registry an Enrollment is given", async () => {
      const { Enrollment } = await import("../src/authority/enroll/enrollment.js");
      const { tokenProvisioner } = await import("../src/authority/enroll/provisioners/token.js");
      const { AuthenticationFailed } = await import("../src/authority/errors.js");
      const onlyTokens = new Enrollment(f.fleet, [tokenProvisioner]);
      try {
        const { csr } = await makeCsr("reg-1");
        const factoryLike = {
          operation: "enroll" as const,
          csr: csr.der,
          source: { via: "test" },
          clientCertificate: { der: Buffer.alloc(1) },
        };
        await assert.rejects(
          onlyTokens.enroll(factoryLike),
          (e: unknown) => e instanceof AuthenticationFailed && e.reason === "credentials-required",
        );
        await assert.rejects(
          onlyTokens.enroll({ operation: "renew", csr: csr.der, source: { via: "test" }, clientCertificate: { der: Buffer.alloc(1) } }),
          (e: unknown) => e instanceof AuthenticationFailed && e.reason === "certificate-required",
        );
      } finally {
        await onlyTokens.close();
      }
    });

    it("the transport decides nothing: enroll/server.ts reads no enrollment switch, names no provisioner, holds no SQL", () => {
      const source = readFileSync(join(ROOT, "src", "enroll", "server.ts"), "utf8");
      assert.doesNotMatch(source, /config\.enrollment/);
      assert.doesNotMatch(source, /provisioners\//);
      assert.doesNotMatch(source, /from "kysely"|better-sqlite3|store\.(db|withNative)/);
    });
  });
});
