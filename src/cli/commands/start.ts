import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { listCas } from "../../authority/ca/cas.js";
import { DEV_DOMAIN, initFleet } from "../../authority/ca/init.js";
import { CONFIG_FILE } from "../../config/config.js";
import { dirOption, withFleet } from "../context.js";
import { say, selfCommand } from "../output.js";
import { describeInit } from "./init.js";
import { serve } from "./serve.js";

export function registerStart(program: Command): void {
  dirOption(
    program.command("start").description("initialize a development fleet in the directory if missing, show the hierarchy and serve"),
  )
    .option("--listen <host:port>", "override listen.registration")
    .option("--status-listen <host:port>", "override listen.status")
    .option("--gateway-listen <host:port>", "override listen.gateway")
    .option("--admin-listen <host:port>", "override listen.admin")
    .option("--public-url <url>", "for a new fleet: where robots reach the status server (default http://<host name>:8080)")
    .action(async (opts) => {
      if (!existsSync(join(opts.dir, CONFIG_FILE))) {
        describeInit(await initFleet({ dir: opts.dir, name: "fleetpki development", domain: DEV_DOMAIN, publicUrl: opts.publicUrl }));
        // The domain is fixed in the CAs' name constraints: say plainly that this one is a placeholder.
        say("");
        say(`DEVELOPMENT FLEET: its trust domain is the placeholder ${DEV_DOMAIN}, fixed in the CA certificates for good.`);
        say(`For a real fleet: ${selfCommand()} init --domain <your domain> --passphrase-file <file outside the fleet directory>`);
        say("  (docs/production.md)");
        say("");
      }
      await withFleet(opts.dir, async (fleet) => {
        const cas = await listCas(fleet);
        say(`Fleet "${fleet.config.fleet.name}" (${fleet.domain}) in ${opts.dir}`);
        for (const c of cas) {
          const indent = c.id === "root" ? "" : "  └─ ";
          const key = `[${c.keyType}${c.keyOnline ? "" : ", key offline"}]`;
          const id = c.id.padEnd(c.id === "root" ? 14 : 9);
          say(`${indent}${id} ${c.subject}  ${key} until ${c.notAfter.slice(0, 10)}  sha256:${c.fingerprintSha256.slice(0, 16)}…`);
        }
        say("");
      });
      await serve(opts.dir, {
        registrationListen: opts.listen,
        statusListen: opts.statusListen,
        gatewayListen: opts.gatewayListen,
        adminListen: opts.adminListen,
      });
    });
}
