// The gateway benchmark's peers, on the fleet's certificates: Debian's mosquitto 2.0 (mTLS with
// require_certificate, the certificate's CN as user name, a pattern ACL as fleetpki's default
// policy) and `openssl s_server -Verify 1` (the TLS handshake ceiling).
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { userInfo } from "node:os";
import { join } from "node:path";
import { layout } from "../../src/authority/layout.js";
import { ServerProcess } from "../server-process.js";
import type { BenchFleet } from "./fixture.js";

/** A port free on 127.0.0.1 right now (mosquitto cannot listen on port 0 and report it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** The user name mosquitto's ACL lets read everything robots publish (the subscriber's certificate CN). */
export const MOSQUITTO_READER = "telemetry";

/**
 * mosquitto with fleetpki's default policy as a pattern ACL: a device (user = CN = id) publishes
 * under fleet/<id>/ and reads fleet/<id>/cmd/#; the reader reads fleet/#.
 */
export async function startMosquitto(
  tmp: string,
  fleet: BenchFleet,
  readerCn = MOSQUITTO_READER,
): Promise<{ server: ServerProcess; port: number }> {
  const port = await freePort();
  const acl = join(tmp, "peers", "mosquitto.acl");
  writeFileSync(
    acl,
    [`user ${readerCn}`, "topic read fleet/#", "", "pattern write fleet/%u/#", "pattern read fleet/%u/cmd/#", ""].join("\n"),
  );
  const conf = join(tmp, "peers", "mosquitto.conf");
  writeFileSync(
    conf,
    [
      // Started as root, mosquitto drops to user "mosquitto", who cannot read our 0700 directory.
      `user ${userInfo().username}`,
      "per_listener_settings false",
      `listener ${port} 127.0.0.1`,
      `cafile ${fleet.clientCaFile}`,
      `certfile ${fleet.serverCertFile}`,
      `keyfile ${fleet.serverKeyFile}`,
      "require_certificate true",
      "use_identity_as_username true",
      `acl_file ${acl}`,
      "persistence false",
      "max_connections -1",
      // The one subscriber of (b) gets every message: room for them in flight and queued, as
      // aedes has (it sets no limit on a clean session's outgoing messages).
      "max_inflight_messages 1000",
      "max_queued_messages 100000",
      "log_dest stdout",
      "log_type error",
      "log_type warning",
      "log_type notice",
      "connection_messages false",
      "",
    ].join("\n"),
  );
  const { server } = await ServerProcess.start("mosquitto", "mosquitto", ["-c", conf], {
    logFile: join(tmp, "mosquitto.log"),
    port: /()/, // its log is block-buffered in a file: the port is known, wait for it to accept
  });
  await waitForPort(port);
  return { server, port };
}

/**
 * `openssl s_server -Verify 1 -rev`: full TLS, a required client certificate chained to the root,
 * and one echoed line per connection so the client knows the server finished the handshake.
 */
export async function startOpensslServer(tmp: string, fleet: BenchFleet): Promise<{ server: ServerProcess; port: number }> {
  const port = await freePort();
  const { server } = await ServerProcess.start(
    "openssl s_server",
    "openssl",
    [
      "s_server",
      "-accept",
      `127.0.0.1:${port}`,
      "-cert",
      fleet.serverCertFile,
      "-cert_chain",
      join(fleet.dir, layout.serverDir, "chain.pem"),
      "-key",
      fleet.serverKeyFile,
      "-CAfile",
      fleet.clientCaFile,
      "-Verify",
      "1",
      "-verify_return_error",
      "-rev",
      "-quiet",
      "-no_ticket",
      "-num_tickets",
      "0",
    ],
    { logFile: join(tmp, "s_server.log"), port: /()/ },
  );
  await waitForPort(port);
  return { server, port };
}

async function waitForPort(port: number): Promise<void> {
  const { connect } = await import("node:net");
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after 30 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
