// `npm test` imports this after tsx (`--import tsx --import ./scripts/test-kysely.mjs`): the
// package "kysely" resolves to the same code bundled into one file (dev-build.mjs). Through tsx's
// loader its ~260 ESM files cost every test process ~1 s of CPU. Without it (a single file run
// with `--import tsx` alone, or when the bundle cannot be made) kysely loads as installed.
import { register } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { isMainThread } from "node:worker_threads";

let bundle;

/** Runs in the loader thread: the bundle's URL from the registration below. */
export function initialize(data) {
  bundle = data.url;
}

export async function resolve(specifier, context, nextResolve) {
  if (specifier === "kysely" && bundle) return { url: bundle, format: "module", shortCircuit: true };
  return nextResolve(specifier, context);
}

if (isMainThread) {
  try {
    const { kyselyBundle } = await import("./dev-build.mjs");
    register(import.meta.url, { data: { url: pathToFileURL(join(kyselyBundle(), "index.js")).href } });
  } catch (e) {
    process.stderr.write(`test-kysely: kysely loads as installed (${e.message})\n`);
  }
}
