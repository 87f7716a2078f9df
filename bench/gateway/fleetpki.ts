// fleetpki's gateway for the benchmark: `fleetpki serve --only gateway` in a child process on the
// bench fleet, with flood limits raised far above the load (they are evaluated, never binding),
// and the revocations of (d) made through the product's code, as `fleetpki device revoke` does.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { revokeDevice } from "../../src/authority/status/revocation.js";
import { FleetServices } from "../../src/authority/services.js";
import { ServerProcess, serverNodeArgs } from "../server-process.js";
import type { BenchFleet } from "./fixture.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The subscriber of (b): a certificate with this CN (mosquitto's ACL user) and, for fleetpki, read access to fleet/+/#. */
export const READER = "telemetry";

/** What fleetpki's banner says once the gateway listens. */
const LISTENING = /gateway[^\n]*?listening on [^\s]*?:(\d+)/i;

/**
 * Limits for the benchmark: 200 publishers at up to 1,600 msgs/s each, 5,000 connections and
 * thousands of handshakes a second, all from 127.0.0.1.
 */
const BENCH_LIMITS = [
  "  limits:",
  "    default: { messages_per_second: 1000000, bytes_per_second: 1000000000, burst_seconds: 1 }",
  "    max_connections_per_address: 100000",
  "    connection_attempts_per_minute: 100000000",
  "",
].join("\n");

export async function startFleetpkiGateway(
  tmp: string,
  fleet: BenchFleet,
): Promise<{ server: ServerProcess; port: number; counters: () => Promise<string | undefined> }> {
  const config = join(fleet.dir, "fleetpki.yaml");
  let text = readFileSync(config, "utf8");
  text = text.replace(/^(\s*gateway:\s*).*$/m, `$1"127.0.0.1:0"`);
  if (!/^gateway:/m.test(text)) text += `\ngateway:\n${BENCH_LIMITS}`;
  writeFileSync(config, text);
  // The reader may subscribe to every device's telemetry (fleetpki's default policy grants it to the service "telemetry").
  const { server, port } = await ServerProcess.start(
    "fleetpki gateway",
    process.execPath,
    [...serverNodeArgs(), join(REPO, "bin", "fleetpki.js"), "serve", "--dir", fleet.dir, "--only", "gateway"],
    { env: { FLEETPKI_LOG_LEVEL: "warn" }, logFile: join(tmp, "fleetpki-gateway.log"), port: LISTENING },
  );
  return { server, port, counters: async () => undefined };
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
