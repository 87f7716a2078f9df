import type { Command } from "commander";
import { InvalidArgument } from "../../authority/errors.js";
import { sha256Fingerprint } from "../../x509/certificate.js";
import { LISTENERS, type Listener } from "../../listeners.js";
import { fromPem } from "../../x509/pem.js";
import { dirOption } from "../context.js";
import { selfCommand, shellWord } from "../output.js";

/** Runs the servers until SIGTERM/SIGINT, then shuts down gracefully. */
export interface ServeCliOptions {
  registrationListen?: string;
  statusListen?: string;
  gatewayListen?: string;
  adminListen?: string;
  only?: Listener[];
}

function urlOf(
  server: { fleet: { config: { server: { names: string[] } } } },
  scheme: string,
  a: { address: string; port: number },
): string {
  const host = a.address === "0.0.0.0" || a.address === "::" ? (server.fleet.config.server.names[0] ?? "localhost") : a.address;
  return `${scheme}://${host.includes(":") ? `[${host}]` : host}:${a.port}`;
}

export function parseOnly(text: string | undefined): Listener[] | undefined {
  if (text === undefined) return undefined;
  const names = text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = names.filter((n) => !(LISTENERS as readonly string[]).includes(n));
  if (names.length === 0 || bad.length > 0)
    throw new InvalidArgument(`--only takes ${LISTENERS.join(", ")} (comma-separated), not "${text}"`);
  return names as Listener[];
}

export async function serve(dir: string, options: ServeCliOptions = {}): Promise<void> {
  // Loaded here: the servers' libraries would slow every other command's start.
  const { startFleetServer } = await import("../../server.js");
  const server = await startFleetServer({ dir, ...options });
  // Handlers first: anything that reads the banner below may signal us right away.
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      process.stderr.write(`fleetpki: ${signal} received, shutting down\n`);
      process.off("SIGTERM", onTerm);
      process.off("SIGINT", onInt);
      void server.close().then(resolve, resolve);
    };
    const onTerm = () => stop("SIGTERM");
    const onInt = () => stop("SIGINT");
    process.on("SIGTERM", onTerm);
    process.on("SIGINT", onInt);
  });
  const root = await server.fleet.caRecord("root");
  const fp = sha256Fingerprint(fromPem(root.certificate_pem, ["CERTIFICATE"]));
  const lines = [`fleetpki serving fleet "${server.fleet.config.fleet.name}" (${server.fleet.domain})`];
  const registration = server.registration;
  const url = registration ? urlOf(server, "https", registration) : undefined;
  if (registration) lines.push(`  registration (EST + JSON): ${url}  (listening on ${registration.address}:${registration.port})`);
  if (server.status)
    lines.push(
      `  status (CRLs, OCSP):       ${urlOf(server, "http", server.status)}  (listening on ${server.status.address}:${server.status.port})`,
    );
  if (server.gateway) {
    const g = server.gateway.address;
    lines.push(`  gateway (MQTT over mTLS):  ${urlOf(server, "mqtts", g)}  (listening on ${g.address}:${g.port})`);
  }
  if (server.admin) {
    const a = server.admin.address;
    lines.push(`  admin API and dashboard:   ${urlOf(server, "https", a)}  (listening on ${a.address}:${a.port})`);
  }
  lines.push(`  root fingerprint: sha256:${fp}`, "");
  const cli = selfCommand();
  if (url)
    lines.push(
      "Enroll a device (the commands work as printed, from this directory):",
      `  ${cli} device add robot-0001 --dir ${shellWord(dir)}          # prints a one-time token`,
      `  ${cli} agent enroll --server ${url} --root-fingerprint sha256:${fp} \\`,
      `      --id robot-0001 --token <token> --dir ./robot-0001`,
      `  ${cli} agent run --dir ./robot-0001               # keeps the certificate fresh`,
      "",
    );
  process.stderr.write(lines.join("\n"));
  await stopped;
}

export function registerServe(program: Command): void {
  dirOption(
    program
      .command("serve")
      .description(
        "run the registration server (EST + JSON API), the status server (CRLs, OCSP), the MQTT gateway (mTLS) and the admin API",
      ),
  )
    .option("--listen <host:port>", "override listen.registration")
    .option("--status-listen <host:port>", "override listen.status")
    .option("--gateway-listen <host:port>", "override listen.gateway")
    .option("--admin-listen <host:port>", "override listen.admin")
    .option("--only <listeners>", `run only these listeners (${LISTENERS.join(", ")}), e.g. --only status to scale out CRL/OCSP`)
    .action(async (opts) =>
      serve(opts.dir, {
        registrationListen: opts.listen,
        statusListen: opts.statusListen,
        gatewayListen: opts.gatewayListen,
        adminListen: opts.adminListen,
        only: parseOnly(opts.only),
      }),
    );
}
