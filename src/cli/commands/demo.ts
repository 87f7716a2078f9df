import type { Command } from "commander";

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("run the whole story in a temporary fleet: enroll 5 robots, MQTT telemetry, a denied cmd_vel, a live revocation")
    .option("--keep", "keep the temporary directory (fleet, robots, service) and print its path")
    .action(async (opts: { keep?: boolean }) => {
      // Loaded here: the MQTT client and the demo are not needed by any other command.
      const { runDemo } = await import("../../demo/demo.js");
      await runDemo({ keep: !!opts.keep });
    });
}
