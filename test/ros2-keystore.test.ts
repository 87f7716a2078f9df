// `ros2 keystore init` (src/ros2/keystore/keystore.ts): the fleet's two ROS 2 CAs, the SROS2 layout,
// signed governance; refusals; the offline root ceremony; and that no fleetpki listener trusts
// the ROS 2 CAs or an enclave certificate.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { connect as tlsConnect } from "node:tls";
import { generateKeyPairSync } from "node:crypto";
import { buildCsr } from "../src/x509/csr.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { encodeName } from "../src/x509/name.js";
import { toPem } from "../src/x509/pem.js";
import { OID } from "../src/der/oids.js";
import { publicSpki } from "../src/keys/keys.js";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { deviceClientCas, gatewayClientCas } from "../src/authority/ca/cas.js";
import { signCeremonyRequests, initOfflineRoot } from "../src/authority/ca/ceremony.js";
import { importIntermediates } from "../src/authority/ca/init.js";
import { FleetServices } from "../src/authority/services.js";
import { InvalidArgument } from "../src/authority/errors.js";
import { defaultGovernance } from "../src/ros2/default-governance.js";
import {
  createEnclave,
  ForeignKeystore,
  initKeystore,
  InvalidDomainId,
  KeystoreDirNotEmpty,
  NotAKeystore,
  parseDomainId,
  Ros2AnchorMissing,
  Ros2CasPending,
} from "../src/ros2/keystore/index.js";
import { assertOneLineError, cli, openssl, tempDir, tempFleet } from "./helpers.js";
import { https, startTestServer } from "./server-helpers.js";
import { sqliteStore } from "./support/sqlite.js";

const mode = (p: string) => statSync(p).mode & 0o777;

function spki(pemFile: string): string {
  return openssl(["x509", "-in", pemFile, "-noout", "-pubkey"]).stdout;
}

async function auditActions(fleet: FleetServices): Promise<string[]> {
  const rows = await sqliteStore(fleet).db.selectFrom("audit_log").select("action").orderBy("seq").execute();
  return rows.map((r) => r.action);
}

