// fleetpki's gateway for the benchmark: `fleetpki serve --only gateway` in a child process on the
// bench fleet, with flood limits raised far above the load (they are evaluated, never binding),
// and the revocations of (d) made through the product's code, as `fleetpki device revoke` does.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { revokeDevice } from "../../src/authority/status/revocation.js";
import { FleetServices } from "../../src/authority/services.js";
import { check } from "../lib.js";
import { ServerProcess, serverNodeArgs } from "../server-process.js";
import type { BenchFleet } from "./fixture.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The subscriber of (b): the service "telemetry", which fleetpki's default policy lets read fleet/+/#; mosquitto's ACL user. */
export const READER = "telemetry";

/** What the gateway process prints once it listens (fleetpki-server.ts). */
const LISTENING = /gateway listening on [^\s]*?:(\d+)\s/;

/**
 * Limits for the benchmark, evaluated on every message but never binding: 200 publishers at up to
 * 1,600 msgs/s each, 5,000 connections and thousands of handshakes a second, all from 127.0.0.1.
 */
const BENCH_LIMITS = [
  "  limits:",
  "    default: { messages_per_second: 1000000, bytes_per_second: 1000000000, burst_seconds: 1 }",
  "    max_connections_per_address: 100000",
  "    connection_attempts_per_minute: 100000000",
  "",
].join("\n");

export interface FleetpkiGateway {
  server: ServerProcess;
  port: number;
  /** The gateway's counters, printed when it stopped (after stop()). */
  counters(): string | undefined;
}

export async function startFleetpkiGateway(tmp: string, fleet: BenchFleet): Promise<FleetpkiGateway> {
  const config = join(fleet.dir, "fleetpki.yaml");
  const text = readFileSync(config, "utf8");
  check(/^gateway:\n/m.test(text), "fleetpki.yaml has no gateway section");
  writeFileSync(config, text.replace(/^gateway:\n/m, `gateway:\n${BENCH_LIMITS}`));
  const { server, port } = await ServerProcess.start(
    "fleetpki gateway",
    process.execPath,
    [...serverNodeArgs(), "--import", "tsx", join(REPO, "bench", "gateway", "fleetpki-server.ts"), fleet.dir],
    { env: { FLEETPKI_LOG_LEVEL: "warn" }, logFile: join(tmp, "fleetpki-gateway.log"), port: LISTENING },
  );
  return { server, port, counters: () => /^counters (.*)$/m.exec(server.log)?.[1] };
}

/** `fleetpki device revoke` for each id, through the library; resolves once committed. */
export async function revokeDevices(dir: string, ids: readonly string[]): Promise<void> {
  const fleet = await FleetServices.open(dir);
  try {
    for (const id of ids) await revokeDevice(fleet, { deviceId: id, actor: "bench" });
  } finally {
    await fleet.close();
  }
}
