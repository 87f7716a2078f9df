// Composition root: configuration -> services -> listeners.
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { deviceClientCas } from "./authority/cas.js";
import { Fleet } from "./authority/fleet.js";
import { layout } from "./authority/layout.js";
import { ConfigError } from "./config/config.js";
import { startRegistrationServer, type RegistrationTls, type RunningServer } from "./enroll/server.js";
import { readPrivateKey } from "./keys/keys.js";
import { createLogger, type Logger } from "./log.js";

export interface ServeOptions {
  dir: string;
  /** Overrides listen.registration, e.g. "127.0.0.1:0" in tests. */
  registrationListen?: string;
  logger?: Logger;
}

export interface FleetServer {
  fleet: Fleet;
  registration: AddressInfo;
  close(): Promise<void>;
}

export function parseListen(value: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`${what} "${value}" must be HOST:PORT (e.g. 0.0.0.0:8443 or [::]:8443)`);
  return { host: (m[1] ?? m[2])!, port };
}

async function registrationTls(fleet: Fleet): Promise<RegistrationTls> {
  const key = readPrivateKey(fleet.path(`${layout.serverDir}/key.pem`), fleet.passphrase());
  const cert = readFileSync(fleet.path(`${layout.serverDir}/cert.pem`), "utf8") + readFileSync(fleet.path(`${layout.serverDir}/chain.pem`), "utf8");
  return { key: key.export({ type: "pkcs8", format: "pem" }).toString(), cert, ca: await deviceClientCas(fleet) };
}

export async function startFleetServer(options: ServeOptions): Promise<FleetServer> {
  const fleet = await Fleet.open(options.dir);
  const logger = options.logger ?? createLogger("fleetpki");
  let registration: RunningServer | undefined;
  try {
    const listen = parseListen(options.registrationListen ?? fleet.config.listen.registration, "listen.registration");
    const tls = await registrationTls(fleet);
    await fleet.recordOnThread();
    let current = tls.ca.join("");
    // CAs created or revoked by the CLI while we run change whom we accept.
    const refreshTls = async (): Promise<RegistrationTls | undefined> => {
      const ca = await deviceClientCas(fleet);
      if (ca.join("") === current) return undefined;
      current = ca.join("");
      return { ...tls, ca };
    };
    registration = await startRegistrationServer({ fleet, logger: logger.child({ listener: "registration" }), tls, refreshTls, ...listen });
  } catch (e) {
    await fleet.close();
    throw e;
  }
  logger.info({ address: registration.address }, "registration server listening");
  return {
    fleet,
    registration: registration.address,
    async close() {
      await registration.close();
      await fleet.close();
    },
  };
}