describe("ros2 keystore init", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  const tmp = tempDir("fleetpki-ros2-ks-");

  before(async () => {
    // A P-384 fleet: the ROS 2 CAs are P-256 all the same.
    f = await tempFleet({ keyType: "p384" });
  });
  after(async () => {
    await f.close();
    tmp.cleanup();
  });

  it("writes the SROS2 layout with the fleet's two distinct P-256 CAs and governance signed by the permissions CA", async () => {
    const dir = join(tmp.path, "ks");
    const r = await initKeystore(f.fleet, { dir, domainId: 17, actor: "test" });
    assert.equal(mode(dir), 0o755);
    assert.equal(mode(join(dir, "public")), 0o755);
    assert.equal(mode(join(dir, "private")), 0o700);
    assert.deepEqual(readdirSync(join(dir, "private")), [], "the CA keys stay in the fleet directory");
    assert.equal(mode(join(dir, "enclaves")), 0o755);
    for (const file of [
      "public/identity_ca.cert.pem",
      "public/permissions_ca.cert.pem",
      "public/identity_ca.crl.pem",
      "enclaves/governance.xml",
      "enclaves/governance.p7s",
      ".fleetpki-keystore.json",
    ])
      assert.equal(mode(join(dir, file)), 0o644, file);
    const marker = JSON.parse(readFileSync(join(dir, ".fleetpki-keystore.json"), "utf8"));
    const rootFp = openssl(["x509", "-in", join(f.dir, "ca", "root", "cert.pem"), "-noout", "-fingerprint", "-sha256"]).stdout;
    assert.deepEqual(marker, {
      version: 1,
      keystore: r.keystoreId,
      fleet: rootFp.split("=")[1]!.trim().replace(/:/g, "").toLowerCase(),
      domain_id: 17,
    });

    const ica = join(dir, "public", "identity_ca.cert.pem");
    const pca = join(dir, "public", "permissions_ca.cert.pem");
    // Two CAs, different keys, both P-256, each with two certificates: the fleet's record, an intermediate
    // under the fleet root (ca/<id>/cert.pem), and what the keystore ships, its self-signed twin (same
    // subject, key and SKI): Fast DDS and Cyclone DDS take no partial chain, so only a self-signed CA loads.
    const root = join(f.dir, "ca", "root", "cert.pem");
    for (const [ca, id] of [
      [ica, "ros2-identity"],
      [pca, "ros2-permissions"],
    ] as const) {
      const fleetCert = join(f.dir, "ca", id, "cert.pem");
      assert.equal(openssl(["verify", "-CAfile", root, fleetCert]).status, 0);
      const v = openssl(["verify", "-x509_strict", "-CAfile", ca, ca]);
      assert.equal(v.status, 0, v.stdout + v.stderr);
      assert.equal(readFileSync(ca, "utf8"), readFileSync(join(f.dir, "ca", id, "anchor.pem"), "utf8"));
      const field = (file: string, opt: string) => openssl(["x509", "-in", file, "-noout", opt]).stdout.replace(/^[^=]*=/, "");
      assert.equal(field(ca, "-issuer"), field(ca, "-subject"));
      for (const opt of ["-subject", "-startdate", "-enddate", "-pubkey"]) assert.equal(field(ca, opt), field(fleetCert, opt), opt);
      const text = openssl(["x509", "-in", ca, "-noout", "-text"]).stdout;
      assert.match(text, /NIST CURVE: P-256|prime256v1/);
      assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
      assert.match(text, /Version: 3/);
      assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE/);
      assert.doesNotMatch(text, /Extended Key Usage|CRL Distribution|Authority Information/);
      const ski = /Subject Key Identifier:\s+(\S+)/.exec(text)?.[1];
      assert.ok(ski);
      assert.equal(/Authority Key Identifier:\s+(?:keyid:)?(\S+)/.exec(text)?.[1], ski, "AKI = SKI");
      const fleetText = openssl(["x509", "-in", fleetCert, "-noout", "-text"]).stdout;
      assert.equal(/Subject Key Identifier:\s+(\S+)/.exec(fleetText)?.[1], ski, "the same SKI as the fleet's certificate");
      // Recorded with the CA and audited with its creation.
      const row = (await f.fleet.store.ops.cas.get(id))!;
      assert.equal(row.anchor_pem, readFileSync(ca, "utf8"));
      const created = (await sqliteStore(f.fleet).db.selectFrom("audit_log").selectAll().where("action", "=", "ca.create").execute())
        .map((a) => JSON.parse(a.details) as { anchor?: { fingerprint_sha256: string } } & { subject?: string })
        .find((d) => d.anchor !== undefined && d.subject === row.subject);
      const fp = openssl(["x509", "-in", ca, "-noout", "-fingerprint", "-sha256"]).stdout.split("=")[1]!.trim().replace(/:/g, "");
      assert.equal(created?.anchor?.fingerprint_sha256, fp.toLowerCase());
    }
    assert.notEqual(spki(ica), spki(pca));
    // Key usage: the permissions CA signs documents itself (openssl smime needs digitalSignature).
    const ku = (ca: string) => openssl(["x509", "-in", ca, "-noout", "-ext", "keyUsage"]).stdout;
    assert.match(ku(pca), /Digital Signature, Certificate Sign, CRL Sign/);
    assert.doesNotMatch(ku(ica), /Digital Signature/);
    // CAs recorded like every CA, audited; the keys encrypted in the fleet directory.
    const cas = await f.fleet.store.ops.cas.list();
    for (const id of ["ros2-identity", "ros2-permissions"]) {
      const row = cas.find((c) => c.id === id)!;
      assert.equal(row.role, id);
      assert.equal(row.key_type, "p256");
      assert.match(readFileSync(join(f.dir, row.key_file!), "utf8"), /^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
      assert.equal(mode(join(f.dir, row.key_file!)), 0o600);
    }
    assert.deepEqual((await auditActions(f.fleet)).filter((a) => a.startsWith("ros2.") || a === "ca.create").slice(-3), [
      "ca.create",
      "ca.create",
      "ros2.keystore.init",
    ]);

    // governance: sros2's default with the domain id, signed by the permissions CA (not the identity CA).
    const xml = readFileSync(join(dir, "enclaves", "governance.xml"), "utf8");
    assert.match(xml, /<id>17<\/id>/);
    const p7s = join(dir, "enclaves", "governance.p7s");
    const signer = join(tmp.path, "governance-signer.pem");
    const ok = openssl(["smime", "-verify", "-in", p7s, "-CAfile", pca, "-text", "-signer", signer]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stdout.replace(/\r\n/g, "\n"), xml);
    // The embedded signer is the anchor itself (Cyclone DDS 0.10 chain-verifies the signer it finds in the .p7s).
    assert.equal(readFileSync(signer, "utf8"), readFileSync(pca, "utf8"));
    assert.notEqual(openssl(["smime", "-verify", "-in", p7s, "-CAfile", ica]).status, 0);
    // The CRL is the identity CA's.
    const crl = openssl(["crl", "-in", join(dir, "public", "identity_ca.crl.pem"), "-noout", "-verify", "-CAfile", ica]);
    assert.match(crl.stdout + crl.stderr, /verify OK/);

    // A second keystore reuses the CAs: no new CA row, same certificates.
    const second = await initKeystore(f.fleet, { dir: join(tmp.path, "ks2"), actor: "test" });
    assert.equal(second.identityCaFingerprint, r.identityCaFingerprint);
    assert.equal((await f.fleet.store.ops.cas.list()).length, cas.length);
    assert.match(readFileSync(join(tmp.path, "ks2", "enclaves", "governance.xml"), "utf8"), /<id>0<\/id>/);
  });

  it("refuses a non-empty directory, its own keystore again, a bad domain id, a foreign keystore: nothing written", async () => {
    const busy = join(tmp.path, "busy");
    mkdirSync(busy);
    writeFileSync(join(busy, "notes.txt"), "mine");
    const before = (await auditActions(f.fleet)).length;
    await assert.rejects(initKeystore(f.fleet, { dir: busy, actor: "test" }), KeystoreDirNotEmpty);
    assert.deepEqual(readdirSync(busy), ["notes.txt"]);
    await assert.rejects(initKeystore(f.fleet, { dir: join(tmp.path, "ks"), actor: "test" }), /already this fleet's keystore/);
    for (const bad of ["233", "-1", "x", "1.5", "1e2"]) assert.throws(() => parseDomainId(bad), InvalidDomainId);
    await assert.rejects(initKeystore(f.fleet, { dir: join(tmp.path, "d"), domainId: 500, actor: "test" }), InvalidDomainId);
    assert.equal(existsSync(join(tmp.path, "d")), false);
    await assert.rejects(
      initKeystore(f.fleet, { dir: join(tmp.path, "g"), governanceFile: join(tmp.path, "none.xml"), actor: "test" }),
      /--governance/,
    );
    writeFileSync(join(tmp.path, "gov.xml"), "<html/>");
    await assert.rejects(
      initKeystore(f.fleet, { dir: join(tmp.path, "g"), governanceFile: join(tmp.path, "gov.xml"), actor: "test" }),
      /not a DDS governance/,
    );
    assert.equal(existsSync(join(tmp.path, "g")), false);
    // A governance whose domain rules do not cover --domain-id: DDS would refuse every node of the keystore.
    const gov = (domains: string) => {
      const file = join(tmp.path, "gov-domains.xml");
      writeFileSync(file, defaultGovernance(0).replace("<id>0</id>", domains));
      return file;
    };
    await assert.rejects(
      initKeystore(f.fleet, { dir: join(tmp.path, "g"), domainId: 5, governanceFile: gov("<id>0</id>"), actor: "test" }),
      (e: unknown) =>
        e instanceof InvalidArgument && /its domain rules cover 0, not the keystore's domain 5 \(--domain-id\)/.test((e as Error).message),
    );
    await assert.rejects(
      initKeystore(f.fleet, {
        dir: join(tmp.path, "g"),
        domainId: 30,
        governanceFile: gov("<id_range><min>1</min><max>20</max></id_range><id_range><min>40</min></id_range>"),
        actor: "test",
      }),
      /cover 1-20, 40 and above, not the keystore's domain 30/,
    );
    await assert.rejects(
      initKeystore(f.fleet, { dir: join(tmp.path, "g"), domainId: 5, governanceFile: gov("<id>five</id>"), actor: "test" }),
      /--governance .*: <id> "five" is not a domain id/,
    );
    assert.equal(existsSync(join(tmp.path, "g")), false);
    assert.deepEqual(
      readdirSync(tmp.path).filter((n) => n.startsWith(".")),
      [],
      "no temporary keystore left beside",
    );
    assert.equal((await auditActions(f.fleet)).length, before);

    // Another fleet's keystore: recognised and refused, for init and for enclaves.
    const other = await tempFleet();
    try {
      const foreign = join(tmp.path, "foreign");
      await initKeystore(other.fleet, { dir: foreign, actor: "test" });
      await assert.rejects(initKeystore(f.fleet, { dir: foreign, actor: "test" }), ForeignKeystore);
      await assert.rejects(createEnclave(f.fleet, { dir: foreign, path: "/a/b", allowAll: true, actor: "test" }), ForeignKeystore);
    } finally {
      await other.close();
    }
    // A directory with the tree but no marker is not a keystore.
    mkdirSync(join(tmp.path, "sros2", "enclaves"), { recursive: true });
    await assert.rejects(
      createEnclave(f.fleet, { dir: join(tmp.path, "sros2"), path: "/a/b", allowAll: true, actor: "test" }),
      NotAKeystore,
    );
  });

  it("a ROS 2 CA recorded without its self-signed anchor (older fleet) makes no keystore: specific error, nothing written", async () => {
    const db = sqliteStore(f.fleet).db;
    const kept = (await f.fleet.store.ops.cas.get("ros2-permissions"))!.anchor_pem!;
    await db.updateTable("cas").set({ anchor_pem: null }).where("id", "=", "ros2-permissions").execute();
    try {
      const dir = join(tmp.path, "no-anchor");
      await assert.rejects(
        initKeystore(f.fleet, { dir, actor: "test" }),
        (e: unknown) => e instanceof Ros2AnchorMissing && /ros2-permissions CA has no self-signed trust anchor/.test((e as Error).message),
      );
      assert.equal(existsSync(dir), false);
    } finally {
      await db.updateTable("cas").set({ anchor_pem: kept }).where("id", "=", "ros2-permissions").execute();
    }
  });

  it("the CLI refuses a bad domain id and a non-empty directory in one line", () => {
    assertOneLineError(cli(["ros2", "keystore", "init", join(tmp.path, "c"), "--domain-id", "300", "--dir", f.dir]), /domain id "300"/);
    assertOneLineError(cli(["ros2", "keystore", "init", join(tmp.path, "busy"), "--dir", f.dir]), /not empty/);
    assert.equal(existsSync(join(tmp.path, "c")), false);
  });

  it("init --governance accepts a governance whose <id> or <id_range> covers --domain-id", async () => {
    const file = join(tmp.path, "gov-range.xml");
    writeFileSync(file, defaultGovernance(0).replace("<id>0</id>", "<id>3</id><id_range><min>10</min><max>20</max></id_range>"));
    for (const domainId of [3, 10, 15, 20]) {
      const dir = join(tmp.path, `ranged-${domainId}`);
      const r = await initKeystore(f.fleet, { dir, domainId, governanceFile: file, actor: "test" });
      assert.equal(r.domainId, domainId);
      assert.equal(readFileSync(join(dir, "enclaves", "governance.xml"), "utf8"), readFileSync(file, "utf8"));
    }
    const v = cli(["ros2", "keystore", "verify", join(tmp.path, "ranged-15"), "--dir", f.dir]);
    assert.equal(v.status, 0, v.stdout + v.stderr);
  });

  it("init on this fleet's keystore again is 'nothing to do' (exit 0); with another domain id it is refused", () => {
    const ks = join(tmp.path, "ks");
    const again = cli(["ros2", "keystore", "init", ks, "--dir", f.dir]);
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /already this fleet's keystore .*nothing to do/);
    assertOneLineError(cli(["ros2", "keystore", "init", ks, "--domain-id", "7", "--dir", f.dir]), /another domain than 7/);
  });

  it("no fleetpki listener trusts the ROS 2 CAs or an enclave certificate", async () => {
    const trusted = [...(await gatewayClientCas(f.fleet, true)).map((c) => c.id)];
    assert.ok(!trusted.some((id) => id.startsWith("ros2-")), `gateway trusts ${trusted.join(", ")}`);
    const rosPems = (await f.fleet.store.ops.cas.list()).filter((c) => c.id.startsWith("ros2-")).map((c) => c.certificate_pem);
    assert.equal(rosPems.length, 2);
    for (const pem of await deviceClientCas(f.fleet)) assert.ok(!rosPems.includes(pem), "registration/admin trust set");

    // Live: an enclave's certificate, sent with the identity CA as its chain (so it does chain to the
    // root every listener trusts), gets nowhere.
    const ks = join(tmp.path, "ks");
    await createEnclave(f.fleet, { dir: ks, path: "/live/node", allowAll: true, actor: "test" });
    const dir = join(ks, "enclaves", "live", "node");
    const cert = readFileSync(join(dir, "cert.pem"), "utf8") + readFileSync(join(dir, "identity_ca.cert.pem"), "utf8");
    const key = readFileSync(join(dir, "key.pem"), "utf8");
    const ca = readFileSync(join(f.dir, "ca", "root", "cert.pem"), "utf8");
    const server = await startTestServer(f.dir);
    try {
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
      const csr = buildCsr(encodeName([{ type: OID.commonName, value: "live" }]), publicSpki(privateKey), {
        key: privateKey,
        scheme: signatureSchemeFor(privateKey),
      });
      const body = JSON.stringify({ csr: toPem("CERTIFICATE REQUEST", csr) });
      const renew = await https(`${server.url}/api/v1/renew`, {
        method: "POST",
        ca,
        cert,
        key,
        body,
        headers: { "content-type": "application/json" },
      });
      assert.ok(renew.status === 401 || renew.status === 403, `registration: ${renew.status} ${renew.text}`);
      const admin = await https(`https://127.0.0.1:${server.server.admin!.address.port}/api/devices`, { ca, cert, key });
      assert.equal(admin.status, 401, `admin: ${admin.text}`);
      const connack = await new Promise<number | undefined>((resolve) => {
        const socket = tlsConnect({ host: "127.0.0.1", port: server.server.gateway!.address.port, servername: "localhost", ca, cert, key });
        let got = Buffer.alloc(0);
        const done = () => {
          socket.destroy();
          resolve(got.length >= 4 && got[0] === 0x20 ? got[3] : undefined);
        };
        socket.on("secureConnect", () => {
          const id = Buffer.from("live");
          const body = Buffer.concat([Buffer.from([0, 4]), Buffer.from("MQTT"), Buffer.from([4, 2, 0, 60, 0, id.length]), id]);
          socket.write(Buffer.concat([Buffer.from([0x10, body.length]), body]));
        });
        socket.on("data", (c: Buffer) => {
          got = Buffer.concat([got, c]);
          if (got.length >= 4) done();
        });
        socket.on("error", done);
        socket.on("close", done);
        socket.setTimeout(20_000, done);
      });
      assert.notEqual(connack, 0, "the gateway must not accept an enclave certificate");
      // The identity CA's CRL is served like every CA's.
      const crl = await fetch(`http://127.0.0.1:${server.server.status!.port}/crl/ros2-identity.pem`);
      assert.equal(crl.status, 200);
      assert.match(await crl.text(), /^-----BEGIN X509 CRL-----/);
    } finally {
      await server.close();
    }
  });
});

