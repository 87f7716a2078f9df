import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { addDevice, listDevices, parseLabels, showDevice } from "../../authority/devices.js";
import { InvalidArgument } from "../../authority/errors.js";
import { issueDeviceCertificate } from "../../authority/issuance.js";
import { decideRequest, listPendingRequests } from "../../authority/enrollment.js";
import { createToken } from "../../authority/tokens.js";
import { writeFileAtomic } from "../../keys/files.js";
import { CLI_ACTOR, dirOption, withFleet } from "../context.js";
import { printJson, printTable, say } from "../output.js";

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function registerDevice(program: Command): void {
  const device = program.command("device").description("register devices and issue their certificates");

  dirOption(device.command("add <id>").description("register a device"))
    .option("--group <group>", "group name")
    .option("--label <key=value>", "label (repeatable)", collect)
    .option("--no-token", "do not create a one-time enrollment token")
    .option("--ttl <duration>", "token lifetime (default: enrollment.token_ttl)")
    .option("--json", "machine-readable output")
    .action(async (id: string, opts) => {
      const labels = parseLabels(opts.label ?? []);
      await withFleet(opts.dir, async (fleet) => {
        const withToken = opts.token !== false && fleet.config.enrollment.token;
        const d = await addDevice(fleet, { id, group: opts.group, labels, actor: CLI_ACTOR });
        const token = withToken ? await createToken(fleet, { deviceId: id, ttl: opts.ttl, actor: CLI_ACTOR }) : undefined;
        if (opts.json) return printJson({ ...d, token: token?.token ?? null, token_expires_at: token?.expiresAt.toISOString() ?? null });
        say(`device ${d.id} added${d.group ? ` to group ${d.group}` : ""}`);
        if (token) say(`one-time enrollment token (valid until ${token.expiresAt.toISOString()}):\n${token.token}`);
      });
    });

  dirOption(device.command("requests").description("enrollment requests waiting for approval"))
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const pending = await listPendingRequests(fleet);
        if (opts.json) return printJson(pending);
        printTable(pending.map((p) => ({ device: p.deviceId, requested: p.createdAt, from: p.source, id: p.id })), ["device", "requested", "from", "id"]);
      });
    });

  for (const [name, approve] of [["approve", true], ["deny", false]] as const)
    dirOption(device.command(`${name} <id>`).description(`${name} the device's pending enrollment request`)).action(async (id: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        await decideRequest(fleet, { deviceId: id, approve, actor: CLI_ACTOR });
        say(`enrollment of ${id} ${approve ? "approved: its next poll gets a certificate" : "denied"}`);
      });
    });

  dirOption(device.command("list").description("list devices"))
    .option("--group <group>", "only this group")
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const devices = await listDevices(fleet, { group: opts.group });
        if (opts.json) return printJson(devices);
        printTable(
          devices.map((d) => ({
            id: d.id,
            status: d.status,
            group: d.group ?? "",
            labels: Object.entries(d.labels).map(([k, v]) => `${k}=${v}`).join(","),
            created: d.createdAt,
          })),
          ["id", "status", "group", "labels", "created"],
        );
      });
    });

  dirOption(device.command("show <id>").description("a device and its certificates"))
    .option("--json", "machine-readable output")
    .action(async (id: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const d = await showDevice(fleet, id);
        if (opts.json) return printJson(d);
        say(`id:      ${d.id}`);
        say(`status:  ${d.status}`);
        say(`group:   ${d.group ?? "-"}`);
        say(`labels:  ${Object.entries(d.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "-"}`);
        say(`identity: spiffe://${fleet.domain}/device/${d.id}`);
        say("");
        if (d.certificates.length === 0) return say("no certificates");
        printTable(
          d.certificates.map((c) => ({ serial: c.serial, status: c.status, issuer: c.issuer, "not after": c.notAfter, kind: c.kind })),
          ["serial", "status", "issuer", "not after", "kind"],
        );
      });
    });

  dirOption(device.command("issue <id>").description("sign a CSR for a device by hand (device profile)"))
    .requiredOption("--csr <file>", "PKCS#10 request, PEM or DER")
    .option("--out <file>", "write the certificate here instead of stdout")
    .action(async (id: string, opts) => {
      let csr: Buffer;
      try {
        csr = readFileSync(opts.csr);
      } catch {
        throw new InvalidArgument(`cannot read CSR file ${opts.csr}`);
      }
      await withFleet(opts.dir, async (fleet) => {
        const cert = await issueDeviceCertificate(fleet, { deviceId: id, csr, actor: CLI_ACTOR, context: { via: "cli" } });
        if (opts.out) {
          writeFileAtomic(opts.out, cert.certificatePem);
          process.stderr.write(`certificate ${cert.serial} for ${id} written to ${opts.out} (valid until ${cert.notAfter.toISOString()})\n`);
        } else process.stdout.write(cert.certificatePem);
      });
    });
}

export function registerToken(program: Command): void {
  const token = program.command("token").description("one-time enrollment tokens");
  dirOption(token.command("create <id>").description("create a one-time enrollment token for a device"))
    .option("--ttl <duration>", "lifetime (default: enrollment.token_ttl)")
    .option("--json", "machine-readable output")
    .action(async (id: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const t = await createToken(fleet, { deviceId: id, ttl: opts.ttl, actor: CLI_ACTOR });
        if (opts.json) return printJson({ device_id: id, token: t.token, expires_at: t.expiresAt.toISOString() });
        say(t.token);
        process.stderr.write(`single use, bound to ${id}, valid until ${t.expiresAt.toISOString()}\n`);
      });
    });
}
