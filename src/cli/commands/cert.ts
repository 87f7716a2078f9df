// `fleetpki cert expiring`: certificates in force that end within a window, for cron and alerting.
// Exit status 1 when there are any, 0 when none, 2 for a bad --within (commander's usage errors).
import { InvalidArgumentError, type Command } from "commander";
import { expiringCertificates, parseExpiryWindow, type ExpiringCertificate } from "../../authority/status/expiry.js";
import { dirOption, withFleet } from "../context.js";
import { printJson, printTable, say } from "../output.js";
import { remoteOptions, viaHere } from "../remote.js";

function left(seconds: number): string {
  if (seconds >= 86_400) return `${Math.floor(seconds / 86_400)}d ${Math.floor((seconds % 86_400) / 3600)}h`;
  if (seconds >= 3600) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
}

function window(text: string): number {
  try {
    return parseExpiryWindow(text);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message.replace(/^--within: /, ""));
  }
}

/** A window as the admin API's `within` takes it (digits and one unit), exactly the same length of time. */
function windowText(ms: number): string {
  for (const [unit, size] of [
    ["d", 86_400_000],
    ["h", 3_600_000],
    ["m", 60_000],
  ] as const)
    if (ms % size === 0) return `${ms / size}${unit}`;
  return `${Math.ceil(ms / 1000)}s`;
}

const expiringOf = (c: ExpiringCertificate): ExpiringCertificate => ({
  kind: c.kind,
  subject: c.subject,
  serial: c.serial,
  issuer: c.issuer,
  notAfter: c.notAfter,
  secondsLeft: c.secondsLeft,
  status: c.status,
});

/** Adds `expiring` to the `cert` command (made by the revocation commands), or makes `cert`. */
export function registerCert(program: Command): void {
  const cert = program.commands.find((c) => c.name() === "cert") ?? program.command("cert").description("certificates by serial");
  remoteOptions(
    dirOption(
      cert
        .command("expiring")
        .description(
          "list certificates in force that end within the window (devices, services, operators, server, OCSP signers, audit key, CAs); " +
            "exit 1 when there are any",
        ),
    ),
  )
    .option("--within <duration>", "window from now: 30m, 12h, 14d, 2w ... (default 14d)", window)
    .option("--json", "machine-readable output (a JSON array)")
    .action(async (opts: { dir: string; within?: number; json?: boolean }, cmd: Command) => {
      const within = opts.within ?? window("14d");
      const found: ExpiringCertificate[] = (
        await viaHere(
          cmd,
          () => withFleet(opts.dir, (fleet) => expiringCertificates(fleet, { within })),
          async (api) => {
            const query = { within: windowText(within) };
            return (await api.call<{ items: ExpiringCertificate[] }>("GET /api/certificates/expiring", {}, undefined, query)).items;
          },
        )
      ).map(expiringOf);
      if (opts.json) printJson(found);
      else if (found.length === 0) say("no certificate in force ends within the window");
      else
        printTable(
          found.map((c) => ({
            kind: c.kind,
            subject: c.subject,
            serial: c.serial,
            issuer: c.issuer,
            "not after": c.notAfter,
            left: left(c.secondsLeft),
            status: c.status,
          })),
          ["kind", "subject", "serial", "issuer", "not after", "left", "status"],
        );
      // For cron and alerting: non-zero while something needs attention.
      if (found.length > 0) process.exitCode = 1;
    });
}
