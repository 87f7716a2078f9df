// prestart/pretest hook: on a fresh clone (or after package-lock.json changed) install the
// locked dependencies first, so `npm start` and `npm test` are each enough on their own.
//
// "Changed" is decided by content, not by mtimes: every package the lock file names must be
// installed at the locked version (a fresh checkout makes package-lock.json look newer than any
// install). A node_modules that is a symbolic link is someone else's (shared between checkouts):
// `npm ci` would empty the directory it points to, so it is never installed from here.
import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";

/** Why node_modules does not match package-lock.json, or undefined when it does. */
function staleReason() {
  const lock = JSON.parse(readFileSync("package-lock.json", "utf8"));
  for (const [path, entry] of Object.entries(lock.packages ?? {})) {
    if (path === "" || entry.link || !path.startsWith("node_modules/")) continue;
    const manifest = join(path, "package.json");
    if (!existsSync(manifest)) {
      if (entry.optional) continue; // platform packages (esbuild, fsevents) for other systems
      return `${path} is missing`;
    }
    const version = JSON.parse(readFileSync(manifest, "utf8")).version;
    if (version !== entry.version) return `${path} is ${version}, the lock file says ${entry.version}`;
  }
  // An interrupted install can leave the package without its compiled binding.
  if (!existsSync("node_modules/better-sqlite3/build/Release/better_sqlite3.node")) return "better-sqlite3 is not built";
  return undefined;
}

const reason = staleReason();
if (reason) {
  if (lstatSync("node_modules", { throwIfNoEntry: false })?.isSymbolicLink()) {
    console.error(`fleetpki: ${reason}, but node_modules is a link to ${readlinkSync("node_modules")}, shared with other checkouts;`);
    console.error("fleetpki: not installing over it. Install in the directory it points to, or remove the link.");
    process.exit(1);
  }
  console.error(`fleetpki: installing dependencies (${reason}; npm ci; better-sqlite3 builds from source, ~1-2 min)`);
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const r = spawnSync(npm, ["ci", "--no-audit", "--no-fund"], { stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