describe("ros2 keystore init with an offline root", () => {
  const tmp = tempDir("fleetpki-ros2-offline-");
  after(() => tmp.cleanup());

  it("writes ceremony requests for the ROS 2 CAs, then works once they are signed and imported", async () => {
    const rootDir = join(tmp.path, "root");
    initOfflineRoot({ dir: rootDir, name: "Offline", domain: "fleet.example", keyType: "p384", now: new Date() });
    const f = await tempFleet({ rootCertFile: join(rootDir, "cert.pem") });
    try {
      // The standard intermediates first (as in ceremony.test.ts), so the fleet works.
      const signed = join(tmp.path, "signed");
      const first = readdirSync(join(f.dir, "ceremony")).map((n) => join(f.dir, "ceremony", n));
      signCeremonyRequests(rootDir, first, signed, new Date());
      await importIntermediates(
        f.fleet,
        readdirSync(signed).map((n) => join(signed, n)),
        "test",
      );

      const dir = join(tmp.path, "ks");
      await assert.rejects(initKeystore(f.fleet, { dir, actor: "test" }), (e: unknown) => {
        return (
          e instanceof Ros2CasPending && /ca root sign/.test((e as Error).message) && /ca intermediate import/.test((e as Error).message)
        );
      });
      assert.equal(existsSync(dir), false);
      const requests = readdirSync(join(f.dir, "ceremony")).sort();
      assert.deepEqual(requests, ["ros2-identity.request.json", "ros2-permissions.request.json"]);
      // Asking again does not replace the keys waiting for the root.
      const keyBefore = readFileSync(join(f.dir, "ca", "ros2-identity", "key.pem"), "utf8");
      await assert.rejects(initKeystore(f.fleet, { dir, actor: "test" }), Ros2CasPending);
      assert.equal(readFileSync(join(f.dir, "ca", "ros2-identity", "key.pem"), "utf8"), keyBefore);

      const out = join(tmp.path, "signed-ros2");
      signCeremonyRequests(
        rootDir,
        requests.map((n) => join(f.dir, "ceremony", n)),
        out,
        new Date(),
      );
      await importIntermediates(
        f.fleet,
        readdirSync(out).map((n) => join(out, n)),
        "test",
      );
      await initKeystore(f.fleet, { dir, actor: "test" });
      const pca = join(dir, "public", "permissions_ca.cert.pem");
      assert.match(openssl(["x509", "-in", pca, "-noout", "-ext", "keyUsage"]).stdout, /Digital Signature/);
      assert.doesNotMatch(openssl(["x509", "-in", pca, "-noout", "-text"]).stdout, /Name Constraints/);
      assert.match(openssl(["x509", "-in", pca, "-noout", "-text"]).stdout, /P-256|prime256v1/);
      const ok = openssl(["smime", "-verify", "-in", join(dir, "enclaves", "governance.p7s"), "-CAfile", pca]);
      assert.equal(ok.status, 0, ok.stderr);
      // The CA keys waited here for the root: they self-signed their anchors at import.
      for (const [file, id] of [
        [pca, "ros2-permissions"],
        [join(dir, "public", "identity_ca.cert.pem"), "ros2-identity"],
      ] as const) {
        assert.equal(openssl(["verify", "-x509_strict", "-CAfile", file, file]).status, 0, file);
        const chain = openssl(["verify", "-CAfile", join(f.dir, "ca", "root", "cert.pem"), join(f.dir, "ca", id, "cert.pem")]);
        assert.equal(chain.status, 0, chain.stderr);
      }
    } finally {
      await f.close();
    }
  });
});
