// Shared CLI plumbing: the --dir option, opening the fleet, running an action with clean errors.
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { FleetServices } from "../authority/services.js";
import { CONFIG_FILE, loadConfigWithNotes } from "../config/config.js";

export const DEFAULT_DIR = "./fleet";

export function dirOption(cmd: Command): Command {
  return cmd.option("--dir <dir>", "fleet directory (env FLEETPKI_DIR)", process.env.FLEETPKI_DIR ?? DEFAULT_DIR);
}

export async function withFleet<T>(dir: string, fn: (fleet: FleetServices) => Promise<T>): Promise<T> {
  const fleet = await FleetServices.open(dir);
  try {
    return await fn(fleet);
  } finally {
    await fleet.close();
  }
}

export const CLI_ACTOR = "cli";

/** Warns on stderr about keys in fleetpki.yaml that nothing reads; errors are left to the command. */
export function reportConfigNotes(dir: unknown): void {
  if (typeof dir !== "string" || !existsSync(join(dir, CONFIG_FILE))) return;
  try {
    for (const note of loadConfigWithNotes(dir).notes) process.stderr.write(`fleetpki: warning: ${note.message}\n`);
  } catch {
    // The command reads the file itself and reports what is wrong with it.
  }
}
