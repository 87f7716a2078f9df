// A build of src/ for the tests' CLI child processes, addressed by its content. A CLI start through
// tsx's loader costs ~1.3 s of CPU, compiled JavaScript ~0.4 s; tests start the CLI hundreds of times.
// The directory's name is a hash of every input (each file under src/, tsconfig.json, this script,
// the compiler's and kysely's versions), so a build of other source can never be found: a stale
// build is impossible by construction, without timestamps. src/ is compiled the way tsx compiles
// for the tests' in-process imports (esbuild, tsx's own dependency, one file at a time, no
// bundling) in ~0.2 s, into the temp directory: `npm pack` empties dist/ while tests run, and a
// build here needs no .gitignore entry. Dependencies are the checkout's (symbolic links), except
// kysely: its ~260 ESM files took ~40% of a CLI start, so it is bundled into one file, once per
// kysely version (same code, one module).
import { createHash } from "node:crypto";
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(import.meta.dirname, "..");
const SRC = join(ROOT, "src");
const NODE_MODULES = join(ROOT, "node_modules");
/** Builds of this checkout other than the current one are removed once they are this old. */
const KEEP_OLD_MS = 60 * 60_000;

function loadEsbuild() {
  // Through tsx, which depends on it: no dependency of our own, and the version tsx compiles with.
  const fromTsx = createRequire(createRequire(join(ROOT, "package.json")).resolve("tsx/package.json"));
  return fromTsx("esbuild");
}

function sourceFiles() {
  return readdirSync(SRC, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(SRC, join(e.parentPath, e.name)).split(sep).join("/"))
    .sort();
}

/** The directory every build of this user lives in: created 0700, refused if someone else owns it. */
function baseDir() {
  const base = join(tmpdir(), `fleetpki-dev-build-${process.getuid?.() ?? "user"}`);
  mkdirSync(base, { recursive: true, mode: 0o700 });
  const st = lstatSync(base);
  if (!st.isDirectory() || (process.getuid && st.uid !== process.getuid()) || (st.mode & 0o077) !== 0)
    throw new Error(`${base} is not a private directory of this user`);
  return base;
}

/**
 * Returns the path of cli/main.js compiled from the current src/, building it when no build of
 * exactly this source exists. Throws when it cannot build (callers fall back to tsx).
 */
export function devBuild() {
  const esbuild = loadEsbuild();
  const files = sourceFiles();
  const hash = createHash("sha256");
  hash.update(`esbuild ${esbuild.version}\0`);
  hash.update(readFileSync(fileURLToPath(import.meta.url)));
  hash.update(readFileSync(join(ROOT, "tsconfig.json")));
  for (const f of files) {
    const content = readFileSync(join(SRC, f));
    hash.update(`\0${f}\0${content.length}\0`).update(content);
  }
  const checkout = createHash("sha256").update(ROOT).digest("hex").slice(0, 12);
  const base = baseDir();
  const kysely = bundledKysely(esbuild, base);
  hash.update(`\0${kysely}`);
  const out = join(base, `${checkout}-${hash.digest("hex").slice(0, 32)}`);
  const main = join(out, "cli", "main.js");
  if (statSync(main, { throwIfNoEntry: false })) return main;

  // Built beside it and renamed into place: a build is complete or absent, also when test
  // processes build at the same time (the first rename wins; the others drop their copy).
  const tmp = mkdtempSync(`${out}.tmp-`);
  try {
    esbuild.buildSync({
      entryPoints: files.filter((f) => f.endsWith(".ts")).map((f) => join(SRC, f)),
      outdir: tmp,
      outbase: SRC,
      format: "esm",
      platform: "node",
      target: "node20",
      tsconfig: join(ROOT, "tsconfig.json"),
      logLevel: "error",
    });
    for (const f of files.filter((f) => !f.endsWith(".ts"))) {
      mkdirSync(join(tmp, f, ".."), { recursive: true });
      writeFileSync(join(tmp, f), readFileSync(join(SRC, f)));
    }
    // ESM by package.json, and the checkout's dependencies found from here as from dist/.
    writeFileSync(join(tmp, "package.json"), '{ "type": "module", "private": true }\n');
    mkdirSync(join(tmp, "node_modules"));
    for (const name of readdirSync(NODE_MODULES))
      if (name !== "kysely") symlinkSync(join(NODE_MODULES, name), join(tmp, "node_modules", name));
    symlinkSync(kysely, join(tmp, "node_modules", "kysely"), "dir");
    try {
      renameSync(tmp, out);
    } catch (e) {
      if (!statSync(main, { throwIfNoEntry: false })) throw e;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  removeOldBuilds(base, checkout, out);
  return main;
}

/** The package directory of kysely, bundled into one ESM file for the CLI the tests spawn. */
export function kyselyBundle() {
  return bundledKysely(loadEsbuild(), baseDir());
}

/** kysely as one ESM file (built once per kysely version and this script); returns its package directory. */
function bundledKysely(esbuild, base) {
  const manifest = readFileSync(join(NODE_MODULES, "kysely", "package.json"));
  const version = JSON.parse(manifest.toString("utf8")).version;
  const key = createHash("sha256")
    .update(manifest)
    .update(readFileSync(fileURLToPath(import.meta.url)))
    .digest("hex")
    .slice(0, 16);
  const dir = join(base, `kysely-${version}-${key}`);
  if (statSync(join(dir, "index.js"), { throwIfNoEntry: false })) return dir;
  const tmp = mkdtempSync(`${dir}.tmp-`);
  try {
    esbuild.buildSync({
      stdin: { contents: 'export * from "kysely";', resolveDir: ROOT, sourcefile: "kysely-bundle.mjs" },
      bundle: true,
      format: "esm",
      platform: "node",
      target: "node20",
      outfile: join(tmp, "index.js"),
      logLevel: "error",
    });
    writeFileSync(join(tmp, "package.json"), JSON.stringify({ name: "kysely", version, type: "module", exports: { ".": "./index.js" } }));
    try {
      renameSync(tmp, dir);
    } catch (e) {
      if (!statSync(join(dir, "index.js"), { throwIfNoEntry: false })) throw e;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return dir;
}

function removeOldBuilds(base, checkout, current) {
  const now = Date.now();
  for (const name of readdirSync(base)) {
    const path = join(base, name);
    if (!name.startsWith(`${checkout}-`) || path === current) continue;
    const st = statSync(path, { throwIfNoEntry: false });
    if (st && now - st.mtimeMs > KEEP_OLD_MS) rmSync(path, { recursive: true, force: true });
  }
}

// `node scripts/dev-build.mjs` (npm test's pretest): build once before the test processes start.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    console.error(`fleetpki: tests run the CLI from ${devBuild()}`);
  } catch (e) {
    console.error(`fleetpki: no build of src/ for the tests (${e.message}); they run the CLI through tsx (slower)`);
  }
}
