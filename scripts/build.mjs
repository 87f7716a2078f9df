// `npm run build`: compiles src/ to dist/ (tsconfig.build.json: no tests, no benchmarks). dist/ is
// emptied first so a deleted source file cannot live on as stale JavaScript, and the stamp file
// is written last: a failed or interrupted build leaves no stamp, and ensure-build.mjs rebuilds.
import { spawnSync } from "node:child_process";
import { cpSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const root = join(import.meta.dirname, "..");
const dist = join(root, "dist");
rmSync(dist, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const r = spawnSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json")], { stdio: "inherit", cwd: root });
if (r.status !== 0) {
  console.error("fleetpki: build failed");
  process.exit(r.status ?? 1);
}
// Files tsc does not emit (the dashboard's HTML, CSS and browser modules) are copied as they are.
const src = join(root, "src");
for (const e of readdirSync(src, { recursive: true, withFileTypes: true })) {
  if (!e.isFile() || e.name.endsWith(".ts")) continue;
  const from = join(e.parentPath, e.name);
  const to = join(dist, from.slice(src.length + 1));
  cpSync(from, to);
}
writeFileSync(join(dist, ".build-stamp"), `${new Date().toISOString()}\n`);
