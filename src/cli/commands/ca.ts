import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { expandIdRange, issueBatch, parseIdList } from "../../authority/issue/batch.js";
import { createLocalCa, listCas } from "../../authority/ca/cas.js";
import { initOfflineRoot, signCeremonyRequests } from "../../authority/ca/ceremony.js";
import { InvalidArgument } from "../../authority/errors.js";
import { importIntermediates } from "../../authority/ca/init.js";
import { systemClock } from "../../authority/clock.js";
import { CLI_ACTOR, dirOption, withFleet } from "../context.js";
import { printJson, printTable, progressBar, say } from "../output.js";

export function registerCa(program: Command): void {
  const ca = program.command("ca").description("the CA hierarchy: list, local (factory) CAs, offline root ceremony");

  dirOption(ca.command("list").description("every CA: role, subject, serial, fingerprint, validity, key type, issuer"))
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const cas = await listCas(fleet);
        if (opts.json) return printJson(cas);
        printTable(
          cas.map((c) => ({
            role: c.id,
            subject: c.subject,
            serial: c.serial,
            "sha-256 fingerprint": c.fingerprintSha256,
            "not before": c.notBefore.slice(0, 10),
            "not after": c.notAfter.slice(0, 10),
            key: `${c.keyType}${c.keyOnline ? "" : " (offline)"}`,
            issuer: c.issuer,
            status: c.status,
          })),
          ["role", "subject", "serial", "sha-256 fingerprint", "not before", "not after", "key", "issuer", "status"],
        );
      });
    });

  dirOption(ca.command("create-local").description("create a local (factory) CA: name-constrained, pathLen 0"))
    .requiredOption("--name <name>", "local CA name, e.g. factory-a")
    .option("--validity <duration>", "lifetime (default: validity.local_ca)")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const result = await createLocalCa(fleet, { name: opts.name, validity: opts.validity, actor: CLI_ACTOR });
        if (result.status === "created") say(`local CA local-${opts.name} created (ca/local-${opts.name}/)`);
        else
          say(
            `the root key is offline: sign ${result.requestFile} with \`fleetpki ca root sign\`, then \`fleetpki ca intermediate import\``,
          );
      });
    });

  dirOption(ca.command("issue-batch").description("issue device bundles offline from a local CA (resumable)"))
    .requiredOption("--local <name>", "local CA name")
    .option("--ids <range>", "id range, e.g. robot-0001..robot-1000")
    .option("--ids-file <file>", "file with one device id per line")
    .requiredOption("--out <dir>", "output directory: <dir>/<id>/{key,cert,chain,ca}.pem")
    .option("--group <group>", "group for newly registered devices")
    .option("--validity <duration>", "lifetime of the factory certificates (default: validity.factory, 1y)")
    .action(async (opts) => {
      if (!!opts.ids === !!opts.idsFile) throw new InvalidArgument("give exactly one of --ids and --ids-file");
      let ids: string[];
      if (opts.ids) ids = expandIdRange(opts.ids);
      else {
        let text: string;
        try {
          text = readFileSync(opts.idsFile, "utf8");
        } catch {
          throw new InvalidArgument(`cannot read ${opts.idsFile}`);
        }
        ids = parseIdList(text);
      }
      await withFleet(opts.dir, async (fleet) => {
        const result = await issueBatch(fleet, {
          localName: opts.local,
          ids,
          outDir: opts.out,
          group: opts.group,
          validity: opts.validity,
          actor: `${CLI_ACTOR}:issue-batch`,
          onProgress: progressBar(`issuing from local-${opts.local}`),
        });
        say(`${result.issued} bundles issued, ${result.skipped} already present, ${result.total} in all, in ${opts.out}`);
      });
    });

  const root = ca.command("root").description("offline root: create it and sign intermediates on the offline machine");
  root
    .command("init")
    .description("create a root CA in a directory of its own (on the offline machine)")
    .requiredOption("--dir <dir>", "offline root directory")
    .option("--name <name>", "organisation name", "fleetpki")
    .option("--domain <domain>", "fleet trust domain", "fleet.example")
    .option("--key-type <type>", "p256 | p384 | ed25519 | rsa3072", "p256")
    .option("--passphrase-file <file>", "passphrase that encrypts the root key")
    .option("--validity <duration>", "root lifetime", "20y")
    .action(async (opts) => {
      const r = initOfflineRoot({
        dir: opts.dir,
        name: opts.name,
        domain: opts.domain,
        keyType: opts.keyType,
        passphraseFile: opts.passphraseFile,
        validity: opts.validity,
        now: systemClock.now(),
      });
      say(`root CA created in ${opts.dir}`);
      say(`fingerprint: sha256:${r.fingerprint}`);
      say(`carry ${r.certificatePath} (certificate only) to the online machine: fleetpki init --root-cert cert.pem`);
      if (r.passphraseGenerated) say(`DEVELOPMENT SETUP: the root key passphrase was generated into ${opts.dir}/secrets/passphrase`);
    });
  root
    .command("sign <requests...>")
    .description("sign intermediate CA requests (ceremony/*.request.json) with the offline root")
    .requiredOption("--dir <dir>", "offline root directory")
    .requiredOption("--out <dir>", "where to write the signed certificates")
    .action(async (requests: string[], opts) => {
      for (const s of signCeremonyRequests(opts.dir, requests, opts.out, systemClock.now()))
        say(`signed ${s.caId}: ${s.subject}, serial ${s.serial}, until ${s.notAfter} -> ${s.file}`);
    });

  const intermediate = ca.command("intermediate").description("intermediates signed by an offline root");
  dirOption(intermediate.command("import <certs...>").description("import certificates signed by `ca root sign`")).action(
    async (certs: string[], opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const { imported, ready } = await importIntermediates(fleet, certs, CLI_ACTOR);
        say(`imported: ${imported.join(", ")}`);
        say(ready ? "fleet ready: server and admin certificates issued" : "still waiting for more intermediates");
      });
    },
  );
}
