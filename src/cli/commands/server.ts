// `fleetpki server`: the registration server's own certificate.
import type { Command } from "commander";
import { checkServerCertificate, reissueServerCertificate } from "../../authority/ca/server-certificate.js";
import { CLI_ACTOR, dirOption, withFleet } from "../context.js";
import { printJson, say, selfCommand, shellWord } from "../output.js";

export function registerServer(program: Command): void {
  const server = program.command("server").description("the registration server's TLS certificate");

  dirOption(
    server
      .command("reissue")
      .description(
        "issue a new server key and certificate (services CA) for server.names and server.public_url " +
          "(`serve` does this at start when they changed)",
      ),
  )
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const check = checkServerCertificate(fleet);
        const reasons = check.reasons.length > 0 ? check.reasons : ["requested by an operator"];
        const r = await reissueServerCertificate(fleet, { actor: CLI_ACTOR, reasons, previousSerial: check.serial });
        if (opts.json) return printJson({ ...r, notAfter: r.notAfter.toISOString() });
        say(`server certificate ${r.serial} issued by the services CA, valid until ${r.notAfter.toISOString()}`);
        say(`  names: ${r.names.join(", ")}`);
        say(`  CRL:   ${r.crlUrl}`);
        say(`  OCSP:  ${r.ocspUrl}`);
        if (r.previousSerial) {
          say(`  replaces ${r.previousSerial}, which stays valid until it expires; if its key may have leaked:`);
          say(`    ${selfCommand()} cert revoke ${r.previousSerial} --dir ${shellWord(opts.dir)}`);
        }
        say("A running `serve` serves it to new connections within a minute (open connections keep theirs).");
      });
    });
}
