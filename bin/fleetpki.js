#!/usr/bin/env node
// The fleetpki CLI runs the compiled JavaScript in dist/ (`npm run build`; `npm start` builds first
// when src/ changed). Tests run the source through scripts/dev-cli.mjs instead.
import { existsSync } from "node:fs";

const main = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(main)) {
  process.stderr.write("fleetpki: dist/ is missing: run `npm run build` first (`npm start` builds when needed)\n");
  process.exit(1);
}
await import(main.href);
