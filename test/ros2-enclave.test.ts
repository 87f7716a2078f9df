// ROS 2 enclaves (src/ros2/keystore/enclaves.ts): what `ros2 enclave create|renew|revoke` write,
// checked with openssl; renewEnclave for a CSR (the agent's path); bad inputs leave nothing behind.
import assert from "node:assert/strict";
import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { cpSync, existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { FleetServices } from "../src/authority/services.js";
import { addDevice } from "../src/authority/devices.js";
import { buildCsr } from "../src/x509/csr.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { encodeName } from "../src/x509/name.js";
import { OID } from "../src/der/oids.js";
import { publicSpki } from "../src/keys/keys.js";
import {
  createEnclave,
  initKeystore,
  renewEnclave,
  renewEnclaveInKeystore,
  revokeEnclave,
  EnclaveExists,
  EnclaveNotOwned,
  EnclaveRevoked,
  EnclaveSubjectTaken,
  InvalidEnclavePath,
  NotAKeystore,
  PermissionsSourceRequired,
  UnknownKeystoreEnclave,
} from "../src/ros2/keystore/index.js";
import { fleetRos2Trust, verifyKeystore } from "../src/ros2/keystore/verify.js";
import { UnknownDevice } from "../src/authority/errors.js";
import { Sros2PolicyError } from "../src/ros2/errors.js";
import { decodeAuditRow } from "../src/authority/events/events.js";
import { spawnSync } from "node:child_process";
import { assertOneLineError, cli, openssl, tempDir, tempFleet, vectorPath } from "./helpers.js";
import { ManualClock } from "./support/clock.js";
import { sqliteStore } from "./support/sqlite.js";

const DAY = 86_400_000;

/** Every path under dir with its mode and content hash (what "nothing changed" compares). */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, e.name);
      const mode = (statSync(p).mode & 0o777).toString(8);
      if (e.isDirectory()) {
        out.push(`${relative(dir, p)}/ ${mode}`);
        walk(p);
      } else out.push(`${relative(dir, p)} ${mode} ${readFileSync(p).toString("base64").slice(-24)}`);
    }
  };
  walk(dir);
  return out;
}

async function rows(fleet: FleetServices): Promise<Record<string, number>> {
  const db = sqliteStore(fleet).db;
  const count = async (t: "certificates" | "ros2_enclaves" | "audit_log" | "cas" | "ros2_keystores") =>
    Number(
      (
        await db
          .selectFrom(t)
          .select((eb) => eb.fn.countAll<number>().as("n"))
          .executeTakeFirstOrThrow()
      ).n,
    );
  return {
    certificates: await count("certificates"),
    enclaves: await count("ros2_enclaves"),
    audit: await count("audit_log"),
    cas: await count("cas"),
    keystores: await count("ros2_keystores"),
  };
}

const mode = (p: string) => statSync(p).mode & 0o777;

function p256Csr(): Buffer {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return buildCsr(encodeName([{ type: OID.commonName, value: "ignored" }]), publicSpki(privateKey), {
    key: privateKey,
    scheme: signatureSchemeFor(privateKey),
  });
}

