// Robots enrolled against a running test server with one-time tokens, as `agent enroll` does: the agent
// directories the ROS 2 agent tests renew from.
import { readFileSync } from "node:fs";
import { X509Certificate } from "node:crypto";
import { join } from "node:path";
import { enroll } from "../../src/agent/enroll.js";
import { fingerprintOf } from "../../src/agent/fingerprint.js";
import { addDevice } from "../../src/authority/devices.js";
import { createToken } from "../../src/authority/enroll/tokens.js";
import type { FleetServices } from "../../src/authority/services.js";

/** Registers and enrolls each [device id, agent directory]; returns the fleet root's PEM. */
export async function enrollRobots(
  fleet: FleetServices,
  serverUrl: string,
  fleetDir: string,
  robots: readonly (readonly [string, string])[],
): Promise<string> {
  const rootPem = readFileSync(join(fleetDir, "ca", "root", "cert.pem"), "utf8");
  const rootFingerprint = fingerprintOf(new X509Certificate(rootPem).raw);
  for (const [id, dir] of robots) {
    await addDevice(fleet, { id, actor: "test" });
    const token = (await createToken(fleet, { deviceId: id, actor: "test" })).token;
    await enroll({ server: serverUrl, rootFingerprint, deviceId: id, mode: { kind: "token", token }, dir });
  }
  return rootPem;
}
