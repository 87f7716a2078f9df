// Shared CLI plumbing: the --dir option, opening the fleet, running an action with clean errors.
import type { Command } from "commander";
import { Fleet } from "../authority/fleet.js";

export const DEFAULT_DIR = "./fleet";

export function dirOption(cmd: Command): Command {
  return cmd.option("--dir <dir>", "fleet directory (env FLEETPKI_DIR)", process.env.FLEETPKI_DIR ?? DEFAULT_DIR);
}

export async function withFleet<T>(dir: string, fn: (fleet: Fleet) => Promise<T>): Promise<T> {
  const fleet = await Fleet.open(dir);
  try {
    return await fn(fleet);
  } finally {
    await fleet.close();
  }
}

export const CLI_ACTOR = "cli";
