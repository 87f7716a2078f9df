// The benchmark's fleetpki gateway process: `startFleetServer` with only the gateway, as
// `fleetpki serve --only gateway` runs it, on 127.0.0.1:0. Run as a script:
//   node --import tsx bench/gateway/fleetpki-server.ts FLEET_DIR
// It prints "gateway listening on 127.0.0.1:<port>", and its counters as one JSON line when it
// stops (SIGTERM). The policy is fleetpki's default policy written as a PolicySource (devices
// publish under fleet/<id>/ and read fleet/<id>/cmd/#; the service "telemetry" reads fleet/+/#):
// `serve` cannot load policy.yaml until the access module is wired into the gateway.
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { AccessDecision, AccessGrants, AccessIdentity } from "../../src/access/identity.js";
import type { PolicySource } from "../../src/gateway/server.js";
import { createLogger } from "../../src/log.js";
import { startFleetServer } from "../../src/server.js";

const allow: AccessDecision = { allowed: true, outcome: "allow", rule: "default", reason: "allowed" };
const deny: AccessDecision = { allowed: false, outcome: "deny", rule: undefined, reason: "default deny" };
const decide = (ok: boolean): AccessDecision => (ok ? allow : deny);
const NONE: AccessGrants = { publish: () => deny, subscribe: () => deny, receive: () => deny };

/** fleetpki's default policy (src/access/default-policy.ts) as plain checks. */
export const defaultPolicyStandIn: PolicySource = {
  grantsFor(id: AccessIdentity): AccessGrants {
    if (id.kind === "service" && id.name === "telemetry")
      return {
        publish: () => deny,
        subscribe: (f) => decide(/^fleet\/(\+|[^/+#]+)\/(#|.+)$/.test(f) && !f.startsWith("$")),
        receive: (t) => decide(t.startsWith("fleet/")),
      };
    if (id.kind !== "device") return NONE;
    const own = `fleet/${id.id}/`;
    const cmd = `${own}cmd/`;
    return {
      publish: (t) => decide(t.startsWith(own)),
      subscribe: (f) => decide(f === `${cmd}#` || (f.startsWith(cmd) && !/[+#]/.test(f.slice(cmd.length)))),
      receive: (t) => decide(t.startsWith(cmd)),
    };
  },
};

async function main(dir: string): Promise<void> {
  const server = await startFleetServer({
    dir,
    only: ["gateway"],
    gatewayListen: "127.0.0.1:0",
    policy: defaultPolicyStandIn,
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
