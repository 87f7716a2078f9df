// The two OCSP servers as child processes (they join the inner process's group): the real status
// listener, `fleetpki serve --only status`, and the `openssl ocsp` responder; started together and
// stopped gracefully, with their exits checked.
import { join } from "node:path";
import { check } from "../lib.js";
import { ServerProcess, serverNodeArgs } from "../server-process.js";
import type { Fixture } from "./fleet.js";
import { opensslResponderArgs, type OpensslFiles } from "./openssl.js";
import { TARGET_LABEL, type Target } from "./settings.js";

export interface Servers {
  servers: Record<Target, ServerProcess>;
  ports: Record<Target, number>;
}

export async function startServers(repo: string, fixture: Fixture, files: OpensslFiles, tmp: string): Promise<Servers> {
  const [fleet, openssl] = await Promise.all([
    ServerProcess.start(
      "fleetpki serve",
      process.execPath,
      [
        ...serverNodeArgs(),
        join(repo, "bin", "fleetpki.js"),
        "serve",
        "--dir",
        fixture.dir,
        "--only",
        "status",
        "--status-listen",
        "127.0.0.1:0",
      ],
      {
        env: { FLEETPKI_LOG_LEVEL: "warn" },
        logFile: join(tmp, "fleetpki-serve.log"),
        port: /listening on [^\s]*?:(\d+)\)?\s/,
      },
    ),
    ServerProcess.start("openssl ocsp", "openssl", opensslResponderArgs(files), {
      logFile: join(tmp, "openssl-ocsp.log"),
      port: /ACCEPT \S*:(\d+)/,
    }),
  ]);
  return { servers: { fleet: fleet.server, openssl: openssl.server }, ports: { fleet: fleet.port, openssl: openssl.port } };
}

/** SIGTERM to both, before the database is read: fleetpki exits 0 and logged nothing at warn or above; openssl ends. */
export async function stopServers(servers: Record<Target, ServerProcess>): Promise<string> {
  const stops = await Promise.all(
    (["fleet", "openssl"] as const).map(async (target) => ({ target, log: servers[target].log, ...(await servers[target].stop()) })),
  );
  for (const st of stops) check(!st.killed, `${TARGET_LABEL[st.target]} did not exit within 10 s of SIGTERM; its output:\n${st.log}`);
  const fleetStop = stops[0]!;
  const opensslStop = stops[1]!;
  check(fleetStop.code === 0, `fleetpki serve exited with ${fleetStop.code ?? fleetStop.signal}; its output:\n${fleetStop.log}`);
  // openssl ocsp has no SIGTERM handler: the signal's default action is its normal way to stop.
  check(
    opensslStop.signal === "SIGTERM" || opensslStop.code === 0,
    `openssl ocsp ended with ${opensslStop.code ?? opensslStop.signal}; its output:\n${opensslStop.log}`,
  );
  const fleetLog = fleetStop.log.split("\n").filter((l) => l.startsWith("{"));
  check(fleetLog.length === 0, `fleetpki serve logged warnings or errors:\n${fleetLog.slice(0, 10).join("\n")}`);
  return "fleetpki serve exited 0 on SIGTERM and logged no warnings or errors; openssl ocsp ended on SIGTERM (it has no handler)";
}
