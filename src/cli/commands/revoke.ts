// Revocation commands: device revoke|hold|unhold, cert revoke, ca revoke-local, crl export.
// A running `serve` picks each change up from the audit log within a second.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { crlCaIds, crlPem, currentCrl, resignCrls } from "../../authority/status/crls.js";
import { importCrl, signRootCrlRequest, writeRootCrlRequest, OFFLINE_ROOT_CRL_VALIDITY } from "../../authority/ca/root-crl.js";
import type { FleetServices } from "../../authority/services.js";
import { systemClock } from "../../authority/clock.js";
import {
  REVOKE_REASONS,
  holdDevice,
  parseRevokeReason,
  revokeCertificate,
  revokeDevice,
  revokeLocalCa,
  unholdDevice,
  type DeviceStatusChange,
  type StatusChange,
} from "../../authority/status/revocation.js";
import { writeFileAtomic } from "../../keys/files.js";
import { CLI_ACTOR, dirOption, withFleet } from "../context.js";
import { printJson, say } from "../output.js";
import { remoteOptions, via, type AdminClient } from "../remote.js";

const REASON_HELP = `reason: ${REVOKE_REASONS.join(" | ")} (default unspecified)`;

function described(c: StatusChange): string {
  if (c.serials.length === 0) return "no unexpired certificates were affected";
  return (
    `${c.serials.length} certificate${c.serials.length === 1 ? "" : "s"} (${c.serials.join(", ")}); ` +
    `CRLs re-signed: ${c.cas.join(", ")}`
  );
}

/** A status change as printed, from the domain or the admin API (same fields, same order). */
export const statusChangeOf = (c: StatusChange): StatusChange => ({ serials: c.serials, cas: c.cas });

/** A device's status change as printed: also its ROS 2 enclaves (an older server answers without them). */
export const deviceChangeOf = (c: DeviceStatusChange): DeviceStatusChange => ({ ...statusChangeOf(c), enclaves: c.enclaves ?? [] });

/** "; and 2 ROS 2 enclaves: /robot_0001/base, /robot_0001/arm" (their serials are among the certificates). */
export function enclavesDescribed(c: DeviceStatusChange): string {
  if (c.enclaves.length === 0) return "";
  const n = c.enclaves.length;
  return `; and ${n} ROS 2 enclave${n === 1 ? "" : "s"}: ${c.enclaves.map((e) => e.path).join(", ")}`;
}

/**
 * What reaches the robots' keystores: `revoke device` does not know where they are (a keystore is a
 * directory the user gave), so it says how their crl.pem copies are brought up to date.
 */
export function keystoreHint(c: DeviceStatusChange): void {
  if (c.enclaves.length === 0) return;
  const keystores = [...new Set(c.enclaves.map((e) => e.keystore))].join(", ");
  say(
    `the enclaves' crl.pem copies update when each robot's agent fetches /crl/ros2-identity.pem; on this machine run ` +
      `\`fleetpki ros2 keystore refresh-crl DIR\` for each keystore directory (keystore ${keystores})`,
  );
}

/** --dir, or --server and --operator. */
const fleetOption = (cmd: Command): Command => remoteOptions(dirOption(cmd));

/** Changes a device's status here (then re-signs the CRLs) or through the admin API (whose server re-signs them). */
function deviceChange(
  cmd: Command,
  local: (fleet: FleetServices) => Promise<DeviceStatusChange>,
  remote: (api: AdminClient) => Promise<DeviceStatusChange>,
): Promise<DeviceStatusChange> {
  return via(
    cmd,
    async (fleet) => {
      const change = await local(fleet);
      await resign(fleet, change.cas);
      return deviceChangeOf(change);
    },
    async (api) => deviceChangeOf(await remote(api)),
  );
}

