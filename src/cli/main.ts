// fleetpki command line. Errors are one line on stderr and a non-zero exit; --debug adds stacks.
import { Command, CommanderError } from "commander";
import { AuthorityError } from "../authority/errors.js";
import { endQuietlyOnClosedOutput } from "./output.js";

endQuietlyOnClosedOutput();

const debug = process.argv.includes("--debug");
const program = new Command("fleetpki")
  .description("PKI, enrollment and an mTLS MQTT gateway for robot fleets")
  .option("--debug", "print stack traces on errors")
  .showHelpAfterError()
  .exitOverride();

// On a robot, `fleetpki agent ...` must not load server code (nor the native SQLite module).
const command = process.argv.slice(2).find((a) => !a.startsWith("-"));
if (command !== "agent") {
  const [init, start, serve, ca, device, revoke, audit, server, policy, service, gateway, context, operator] = await Promise.all([
    import("./commands/init.js"),
    import("./commands/start.js"),
    import("./commands/serve.js"),
    import("./commands/ca.js"),
    import("./commands/device.js"),
    import("./commands/revoke.js"),
    import("./commands/audit.js"),
    import("./commands/server.js"),
    import("./commands/policy.js"),
    import("./commands/service.js"),
    import("./commands/gateway.js"),
    import("./context.js"),
    import("./commands/operator.js"),
  ]);
  init.registerInit(program);
  start.registerStart(program);
  serve.registerServe(program);
  ca.registerCa(program);
  device.registerDevice(program);
  device.registerToken(program);
  revoke.registerRevocation(program);
  (await import("./commands/cert.js")).registerCert(program);
  audit.registerAudit(program);
  server.registerServer(program);
  policy.registerPolicy(program);
  service.registerService(program);
  gateway.registerGateway(program);
  operator.registerOperator(program);
  (await import("./commands/demo.js")).registerDemo(program);
  const ros2 = (await import("./commands/ros2.js")).registerRos2(program);
  (await import("./commands/ros2-permissions.js")).registerRos2PermissionsCommand(ros2.ros2);
  // Settings in fleetpki.yaml that have no effect are named before any fleet command runs.
  program.hook("preAction", (_program, action) => context.reportConfigNotes(action.opts().dir));
}
(await import("./commands/agent.js")).registerAgent(program);

const EXPECTED = new Set([
  "ConfigError",
  "KeyError",
  "StoreError",
  "CsrError",
  "PemError",
  "AuditBroken",
  "DerError",
  "IssuerExpired",
  "AgentError",
  "CrlError",
  "PolicyError",
  "DemoStepFailed",
  "RemoteError",
]);

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
