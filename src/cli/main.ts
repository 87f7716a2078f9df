// fleetpki command line. Errors are one line on stderr and a non-zero exit; --debug adds stacks.
import { Command, CommanderError } from "commander";
import { AuthorityError } from "../authority/errors.js";
import { registerAgent } from "./commands/agent.js";
import { registerAudit } from "./commands/audit.js";
import { registerCa } from "./commands/ca.js";
import { registerDevice, registerToken } from "./commands/device.js";
import { registerInit } from "./commands/init.js";
import { registerServe } from "./commands/serve.js";
import { registerStart } from "./commands/start.js";

const debug = process.argv.includes("--debug");
const program = new Command("fleetpki")
  .description("PKI, enrollment and an mTLS ingestion gateway for robot fleets")
  .option("--debug", "print stack traces on errors")
  .showHelpAfterError()
  .exitOverride();

registerInit(program);
registerStart(program);
registerServe(program);
registerCa(program);
registerDevice(program);
registerToken(program);
registerAudit(program);
registerAgent(program);

const EXPECTED = new Set(["ConfigError", "KeyError", "StoreError", "CsrError", "PemError", "AuditBroken", "DerError", "IssuerExpired", "AgentError"]);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
  const err = e as Error;
  const expected = e instanceof AuthorityError || EXPECTED.has(err?.name);
  process.stderr.write(`fleetpki: ${err?.message ?? String(e)}${expected || debug ? "" : " (run with --debug for details)"}\n`);
  if (debug && err?.stack) process.stderr.write(err.stack + "\n");
  process.exit(1);
}