/** Re-signs the affected CRLs (the domain decides how) and says what could not be done here. */
export async function resign(fleet: FleetServices, cas: readonly string[]): Promise<void> {
  for (const r of await resignCrls(fleet, cas)) {
    if (r.outcome === "root-request")
      process.stderr.write(
        `fleetpki: the root key is offline: sign ${join(fleet.dir, r.request)} with \`fleetpki ca root sign-crl\` ` +
          `on the offline machine, then \`fleetpki crl import root.crl\`\n`,
      );
    else if (r.outcome === "failed")
      process.stderr.write(`fleetpki: warning: the ${r.caId} CRL was not re-signed here (${r.reason}); a running server re-signs it\n`);
  }
}

function subcommand(program: Command, name: string): Command {
  const found = program.commands.find((c) => c.name() === name);
  if (!found) throw new Error(`register the ${name} command before the revocation commands`);
  return found;
}

export function registerRevocation(program: Command): void {
  const device = subcommand(program, "device");
  const ca = subcommand(program, "ca");
  fleetOption(
    device.command("revoke <id>").description("revoke every unexpired certificate of a device and block its enrollment and renewal"),
  )
    .option("--reason <reason>", REASON_HELP)
    .option("--json", "machine-readable output")
    .action(async (id: string, opts, cmd: Command) => {
      const reason = parseRevokeReason(opts.reason);
      const change = await deviceChange(
        cmd,
        (fleet) => revokeDevice(fleet, { deviceId: id, reason, actor: CLI_ACTOR }),
        (api) => api.call<DeviceStatusChange>("POST /api/devices/:id/revoke", { id }, { reason }),
      );
      if (opts.json) return printJson({ device: id, reason, ...change });
      say(`device ${id} revoked (${reason}): ${described(change)}${enclavesDescribed(change)}`);
      keystoreHint(change);
    });

  fleetOption(device.command("hold <id>").description("put a device's certificates on hold (certificateHold; undo with unhold)"))
    .option("--json", "machine-readable output")
    .action(async (id: string, opts, cmd: Command) => {
      const change = await deviceChange(
        cmd,
        (fleet) => holdDevice(fleet, { deviceId: id, actor: CLI_ACTOR }),
        (api) => api.call<DeviceStatusChange>("POST /api/devices/:id/hold", { id }, {}),
      );
      if (opts.json) return printJson({ device: id, ...change });
      say(`device ${id} on hold: ${described(change)}${enclavesDescribed(change)}`);
      keystoreHint(change);
    });

  fleetOption(device.command("unhold <id>").description("release a held device: its certificates are valid again"))
    .option("--json", "machine-readable output")
    .action(async (id: string, opts, cmd: Command) => {
      const change = await deviceChange(
        cmd,
        (fleet) => unholdDevice(fleet, { deviceId: id, actor: CLI_ACTOR }),
        (api) => api.call<DeviceStatusChange>("POST /api/devices/:id/unhold", { id }, {}),
      );
      if (opts.json) return printJson({ device: id, ...change });
      say(`device ${id} released: ${described(change)}${enclavesDescribed(change)}`);
      keystoreHint(change);
    });

  const cert = program.command("cert").description("certificates by serial");
  fleetOption(
    cert.command("revoke <serial>").description("revoke one certificate (hex serial, as `device show` or `openssl x509 -serial` print it)"),
  )
    .option("--reason <reason>", REASON_HELP)
    .option("--json", "machine-readable output")
    .action(async (serial: string, opts, cmd: Command) => {
      const reason = parseRevokeReason(opts.reason);
      type Revoked = StatusChange & { kind: string; subjectId: string };
      const revoked = (c: Revoked): Revoked => ({ ...statusChangeOf(c), kind: c.kind, subjectId: c.subjectId });
      const change = await via(
        cmd,
        async (fleet) => {
          const c = await revokeCertificate(fleet, { serial, reason, actor: CLI_ACTOR });
          await resign(fleet, c.cas);
          return revoked(c);
        },
        async (api) => revoked(await api.call<Revoked>("POST /api/certificates/:serial/revoke", { serial }, { reason })),
      );
      if (opts.json) return printJson({ reason, ...change });
      say(
        `certificate ${change.serials[0]} (${change.kind} ${change.subjectId}) revoked (${reason}); ` +
          `CRL re-signed: ${change.cas.join(", ")}`,
      );
    });

  dirOption(
    ca.command("revoke-local <name>").description("revoke a compromised local (factory) CA: on the root's CRL, refused for enrollment"),
  )
    .option("--json", "machine-readable output")
    .action(async (name: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const change = await revokeLocalCa(fleet, { name, actor: CLI_ACTOR });
        await resign(fleet, change.cas);
        if (opts.json) return printJson(change);
        say(
          `local CA ${change.caId} revoked (cACompromise): devices it certified can no longer enroll, ` +
            `and chains through it fail CRL checks`,
        );
      });
    });

  const crl = program.command("crl").description("certificate revocation lists");
  registerOfflineRootCrl(crl, ca);
  dirOption(crl.command("export").description("write each CA's current CRL (DER and PEM), re-signing any that is due"))
    .option("--ca <name>", "only this CA")
    .option("--out <dir>", "directory to write <ca>.crl and <ca>.pem into", ".")
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const ids = opts.ca ? [opts.ca as string] : await crlCaIds(fleet);
        mkdirSync(opts.out, { recursive: true });
        const written: { ca: string; crl_number: string; entries: number; next_update: string; files: string[] }[] = [];
        for (const id of ids) {
          const crl = await currentCrl(fleet, id);
          const files = [join(opts.out, `${id}.crl`), join(opts.out, `${id}.pem`)];
          writeFileAtomic(files[0]!, crl.der);
          writeFileAtomic(files[1]!, crlPem(crl));
          written.push({
            ca: id,
            crl_number: crl.crlNumber.toString(),
            entries: crl.entries,
            next_update: crl.nextUpdate.toISOString(),
            files,
          });
        }
        if (opts.json) return printJson(written);
        for (const w of written)
          say(`${w.ca}: CRL #${w.crl_number}, ${w.entries} entries, next update ${w.next_update} -> ${w.files.join(", ")}`);
      });
    });
}

