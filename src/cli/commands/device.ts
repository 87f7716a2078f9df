import { readFileSync } from "node:fs";
import type { Command } from "commander";
import {
  addDevice,
  listDevices,
  parseLabels,
  reprovisionDevice,
  showDevice,
  updateDevice,
  type Device,
  type DeviceDetails,
} from "../../authority/devices.js";
import { InvalidArgument } from "../../authority/errors.js";
import { issueDeviceCertificate } from "../../authority/issue/issuance.js";
import {
  checkDenial,
  decideRequest,
  denyEnrollment,
  listPendingRequests,
  type Decision,
  type PendingRequest,
} from "../../authority/enroll/enrollment.js";
import { createToken } from "../../authority/enroll/tokens.js";
import { removeDevice, type DeviceStatusChange } from "../../authority/status/revocation.js";
import { writeFileAtomic } from "../../keys/files.js";
import { looksLikePem, toPem } from "../../x509/pem.js";
import { CLI_ACTOR, dirOption } from "../context.js";
import { printJson, printTable, say } from "../output.js";
import { allPages, localOnly, remoteOptions, via, type AdminClient } from "../remote.js";
import { deviceChangeOf, enclavesDescribed, keystoreHint, resign } from "./revoke.js";

/** --dir, or --server and --operator. */
const fleetOption = (cmd: Command): Command => remoteOptions(dirOption(cmd));

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** A device as the commands print it, whether it came from the domain or from the admin API (same fields, same order). */
export function deviceOf(d: Device): Device {
  return { id: d.id, group: d.group ?? null, labels: d.labels ?? {}, status: d.status, createdAt: d.createdAt, updatedAt: d.updatedAt };
}

function deviceDetailsOf(d: DeviceDetails): DeviceDetails {
  return {
    ...deviceOf(d),
    certificates: (d.certificates ?? []).map((c) => ({
      serial: c.serial,
      issuer: c.issuer,
      kind: c.kind,
      notBefore: c.notBefore,
      notAfter: c.notAfter,
      status: c.status,
      fingerprintSha256: c.fingerprintSha256,
    })),
  };
}

/** A waiting request as printed (same fields, same order either way). */
const pendingOf = (p: PendingRequest): PendingRequest => ({
  id: p.id,
  deviceId: p.deviceId,
  keyFingerprint: p.keyFingerprint,
  source: p.source,
  address: p.address,
  createdAt: p.createdAt,
  expiresAt: p.expiresAt,
});

/** A one-time token as printed: ISO expiry either way. */
interface IssuedToken {
  token: string;
  expiresAt: string;
}
const tokenOf = (t: { token: string; expiresAt: Date | string }): IssuedToken => ({
  token: t.token,
  expiresAt: typeof t.expiresAt === "string" ? t.expiresAt : t.expiresAt.toISOString(),
});

/**
 * Every device through the admin API's paginated list, in the local command's shape and order (by
 * id). The list leaves removed devices out unless asked by state.
 */
async function remoteDevices(api: AdminClient, filter: { group?: string; all: boolean }): Promise<Device[]> {
  const listed = await allPages<Device>(api, "GET /api/devices", { group: filter.group });
  if (filter.all) listed.push(...(await allPages<Device>(api, "GET /api/devices", { group: filter.group, state: "removed" })));
  listed.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return listed.map(deviceOf);
}

