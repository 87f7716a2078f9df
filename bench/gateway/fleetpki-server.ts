// The benchmark's fleetpki gateway process: `startFleetServer` with only the gateway, as
// `fleetpki serve --only gateway` runs it, on 127.0.0.1:0. Run as a script:
//   node --import tsx bench/gateway/fleetpki-server.ts FLEET_DIR
// It prints "gateway listening on 127.0.0.1:<port>", and its counters as one JSON line when it
// stops (SIGTERM). The policy is the fleet's policy.yaml as `fleetpki init` writes it (devices
// publish under fleet/<id>/ and read fleet/<id>/cmd/#; the service "telemetry" reads fleet/+/#),
// enforced by the access module as in production.
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createLogger } from "../../src/log.js";
import { startFleetServer } from "../../src/server.js";

async function main(dir: string): Promise<void> {
  const server = await startFleetServer({
    dir,
    only: ["gateway"],
    gatewayListen: "127.0.0.1:0",
    logger: createLogger("fleetpki"),
  });
  const { address, port } = server.gateway!.address;
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`counters ${JSON.stringify(server.gateway!.counters)}\n`);
    void server.close().then(() => process.exit(0));
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  // The parent holds our stdin: if it dies without stopping us, stdin ends and so do we.
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
  process.stderr.write(`gateway listening on ${address}:${port}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2];
  if (!dir) throw new Error("usage: node --import tsx bench/gateway/fleetpki-server.ts FLEET_DIR");
  await main(dir);
}
