// Operators: operator add|list|remove|role|login. The domain is authority/identities/operators.ts
// and operator-sessions.ts.
import type { Command } from "commander";
import { createLoginLink, loginUrl } from "../../authority/identities/operator-sessions.js";
import {
  OPERATOR_ROLES,
  addOperator,
  assertOperatorRole,
  listOperators,
  removeOperator,
  setOperatorRole,
} from "../../authority/identities/operators.js";
import { readPassphraseFile } from "../../keys/keys.js";
import { CLI_ACTOR, dirOption, withFleet } from "../context.js";
import { printJson, printTable, say } from "../output.js";
import { resign } from "./revoke.js";

const ROLES = OPERATOR_ROLES.join("|");

export function registerOperator(program: Command): void {
  const operator = program.command("operator").description("operators: people who use the admin API, the dashboard and the gateway");

  dirOption(
    operator
      .command("add <name>")
      .description("issue an operator certificate from the operators CA for spiffe://<domain>/operator/<name>, with a fresh key"),
  )
    .requiredOption("--role <role>", `what the operator may do: ${ROLES}`)
    .requiredOption("--out <dir>", "write key.pem (0600), cert.pem, chain.pem, ca.pem (the root) and <name>.p12 (0600) here")
    .option("--p12-passphrase-file <file>", "the PKCS#12's passphrase (default: a random one, printed once)")
    .option("--renew", "the operator exists: a new key and certificate (the earlier ones stay valid until they expire)")
    .option("--json", "machine-readable output")
    .action(async (name: string, opts) => {
      assertOperatorRole(opts.role);
      const p12Passphrase = opts.p12PassphraseFile ? readPassphraseFile(opts.p12PassphraseFile) : undefined;
      await withFleet(opts.dir, async (fleet) => {
        const renew = opts.renew === true;
        const o = await addOperator(fleet, { name, role: opts.role, outDir: opts.out, renew, actor: CLI_ACTOR, p12Passphrase });
        const { p12Passphrase: passphrase, p12PassphraseGenerated: generated, ...shown } = o;
        if (opts.json)
          return printJson({ ...shown, notAfter: o.notAfter.toISOString(), ...(generated ? { p12Passphrase: passphrase } : {}) });
        say(`operator ${o.name} ${o.renewed ? "renewed" : "added"} as ${o.role}: ${o.identity}`);
        say(`certificate ${o.serial}, valid until ${o.notAfter.toISOString()}`);
        say(`files in ${o.dir}: key.pem (0600), cert.pem, chain.pem, ca.pem, ${o.name}.p12 (0600, for browsers)`);
        if (generated) say(`PKCS#12 passphrase (shown only now; give it to ${o.name} apart from the file): ${passphrase}`);
        else say(`PKCS#12 passphrase: the one in ${opts.p12PassphraseFile}`);
      });
    });

  dirOption(operator.command("list").description("every operator: role, status and its newest certificate"))
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const operators = await listOperators(fleet);
        if (opts.json) return printJson(operators);
        printTable(
          operators.map((o) => ({
            name: o.name,
            role: o.role,
            status: o.status,
            serial: o.serial ?? "-",
            expires: o.notAfter ?? "-",
            certificate: o.certificateStatus,
          })),
          ["name", "role", "status", "serial", "expires", "certificate"],
        );
      });
    });

  dirOption(operator.command("remove <name>").description("revoke every certificate of an operator and end its sessions"))
    .option("--json", "machine-readable output")
    .action(async (name: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const change = await removeOperator(fleet, { name, actor: CLI_ACTOR });
        await resign(fleet, change.cas);
        if (opts.json) return printJson({ operator: name, ...change });
        const n = change.serials.length;
        say(`operator ${name} removed: ${n} certificate${n === 1 ? "" : "s"} revoked${n ? ` (${change.serials.join(", ")})` : ""}`);
      });
    });

  dirOption(operator.command("role <name> <role>").description(`change an operator's role (${ROLES})`)).action(
    async (name: string, role: string, opts) => {
      assertOperatorRole(role);
      await withFleet(opts.dir, async (fleet) => {
        const changed = await setOperatorRole(fleet, { name, role, actor: CLI_ACTOR });
        say(changed ? `operator ${name} is now ${role}` : `operator ${name} already is ${role}`);
      });
    },
  );

  dirOption(operator.command("login <name>").description("print a one-time dashboard login link for an operator (valid 10 minutes)"))
    .option("--json", "machine-readable output")
    .action(async (name: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const link = await createLoginLink(fleet, { name, actor: CLI_ACTOR });
        const url = loginUrl(fleet, link.token);
        if (opts.json) return printJson({ operator: name, url, expiresAt: link.expiresAt.toISOString() });
        say(url);
        say(`one-time link for ${name}, valid until ${link.expiresAt.toISOString()}`);
      });
    });
}