function registerOfflineRootCrl(crl: Command, ca: Command): void {
  dirOption(crl.command("request").description("write ceremony/root-crl.request.json for a root held offline (what its CRL must list)"))
    .option("--validity <duration>", "how long the signed CRL stays valid", OFFLINE_ROOT_CRL_VALIDITY)
    .action(async (opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const request = await writeRootCrlRequest(fleet, opts.validity);
        say(
          `wrote ${join(fleet.dir, request)}: sign it with \`fleetpki ca root sign-crl\` on the offline machine, ` +
            `then \`fleetpki crl import root.crl\``,
        );
      });
    });

  dirOption(crl.command("import <file>").description("import the root CRL signed offline (DER or PEM); running servers serve it at once"))
    .option("--json", "machine-readable output")
    .action(async (file: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const r = await importCrl(fleet, file, CLI_ACTOR);
        if (opts.json)
          return printJson({ ca: r.caId, crl_number: r.crlNumber.toString(), entries: r.entries, next_update: r.nextUpdate.toISOString() });
        say(
          `imported the root CRL #${r.crlNumber} (${r.entries} entries), valid until ${r.nextUpdate.toISOString()}: ` +
            `request the next one before then`,
        );
      });
    });

  const root = ca.commands.find((c) => c.name() === "root");
  if (!root) throw new Error("register `ca root` before the revocation commands");
  root
    .command("sign-crl <request>")
    .description("sign a root CRL request (ceremony/root-crl.request.json) with the offline root")
    .requiredOption("--dir <dir>", "offline root directory")
    .requiredOption("--out <dir>", "where to write root.crl and root.crl.pem")
    .action(async (request: string, opts) => {
      const r = signRootCrlRequest(opts.dir, request, opts.out, systemClock.now());
      say(`signed the root CRL #${r.crlNumber} (${r.entries} entries, valid until ${r.nextUpdate.toISOString()}) -> ${r.file}`);
    });
}
