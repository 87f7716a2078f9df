// `fleetpki device set` (group and labels) and `fleetpki device remove` (issue 10, sections 2 and 5):
// audited, decoded into DeviceUpdated / DeviceRemoved, and reflected by CertificateStatus (which the
// gateway asks at every CONNECT) once the feed delivers them, with onChange saying which devices
// changed. Hostile groups and labels (MQTT separators and wildcards, control characters) are
// refused without a trace.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { addDevice, updateDevice } from "../src/authority/devices.js";
import { fileApprovalRequest } from "../src/authority/enroll/approval-requests.js";
import { createToken } from "../src/authority/enroll/tokens.js";
import { DeviceNotActive, InvalidArgument } from "../src/authority/errors.js";
import { decodeAuditRow, type FleetEvent } from "../src/authority/events/events.js";
import { issueDeviceCertificate, keyFromCsr, type DeviceCertificate } from "../src/authority/issue/issuance.js";
import type { StatusChangeNotice } from "../src/authority/status/certificate-status.js";
import { revokeDevice } from "../src/authority/status/revocation.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { assertOk, assertOneLineError, cliAsync, opensslCsr, tempDir, tempFleet } from "./helpers.js";

describe("device set and device remove", { concurrency: false }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let work: { path: string; cleanup: () => void };
  let server: FleetServer;
  const certs: Record<string, DeviceCertificate> = {};
  const heard: StatusChangeNotice[] = [];
  const d = () => ["--dir", f.dir];
  const head = () => f.fleet.store.ops.changes.headSeq();
  const issue = async (id: string): Promise<DeviceCertificate> => {
    const { csr } = opensslCsr(work.path, `${id}-${Object.keys(certs).length}`);
    return issueDeviceCertificate(f.fleet, { deviceId: id, csr: readFileSync(csr), actor: "test" });
  };
  /** The events of the audit rows after `seq`, decoded as every listener gets them. */
  const eventsAfter = async (seq: number): Promise<FleetEvent[]> =>
    (await f.fleet.store.ops.changes.rowsAfter(seq, 100)).map(decodeAuditRow).filter((e) => e.type !== "Unrecognised");
  const strip = ({ seq: _seq, at: _at, actor: _actor, ...rest }: FleetEvent) => rest;

  before(async () => {
    f = await tempFleet();
    work = tempDir("fleetpki-device-update-");
    await addDevice(f.fleet, { id: "arm-1", group: "arms", labels: { site: "berlin", floor: "2" }, actor: "test" });
    certs["arm-1"] = await issue("arm-1");
    await addDevice(f.fleet, { id: "arm-2", group: "arms", actor: "test" });
    certs["arm-2"] = await issue("arm-2");
    certs["arm-2b"] = await issue("arm-2");
    await addDevice(f.fleet, { id: "arm-3", actor: "test" });
    server = await startFleetServer({ dir: f.dir, only: [], logger: silentLogger });
    await server.changes.stop(); // polled by hand
    server.certificateStatus.onChange((c) => void heard.push(c));
  });
  after(async () => {
    await server?.close();
    await f?.close();
    work?.cleanup();
  });

  it("CertificateStatus answers a device with its group and labels from the initial load", () => {
    const a = server.certificateStatus.device("arm-1");
    assert.deepEqual([a.status, a.group, a.labels], ["active", "arms", { site: "berlin", floor: "2" }]);
    assert.equal(a.certificates[0]?.subjectId, "arm-1");
  });

  it("device set: new group and labels, audited as device.update with the complete new values, then in memory", async () => {
    const seq = await head();
    const r = await cliAsync([
      "device",
      "set",
      "arm-1",
      "--group",
      "grippers",
      "--label",
      "site=paris",
      "--unlabel",
      "floor",
      "--json",
      ...d(),
    ]);
    assertOk(r, "device set");
    assert.deepEqual([JSON.parse(r.stdout).group, JSON.parse(r.stdout).labels], ["grippers", { site: "paris" }]);
    const rows = await f.fleet.store.ops.changes.rowsAfter(seq, 100);
    const update = rows.find((row) => row.action === "device.update")!;
    assert.equal(update.subject, "device:arm-1");
    assert.deepEqual(JSON.parse(update.details), {
      group: "grippers",
      labels: { site: "paris" },
      previous: { group: "arms", labels: { floor: "2", site: "berlin" } },
    });
    assert.deepEqual((await eventsAfter(seq)).map(strip), [
      { type: "DeviceUpdated", deviceId: "arm-1", group: "grippers", labels: { site: "paris" } },
    ]);

    assert.equal(server.certificateStatus.device("arm-1").group, "arms", "from memory: not yet delivered");
    heard.length = 0;
    await server.changes.poll();
    const a = server.certificateStatus.device("arm-1");
    assert.deepEqual([a.status, a.group, a.labels], ["active", "grippers", { site: "paris" }]);
    assert.deepEqual(heard, [{ deviceIds: ["arm-1"], serials: [], cas: [], all: false }]);

    // --no-group takes it out of any group; listing and showing say so.
    assertOk(await cliAsync(["device", "set", "arm-1", "--no-group", ...d()]), "device set --no-group");
    await server.changes.poll();
    assert.equal(server.certificateStatus.device("arm-1").group, null);
    const shown = JSON.parse((await cliAsync(["device", "show", "arm-1", "--json", ...d()])).stdout);
    assert.deepEqual([shown.group, shown.labels], [null, { site: "paris" }]);
    assertOk(await cliAsync(["audit", "verify", ...d()]), "audit verify replays device.update");
  });

  it("hostile groups and labels are refused with one line; nothing changes, nothing is audited", async () => {
    const seq = await head();
    const before = await f.fleet.store.ops.devices.get("arm-2");
    const refused: Array<[string[], RegExp]> = [
      [["--group", "a/b"], /invalid group "a\/b"/],
      [["--group", "+"], /invalid group "\+"/],
      [["--group", "#"], /invalid group "#"/],
      [["--group", "$SYS"], /invalid group "\$SYS"/],
      [["--group", ""], /invalid group ""/],
      [["--group", "Arms"], /invalid group "Arms"/],
      [["--label", "site=a/b"], /invalid label "site" value "a\/b"/],
      [["--label", "site=+"], /invalid label "site" value "\+"/],
      [["--label", "site=#"], /invalid label "site" value "#"/],
      [["--label", "site=$SYS"], /invalid label "site" value/],
      [["--label", "site=tab\there"], /invalid label "site" value/],
      [["--label", "site="], /label "site" value must be 1-256 characters/],
      [["--label", "Site=x"], /invalid label key "Site"/],
      [["--label", "noequals"], /label "noequals" must be key=value/],
      [["--unlabel", "absent"], /device "arm-2" has no label "absent"/],
      [["--label", "k=v", "--unlabel", "k"], /both set and removed/],
      [[], /nothing to change/],
    ];
    for (const [args, pattern] of refused) assertOneLineError(await cliAsync(["device", "set", "arm-2", ...args, ...d()]), pattern);
    assertOneLineError(await cliAsync(["device", "set", "nobody", "--group", "x", ...d()]), /unknown device "nobody"/);
    // A NUL cannot pass through argv: the domain refuses it too.
    await assert.rejects(updateDevice(f.fleet, { id: "arm-2", setLabels: { site: "a\u0000b" }, actor: "test" }), InvalidArgument);
    await assert.rejects(updateDevice(f.fleet, { id: "arm-2", group: "a\u0000b", actor: "test" }), InvalidArgument);
    // device add validates labels the same way.
    assertOneLineError(await cliAsync(["device", "add", "arm-9", "--label", "site=#", ...d()]), /invalid label "site" value "#"/);
    assert.equal(await f.fleet.store.ops.devices.get("arm-9"), undefined);
    assert.deepEqual(await f.fleet.store.ops.devices.get("arm-2"), before);
    assert.equal(await head(), seq, "no audit event");
  });

  it("device remove: unexpired certificates revoked (cessationOfOperation), removed, DeviceRemoved; CRL and memory follow", async () => {
    const seq = await head();
    const serials = [certs["arm-2"]!.serial, certs["arm-2b"]!.serial].sort();
    await createToken(f.fleet, { deviceId: "arm-2", actor: "test" });
    assert.equal((await f.fleet.store.ops.enrollment.tokensOf("arm-2")).filter((x) => x.used_at === null).length, 1);
    const r = await cliAsync(["device", "remove", "arm-2", "--json", ...d()]);
    assertOk(r, "device remove");
    const out = JSON.parse(r.stdout);
    assert.deepEqual([out.status, [...out.serials].sort(), out.cas], ["removed", serials, ["devices"]]);
    const row = await f.fleet.store.ops.devices.get("arm-2");
    assert.equal(row?.status, "removed");
    for (const serial of serials) {
      const c = await f.fleet.store.ops.certificates.bySerial(serial);
      assert.deepEqual([c?.status, c?.revocation_reason], ["revoked", "cessationOfOperation"]);
    }
    // Its unused token is spent with it.
    assert.deepEqual(await f.fleet.store.ops.enrollment.tokensOf("arm-2").then((t) => t.filter((x) => x.used_at === null)), []);
    const events = (await eventsAfter(seq)).map(strip);
    assert.equal(events.length, 1);
    const removed = events[0] as { type: string; deviceId: string; reason: string; serials: string[]; cas: string[] };
    assert.deepEqual(
      [removed.type, removed.deviceId, removed.reason, [...removed.serials].sort(), removed.cas],
      ["DeviceRemoved", "arm-2", "cessationOfOperation", serials, ["devices"]],
    );
    // The command re-signed the devices CA's CRL with both serials.
    const crl = await f.fleet.store.ops.status.listCrlEntries("devices", new Date().toISOString());
    for (const serial of serials)
      assert.ok(
        crl.some((e) => e.serialHex === serial && e.reason === "cessationOfOperation"),
        serial,
      );

    assert.equal(server.certificateStatus.device("arm-2").status, "active", "from memory: not yet delivered");
    heard.length = 0;
    await server.changes.poll();
    const a = server.certificateStatus.device("arm-2");
    assert.equal(a.status, "removed");
    assert.deepEqual(
      a.certificates.map((c) => [c.status, c.reason]),
      [
        ["revoked", "cessationOfOperation"],
        ["revoked", "cessationOfOperation"],
      ],
    );
    assert.deepEqual(heard, [{ deviceIds: ["arm-2"], serials, cas: ["devices"], all: false }]);
  });

  it("a removed device: listed only with --all, never enrolls, no token or request, not revoked, changed, removed again", async () => {
    const list = JSON.parse((await cliAsync(["device", "list", "--json", ...d()])).stdout) as { id: string }[];
    assert.deepEqual(
      list.map((x) => x.id),
      ["arm-1", "arm-3"],
    );
    const all = JSON.parse((await cliAsync(["device", "list", "--all", "--json", ...d()])).stdout) as { id: string; status: string }[];
    assert.deepEqual(
      all.map((x) => [x.id, x.status]),
      [
        ["arm-1", "active"],
        ["arm-2", "removed"],
        ["arm-3", "active"],
      ],
    );
    const seq = await head();
    await assert.rejects(issue("arm-2"), DeviceNotActive);
    await assert.rejects(createToken(f.fleet, { deviceId: "arm-2", actor: "test" }), DeviceNotActive);
    const { csr } = opensslCsr(work.path, "arm-2-request");
    const csrDer = readFileSync(csr);
    await assert.rejects(
      fileApprovalRequest(
        f.fleet,
        { deviceId: "arm-2", csr: csrDer, source: { via: "test" } },
        await keyFromCsr(csrDer),
        "sha256:00",
        new Date(),
      ),
      DeviceNotActive,
    );
    await assert.rejects(revokeDevice(f.fleet, { deviceId: "arm-2", actor: "test" }), /was removed/);
    assertOneLineError(await cliAsync(["device", "remove", "arm-2", ...d()]), /already removed/);
    assertOneLineError(await cliAsync(["device", "set", "arm-2", "--group", "x", ...d()]), /was removed/);
    assertOneLineError(await cliAsync(["device", "add", "arm-2", ...d()]), /already exists/);
    assert.equal(await head(), seq, "nothing audited");
    assert.equal((await f.fleet.store.ops.devices.get("arm-2"))?.status, "removed");
    assertOk(await cliAsync(["audit", "verify", ...d()]), "audit verify replays device.remove");
  });

  it("a revoked device can still be removed (nothing left to revoke) and a device with no certificate too", async () => {
    await revokeDevice(f.fleet, { deviceId: "arm-1", reason: "keyCompromise", actor: "test" });
    const r = await cliAsync(["device", "remove", "arm-1", "--json", ...d()]);
    assertOk(r, "remove a revoked device");
    assert.deepEqual(JSON.parse(r.stdout).serials, []);
    const c = await f.fleet.store.ops.certificates.bySerial(certs["arm-1"]!.serial);
    assert.equal(c?.revocation_reason, "keyCompromise", "the earlier reason stays");
    const plain = await cliAsync(["device", "remove", "arm-3", ...d()]);
    assertOk(plain, "remove a device without certificates");
    assert.match(plain.stdout, /device arm-3 removed: no unexpired certificates to revoke/);
    await server.changes.poll();
    assert.equal(server.certificateStatus.device("arm-1").status, "removed");
    assert.equal(server.certificateStatus.device("arm-3").status, "removed");
    assertOk(await cliAsync(["audit", "verify", ...d()]), "audit verify");
  });
});

