// Issue 12, cascade: revoking, removing or holding a robot reaches its ROS 2 enclaves
// (src/ros2/keystore/device-enclaves.ts, called inside src/authority/status/revocation.ts), checked
// with openssl -crl_check against the keystore's own identity CA and CRL copies.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { addDevice } from "../src/authority/devices.js";
import { DeviceNotActive } from "../src/authority/errors.js";
import { FleetServices } from "../src/authority/services.js";
import { crlPem, currentCrl, resignCrls } from "../src/authority/status/crls.js";
import { holdDevice, removeDevice, unholdDevice } from "../src/authority/status/revocation.js";
import { toProblem } from "../src/enroll/errors.js";
import { OID } from "../src/der/oids.js";
import { publicSpki } from "../src/keys/keys.js";
import {
  createEnclave,
  EnclaveRevoked,
  initKeystore,
  renewEnclave,
  renewEnclaveInKeystore,
  writeCrlEverywhere,
} from "../src/ros2/keystore/index.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { buildCsr } from "../src/x509/csr.js";
import { encodeName } from "../src/x509/name.js";
import { layout } from "../src/authority/layout.js";
import { readPrivateKey } from "../src/keys/keys.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer } from "../src/server.js";
import { cli, openssl, tempDir, tempFleet } from "./helpers.js";
import { postJson, rootPemPath } from "./server-helpers.js";
import { sqliteStore } from "./support/sqlite.js";

function p256Csr(): Buffer {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return buildCsr(encodeName([{ type: OID.commonName, value: "ignored" }]), publicSpki(privateKey), {
    key: privateKey,
    scheme: signatureSchemeFor(privateKey),
  });
}

