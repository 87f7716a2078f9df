// The dashboard's static files: one HTML shell for every page and its modules and stylesheet under
// /assets/. They are public shells: every datum comes from the API with the operator's session.
// The files are read once at start into memory, and only names found then are served (no path from
// the request ever reaches the file system).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Type } from "@sinclair/typebox";
import type { FastifyInstance, FastifyReply } from "fastify";
import { HttpProblem } from "../../http/http.js";
import type { AdminContext } from "../context.js";
import { DeviceIdParams, Strict } from "./schemas.js";

/** Beside this file in src/ and in dist/ (scripts/build.mjs copies it). */
export const DASHBOARD_DIR = fileURLToPath(new URL("../dashboard/", import.meta.url));

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};

const ASSET_NAME = "^[a-z0-9][a-z0-9-]{0,63}\\.(?:js|css|svg)$";

/** The pages the shell routes client-side; each path answers the same HTML. */
export const DASHBOARD_PAGES = ["/", "/login", "/devices", "/approvals", "/cas", "/audit", "/policy", "/gateway"] as const;

interface Asset {
  body: Buffer;
  type: string;
}

function loadAssets(dir: string): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const name of readdirSync(dir)) {
    const ext = name.slice(name.lastIndexOf("."));
    const type = TYPES[ext];
    if (type) assets.set(name, { body: readFileSync(join(dir, name)), type });
  }
  return assets;
}

export function registerDashboardRoutes(app: FastifyInstance, _ctx: AdminContext): void {
  const assets = loadAssets(DASHBOARD_DIR);
  const shell = assets.get("index.html");
  if (!shell) throw new Error(`the dashboard's index.html is missing from ${DASHBOARD_DIR}`);
  const html = { 200: Type.String({ description: "the dashboard's HTML shell" }) };
  // A fresh shell every time (it names the modules); the modules themselves may be cached briefly.
  const sendShell = async (_req: unknown, reply: FastifyReply) =>
    reply.type(shell.type).header("cache-control", "no-cache").send(shell.body);

  for (const path of DASHBOARD_PAGES) app.get(path, { config: { role: "public" }, schema: { hide: true, response: html } }, sendShell);
  app.get("/devices/:id", { config: { role: "public" }, schema: { hide: true, params: DeviceIdParams, response: html } }, sendShell);

  app.get<{ Params: { name: string } }>(
    "/assets/:name",
    { config: { role: "public" }, schema: { hide: true, params: Strict({ name: Type.String({ pattern: ASSET_NAME }) }) } },
    async (request, reply) => {
      const asset = assets.get(request.params.name);
      if (!asset || request.params.name === "index.html") throw new HttpProblem(404, "not-found", `no such asset: ${request.params.name}`);
      return reply.type(asset.type).header("cache-control", "no-cache").send(asset.body);
    },
  );
}
