#!/usr/bin/env node
// The CLI from the current src/, with no build step between an edit and a run: compiled into a
// build addressed by the source's content (dev-build.mjs, ~0.2 s when src/ changed), or through
// tsx's loader if that fails. Tests start the build directly (helpers.ts CLI). Production and
// `npm start` run bin/fleetpki.js (dist/).
import { pathToFileURL } from "node:url";
import { devBuild } from "./dev-build.mjs";

let main;
try {
  main = devBuild();
} catch (e) {
  process.stderr.write(`fleetpki (dev): running through tsx: no build of src/ (${e.message})\n`);
}
if (main) await import(pathToFileURL(main).href);
else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/cli/main.ts");
}
