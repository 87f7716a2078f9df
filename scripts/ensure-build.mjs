// prestart hook: builds dist/ when it is missing or older than anything it is compiled from, so
// `npm start` always runs the current source as compiled JavaScript (as production does).
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dirname, "..");
const mtime = (path) => statSync(path, { throwIfNoEntry: false })?.mtimeMs;

function newestInput() {
  let newest = Math.max(mtime(join(root, "tsconfig.json")) ?? 0, mtime(join(root, "tsconfig.build.json")) ?? 0);
  for (const e of readdirSync(join(root, "src"), { recursive: true, withFileTypes: true })) {
    // A directory's mtime changes when a file in it is added, renamed or deleted.
    newest = Math.max(newest, mtime(join(e.parentPath, e.name)) ?? 0);
  }
  return Math.max(newest, mtime(join(root, "src")) ?? 0);
}

const built = mtime(join(root, "dist", ".build-stamp"));
if (built === undefined || built < newestInput()) {
  console.error(`fleetpki: ${built === undefined ? "no build yet" : "src/ changed since the last build"}: npm run build`);
  const r = spawnSync(process.execPath, [join(root, "scripts", "build.mjs")], { stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
