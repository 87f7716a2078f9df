// The admin API's RBAC matrix against a real server, real TLS and the fleet's operators table: every
// operation of the OpenAPI document (read at run time, so new routes are covered without editing this
// file) x {no credential, viewer, operator, admin}: 401 without a credential, 403 role-too-weak below
// the operation's role, never 401/403 at or above it. Certificates that are not (or no longer) an
// operator's authenticate no one.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { https, type HttpResult } from "./server-helpers.js";
import { startAdminFleet, type AdminFleet, type Who } from "./support/admin-fleet.js";

type Role = "viewer" | "operator" | "admin";
const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

/** The roles the operator plane's design gives each operation (issue 11); the document must agree. */
const EXPECTED: Record<string, Role | "public" | "metrics"> = {
  "POST /api/devices": "operator",
  "GET /api/devices/{id}": "viewer",
  "PATCH /api/devices/{id}": "operator",
  "DELETE /api/devices/{id}": "operator",
  "POST /api/devices/{id}/tokens": "operator",
  "POST /api/devices/{id}/certificates": "operator",
  "POST /api/devices/{id}/revoke": "operator",
  "POST /api/devices/{id}/hold": "operator",
  "POST /api/devices/{id}/unhold": "operator",
  "GET /api/approvals": "viewer",
  "POST /api/approvals/{id}/approve": "operator",
  "POST /api/approvals/{id}/deny": "operator",
  "GET /api/certificates/{serial}": "viewer",
  "POST /api/certificates/{serial}/revoke": "operator",
  "GET /api/cas": "viewer",
  "GET /api/audit/verify": "viewer",
  "GET /api/policy": "viewer",
  "PUT /api/policy": "admin",
  "POST /api/policy/test": "viewer",
  "GET /api/gateway/sessions": "viewer",
  "DELETE /api/gateway/sessions/{clientId}": "operator",
  "GET /api/operators": "admin",
  "POST /api/operators": "admin",
  "DELETE /api/operators/{name}": "admin",
  "POST /api/operators/{name}/login-link": "admin",
  "GET /api/services": "viewer",
  "POST /api/services": "admin",
  "DELETE /api/services/{name}": "admin",
  "GET /api/devices": "viewer",
  "GET /api/certificates": "viewer",
  "GET /api/certificates/expiring": "viewer",
  "GET /api/audit": "viewer",
  "POST /api/session": "public",
  "GET /api/session": "viewer",
  "DELETE /api/session": "viewer",
  // Its own rule (test/metrics.test.ts): allow-listed addresses, else an operator certificate.
  "GET /metrics": "metrics",
};

/**
 * Path parameters that name nothing that exists: a request that passes the role check reaches the
 * handler and changes nothing (404 unknown-..., or 400 for a body that says too little).
 */
const PARAMS: Record<string, string> = { id: "robot-404", serial: "0a0b0c", name: "nobody-here", clientId: "nobody-here" };

interface Operation {
  method: string;
  path: string;
  role: Role | "public" | "metrics";
}

describe("admin API RBAC matrix", () => {
  let a: AdminFleet;
  let operations: Operation[];

  before(async () => {
    a = await startAdminFleet();
    const doc = await https(`${a.base}/api/openapi.json`, a.as(undefined));
    assert.equal(doc.status, 200, doc.text);
    operations = [];
    for (const [path, item] of Object.entries(doc.json().paths as Record<string, Record<string, Record<string, unknown>>>))
      for (const [method, op] of Object.entries(item)) {
        if (!["get", "post", "put", "patch", "delete"].includes(method)) continue;
        operations.push({ method: method.toUpperCase(), path, role: op["x-fleetpki-role"] as Operation["role"] });
      }
  });
  after(async () => {
    await a?.close();
  });

  const call = (op: Operation, who: Who | undefined): Promise<HttpResult> => {
    const url = a.base + op.path.replace(/\{(\w+)\}/g, (_, p: string) => encodeURIComponent(PARAMS[p] ?? "x"));
    const body = op.method === "GET" || op.method === "DELETE" ? undefined : "{}";
    return https(url, { ...a.as(who), method: op.method, ...(body ? { body, headers: { "content-type": "application/json" } } : {}) });
  };

  test("every operation declares its role in the document, and the operator plane's operations have theirs", () => {
    const documented = new Map(operations.map((o) => [`${o.method} ${o.path}`, o.role]));
    for (const o of operations)
      assert.ok(["public", "viewer", "operator", "admin", "metrics"].includes(o.role), `${o.method} ${o.path}: role ${o.role}`);
    for (const [op, role] of Object.entries(EXPECTED))
      assert.equal(documented.get(op), role, `${op} should be documented with role ${role}`);
  });

  test("no credential -> 401; below the role -> 403 role-too-weak; at or above it -> neither", async () => {
    const failures: string[] = [];
    for (const op of operations) {
      // /metrics answers this loopback client without a credential (admin.metrics_allow): test/metrics.test.ts.
      if (op.role === "metrics") continue;
      const none = await call(op, undefined);
      if (op.role === "public") {
        if (none.status === 401 || none.status === 403) failures.push(`${op.method} ${op.path} public: ${none.status}`);
        continue;
      }
      if (none.status !== 401 || !/\/unauthenticated"/.test(none.text))
        failures.push(`${op.method} ${op.path} no credential: ${none.status} ${none.text}`);
      for (const who of ["viewer", "operator", "admin"] as const) {
        const res = await call(op, who);
        const allowed = RANK[who] >= RANK[op.role];
        if (!allowed && (res.status !== 403 || !/\/role-too-weak"/.test(res.text)))
          failures.push(`${op.method} ${op.path} as ${who} (needs ${op.role}): expected 403 role-too-weak, got ${res.status} ${res.text}`);
        if (allowed && (res.status === 401 || res.status === 403 || res.status >= 500))
          failures.push(`${op.method} ${op.path} as ${who} (needs ${op.role}): got ${res.status} ${res.text}`);
        if (res.status !== 204 && !String(res.headers["content-type"]).match(/^application\/(problem\+)?json/))
          failures.push(`${op.method} ${op.path} as ${who}: content type ${String(res.headers["content-type"])}`);
      }
    }
    assert.deepEqual(failures, []);
  });

  test("a device's or a service's certificate, and a revoked operator's, authenticate no one: 401 everywhere", async () => {
    const failures: string[] = [];
    for (const op of operations) {
      if (op.role === "public" || op.role === "metrics") continue;
      for (const who of ["device", "service", "revoked"] as const) {
        const res = await call(op, who);
        if (res.status !== 401) failures.push(`${op.method} ${op.path} with the ${who} certificate: ${res.status} ${res.text}`);
      }
    }
    assert.deepEqual(failures, []);
  });

  test("nothing the matrix sent changed the fleet: no audit row names an operator", async () => {
    const rows = await a.f.fleet.store.ops.audit.list({});
    assert.deepEqual(
      rows.filter((r) => r.actor.startsWith("operator:")).map((r) => `${r.action} ${r.subject}`),
      [],
    );
  });
});