describe("ros2 cascade: a robot's status reaches its enclaves", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let fleet: FleetServices;
  let ksDir: string;
  let keystoreId: string;
  const tmp = tempDir("fleetpki-ros2-cascade-");
  const enclave = (p: string) => join(ksDir, "enclaves", ...p.slice(1).split("/"));
  const cert = (p: string) => join(enclave(p), "cert.pem");
  /** The superseded certificate of /robot_0001/arm, kept before its renewal. */
  let supersededArm: string;

  /** openssl verify of `file` with the enclave `via`'s own identity CA and crl.pem (the fleet and the CLI use the real clock). */
  const verifyWithCrl = (file: string, via = "/robot_0002/base") =>
    openssl([
      "verify",
      "-crl_check",
      "-partial_chain",
      "-CAfile",
      join(enclave(via), "identity_ca.cert.pem"),
      "-CRLfile",
      join(enclave(via), "crl.pem"),
      file,
    ]);
  const assertRefused = (file: string, what: string) => {
    const v = verifyWithCrl(file);
    assert.notEqual(v.status, 0, `${what} must be refused`);
    assert.match(v.stdout + v.stderr, /certificate revoked/, what);
  };
  const assertAccepted = (file: string, what: string) => {
    const v = verifyWithCrl(file);
    assert.equal(v.status, 0, `${what}: ${v.stdout}${v.stderr}`);
  };
  const enclaveRow = async (path: string) => (await fleet.store.ops.ros2.getEnclave(keystoreId, path))!;
  const certStatus = async (serial: string) => (await fleet.store.ops.certificates.bySerial(serial))!.status;

  before(async () => {
    f = await tempFleet();
    await f.fleet.close();
    fleet = await FleetServices.open(f.dir);
    for (const id of ["robot-0001", "robot-0002", "robot-0003", "robot-0004"]) await addDevice(fleet, { id, actor: "test" });
    ksDir = join(tmp.path, "ks");
    keystoreId = (await initKeystore(fleet, { dir: ksDir, actor: "test" })).keystoreId;
    const make = (path: string, deviceId?: string) => createEnclave(fleet, { dir: ksDir, path, allowAll: true, deviceId, actor: "test" });
    await make("/robot_0001/base", "robot-0001");
    await make("/robot_0001/arm", "robot-0001");
    await make("/robot_0002/base", "robot-0002");
    await make("/robot_0003/base", "robot-0003");
    await make("/robot_0004/base", "robot-0004");
    await make("/shared/monitor");
    // A renewal supersedes without revoking: the old certificate still authenticates until it expires.
    supersededArm = join(tmp.path, "arm-old.pem");
    cpFile(cert("/robot_0001/arm"), supersededArm);
    await renewEnclaveInKeystore(fleet, { dir: ksDir, path: "/robot_0001/arm", actor: "test" });
  });
  after(async () => {
    await fleet.close();
    await f.close();
    tmp.cleanup();
  });

  it("`device revoke` revokes the robot's enclaves in the same change; after a CRL refresh openssl refuses them", async () => {
    assertAccepted(cert("/robot_0001/base"), "before: /robot_0001/base");
    assertAccepted(supersededArm, "before: the superseded /robot_0001/arm");
    const r = cli(["device", "revoke", "robot-0001", "--reason", "keyCompromise", "--dir", f.dir]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /and 2 ROS 2 enclaves: \/robot_0001\/arm, \/robot_0001\/base/);
    assert.match(r.stdout, /CRLs re-signed: .*ros2-identity/);
    assert.match(r.stdout, /refresh-crl/);
    // The keystore's copies are refreshed by the agent or by refresh-crl; here the domain writes the current CRL.
    writeCrlEverywhere(ksDir, crlPem(await currentCrl(fleet, "ros2-identity")));
    assertRefused(cert("/robot_0001/base"), "/robot_0001/base");
    assertRefused(cert("/robot_0001/arm"), "/robot_0001/arm");
    assertRefused(supersededArm, "the superseded /robot_0001/arm");
    // Another robot's enclave and one of no robot stay valid.
    assertAccepted(cert("/robot_0002/base"), "/robot_0002/base");
    assertAccepted(cert("/shared/monitor"), "/shared/monitor");
    const crlText = openssl(["crl", "-in", join(enclave("/robot_0002/base"), "crl.pem"), "-noout", "-text"]).stdout;
    assert.match(crlText, /Key Compromise/);

    for (const p of ["/robot_0001/base", "/robot_0001/arm"]) {
      const row = await enclaveRow(p);
      assert.equal(row.status, "revoked", p);
      assert.ok(row.revoked_at, p);
    }
    assert.equal((await enclaveRow("/robot_0002/base")).status, "active");

    // One audit event names the device's and the enclaves' certificates and the ros2-identity CA.
    const db = sqliteStore(fleet).db;
    const ev = await db.selectFrom("audit_log").selectAll().where("action", "=", "device.revoke").executeTakeFirstOrThrow();
    const details = JSON.parse(ev.details) as { serials: string[]; cas: string[]; ros2_enclaves: { path: string }[] };
    assert.ok(details.cas.includes("ros2-identity"));
    assert.deepEqual(
      details.ros2_enclaves.map((e) => e.path),
      ["/robot_0001/arm", "/robot_0001/base"],
    );
    const enclaveCerts = [
      ...(await fleet.store.ops.certificates.ofKind("ros2-enclave", `${keystoreId}:/robot_0001/arm`)),
      ...(await fleet.store.ops.certificates.ofKind("ros2-enclave", `${keystoreId}:/robot_0001/base`)),
    ];
    assert.equal(enclaveCerts.length, 3);
    for (const c of enclaveCerts) {
      assert.ok(details.serials.includes(c.serial), c.serial);
      assert.equal(c.status, "revoked");
      assert.equal(c.revocation_reason, "keyCompromise");
    }
  });

  it("a revoked robot's enclave is not renewed: the agent's path answers 409 enclave-revoked, the CLI's path refuses", async () => {
    const e = await renewEnclave(fleet, {
      keystoreId,
      path: "/robot_0001/base",
      csrDer: p256Csr(),
      deviceId: "robot-0001",
      actor: "device:robot-0001",
    }).then(
      () => assert.fail("renewed"),
      (err: unknown) => err,
    );
    assert.ok(e instanceof EnclaveRevoked, String(e));
    const problem = toProblem(e);
    assert.equal(problem.status, 409);
    await assert.rejects(renewEnclaveInKeystore(fleet, { dir: ksDir, path: "/robot_0001/arm", actor: "test" }), EnclaveRevoked);
  });

  it("hold puts the enclaves' certificates on hold (refused, not renewed); unhold releases them; refresh-crl writes the CRL", async () => {
    const serial = (await enclaveRow("/robot_0003/base")).serial;
    const held = await holdDevice(fleet, { deviceId: "robot-0003", actor: "test" });
    assert.deepEqual(held.enclaves, [{ keystore: keystoreId, path: "/robot_0003/base" }]);
    assert.ok(held.serials.includes(serial));
    assert.ok(held.cas.includes("ros2-identity"));
    assert.equal(await certStatus(serial), "hold");
    // As the CLI and a server do after every change: the CRLs it names are re-signed.
    assert.ok((await resignCrls(fleet, held.cas)).every((o) => o.outcome === "signed"));
    // The enclave itself stays active: the hold is reversible.
    assert.equal((await enclaveRow("/robot_0003/base")).status, "active");
    const refreshed = cli(["ros2", "keystore", "refresh-crl", ksDir, "--dir", f.dir, "--json"]);
    assert.equal(refreshed.status, 0, refreshed.stdout + refreshed.stderr);
    const out = JSON.parse(refreshed.stdout) as { keystoreId: string; updated: string[] };
    assert.equal(out.keystoreId, keystoreId);
    assert.ok(out.updated.includes("/robot_0003/base") && out.updated.includes("/shared/monitor"));
    for (const p of out.updated)
      assert.equal(readFileSync(join(enclave(p), "crl.pem"), "utf8"), readFileSync(join(ksDir, "public", "identity_ca.crl.pem"), "utf8"));
    assertRefused(cert("/robot_0003/base"), "held /robot_0003/base");
    assert.match(openssl(["crl", "-in", join(ksDir, "public", "identity_ca.crl.pem"), "-noout", "-text"]).stdout, /Certificate Hold/);
    // A new certificate would escape the hold: neither the agent's nor the CLI's renewal issues one.
    await assert.rejects(
      renewEnclave(fleet, { keystoreId, path: "/robot_0003/base", csrDer: p256Csr(), deviceId: "robot-0003", actor: "device:robot-0003" }),
      DeviceNotActive,
    );
    await assert.rejects(renewEnclaveInKeystore(fleet, { dir: ksDir, path: "/robot_0003/base", actor: "test" }), DeviceNotActive);

    const released = await unholdDevice(fleet, { deviceId: "robot-0003", actor: "test" });
    assert.deepEqual(released.enclaves, [{ keystore: keystoreId, path: "/robot_0003/base" }]);
    assert.equal(await certStatus(serial), "valid");
    assert.ok((await resignCrls(fleet, released.cas)).every((o) => o.outcome === "signed"));
    // Until the copies are refreshed they still list it; after, it is accepted again.
    assertRefused(cert("/robot_0003/base"), "released but not refreshed");
    assert.equal(cli(["ros2", "keystore", "refresh-crl", ksDir, "--dir", f.dir]).status, 0);
    assertAccepted(cert("/robot_0003/base"), "released /robot_0003/base");
    // Released, the robot's agent renews it again.
    const renewed = await renewEnclave(fleet, {
      keystoreId,
      path: "/robot_0003/base",
      csrDer: p256Csr(),
      deviceId: "robot-0003",
      actor: "device:robot-0003",
    });
    assert.match(renewed.certificatePem, /BEGIN CERTIFICATE/);
  });

  it("removing a device revokes its enclaves (cessationOfOperation)", async () => {
    const serial = (await enclaveRow("/robot_0004/base")).serial;
    const removed = await removeDevice(fleet, { deviceId: "robot-0004", actor: "test" });
    assert.deepEqual(removed.enclaves, [{ keystore: keystoreId, path: "/robot_0004/base" }]);
    assert.ok(removed.serials.includes(serial));
    assert.equal((await enclaveRow("/robot_0004/base")).status, "revoked");
    const row = (await fleet.store.ops.certificates.bySerial(serial))!;
    assert.equal(row.status, "revoked");
    assert.equal(row.revocation_reason, "cessationOfOperation");
    // As the CLI and a server do after every change: the CRLs it names are re-signed.
    const [signed] = await resignCrls(
      fleet,
      removed.cas.filter((c) => c === "ros2-identity"),
    );
    assert.equal(signed?.outcome, "signed");
    writeCrlEverywhere(ksDir, crlPem(await currentCrl(fleet, "ros2-identity")));
    assertRefused(cert("/robot_0004/base"), "/robot_0004/base");
    assertAccepted(cert("/robot_0002/base"), "/robot_0002/base");
  });

  it("audit verify replays the cascades", () => {
    const r = cli(["audit", "verify", "--dir", f.dir]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /audit log intact/);
  });
});