describe("ros2 enclaves", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let fleet: FleetServices;
  let ksDir: string;
  let keystoreId: string;
  const clock = new ManualClock();
  const tmp = tempDir("fleetpki-ros2-enclave-");
  const enclave = (p: string) => join(ksDir, "enclaves", ...p.slice(1).split("/"));
  const rootPem = () => join(f.dir, "ca", "root", "cert.pem");
  const fleetCa = (id: string) => join(f.dir, "ca", id, "cert.pem");
  const at = () => String(Math.floor(clock.now().getTime() / 1000));

  before(async () => {
    f = await tempFleet();
    await f.fleet.close();
    fleet = await FleetServices.open(f.dir, { clock });
    await addDevice(fleet, { id: "amr-1", actor: "test" });
    await addDevice(fleet, { id: "amr-2", actor: "test" });
    ksDir = join(tmp.path, "ks");
    keystoreId = (await initKeystore(fleet, { dir: ksDir, domainId: 42, actor: "test" })).keystoreId;
  });
  after(async () => {
    await fleet.close();
    await f.close();
    tmp.cleanup();
  });

  it("creates enclaves that openssl verifies against the identity CA, with the layout's modes and signed permissions", async () => {
    const r = await createEnclave(fleet, { dir: ksDir, path: "/talker_listener/talker", allowAll: true, deviceId: "amr-1", actor: "test" });
    await createEnclave(fleet, { dir: ksDir, path: "/talker_listener/listener", allowAll: true, actor: "test" });
    await createEnclave(fleet, { dir: ksDir, path: "/amr_2/base", allowAll: true, deviceId: "amr-2", validity: "20d", actor: "test" });
    const dir = enclave("/talker_listener/talker");
    assert.equal(r.dir, dir);
    const cert = join(dir, "cert.pem");
    const ica = join(ksDir, "public", "identity_ca.cert.pem");
    // The keystore's CA file is a self-signed anchor (no -partial_chain: DDS takes none), and the same key's
    // root-signed certificate in the fleet directory chains the enclave to the fleet root.
    let v = openssl(["verify", "-CAfile", rootPem(), "-untrusted", fleetCa("ros2-identity"), cert]);
    assert.equal(v.status, 0, v.stderr);
    v = openssl(["verify", "-CAfile", join(dir, "identity_ca.cert.pem"), cert]);
    assert.equal(v.status, 0, v.stderr);
    v = openssl(["verify", "-CAfile", ica, ica]);
    assert.equal(v.status, 0, v.stderr);
    assert.equal(readFileSync(ica, "utf8"), readFileSync(join(f.dir, "ca", "ros2-identity", "anchor.pem"), "utf8"));
    // Trusting only the root, the anchor is no intermediate: the chain goes through the fleet's certificate.
    assert.notEqual(openssl(["verify", "-CAfile", rootPem(), "-untrusted", ica, cert]).status, 0);
    // The subject is exactly what permissions.xml names; no SAN, KU digitalSignature.
    const text = openssl(["x509", "-in", cert, "-noout", "-subject", "-ext", "keyUsage,subjectAltName,extendedKeyUsage"]).stdout;
    assert.match(text, /^subject=CN ?= ?\/talker_listener\/talker$/m);
    assert.match(text, /Digital Signature/);
    assert.doesNotMatch(text, /Subject Alternative Name|Extended Key Usage/);
    // P-256 key, PKCS#8, unencrypted, 0600 in a 0700 directory; parents 0755.
    const key = readFileSync(join(dir, "key.pem"), "utf8");
    assert.match(key, /^-----BEGIN PRIVATE KEY-----/);
    assert.match(openssl(["pkey", "-in", join(dir, "key.pem"), "-noout", "-text"]).stdout, /prime256v1|P-256/);
    assert.equal(mode(join(dir, "key.pem")), 0o600);
    assert.equal(mode(dir), 0o700);
    assert.equal(mode(join(ksDir, "enclaves", "talker_listener")), 0o755);
    for (const file of [
      "cert.pem",
      "identity_ca.cert.pem",
      "permissions_ca.cert.pem",
      "governance.p7s",
      "permissions.xml",
      "permissions.p7s",
      "crl.pem",
    ])
      assert.equal(mode(join(dir, file)), 0o644, file);
    // Copies are regular files equal to the keystore's.
    for (const [copy, original] of [
      ["identity_ca.cert.pem", "public/identity_ca.cert.pem"],
      ["permissions_ca.cert.pem", "public/permissions_ca.cert.pem"],
      ["governance.p7s", "enclaves/governance.p7s"],
      ["crl.pem", "public/identity_ca.crl.pem"],
    ] as const) {
      assert.ok(statSync(join(dir, copy)).isFile());
      assert.deepEqual(readFileSync(join(dir, copy)), readFileSync(join(ksDir, original)), copy);
    }
    // permissions.xml: the grant's subject and validity are the certificate's, the domain the keystore's.
    const xml = readFileSync(join(dir, "permissions.xml"), "utf8");
    assert.match(xml, /<subject_name>CN=\/talker_listener\/talker<\/subject_name>/);
    assert.match(xml, /<id>42<\/id>/);
    const dates = openssl(["x509", "-in", cert, "-noout", "-startdate", "-enddate", "-dateopt", "iso_8601"]).stdout;
    const [nb, na] = [/notBefore=(\S+ \S+)Z/.exec(dates)![1]!, /notAfter=(\S+ \S+)Z/.exec(dates)![1]!];
    // The grant is the certificate's validity widened by 14 h on both sides (Fast DDS reads it in the robot's local time).
    const early = new Date(Date.parse(`${nb.replace(" ", "T")}Z`) - 14 * 3600_000).toISOString().slice(0, 19);
    const late = new Date(Date.parse(`${na.replace(" ", "T")}Z`) + 14 * 3600_000).toISOString().slice(0, 19);
    assert.match(xml, new RegExp(`<not_before>${early}</not_before>`));
    assert.match(xml, new RegExp(`<not_after>${late}</not_after>`));
    // Default validity 30 days (validity.ros2_enclave), not sros2's 10 years.
    assert.ok(Math.abs(r.notAfter.getTime() - clock.now().getTime() - 30 * DAY) < 120_000);
    // Signed by the permissions CA, not the identity CA; the signed content is permissions.xml.
    const p7s = join(dir, "permissions.p7s");
    const ok = openssl(["smime", "-verify", "-in", p7s, "-CAfile", join(dir, "permissions_ca.cert.pem"), "-text"]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stdout.replace(/\r\n/g, "\n"), xml);
    const wrong = openssl(["smime", "-verify", "-in", p7s, "-CAfile", join(dir, "identity_ca.cert.pem")]);
    assert.notEqual(wrong.status, 0);
  });

  it("renews with a new key and certificate and re-signs the permissions with the new validity (injected clock)", async () => {
    const dir = enclave("/talker_listener/listener");
    const before = { cert: readFileSync(join(dir, "cert.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8") };
    const oldXml = readFileSync(join(dir, "permissions.xml"), "utf8");
    clock.advance(10 * DAY);
    const r = await renewEnclaveInKeystore(fleet, { dir: ksDir, path: "/talker_listener/listener", validity: "5d", actor: "test" });
    assert.notEqual(readFileSync(join(dir, "cert.pem"), "utf8"), before.cert);
    assert.notEqual(readFileSync(join(dir, "key.pem"), "utf8"), before.key);
    assert.equal(mode(join(dir, "key.pem")), 0o600);
    assert.equal(mode(dir), 0o700);
    const xml = readFileSync(join(dir, "permissions.xml"), "utf8");
    assert.notEqual(xml, oldXml);
    const iso = (d: Date) => d.toISOString().slice(0, 19);
    assert.match(xml, new RegExp(`<not_before>${iso(new Date(r.notBefore.getTime() - 14 * 3600_000))}</not_before>`));
    assert.match(xml, new RegExp(`<not_after>${iso(new Date(r.notAfter.getTime() + 14 * 3600_000))}</not_after>`));
    assert.ok(Math.abs(r.notAfter.getTime() - clock.now().getTime() - 5 * DAY) < 120_000);
    const ok = openssl(["smime", "-verify", "-in", join(dir, "permissions.p7s"), "-CAfile", join(dir, "permissions_ca.cert.pem"), "-text"]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stdout.replace(/\r\n/g, "\n"), xml);
    // openssl judges at the injected clock's time (-attime), which the test moved ahead.
    const v = openssl(["verify", "-attime", at(), "-CAfile", join(dir, "identity_ca.cert.pem"), join(dir, "cert.pem")]);
    assert.equal(v.status, 0, v.stdout + v.stderr);
    // The old certificate is superseded, not revoked.
    const old = await fleet.store.ops.certificates.ofKind("ros2-enclave", `${keystoreId}:/talker_listener/listener`);
    assert.equal(old.length, 2);
    assert.ok(old.every((c) => c.status === "valid"));
    // No temporary directory is left in enclaves/.
    assert.deepEqual(
      readdirSync(join(ksDir, "enclaves")).filter((n) => n.startsWith(".")),
      [],
    );
  });

  it("renewEnclave issues for a robot's CSR only to the device that owns the enclave", async () => {
    const base = { keystoreId, path: "/talker_listener/talker", actor: "device:amr-1" };
    const r = await renewEnclave(fleet, { ...base, csrDer: p256Csr(), deviceId: "amr-1" });
    assert.match(r.certificatePem, /^-----BEGIN CERTIFICATE-----/);
    assert.match(r.permissionsXml, /CN=\/talker_listener\/talker/);
    assert.match(r.crlPem, /^-----BEGIN X509 CRL-----/);
    assert.equal(r.governanceP7s, readFileSync(join(ksDir, "enclaves", "governance.p7s"), "utf8"));
    assert.equal(r.identityCaPem, readFileSync(join(ksDir, "public", "identity_ca.cert.pem"), "utf8"));
    await assert.rejects(renewEnclave(fleet, { ...base, csrDer: p256Csr(), deviceId: "amr-2" }), EnclaveNotOwned);
    // An enclave made without --device belongs to no robot.
    await assert.rejects(
      renewEnclave(fleet, { ...base, path: "/talker_listener/listener", csrDer: p256Csr(), deviceId: "amr-1" }),
      EnclaveNotOwned,
    );
    await assert.rejects(renewEnclave(fleet, { ...base, path: "/nope", csrDer: p256Csr(), deviceId: "amr-1" }), UnknownKeystoreEnclave);
    // DDS PKI-DH: P-256 only.
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "secp384r1" });
    const p384 = buildCsr(encodeName([{ type: OID.commonName, value: "x" }]), publicSpki(privateKey), {
      key: privateKey,
      scheme: signatureSchemeFor(privateKey),
    });
    await assert.rejects(renewEnclave(fleet, { ...base, csrDer: p384, deviceId: "amr-1" }), /must be P-256/);
  });

  it("renewals (CLI and agent) keep the --validity given at creation, unless renew gets its own", async () => {
    // /amr_2/base was created with --validity 20d; validity.ros2_enclave is 30 days.
    const stored = await fleet.store.ops.ros2.getEnclave(keystoreId, "/amr_2/base");
    assert.equal(stored?.validity, "20d");
    const days = (r: { notAfter: Date }) => Math.round((r.notAfter.getTime() - clock.now().getTime()) / DAY);
    assert.equal(days(await renewEnclaveInKeystore(fleet, { dir: ksDir, path: "/amr_2/base", actor: "test" })), 20);
    const agent = await renewEnclave(fleet, {
      keystoreId,
      path: "/amr_2/base",
      csrDer: p256Csr(),
      deviceId: "amr-2",
      actor: "device:amr-2",
    });
    const agentCert = new X509Certificate(agent.certificatePem);
    assert.equal(Math.round((Date.parse(agentCert.validTo) - clock.now().getTime()) / DAY), 20);
    // A renewal's own --validity is for that certificate; the stored one stays.
    assert.equal(days(await renewEnclaveInKeystore(fleet, { dir: ksDir, path: "/amr_2/base", validity: "3d", actor: "test" })), 3);
    assert.equal((await fleet.store.ops.ros2.getEnclave(keystoreId, "/amr_2/base"))?.validity, "20d");
    // Without --validity at creation, renewals use validity.ros2_enclave.
    assert.equal((await fleet.store.ops.ros2.getEnclave(keystoreId, "/talker_listener/listener"))?.validity, null);
  });

  it("revocation reaches every enclave's crl.pem: openssl -crl_check refuses the revoked one in each, accepts the others", async () => {
    const revoked = join(enclave("/amr_2/base"), "cert.pem");
    const r = await revokeEnclave(fleet, { dir: ksDir, path: "/amr_2/base", reason: "keyCompromise", actor: "test" });
    assert.deepEqual(r.updated, ["/amr_2/base", "/talker_listener/listener", "/talker_listener/talker"]);
    const publicCrl = readFileSync(join(ksDir, "public", "identity_ca.crl.pem"), "utf8");
    for (const e of r.updated) {
      const dir = enclave(e);
      assert.equal(readFileSync(join(dir, "crl.pem"), "utf8"), publicCrl);
      const args = [
        "verify",
        "-attime",
        at(),
        "-crl_check",
        "-CAfile",
        join(dir, "identity_ca.cert.pem"),
        "-CRLfile",
        join(dir, "crl.pem"),
      ];
      const v = openssl([...args, revoked]);
      assert.notEqual(v.status, 0, `${e}: the revoked certificate must fail`);
      assert.match(v.stdout + v.stderr, /certificate revoked/);
      if (e !== "/amr_2/base") assert.equal(openssl([...args, join(dir, "cert.pem")]).status, 0, `${e} stays valid`);
    }
    // Revoked enclaves are not renewed, by the CLI's path or the agent's.
    await assert.rejects(renewEnclaveInKeystore(fleet, { dir: ksDir, path: "/amr_2/base", actor: "test" }), EnclaveRevoked);
    await assert.rejects(
      renewEnclave(fleet, { keystoreId, path: "/amr_2/base", csrDer: p256Csr(), deviceId: "amr-2", actor: "device:amr-2" }),
      EnclaveRevoked,
    );
    // The status listener's CRL of ros2-identity is the one written (same number).
    const stored = await fleet.store.ops.status.storedCrl("ros2-identity");
    assert.equal(BigInt(stored!.crl_number), r.crlNumber);
  });

  it("takes permissions from an SROS2 policy file, valid against permissions.xsd, and keeps that source for renewal", async () => {
    const policies = vectorPath("sros2", "sros2", "test", "policies");
    const policyFile = join(policies, "talker_listener.policy.xml");
    const r = await createEnclave(fleet, { dir: ksDir, path: "/talker_listener/policy_talker", policyFile, actor: "test" }).catch(
      (e: unknown) => e as Error,
    );
    // The policy names other enclaves only: refused by name, nothing written.
    assert.ok(r instanceof Error && /has no enclave \/talker_listener\/policy_talker/.test(r.message), String(r));
    const path = "/talker_listener/talker_p";
    const own = join(tmp.path, "own.policy.xml");
    writeFileSync(own, readFileSync(policyFile, "utf8").replace('path="/talker_listener/talker"', `path="${path}"`));
    cpSync(join(policies, "common"), join(tmp.path, "common"), { recursive: true });
    await createEnclave(fleet, { dir: ksDir, path, policyFile: own, actor: "test" });
    const xmlFile = join(enclave(path), "permissions.xml");
    const xml = readFileSync(xmlFile, "utf8");
    assert.match(xml, /<topic>rt\/chatter<\/topic>/);
    assert.doesNotMatch(xml, /<topic>rt\/\*<\/topic>/, "not the allow-all policy");
    const xsd = vectorPath("sros2", "sros2", "sros2", "policy", "schemas", "dds", "permissions.xsd");
    const v = spawnSync("xmllint", ["--nonet", "--noout", "--schema", xsd, xmlFile], { encoding: "utf8" });
    assert.equal(v.status, 0, v.stderr);
    const gxsd = vectorPath("sros2", "sros2", "sros2", "policy", "schemas", "dds", "governance.xsd");
    const g = spawnSync("xmllint", ["--nonet", "--noout", "--schema", gxsd, join(ksDir, "enclaves", "governance.xml")], {
      encoding: "utf8",
    });
    assert.equal(g.status, 0, g.stderr);
    // Renewal re-renders from the stored source, not from the file (gone now).
    writeFileSync(own, "not xml");
    clock.advance(DAY);
    await renewEnclaveInKeystore(fleet, { dir: ksDir, path, actor: "test" });
    const renewed = readFileSync(xmlFile, "utf8");
    assert.notEqual(renewed, xml);
    assert.equal(renewed.replace(/<not_(before|after)>[^<]*</g, ""), xml.replace(/<not_(before|after)>[^<]*</g, ""));
    // A policy that fails the schema: the reader's specific error.
    await assert.rejects(createEnclave(fleet, { dir: ksDir, path: "/p/q", policyFile: own, actor: "test" }), Sros2PolicyError);
  });

  it("an enclave path is one live subject in the fleet: another keystore may not reuse it until it is revoked or expired", async () => {
    const ks2 = join(tmp.path, "ks2");
    const other = (await initKeystore(fleet, { dir: ks2, domainId: 42, actor: "test" })).keystoreId;
    const snapshot = tree(ks2);
    const counts = await rows(fleet);
    // Live in ks (device amr-1): refused by name, with the other keystore, its device and a namespace to use.
    const req = { dir: ks2, path: "/talker_listener/talker", allowAll: true, deviceId: "amr-2", actor: "test" };
    const taken = await createEnclave(fleet, req).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    assert.ok(taken instanceof EnclaveSubjectTaken, String(taken));
    assert.ok(taken.message.includes(`already live in keystore ${keystoreId} (${ksDir}, device "amr-1")`), taken.message);
    assert.match(taken.message, /CN=\/talker_listener\/talker/);
    assert.ok(taken.message.includes("e.g. /amr_2/talker_listener/talker"), taken.message);
    assert.deepEqual(tree(ks2), snapshot);
    assert.deepEqual(await rows(fleet), counts);
    // The suggested namespace is free.
    await createEnclave(fleet, { dir: ks2, path: "/amr_2/talker_listener/talker", allowAll: true, deviceId: "amr-2", actor: "test" });
    // A revoked enclave frees its path (/amr_2/base was revoked above).
    await createEnclave(fleet, { dir: ks2, path: "/amr_2/base", allowAll: true, deviceId: "amr-2", actor: "test" });
    // An expired one too: it cannot authenticate any more. Renewing it afterwards would make a second live subject.
    await createEnclave(fleet, { dir: ksDir, path: "/short/lived", allowAll: true, validity: "1d", actor: "test" });
    await assert.rejects(createEnclave(fleet, { dir: ks2, path: "/short/lived", allowAll: true, actor: "test" }), EnclaveSubjectTaken);
    clock.advance(2 * DAY);
    await createEnclave(fleet, { dir: ks2, path: "/short/lived", allowAll: true, actor: "test" });
    await assert.rejects(renewEnclaveInKeystore(fleet, { dir: ksDir, path: "/short/lived", actor: "test" }), EnclaveSubjectTaken);
    // Its own renewal is no conflict with itself.
    await renewEnclaveInKeystore(fleet, { dir: ks2, path: "/short/lived", actor: "test" });
    assert.ok((await fleet.store.ops.ros2.getEnclave(other, "/short/lived"))?.renewed_at);
    // Through the CLI: one line, non-zero.
    assertOneLineError(cli(["ros2", "enclave", "create", ks2, "/talker_listener/listener", "--allow-all", "--dir", f.dir]), /already live/);
  });

  it("a revoked enclave's path can be created again in the same keystore: the new enclave replaces its row and directory", async () => {
    const path = "/again/node";
    const first = await createEnclave(fleet, { dir: ksDir, path, allowAll: true, deviceId: "amr-1", actor: "test" });
    // A nested enclave inside its directory must survive the replacement.
    await createEnclave(fleet, { dir: ksDir, path: "/again/node/inner", allowAll: true, actor: "test" });
    const oldCert = join(tmp.path, "again-old-cert.pem");
    cpSync(join(enclave(path), "cert.pem"), oldCert);
    const oldKey = readFileSync(join(enclave(path), "key.pem"), "utf8");
    await revokeEnclave(fleet, { dir: ksDir, path, actor: "test" });
    await assert.rejects(
      renewEnclaveInKeystore(fleet, { dir: ksDir, path, actor: "test" }),
      (e: unknown) =>
        e instanceof EnclaveRevoked &&
        (e as Error).message === `enclave ${path} is revoked and cannot be renewed; create it again with \`fleetpki ros2 enclave create\``,
    );

    // With the revoked enclave's directory still there.
    const second = await createEnclave(fleet, { dir: ksDir, path, allowAll: true, validity: "7d", actor: "test" });
    assert.notEqual(second.serial, first.serial);
    assert.notEqual(readFileSync(join(enclave(path), "key.pem"), "utf8"), oldKey);
    assert.equal(mode(enclave(path)), 0o700);
    assert.equal(mode(join(enclave(path), "key.pem")), 0o600);
    const row = await fleet.store.ops.ros2.getEnclave(keystoreId, path);
    assert.deepEqual(
      { status: row?.status, serial: row?.serial, device: row?.device_id, validity: row?.validity, revokedAt: row?.revoked_at },
      { status: "active", serial: second.serial, device: null, validity: "7d", revokedAt: null },
    );
    assert.ok(existsSync(join(enclave("/again/node/inner"), "cert.pem")), "the nested enclave stays");
    assert.deepEqual(
      readdirSync(join(ksDir, "enclaves")).filter((n) => n.startsWith(".")),
      [],
      "no staged or old directory left",
    );
    // The new certificate verifies with the CRL it carries; the revoked one still does not.
    const args = ["verify", "-attime", at(), "-crl_check", "-CAfile", join(enclave(path), "identity_ca.cert.pem")];
    const crl = ["-CRLfile", join(enclave(path), "crl.pem")];
    assert.equal(openssl([...args, ...crl, join(enclave(path), "cert.pem")]).status, 0);
    assert.match(openssl([...args, ...crl, oldCert]).stdout + openssl([...args, ...crl, oldCert]).stderr, /certificate revoked/);
    const sound = async () =>
      verifyKeystore(ksDir, await fleetRos2Trust(fleet), clock.now()).problems.filter((p) => p.path.startsWith("enclaves/again/"));
    assert.deepEqual(await sound(), []);
    const audit = await sqliteStore(fleet).db.selectFrom("audit_log").selectAll().orderBy("seq", "desc").execute();
    const create = audit.find((a) => a.action === "ros2.enclave.create");
    assert.deepEqual(JSON.parse(create!.details).replaces?.serial, first.serial);
    // Live again: a second create is refused.
    await assert.rejects(createEnclave(fleet, { dir: ksDir, path, allowAll: true, actor: "test" }), EnclaveExists);

    // Without the revoked enclave's directory (removed by hand).
    const solo = "/again/solo";
    await createEnclave(fleet, { dir: ksDir, path: solo, allowAll: true, actor: "test" });
    await revokeEnclave(fleet, { dir: ksDir, path: solo, actor: "test" });
    rmSync(enclave(solo), { recursive: true });
    const again = await createEnclave(fleet, { dir: ksDir, path: solo, allowAll: true, actor: "test" });
    assert.equal((await fleet.store.ops.ros2.getEnclave(keystoreId, solo))?.serial, again.serial);
    assert.equal(openssl([...args, "-CRLfile", join(enclave(solo), "crl.pem"), join(enclave(solo), "cert.pem")]).status, 0);
    assert.deepEqual(await sound(), []);
  });

  it("the keystore's domain id is in governance and in every rule of permissions, both signed", () => {
    const governance = readFileSync(join(ksDir, "enclaves", "governance.xml"), "utf8");
    const ids = (xml: string) => [...xml.matchAll(/<id>([^<]*)<\/id>/g)].map((m) => m[1]);
    assert.deepEqual(ids(governance), ["42"]);
    const pca = join(ksDir, "public", "permissions_ca.cert.pem");
    const signed = openssl(["smime", "-verify", "-in", join(ksDir, "enclaves", "governance.p7s"), "-CAfile", pca, "-text"]);
    assert.equal(signed.status, 0, signed.stderr);
    assert.equal(signed.stdout.replace(/\r\n/g, "\n"), governance);
    const xml = readFileSync(join(enclave("/talker_listener/talker"), "permissions.xml"), "utf8");
    assert.equal((xml.match(/<allow_rule>/g) ?? []).length, 2, "the policy's rule and ros_discovery_info");
    assert.deepEqual(ids(xml), ["42", "42"]);
  });

  it("refuses bad input with a specific error and leaves neither files nor rows behind", async () => {
    const snapshot = tree(ksDir);
    const counts = await rows(fleet);
    const base = { dir: ksDir, allowAll: true, actor: "test" };
    for (const [path, pattern] of [
      ["relative/node", /absolute/],
      ["/a//b", /"\/\/"/],
      ["/a/", /end with/],
      ["/1abc", /starts with a digit/],
      ["/a b", /whitespace/],
      ["/../x", /contains "\."/],
      ["/", /root/],
    ] as const)
      await assert.rejects(
        createEnclave(fleet, { ...base, path }),
        (e: unknown) => e instanceof InvalidEnclavePath && pattern.test((e as Error).message),
      );
    await assert.rejects(createEnclave(fleet, { ...base, path: "/x/y", deviceId: "ghost" }), UnknownDevice);
    await assert.rejects(createEnclave(fleet, { ...base, path: "/talker_listener/talker" }), EnclaveExists);
    await assert.rejects(createEnclave(fleet, { dir: ksDir, path: "/x/y", actor: "test" }), (e: unknown) => {
      return (
        e instanceof PermissionsSourceRequired && /--policy FILE/.test((e as Error).message) && /--allow-all/.test((e as Error).message)
      );
    });
    await assert.rejects(createEnclave(fleet, { ...base, path: "/x/y", policyFile: "p.xml" }), PermissionsSourceRequired);
    await assert.rejects(createEnclave(fleet, { ...base, path: "/x/y", validity: "soon" }), /--validity/);
    await assert.rejects(revokeEnclave(fleet, { dir: ksDir, path: "/x/y", actor: "test" }), UnknownKeystoreEnclave);
    await assert.rejects(
      revokeEnclave(fleet, { dir: ksDir, path: "/talker_listener/talker", reason: "because", actor: "test" }),
      /--reason/,
    );
    // Not a keystore: an empty directory, and one whose marker was damaged.
    const empty = join(tmp.path, "empty");
    writeFileSync(join(tmp.path, "plain"), "x");
    await assert.rejects(createEnclave(fleet, { ...base, dir: empty, path: "/x/y" }), NotAKeystore);
    await assert.rejects(createEnclave(fleet, { ...base, dir: tmp.path, path: "/x/y" }), NotAKeystore);
    assert.deepEqual(tree(ksDir), snapshot);
    assert.deepEqual(await rows(fleet), counts);
  });

  it("the CLI says what is missing in one line and exits non-zero", () => {
    const r = cli(["ros2", "enclave", "create", ksDir, "/x/y", "--dir", f.dir]);
    assertOneLineError(r, /--policy FILE .*--allow-all/);
    const bad = cli(["ros2", "enclave", "create", ksDir, "x/y", "--allow-all", "--dir", f.dir]);
    assertOneLineError(bad, /invalid enclave path "x\/y"/);
  });

  it("the change feed reads every ROS 2 row: enclave certificates are CertificateIssued events (OCSP and CRLs learn of them)", async () => {
    const audit = await sqliteStore(fleet).db.selectFrom("audit_log").selectAll().orderBy("seq").execute();
    const events = audit.map(decodeAuditRow);
    const issued = events.filter((e) => e.type === "CertificateIssued" && e.kind === "ros2-enclave");
    assert.ok(issued.length >= 5, `${issued.length} enclave certificates`);
    assert.deepEqual(
      events.filter((e) => e.type === "Unrecognised" && "problem" in e && e.problem),
      [],
    );
  });

  it("audit verify replays the enclaves' certificates and events", () => {
    const r = cli(["audit", "verify", "--dir", f.dir]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /audit log intact/);
  });
});
