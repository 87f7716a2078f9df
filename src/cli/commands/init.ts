import type { Command } from "commander";
import { initFleet, type InitResult } from "../../authority/ca/init.js";
import { dirOption } from "../context.js";
import { say, selfCommand, shellWord } from "../output.js";

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function describeInit(result: InitResult): void {
  say(`Fleet created in ${result.dir}`);
  say(`Root CA fingerprint: sha256:${result.rootFingerprint}`);
  say(`Server certificate names: ${result.serverNames.join(", ")}`);
  say(`CRL and OCSP URLs in certificates: ${result.publicUrl}/crl/<ca>.crl, ${result.publicUrl}/ocsp`);
  say("  (robots must reach these; change with --server-name / --public-url, or later in fleetpki.yaml:");
  say("   the server certificate follows, the CA certificates keep the URL they were made with)");
  if (result.passphraseGenerated) {
    say("");
    say("DEVELOPMENT SETUP: no --passphrase-file was given, so a random passphrase protecting the CA");
    say(`keys was written to ${result.passphraseFile} (mode 0600). For production, keep the`);
    say("passphrase outside the fleet directory and pass --passphrase-file.");
  }
  if (result.pending.length > 0) {
    say("");
    say("The root key is offline. Take these signing requests to the offline machine:");
    for (const p of result.pending) say(`  ${p}`);
    say("There: fleetpki ca root sign --dir <root-dir> --out <out-dir> <request files>");
    say(`Back here: ${selfCommand()} ca intermediate import --dir ${shellWord(result.dir)} <out-dir>/*.pem`);
  }
}

export function registerInit(program: Command): void {
  dirOption(program.command("init").description("create a fleet: CA hierarchy, server and admin certificates, config, database"))
    .option("--name <name>", "organisation name written into CA certificates", "fleetpki")
    .option("--domain <domain>", "fleet trust domain, required (device ids are spiffe://<domain>/device/<id>); fixed in the CAs for good")
    .option("--key-type <type>", "CA key type: p256 | p384 | ed25519 | rsa3072", "p256")
    .option("--passphrase-file <file>", "file holding the passphrase that encrypts CA keys")
    .option(
      "--server-name <name>",
      "DNS name or IP for the server certificate (repeatable; default: this host's name and addresses)",
      collect,
    )
    .option("--public-url <url>", "where robots reach the status server, written into every certificate (default http://<first name>:8080)")
    .option("--root-cert <file>", "use a root created offline with `ca root init`; its key never comes here")
    .action(async (opts) => {
      const result = await initFleet({
        dir: opts.dir,
        name: opts.name,
        domain: opts.domain,
        keyType: opts.keyType,
        passphraseFile: opts.passphraseFile,
        serverNames: opts.serverName,
        publicUrl: opts.publicUrl,
        rootCertFile: opts.rootCert,
      });
      describeInit(result);
    });
}