describe("ros2 cascade through the admin API", () => {
  it("POST /api/devices/:id/revoke answers the enclaves it revoked (the response schema carries them)", async () => {
    const f = await tempFleet();
    const tmp = tempDir("fleetpki-ros2-cascade-api-");
    const server = await startFleetServer({
      dir: f.dir,
      only: ["admin"],
      adminListen: "127.0.0.1:0",
      logger: silentLogger,
      operators: { role: (n) => (n === "admin" ? "admin" : null) },
    });
    try {
      await addDevice(f.fleet, { id: "robot-0009", actor: "test" });
      const ksDir = join(tmp.path, "ks");
      const keystoreId = (await initKeystore(f.fleet, { dir: ksDir, actor: "test" })).keystoreId;
      await createEnclave(f.fleet, { dir: ksDir, path: "/robot_0009/base", allowAll: true, deviceId: "robot-0009", actor: "test" });
      const dir = f.fleet.path(layout.operatorDir("admin"));
      const admin = {
        ca: readFileSync(rootPemPath(f.dir), "utf8"),
        cert: readFileSync(join(dir, "cert.pem"), "utf8") + readFileSync(join(dir, "chain.pem"), "utf8"),
        key: readPrivateKey(join(dir, "key.pem"), f.fleet.passphrase()).export({ type: "pkcs8", format: "pem" }).toString(),
      };
      const base = `https://127.0.0.1:${server.admin!.address.port}`;
      const res = await postJson(`${base}/api/devices/robot-0009/revoke`, { reason: "keyCompromise" }, admin);
      assert.equal(res.status, 200, res.text);
      const body = res.json() as { serials: string[]; cas: string[]; enclaves: { keystore: string; path: string }[] };
      assert.deepEqual(body.enclaves, [{ keystore: keystoreId, path: "/robot_0009/base" }]);
      assert.ok(body.cas.includes("ros2-identity"));
      const enclave = (await f.fleet.store.ops.ros2.getEnclave(keystoreId, "/robot_0009/base"))!;
      assert.equal(enclave.status, "revoked");
      assert.ok(body.serials.includes(enclave.serial));
    } finally {
      await server.close();
      await f.close();
      tmp.cleanup();
    }
  });
});

function cpFile(from: string, to: string): void {
  writeFileSync(to, readFileSync(from));
}
