// Service identities: service add|list|remove. The domain is authority/identities/services.ts.
import type { Command } from "commander";
import { addService, listServices, removeService } from "../../authority/identities/services.js";
import { CLI_ACTOR, dirOption, withFleet } from "../context.js";
import { printJson, printTable, say } from "../output.js";
import { resign } from "./revoke.js";

export function registerService(program: Command): void {
  const service = program.command("service").description("service identities: client certificates for the fleet's backends");

  dirOption(
    service
      .command("add <name>")
      .description("issue a client certificate from the services CA for spiffe://<domain>/service/<name>, with a fresh key"),
  )
    .requiredOption("--out <dir>", "write key.pem (0600), cert.pem, chain.pem and ca.pem (the root) here")
    .option("--renew", "the service exists: a new key and certificate (the earlier ones stay valid until they expire)")
    .option("--json", "machine-readable output")
    .action(async (name: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const s = await addService(fleet, { name, outDir: opts.out, renew: opts.renew === true, actor: CLI_ACTOR });
        if (opts.json) return printJson({ ...s, notAfter: s.notAfter.toISOString() });
        say(`service ${s.name} ${s.renewed ? "renewed" : "added"}: ${s.identity}`);
        say(`certificate ${s.serial}, valid until ${s.notAfter.toISOString()}`);
        say(`files in ${s.dir}: key.pem (0600), cert.pem, chain.pem, ca.pem`);
      });
    });

  dirOption(service.command("list").description("every service: its newest certificate's serial, expiry and status"))
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const services = await listServices(fleet);
        if (opts.json) return printJson(services);
        printTable(
          services.map((s) => ({ name: s.name, serial: s.serial, expires: s.notAfter, status: s.status })),
          ["name", "serial", "expires", "status"],
        );
      });
    });

  dirOption(service.command("remove <name>").description("revoke every certificate of a service (cessationOfOperation)"))
    .option("--json", "machine-readable output")
    .action(async (name: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const change = await removeService(fleet, { name, actor: CLI_ACTOR });
        await resign(fleet, change.cas);
        if (opts.json) return printJson({ service: name, ...change });
        const n = change.serials.length;
        say(`service ${name} removed: ${n} certificate${n === 1 ? "" : "s"} revoked (${change.serials.join(", ")})`);
      });
    });
}
