// What the demo needs from the server side, in one place: the server with its gateway, service
// identities, and the gateway's denial rows in the audit log.
import { listAudit, type AuditRecord } from "../audit/log.js";
import { addService } from "../authority/identities/services.js";
import type { FleetServices } from "../authority/services.js";
import { silentLogger } from "../log.js";
import { startFleetServer, type FleetServer } from "../server.js";

export interface DemoServer {
  server: FleetServer;
  registrationUrl: string;
  statusUrl: string;
  gatewayUrl: string;
  close(): Promise<void>;
}

/** registration + status + gateway on 127.0.0.1, ports chosen by the system. */
export async function startDemoServer(dir: string): Promise<DemoServer> {
  const server = await startFleetServer({
    dir,
    registrationListen: "127.0.0.1:0",
    statusListen: "127.0.0.1:0",
    gatewayListen: "127.0.0.1:0",
    adminListen: "127.0.0.1:0",
    logger: silentLogger,
  });
  const gateway = server.gateway;
  if (!gateway) {
    await server.close();
    throw new Error("the server started without its MQTT gateway");
  }
  return {
    server,
    registrationUrl: `https://127.0.0.1:${server.registration!.port}`,
    statusUrl: `http://127.0.0.1:${server.status!.port}`,
    gatewayUrl: `mqtts://127.0.0.1:${gateway.address.port}`,
    close: () => server.close(),
  };
}

/** `fleetpki service add NAME --out DIR`: a services-CA client certificate in DIR (cert, key, chain, ca). */
export async function addServiceIdentity(fleet: FleetServices, name: string, outDir: string): Promise<{ serial: string }> {
  return addService(fleet, { name, outDir, actor: "demo" });
}

/** The gateway writes denied requests to the audit log aggregated per identity, topic and minute. */
export const DENIAL_ACTION = "access.deny";

/** Denial rows for `subject` ("device:<id>") and `topic`, newest last. */
export async function denialRows(fleet: FleetServices, subject: string, topic: string): Promise<AuditRecord[]> {
  const rows = await listAudit(fleet.store.ops.audit, {});
  return rows.filter(
    (r) => r.action === DENIAL_ACTION && r.subject === subject && (JSON.parse(r.details) as { topic?: string }).topic === topic,
  );
}
