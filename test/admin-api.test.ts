// The admin listener's skeleton against a real fleet and real TLS: operator certificates, roles,
// problem bodies, strict schemas, the OpenAPI document.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { OperatorRole } from "../src/access/identity.js";
import { issueOwnLeaf } from "../src/authority/ca/init.js";
import { addDevice } from "../src/authority/devices.js";
import { layout } from "../src/authority/layout.js";
import { revokeCertificate } from "../src/authority/status/revocation.js";
import { readPrivateKey } from "../src/keys/keys.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { operatorSpiffeId } from "../src/x509/profiles.js";
import { tempFleet } from "./helpers.js";
import { assertProblem, https, postJson, rootPemPath, type HttpOptions } from "./server-helpers.js";

interface Operator {
  cert: string;
  key: string;
  serial: string;
}

describe("admin API skeleton", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let server: FleetServer;
  let base: string;
  let ca: string;
  const roles = new Map<string, OperatorRole>();
  const ops: Record<string, Operator> = {};

  async function operator(name: string, role: OperatorRole | undefined): Promise<Operator> {
    const dirRel = layout.operatorDir(name);
    let serial = "";
    if (name !== "admin") {
      const record = await issueOwnLeaf(
        f.fleet,
        {
          caId: "operators",
          kind: "operator",
          commonName: name,
          sans: [{ uri: operatorSpiffeId(f.fleet.domain, name) }],
          dirRel,
          lifetime: "30d",
        },
        "test",
        new Date(),
      );
      serial = record.issued.serialHex;
    }
    if (role) roles.set(name, role);
    const dir = f.fleet.path(dirRel);
    const key = readPrivateKey(join(dir, "key.pem"), f.fleet.passphrase()).export({ type: "pkcs8", format: "pem" }).toString();
    return { cert: readFileSync(join(dir, "cert.pem"), "utf8") + readFileSync(join(dir, "chain.pem"), "utf8"), key, serial };
  }

  const as = (who: Operator | undefined): HttpOptions => (who ? { ca, cert: who.cert, key: who.key } : { ca });

  before(async () => {
    f = await tempFleet();
    ca = readFileSync(rootPemPath(f.dir), "utf8");
    ops.admin = await operator("admin", "admin");
    ops.alice = await operator("alice", "viewer");
    ops.bob = await operator("bob", "operator");
    ops.nobody = await operator("nobody", undefined);
    ops.gone = await operator("gone", "admin");
    await addDevice(f.fleet, { id: "robot-1", actor: "test" });
    await revokeCertificate(f.fleet, { serial: ops.gone.serial, actor: "test" });
    server = await startFleetServer({
      dir: f.dir,
      only: ["admin"],
      adminListen: "127.0.0.1:0",
      logger: silentLogger,
      operators: { role: (n) => roles.get(n) ?? null },
    });
    await server.changes.poll();
    base = `https://127.0.0.1:${server.admin!.address.port}`;
  });
  after(async () => {
    await server?.close();
    await f?.close();
  });

  test("no credential: 401 with a problem body; the OpenAPI document is public", async () => {
    assertProblem(await https(`${base}/api/devices/robot-1`, as(undefined)), 401, "unauthenticated");
    const doc = await https(`${base}/api/openapi.json`, as(undefined));
    assert.equal(doc.status, 200);
    const spec = doc.json();
    assert.match(spec.openapi, /^3\./);
    assert.ok(spec.paths["/api/devices/{id}"]?.get, "the device route is documented");
    assert.ok(spec.paths["/api/devices/{id}/revoke"]?.post.requestBody, "with its body schema");
  });

  test("an operator certificate authenticates; roles decide; every answer carries the security headers", async () => {
    const shown = await https(`${base}/api/devices/robot-1`, as(ops.alice));
    assert.equal(shown.status, 200, shown.text);
    assert.equal(shown.json().id, "robot-1");
    assert.match(String(shown.headers["content-security-policy"]), /script-src 'self'/);
    assert.equal(shown.headers["cache-control"], "no-store");
    const weak = await postJson(`${base}/api/devices/robot-1/hold`, {}, as(ops.alice));
    assertProblem(weak, 403, "role-too-weak");
    assertProblem(await https(`${base}/api/devices/robot-1`, as(ops.nobody)), 401, "unauthenticated");
    assertProblem(await https(`${base}/api/devices/robot-1`, as(ops.gone)), 401, "unauthenticated");
  });

  test("bad input: unknown field, wrong type, bad JSON, oversized body, unknown device; nothing changes", async () => {
    const url = `${base}/api/devices/robot-1/revoke`;
    assertProblem(await postJson(url, { reason: "keyCompromise", force: true }, as(ops.bob)), 400, "invalid-request");
    assertProblem(await postJson(url, { reason: 7 }, as(ops.bob)), 400, "invalid-request");
    assertProblem(await postJson(url, { reason: "becauseISaidSo" }, as(ops.bob)), 400, "invalid-request");
    const badJson = await https(url, { ...as(ops.bob), method: "POST", headers: { "content-type": "application/json" }, body: "{" });
    assertProblem(badJson, 400, "invalid-json");
    const huge = await https(url, {
      ...as(ops.bob),
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ reason: "x".repeat(2 * 1024 * 1024) }),
    });
    assertProblem(huge, 413, "body-too-large");
    const text = await https(url, { ...as(ops.bob), method: "POST", headers: { "content-type": "text/plain" }, body: "x" });
    assertProblem(text, 415);
    assertProblem(await postJson(`${base}/api/devices/robot-404/revoke`, {}, as(ops.bob)), 404, "unknown-device");
    assertProblem(await https(`${base}/api/devices/Robot!`, as(ops.bob)), 400, "invalid-request");
    assertProblem(await https(`${base}/api/nothing-here`, as(ops.bob)), 404, "not-found");
    assert.equal((await f.fleet.store.ops.devices.get("robot-1"))!.status, "active");
  });

  test("an operator revokes a device; the audit row names the operator", async () => {
    const res = await postJson(`${base}/api/devices/robot-1/revoke`, { reason: "keyCompromise" }, as(ops.bob));
    assert.equal(res.status, 200, res.text);
    assert.equal((await f.fleet.store.ops.devices.get("robot-1"))!.status, "revoked");
    const rows = await f.fleet.store.ops.audit.list({});
    const row = rows.find((r) => r.action === "device.revoke");
    assert.equal(row?.actor, "operator:bob");
  });
});