describe("CertificateStatus and a device.update row it cannot decode", { concurrency: false }, () => {
  it("reads the devices again (the new group is seen), tells onChange listeners `all`; a throwing listener stops no other", async () => {
    const f = await tempFleet();
    const server = await startFleetServer({ dir: f.dir, only: [], logger: silentLogger });
    try {
      await server.changes.stop(); // polled by hand
      await addDevice(f.fleet, { id: "cam-1", group: "cams", actor: "test" });
      await server.changes.poll();
      assert.equal(server.certificateStatus.device("cam-1").group, "cams");
      const heard: StatusChangeNotice[] = [];
      const errors: unknown[] = [];
      server.certificateStatus.onChange(
        () => {
          throw new Error("a listener that throws");
        },
        (e) => void errors.push(e),
      );
      server.certificateStatus.onChange((c) => void heard.push(c));
      // A writer that changed the group but logged labels that are no object: the event cannot say what changed.
      const now = new Date().toISOString();
      await f.fleet.store.transaction(async (tx) => {
        await tx.devices.update("cam-1", { group_name: "quarantine", labels: "{}", updated_at: now });
        await tx.audit.append([
          {
            actor: "test",
            action: "device.update",
            subject: "device:cam-1",
            details: { group: "quarantine", labels: "x" },
            at: new Date(),
          },
        ]);
      });
      await server.changes.poll();
      await server.certificateStatus.settled();
      assert.equal(server.certificateStatus.device("cam-1").group, "quarantine", "read again from the database");
      assert.deepEqual(heard.at(-1), { deviceIds: [], serials: [], cas: [], all: true });
      assert.ok(errors.length >= 1 && errors.every((e) => (e as Error).message === "a listener that throws"));
    } finally {
      await server.close();
      await f.close();
    }
  });
});