export function registerDevice(program: Command): void {
  const device = program.command("device").description("register devices and issue their certificates");

  const add = fleetOption(device.command("add <id>").description("register a device"))
    .option("--group <group>", "group name")
    .option("--label <key=value>", "label (repeatable)", collect)
    .option("--no-token", "do not create a one-time enrollment token")
    .option("--ttl <duration>", "token lifetime (default: enrollment.token_ttl)")
    .option("--json", "machine-readable output");
  add.action(async (id: string, opts, cmd: Command) => {
    const labels = parseLabels(opts.label ?? []);
    const request = { id, group: opts.group as string | undefined, labels, token: opts.token !== false ? { ttl: opts.ttl } : undefined };
    const added = await via(
      cmd,
      async (fleet) => {
        // One transaction: a bad --ttl leaves no device behind.
        const { token, ...d } = await addDevice(fleet, {
          ...request,
          actor: CLI_ACTOR,
          token: fleet.config.enrollment.token ? request.token : undefined,
        });
        return { device: deviceOf(d), token: token ? tokenOf(token) : undefined };
      },
      async (api) => {
        const body = { id, ...(request.group ? { group: request.group } : {}), labels, ...(request.token ? { token: request.token } : {}) };
        const { token, ...d } = await api.call<Device & { token?: IssuedToken | null }>("POST /api/devices", {}, body);
        return { device: deviceOf(d), token: token ? tokenOf(token) : undefined };
      },
    );
    const { device: d, token } = added;
    if (opts.json) return printJson({ ...d, token: token?.token ?? null, token_expires_at: token?.expiresAt ?? null });
    say(`device ${d.id} added${d.group ? ` to group ${d.group}` : ""}`);
    if (token) say(`one-time enrollment token (valid until ${token.expiresAt}):\n${token.token}`);
  });

  fleetOption(device.command("requests").description("enrollment requests waiting for approval, with each key's fingerprint and source"))
    .option("--json", "machine-readable output")
    .action(async (opts, cmd: Command) => {
      const pending = await via(
        cmd,
        (fleet) => listPendingRequests(fleet),
        (api) => api.call<PendingRequest[]>("GET /api/approvals"),
      );
      if (opts.json) return printJson(pending.map(pendingOf));
      printTable(
        pending.map((p) => ({
          device: p.deviceId,
          request: p.id,
          "key fingerprint": p.keyFingerprint ?? "?",
          from: p.address ?? p.source,
          requested: p.createdAt,
          expires: p.expiresAt,
        })),
        ["device", "request", "key fingerprint", "from", "requested", "expires"],
      );
    });

  const describe = (p: PendingRequest) => `request ${p.id} (key ${p.keyFingerprint ?? "?"}, from ${p.address ?? p.source})`;
  fleetOption(
    device
      .command("approve <id>")
      .description(
        "approve a pending enrollment request, named by request id or key fingerprint (compare it with the one the robot prints)",
      )
      .option("--request <rid>", "the request to approve (`fleetpki device requests`)")
      .option("--fingerprint <sha256:hex>", "the key to approve, as the robot prints it"),
  ).action(async (id: string, opts, cmd: Command) => {
    const chosen = { requestId: opts.request as string | undefined, fingerprint: opts.fingerprint as string | undefined };
    const d = await via(
      cmd,
      (fleet) => decideRequest(fleet, { deviceId: id, ...chosen, approve: true, actor: CLI_ACTOR }),
      (api) =>
        api.call<Decision>("POST /api/approvals/:id/approve", { id }, { request: chosen.requestId, fingerprint: chosen.fingerprint }),
    );
    say(`enrollment of ${id} approved: ${describe(d.request)}; its next poll gets a certificate`);
    for (const other of d.alsoDenied) say(`denied ${describe(other)}: another request for ${id} was approved`);
  });

  fleetOption(
    device
      .command("deny [id]")
      .description("deny a pending enrollment request; --all denies every request of the device, --all-from every request from an address")
      .option("--request <rid>", "the request to deny")
      .option("--fingerprint <sha256:hex>", "the key to deny")
      .option("--all", "every pending request of the device")
      .option(
        "--all-from <address[/prefix]>",
        "every pending request from this IP address or prefix (e.g. an IPv6 /64), whatever the device id",
      ),
  ).action(async (id: string | undefined, opts, cmd: Command) => {
    const denial = {
      deviceId: id,
      requestId: opts.request as string | undefined,
      fingerprint: opts.fingerprint as string | undefined,
      all: opts.all === true,
      fromAddress: opts.allFrom as string | undefined,
    };
    const { bulk, denied } = await via(
      cmd,
      (fleet) => denyEnrollment(fleet, { ...denial, actor: CLI_ACTOR }),
      async (api) => {
        checkDenial(denial);
        if (denial.fromAddress !== undefined)
          return localOnly("device deny --all-from", "the admin API denies one device's requests, not an address's")();
        const body = { request: denial.requestId, fingerprint: denial.fingerprint, all: denial.all };
        return api.call<{ bulk: boolean; denied: PendingRequest[] }>("POST /api/approvals/:id/deny", { id: id! }, body);
      },
    );
    if (bulk) {
      for (const p of denied) say(`denied ${p.deviceId}: ${describe(p)}`);
      say(`${denied.length} request${denied.length === 1 ? "" : "s"} denied`);
      return;
    }
    say(`enrollment of ${id} denied: ${describe(denied[0]!)}; a request with another key can still be approved`);
  });

  fleetOption(
    device
      .command("reprovision <id>")
      .description("allow one more enrollment with a factory certificate (a factory certificate enrolls once)"),
  ).action(async (id: string, opts, cmd: Command) => {
    await via(
      cmd,
      async (fleet) => {
        const r = await reprovisionDevice(fleet, { deviceId: id, actor: CLI_ACTOR });
        say(
          `${id} may enroll once more with a factory certificate ` +
            `(it last enrolled with factory certificate ${r.factorySerial}, getting ${r.certificateSerial})`,
        );
      },
      localOnly("device reprovision", "the admin API has no reprovision endpoint"),
    );
  });

  fleetOption(
    device
      .command("remove <id>")
      .description("decommission a device: revoke every unexpired certificate (cessationOfOperation); it never enrolls again"),
  )
    .option("--json", "machine-readable output")
    .action(async (id: string, opts, cmd: Command) => {
      const change = await via(
        cmd,
        async (fleet) => {
          const c = await removeDevice(fleet, { deviceId: id, actor: CLI_ACTOR });
          await resign(fleet, c.cas);
          return deviceChangeOf(c);
        },
        async (api) => deviceChangeOf(await api.call<DeviceStatusChange>("DELETE /api/devices/:id", { id })),
      );
      if (opts.json) return printJson({ device: id, status: "removed", ...change });
      const n = change.serials.length;
      say(
        `device ${id} removed: ` +
          (n === 0
            ? "no unexpired certificates to revoke"
            : `${n} certificate${n === 1 ? "" : "s"} revoked (${change.serials.join(", ")}); CRLs re-signed: ${change.cas.join(", ")}`) +
          enclavesDescribed(change),
      );
      keystoreHint(change);
    });

  fleetOption(device.command("set <id>").description("change a device's group and labels (the gateway's policy reads them at once)"))
    .option("--group <group>", "move it to this group")
    .option("--no-group", "take it out of its group")
    .option("--label <key=value>", "add or change a label (repeatable)", collect)
    .option("--unlabel <key>", "remove a label (repeatable)", collect)
    .option("--json", "machine-readable output")
    .action(async (id: string, opts, cmd: Command) => {
      const setLabels = parseLabels(opts.label ?? []);
      // commander: --no-group sets group to false; neither option leaves it true (the --no- default).
      const group: string | null | undefined = opts.group === false ? null : typeof opts.group === "string" ? opts.group : undefined;
      const unsetLabels: string[] = opts.unlabel ?? [];
      const d = await via(
        cmd,
        async (fleet) => deviceOf(await updateDevice(fleet, { id, group, setLabels, unsetLabels, actor: CLI_ACTOR })),
        async (api) => {
          // PATCH labels: a value sets, null removes; one key cannot be both.
          const both = unsetLabels.find((k) => Object.hasOwn(setLabels, k));
          if (both !== undefined) throw new InvalidArgument(`label "${both}" is both set and removed; give one of --label and --unlabel`);
          const labels = { ...Object.fromEntries(unsetLabels.map((k) => [k, null])), ...setLabels };
          const body = { ...(group !== undefined ? { group } : {}), ...(Object.keys(labels).length > 0 ? { labels } : {}) };
          return deviceOf(await api.call<Device>("PATCH /api/devices/:id", { id }, body));
        },
      );
      if (opts.json) return printJson(d);
      const labels = Object.entries(d.labels).map(([k, v]) => `${k}=${v}`);
      say(`device ${d.id} updated: group ${d.group ?? "(none)"}, labels ${labels.length > 0 ? labels.join(", ") : "(none)"}`);
    });

  fleetOption(device.command("list").description("list devices (removed ones with --all)"))
    .option("--group <group>", "only this group")
    .option("--all", "also removed devices")
    .option("--json", "machine-readable output")
    .action(async (opts, cmd: Command) => {
      const filter = { group: opts.group as string | undefined, all: opts.all === true };
      const devices = await via(
        cmd,
        async (fleet) => (await listDevices(fleet, filter)).map(deviceOf),
        (api) => remoteDevices(api, filter),
      );
      if (opts.json) return printJson(devices);
      printTable(
        devices.map((d) => ({
          id: d.id,
          status: d.status,
          group: d.group ?? "",
          labels: Object.entries(d.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(","),
          created: d.createdAt,
        })),
        ["id", "status", "group", "labels", "created"],
      );
    });

  fleetOption(device.command("show <id>").description("a device and its certificates"))
    .option("--json", "machine-readable output")
    .action(async (id: string, opts, cmd: Command) => {
      const { d, domain } = await via(
        cmd,
        async (fleet) => ({ d: deviceDetailsOf(await showDevice(fleet, id)), domain: fleet.domain }),
        async (api) => ({ d: deviceDetailsOf(await api.call<DeviceDetails>("GET /api/devices/:id", { id })), domain: api.domain }),
      );
      if (opts.json) return printJson(d);
      say(`id:      ${d.id}`);
      say(`status:  ${d.status}`);
      say(`group:   ${d.group ?? "-"}`);
      say(
        `labels:  ${
          Object.entries(d.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(", ") || "-"
        }`,
      );
      say(`identity: spiffe://${domain}/device/${d.id}`);
      say("");
      if (d.certificates.length === 0) return say("no certificates");
      printTable(
        d.certificates.map((c) => ({ serial: c.serial, status: c.status, issuer: c.issuer, "not after": c.notAfter, kind: c.kind })),
        ["serial", "status", "issuer", "not after", "kind"],
      );
    });

  fleetOption(device.command("issue <id>").description("sign a CSR for a device by hand (device profile)"))
    .requiredOption("--csr <file>", "PKCS#10 request, PEM or DER")
    .option("--out <file>", "write the certificate here instead of stdout")
    .action(async (id: string, opts, cmd: Command) => {
      let csr: Buffer;
      try {
        csr = readFileSync(opts.csr);
      } catch {
        throw new InvalidArgument(`cannot read CSR file ${opts.csr}`);
      }
      const cert = await via(
        cmd,
        async (fleet) => {
          const c = await issueDeviceCertificate(fleet, { deviceId: id, csr, actor: CLI_ACTOR, context: { via: "cli" } });
          return { serial: c.serial, certificate: c.certificatePem, notAfter: c.notAfter.toISOString() };
        },
        // The API takes PEM; a DER file is wrapped as is (the server's CSR checks are the local command's).
        (api) =>
          api.call<{ serial: string; certificate: string; notAfter: string }>(
            "POST /api/devices/:id/certificates",
            { id },
            {
              csr: looksLikePem(csr) ? csr.toString("utf8") : toPem("CERTIFICATE REQUEST", csr),
            },
          ),
      );
      if (opts.out) {
        writeFileAtomic(opts.out, cert.certificate);
        process.stderr.write(`certificate ${cert.serial} for ${id} written to ${opts.out} (valid until ${cert.notAfter})\n`);
      } else process.stdout.write(cert.certificate);
    });
}

export function registerToken(program: Command): void {
  const token = program.command("token").description("one-time enrollment tokens");
  fleetOption(token.command("create <id>").description("create a one-time enrollment token for a device"))
    .option("--ttl <duration>", "lifetime (default: enrollment.token_ttl)")
    .option("--json", "machine-readable output")
    .action(async (id: string, opts, cmd: Command) => {
      const ttl = opts.ttl as string | undefined;
      const t = await via(
        cmd,
        async (fleet) => tokenOf(await createToken(fleet, { deviceId: id, ttl, actor: CLI_ACTOR })),
        async (api) => tokenOf(await api.call<IssuedToken>("POST /api/devices/:id/tokens", { id }, ttl === undefined ? {} : { ttl })),
      );
      if (opts.json) return printJson({ device_id: id, token: t.token, expires_at: t.expiresAt });
      say(t.token);
      process.stderr.write(`single use, bound to ${id}, valid until ${t.expiresAt}\n`);
    });
}
