#!/usr/bin/env node
// The CLI straight from src/ through tsx's loader, with no build step between an edit and a run:
// what the tests spawn (helpers.ts CLI). Production and `npm start` run bin/fleetpki.js (dist/).
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
