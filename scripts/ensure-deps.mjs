// prestart/pretest hook: on a fresh clone (or after package-lock.json changed) install the
// locked dependencies first, so `npm start` and `npm test` are each enough on their own.
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";

const installed = "node_modules/.package-lock.json";
const stale = !existsSync(installed) || statSync("package-lock.json").mtimeMs > statSync(installed).mtimeMs;
if (stale) {
  console.error("fleetpki: installing dependencies (npm ci; better-sqlite3 builds from source, ~1-2 min)");
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const r = spawnSync(npm, ["ci", "--no-audit", "--no-fund"], { stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
