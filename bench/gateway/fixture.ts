// The gateway benchmark's fleet: `fleetpki init`, then devices registered and issued as the CA
// does for enrolled robots (devices CA, device profile, recorded with their audit events), with
// their keys kept in memory as TLS client contexts. Every broker measured gets the same
// certificates: fleetpki's gateway, mosquitto and openssl s_server present the fleet's server
// certificate (services CA) and trust the root and the devices CA.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createSecureContext, type SecureContext } from "node:tls";
import { initFleet } from "../../src/authority/ca/init.js";
import { addService } from "../../src/authority/identities/services.js";
import { issueForKey, subjectKeyOf } from "../../src/authority/issue/issuance.js";
import { layout } from "../../src/authority/layout.js";
import { FleetServices } from "../../src/authority/services.js";
import { generateKey, privateKeyPem, readPassphraseFile, readPrivateKey } from "../../src/keys/keys.js";
import { check } from "../lib.js";

export const DOMAIN = "fleet.example";

export interface BenchDevice {
  id: string;
  keyPem: string;
  /** Leaf followed by the devices CA, as the agent's cert.pem + chain.pem are sent. */
  certChainPem: string;
  context: SecureContext;
}

export interface BenchFleet {
  dir: string;
  rootPem: string;
  /** Root and devices CA: what a broker trusts for client certificates. */
  clientCaFile: string;
  /** The fleet's server certificate followed by its chain, and its key unencrypted (0600), for the peers. */
  serverCertFile: string;
  serverKeyFile: string;
  devices: BenchDevice[];
  /** The subscriber of the throughput runs: a service identity (services CA, CN = its name). */
  reader: BenchDevice;
}

/** TLS 1.3 only: the handshake scenario measures TLS 1.3 full handshakes, and every scenario uses these. */
export function clientContext(keyPem: string, certChainPem: string, caPem: string): SecureContext {
  return createSecureContext({ key: keyPem, cert: certChainPem, ca: caPem, minVersion: "TLSv1.3" });
}

export function deviceId(i: number): string {
  return `bench-robot-${String(i).padStart(5, "0")}`;
}

/**
 * Creates the fleet in `dir` with `count` devices (ids deviceId(0..count-1), group "bench") and
 * the service `readerName` (`fleetpki service add`).
 * Issuance is concurrent so the recorder commits in groups; a few thousand take seconds.
 */
export async function makeBenchFleet(tmp: string, count: number, readerName: string): Promise<BenchFleet> {
  const dir = join(tmp, "fleet");
  await initFleet({ dir, name: "Bench Robots", domain: DOMAIN, serverNames: ["localhost", "127.0.0.1"] });
  const fleet = await FleetServices.open(dir);
  const devices: BenchDevice[] = [];
  let reader: BenchDevice;
  try {
    const ids = Array.from({ length: count }, (_, i) => deviceId(i));
    const at = fleet.clock.now();
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      await fleet.store.transaction(async (tx) => {
        const iso = at.toISOString();
        const rows = chunk.map((id) => ({
          id,
          group_name: "bench",
          labels: "{}",
          status: "active" as const,
          created_at: iso,
          updated_at: iso,
        }));
        const taken = await tx.devices.add(rows);
        check(taken.length === 0, `devices already present: ${taken.join(", ")}`);
        const events = chunk.map((id) => ({
          actor: "bench",
          action: "device.add",
          subject: `device:${id}`,
          details: { group: "bench", labels: {} },
          at,
        }));
        await tx.audit.append(events);
      });
    }
    const CONCURRENCY = 64;
    for (let i = 0; i < ids.length; i += CONCURRENCY) {
      const issued = await Promise.all(
        ids.slice(i, i + CONCURRENCY).map(async (id) => {
          const key = generateKey("p256");
          const cert = await issueForKey(fleet, { deviceId: id, actor: "bench" }, subjectKeyOf(key));
          const keyPem = privateKeyPem(key);
          // The agent's chain.pem is the devices CA and the root; the client sends leaf + devices CA.
          const certChainPem = cert.certificatePem + cert.chainPem;
          return { id, keyPem, certChainPem, context: clientContext(keyPem, certChainPem, cert.caPem) };
        }),
      );
      devices.push(...issued);
    }
    const svc = await addService(fleet, { name: readerName, outDir: join(tmp, "service"), actor: "bench" });
    const read = (p: string) => readFileSync(p, "utf8");
    const certChainPem = read(svc.files.cert) + read(svc.files.chain);
    const keyPem = read(svc.files.key);
    reader = { id: readerName, keyPem, certChainPem, context: clientContext(keyPem, certChainPem, read(svc.files.ca)) };
  } finally {
    await fleet.close();
  }
  const rootPem = readFileSync(join(dir, layout.caCert("root")), "utf8");
  const peers = join(tmp, "peers");
  mkdirSync(peers, { mode: 0o700 });
  const clientCaFile = join(peers, "client-ca.pem");
  // mosquitto trusts what fleetpki's gateway trusts for clients: devices and services under the root.
  writeFileSync(
    clientCaFile,
    [rootPem, ...["devices", "services"].map((ca) => readFileSync(join(dir, layout.caCert(ca)), "utf8"))].join(""),
  );
  const serverCertFile = join(peers, "server.pem");
  writeFileSync(
    serverCertFile,
    readFileSync(join(dir, layout.serverDir, "cert.pem"), "utf8") + readFileSync(join(dir, layout.serverDir, "chain.pem"), "utf8"),
  );
  const passphrase = readPassphraseFile(join(dir, layout.passphrase));
  const serverKeyFile = join(peers, "server.key");
  writeFileSync(serverKeyFile, privateKeyPem(readPrivateKey(join(dir, layout.serverDir, "key.pem"), passphrase)), { mode: 0o600 });
  return { dir, rootPem, clientCaFile, serverCertFile, serverKeyFile, devices, reader: reader! };
}
