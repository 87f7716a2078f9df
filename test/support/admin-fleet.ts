// A fleet with an admin listener (serve --only admin, 127.0.0.1:0) and credentials of every kind the
// admin API tests need: the init admin, a viewer, an operator, a revoked operator, a device and a
// service (certificates that are not operators'). Roles come from the fleet's operators table.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { addDevice } from "../../src/authority/devices.js";
import { addOperator } from "../../src/authority/identities/operators.js";
import { addService } from "../../src/authority/identities/services.js";
import { issueDeviceCertificate } from "../../src/authority/issue/issuance.js";
import { layout } from "../../src/authority/layout.js";
import { revokeCertificate } from "../../src/authority/status/revocation.js";
import { readPrivateKey } from "../../src/keys/keys.js";
import { silentLogger } from "../../src/log.js";
import { startFleetServer, type FleetServer } from "../../src/server.js";
import { tempFleet } from "../helpers.js";
import { makeCsr, rootPemPath, type HttpOptions } from "../server-helpers.js";

export interface Credential {
  cert: string;
  key: string;
}

export type Who = "admin" | "viewer" | "operator" | "revoked" | "device" | "service";

export interface AdminFleet {
  f: Awaited<ReturnType<typeof tempFleet>>;
  server: FleetServer;
  base: string;
  ca: string;
  creds: Record<Who, Credential>;
  as(who: Who | undefined): HttpOptions;
  close(): Promise<void>;
}

const pem = (dir: string, name: string) => readFileSync(join(dir, name), "utf8");

export async function startAdminFleet(): Promise<AdminFleet> {
  const f = await tempFleet();
  const out = mkdtempSync(join(tmpdir(), "fleetpki-admin-creds-"));
  let server: FleetServer | undefined;
  try {
    const adminDir = f.fleet.path(layout.operatorDir("admin"));
    const admin = {
      cert: pem(adminDir, "cert.pem") + pem(adminDir, "chain.pem"),
      key: readPrivateKey(join(adminDir, "key.pem"), f.fleet.passphrase()).export({ type: "pkcs8", format: "pem" }).toString(),
    };
    const operatorCred = async (name: string, role: "viewer" | "operator" | "admin") => {
      const added = await addOperator(f.fleet, { name, role, outDir: join(out, name), actor: "test" });
      return {
        cred: { cert: pem(added.dir, "cert.pem") + pem(added.dir, "chain.pem"), key: pem(added.dir, "key.pem") },
        serial: added.serial,
      };
    };
    const viewer = (await operatorCred("alice", "viewer")).cred;
    const operator = (await operatorCred("bob", "operator")).cred;
    const revoked = await operatorCred("carol", "admin");
    await revokeCertificate(f.fleet, { serial: revoked.serial, actor: "test" });
    await addDevice(f.fleet, { id: "robot-1", actor: "test" });
    const { key, csr } = await makeCsr("robot-1");
    const issued = await issueDeviceCertificate(f.fleet, { deviceId: "robot-1", csr: csr.der, actor: "test" });
    const device = { cert: issued.certificatePem + issued.chainPem, key: key.keyPem };
    const svc = await addService(f.fleet, { name: "telemetry", outDir: join(out, "telemetry"), actor: "test" });
    const service = { cert: pem(svc.dir, "cert.pem") + pem(svc.dir, "chain.pem"), key: pem(svc.dir, "key.pem") };
    server = await startFleetServer({ dir: f.dir, only: ["admin"], adminListen: "127.0.0.1:0", logger: silentLogger });
    await server.changes.poll();
    const ca = readFileSync(rootPemPath(f.dir), "utf8");
    const creds: Record<Who, Credential> = { admin, viewer, operator, revoked: revoked.cred, device, service };
    const running = server;
    return {
      f,
      server: running,
      base: `https://127.0.0.1:${running.admin!.address.port}`,
      ca,
      creds,
      as: (who) => (who ? { ca, ...creds[who] } : { ca }),
      close: async () => {
        await running.close();
        await f.close();
        rmSync(out, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await server?.close();
    await f.close();
    rmSync(out, { recursive: true, force: true });
    throw e;
  }
}
