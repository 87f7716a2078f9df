import type { Command } from "commander";
import { sha256Fingerprint } from "../../x509/certificate.js";
import { startFleetServer } from "../../server.js";
import { fromPem } from "../../x509/pem.js";
import { dirOption } from "../context.js";

/** Runs the servers until SIGTERM/SIGINT, then shuts down gracefully. */
export async function serve(dir: string, registrationListen?: string): Promise<void> {
  const server = await startFleetServer({ dir, registrationListen });
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
  const { address, port } = server.registration;
  const host = address === "0.0.0.0" || address === "::" ? server.fleet.config.server.names[0] ?? "localhost" : address;
  const url = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
  process.stderr.write(
    [
      `fleetpki serving fleet "${server.fleet.config.fleet.name}" (${server.fleet.domain})`,
      `  registration (EST + JSON): ${url}  (listening on ${address}:${port})`,
      `  root fingerprint: sha256:${fp}`,
      "",
      "Enroll a device:",
      `  fleetpki device add robot-0001 --dir ${dir}          # prints a one-time token`,
      `  fleetpki agent enroll --server ${url} --root-fingerprint sha256:${fp} \\`,
      `      --id robot-0001 --token <token> --dir ./robot-0001`,
      `  fleetpki agent run --dir ./robot-0001               # keeps the certificate fresh`,
      "",
    ].join("\n"),
  );
  await stopped;
}

export function registerServe(program: Command): void {
  dirOption(program.command("serve").description("run the registration server (EST + JSON API)"))
    .option("--listen <host:port>", "override listen.registration")
    .action(async (opts) => serve(opts.dir, opts.listen));
}
