// Certificates a fleet issues, judged by independent implementations: openssl verify / x509 -text,
// @peculiar/x509 and node's X509Certificate. Chain validation, name constraints, CA profiles,
// validity clamping and serial numbers.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { AsnConvert } from "@peculiar/asn1-schema";
import { NameConstraints } from "@peculiar/asn1-x509";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate as NodeX509, generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OID } from "../src/der/oids.js";
import { children, content, readRoot } from "../src/der/reader.js";
import { addDevice } from "../src/authority/devices.js";
import { createLocalCa } from "../src/authority/ca/cas.js";
import { issueDeviceCertificate, issueForKey, keyFromCsr } from "../src/authority/issue/issuance.js";
import type { FleetServices } from "../src/authority/services.js";
import { randomSerial, parseCertificate } from "../src/x509/certificate.js";
import { subjectPublicKeyOf } from "../src/x509/certificate.js";
import { toPem } from "../src/x509/pem.js";
import { LeafTemplate } from "../src/x509/profiles.js";
import type { GeneralName } from "../src/x509/extensions.js";
import { openssl, opensslCsr, tempDir, tempFleet } from "./helpers.js";
import { sqliteStore } from "./support/sqlite.js";

/** @peculiar/x509 certificate from PEM text or DER bytes. */
const peculiar = (cert: Buffer | string): x509.X509Certificate =>
  new x509.X509Certificate(typeof cert === "string" ? cert : new Uint8Array(cert));

const DAY = 86_400_000;
const YEAR = 365 * DAY;

const tmp = tempDir("fleetpki-cert-test-");
type TempFleet = Awaited<ReturnType<typeof tempFleet>>;
let p256Fleet: TempFleet;
let edFleet: TempFleet;
let csrPath: string;

function writeTmp(name: string, data: string | Buffer): string {
  const p = join(tmp.path, name);
  writeFileSync(p, data);
  return p;
}

async function caPem(fleet: FleetServices, id: string): Promise<string> {
  return (await fleet.caRecord(id)).certificate_pem;
}

let verifyCounter = 0;
/** `openssl verify -x509_strict -purpose sslclient` of a leaf through one intermediate to the fleet root. */
async function opensslVerify(fleet: FleetServices, caId: string, leafPem: string): Promise<{ ok: boolean; out: string }> {
  const n = verifyCounter++;
  const root = writeTmp(`root-${n}.pem`, await caPem(fleet, "root"));
  const chain = writeTmp(`ca-${n}.pem`, await caPem(fleet, caId));
  const leaf = writeTmp(`leaf-${n}.pem`, leafPem);
  const r = openssl(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", root, "-untrusted", chain, leaf]);
  return { ok: r.status === 0 && /: OK\s*$/.test(r.stdout), out: r.stdout + r.stderr };
}

function x509Text(pem: string): string {
  const r = openssl(["x509", "-noout", "-text"], pem);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** A leaf built by hand with a CA's own template: any SANs we like. */
async function handBuiltLeaf(fleet: FleetServices, caId: string, commonName: string, sans: GeneralName[]): Promise<string> {
  const ca = await fleet.issuingCa(caId);
  const template = new LeafTemplate(ca, "device");
  const spki = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey.export({ type: "spki", format: "der" });
  const issued = template.issue(commonName, sans, { spki, subjectPublicKey: subjectPublicKeyOf(spki), now: new Date(), lifetimeMs: DAY });
  return toPem("CERTIFICATE", issued.der);
}

before(async () => {
  [p256Fleet, edFleet] = await Promise.all([tempFleet(), tempFleet({ keyType: "ed25519", name: "Ed Robots" })]);
  for (const f of [p256Fleet, edFleet]) await addDevice(f.fleet, { id: "robot-1", actor: "test" });
  const r = await createLocalCa(p256Fleet.fleet, { name: "line-1", actor: "test" });
  assert.deepEqual(r, { status: "created" });
  csrPath = opensslCsr(tmp.path, "device").csr;
});

after(async () => {
  await Promise.all([p256Fleet?.close(), edFleet?.close()]);
  tmp.cleanup();
});

describe("chain validation with openssl", () => {
  for (const [label, get, sigAlg] of [
    ["p256 CAs", () => p256Fleet, /Signature Algorithm: ecdsa-with-SHA256/],
    ["ed25519 CAs", () => edFleet, /Signature Algorithm: ED25519/],
  ] as const) {
    it(`${label}: an issued device leaf verifies (-x509_strict -purpose sslclient)`, async () => {
      const { fleet } = get();
      const cert = await issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr: readFileSync(csrPath) });
      const v = await opensslVerify(fleet, "devices", cert.certificatePem);
      assert.ok(v.ok, v.out);
      assert.match(x509Text(cert.certificatePem), sigAlg);
      // the PEMs handed to the device are the ones that verify
      assert.equal(cert.chainPem, await caPem(fleet, "devices"));
      assert.equal(cert.caPem, await caPem(fleet, "root"));
      // the robot may serve TLS with it, for its own host name only (foxglove_bridge)
      const n = verifyCounter++;
      const asServer = (host: string) =>
        openssl([
          "verify",
          "-x509_strict",
          "-purpose",
          "sslserver",
          "-verify_hostname",
          host,
          "-CAfile",
          writeTmp(`r${n}.pem`, cert.caPem),
          "-untrusted",
          writeTmp(`c${n}.pem`, cert.chainPem),
          writeTmp(`l${n}.pem`, cert.certificatePem),
        ]);
      const own = asServer(`robot-1.devices.${fleet.domain}`);
      assert.equal(own.status, 0, own.stdout + own.stderr);
      const other = asServer(`pki.${fleet.domain}`);
      assert.notEqual(other.status, 0);
      assert.match(other.stdout + other.stderr, /hostname mismatch/);
    });
  }

  it("a leaf from a local CA verifies through that CA", async () => {
    const { fleet } = p256Fleet;
    const cert = await issueDeviceCertificate(fleet, {
      deviceId: "robot-1",
      actor: "test",
      csr: readFileSync(csrPath),
      caId: "local-line-1",
    });
    const v = await opensslVerify(fleet, "local-line-1", cert.certificatePem);
    assert.ok(v.ok, v.out);
    const wrong = await opensslVerify(fleet, "devices", cert.certificatePem);
    assert.ok(!wrong.ok, "not through the devices CA");
  });
});

describe("name constraints are enforced by openssl", () => {
  it("control: hand-built leaves inside the fleet domain verify", async () => {
    const { fleet } = p256Fleet;
    for (const uri of ["spiffe://fleet.example/device/x", "spiffe://site-a.fleet.example/device/x"]) {
      const v = await opensslVerify(fleet, "devices", await handBuiltLeaf(fleet, "devices", "x", [{ uri }]));
      assert.ok(v.ok, `${uri}: ${v.out}`);
    }
  });

  const outside: Array<[string, GeneralName[]]> = [
    ["URI spiffe://evil.example/device/x", [{ uri: "spiffe://evil.example/device/x" }]],
    ["URI spiffe://fleet.example.evil.com/device/x", [{ uri: "spiffe://fleet.example.evil.com/device/x" }]],
    ["URI spiffe://notfleet.example/device/x", [{ uri: "spiffe://notfleet.example/device/x" }]],
    ["DNS evil.example", [{ dns: "evil.example" }]],
    ["a good URI plus an evil one", [{ uri: "spiffe://fleet.example/device/x" }, { uri: "spiffe://evil.example/device/x" }]],
  ];
  for (const caId of ["devices", "operators", "local-line-1"]) {
    for (const [label, sans] of outside) {
      it(`${caId}: a leaf for ${label} fails with "permitted subtree violation"`, async () => {
        const { fleet } = p256Fleet;
        const v = await opensslVerify(fleet, caId, await handBuiltLeaf(fleet, caId, "x", sans));
        assert.ok(!v.ok, `must not verify: ${v.out}`);
        assert.match(v.out, /permitted subtree violation/);
      });
    }
  }

  it("the services CA is unconstrained: an outside name verifies there", async () => {
    const { fleet } = p256Fleet;
    const pem = await handBuiltLeaf(fleet, "services", "x", [{ uri: "spiffe://evil.example/device/x" }]);
    const v = await opensslVerify(fleet, "services", pem);
    assert.ok(v.ok, v.out);
  });
});

describe("CA certificate profiles", () => {
  const PERMITTED =
    /X509v3 Name Constraints: critical\n\s+Permitted:\n\s+URI:fleet\.example\n\s+URI:\.fleet\.example\n\s+DNS:fleet\.example\n/;

  function permittedNames(cert: x509.X509Certificate): { critical: boolean; names: string[]; excluded: boolean } | null {
    const ext = cert.getExtension(OID.nameConstraints);
    if (!ext) return null;
    const nc = AsnConvert.parse(ext.value, NameConstraints);
    const names = [...(nc.permittedSubtrees ?? [])].map((s) =>
      s.base.uniformResourceIdentifier !== undefined
        ? `URI:${s.base.uniformResourceIdentifier}`
        : s.base.dNSName !== undefined
          ? `DNS:${s.base.dNSName}`
          : "other",
    );
    return { critical: ext.critical, names, excluded: nc.excludedSubtrees !== undefined };
  }

  for (const caId of ["devices", "operators", "local-line-1"]) {
    it(`${caId}: CA:TRUE pathlen:0, keyCertSign+cRLSign, critical name constraints for fleet.example`, async () => {
      const pem = await caPem(p256Fleet.fleet, caId);
      const text = x509Text(pem);
      assert.match(text, /X509v3 Basic Constraints: critical\n\s+CA:TRUE, pathlen:0\n/);
      assert.match(text, /X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
      assert.match(text, PERMITTED);
      assert.doesNotMatch(text, /Excluded:/);
      assert.match(text, /Issuer: O = Test Robots, CN = Test Robots Root CA\n/);

      const cert = peculiar(pem);
      const bc = cert.getExtension(x509.BasicConstraintsExtension)!;
      assert.equal(bc.critical, true);
      assert.equal(bc.ca, true);
      assert.equal(bc.pathLength, 0);
      const ku = cert.getExtension(x509.KeyUsagesExtension)!;
      assert.equal(ku.critical, true);
      assert.equal(ku.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
      assert.deepEqual(permittedNames(cert), {
        critical: true,
        names: ["URI:fleet.example", "URI:.fleet.example", "DNS:fleet.example"],
        excluded: false,
      });
      const root = peculiar(await caPem(p256Fleet.fleet, "root"));
      assert.ok(await cert.verify({ publicKey: root.publicKey, signatureOnly: true }), "signed by the root");
      assert.equal(
        cert.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId,
        root.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId,
      );
    });
  }

  it("services: CA:TRUE pathlen:0 and no name constraints", async () => {
    const pem = await caPem(p256Fleet.fleet, "services");
    const text = x509Text(pem);
    assert.match(text, /X509v3 Basic Constraints: critical\n\s+CA:TRUE, pathlen:0\n/);
    assert.doesNotMatch(text, /Name Constraints/);
    const cert = peculiar(pem);
    assert.equal(cert.getExtension(x509.BasicConstraintsExtension)!.pathLength, 0);
    assert.equal(permittedNames(cert), null);
  });

  it("root: self-signed, CA:TRUE without pathlen, keyCertSign+cRLSign critical, no name constraints", async () => {
    for (const { fleet } of [p256Fleet, edFleet]) {
      const pem = await caPem(fleet, "root");
      const text = x509Text(pem);
      assert.match(text, /X509v3 Basic Constraints: critical\n\s+CA:TRUE\n/);
      assert.match(text, /X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
      assert.doesNotMatch(text, /Name Constraints|pathlen/);
      const cert = peculiar(pem);
      assert.ok(await cert.isSelfSigned());
      const bc = cert.getExtension(x509.BasicConstraintsExtension)!;
      assert.equal(bc.critical, true);
      assert.equal(bc.ca, true);
      assert.equal(bc.pathLength, undefined);
      const ku = cert.getExtension(x509.KeyUsagesExtension)!;
      assert.equal(ku.critical, true);
      assert.equal(ku.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
      assert.equal(cert.subject, cert.issuer);
      const r = openssl([
        "verify",
        "-x509_strict",
        "-CAfile",
        writeTmp(`root-self-${verifyCounter++}.pem`, pem),
        writeTmp(`root-leaf-${verifyCounter++}.pem`, pem),
      ]);
      assert.equal(r.status, 0, r.stdout + r.stderr);
    }
  });

  it("the ed25519 fleet's constrained CAs carry the same name constraints", async () => {
    for (const caId of ["devices", "operators"]) assert.match(x509Text(await caPem(edFleet.fleet, caId)), PERMITTED);
    assert.doesNotMatch(x509Text(await caPem(edFleet.fleet, "services")), /Name Constraints/);
  });
});

describe("validity", () => {
  it("a device leaf is valid for 30 days by default, backdated one minute", async () => {
    const { fleet } = p256Fleet;
    const t0 = Date.now();
    const cert = await issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr: readFileSync(csrPath) });
    const c = peculiar(cert.der);
    assert.equal(c.notAfter.getTime(), cert.notAfter.getTime());
    assert.equal(c.notBefore.getTime(), cert.notBefore.getTime());
    assert.ok(Math.abs(c.notAfter.getTime() - t0 - 30 * DAY) <= 60_000, `notAfter ${c.notAfter.toISOString()} is not now + 30d`);
    assert.ok(c.notBefore.getTime() <= t0 - 59_000 && c.notBefore.getTime() >= t0 - 62_000, `notBefore ${c.notBefore.toISOString()}`);
    // what the database says matches the certificate
    const row = await sqliteStore(fleet)
      .db.selectFrom("certificates")
      .selectAll()
      .where("serial", "=", cert.serial)
      .executeTakeFirstOrThrow();
    assert.equal(row.not_after, c.notAfter.toISOString());
    assert.equal(row.not_before, c.notBefore.toISOString());
    const text = x509Text(cert.certificatePem);
    const notAfterText = /Not After : (.+ GMT)/.exec(text)![1]!;
    assert.equal(new Date(notAfterText).getTime(), c.notAfter.getTime());
  });

  it("a requested lifetime of 100 years is clamped to the issuer's notAfter (issueDeviceCertificate)", async () => {
    const { fleet } = p256Fleet;
    const caNotAfter = peculiar(await caPem(fleet, "devices")).notAfter;
    const cert = await issueDeviceCertificate(fleet, {
      deviceId: "robot-1",
      actor: "test",
      csr: readFileSync(csrPath),
      lifetimeMs: 100 * YEAR,
    });
    assert.equal(cert.notAfter.getTime(), caNotAfter.getTime());
    assert.equal(peculiar(cert.der).notAfter.getTime(), caNotAfter.getTime());
    const v = await opensslVerify(fleet, "devices", cert.certificatePem);
    assert.ok(v.ok, v.out);
  });

  it("the same clamp applies through issueForKey and for a short-lived local CA", async () => {
    const { fleet } = p256Fleet;
    const key = await keyFromCsr(readFileSync(csrPath));
    const caNotAfter = peculiar(await caPem(fleet, "devices")).notAfter;
    const a = await issueForKey(fleet, { deviceId: "robot-1", actor: "test", lifetimeMs: 100 * YEAR }, key);
    assert.equal(peculiar(a.der).notAfter.getTime(), caNotAfter.getTime());

    await createLocalCa(fleet, { name: "short", validity: "2d", actor: "test" });
    const shortCa = peculiar(await caPem(fleet, "local-short"));
    assert.ok(Math.abs(shortCa.notAfter.getTime() - Date.now() - 2 * DAY) < 120_000);
    const b = await issueForKey(fleet, { deviceId: "robot-1", actor: "test", caId: "local-short" }, key); // default 30d
    assert.equal(peculiar(b.der).notAfter.getTime(), shortCa.notAfter.getTime());
    const v = await opensslVerify(fleet, "local-short", b.certificatePem);
    assert.ok(v.ok, v.out);
  });

  it("an intermediate never outlives the root either", async () => {
    const { fleet } = p256Fleet;
    await createLocalCa(fleet, { name: "forever", validity: "100y", actor: "test" });
    const rootNotAfter = peculiar(await caPem(fleet, "root")).notAfter;
    assert.equal(peculiar(await caPem(fleet, "local-forever")).notAfter.getTime(), rootNotAfter.getTime());
  });

  it("issuance after the issuing CA has expired never produces an inverted validity", async () => {
    const { fleet } = p256Fleet;
    const caNotAfter = peculiar(await caPem(fleet, "devices")).notAfter;
    const now = new Date(caNotAfter.getTime() + DAY);
    let cert;
    try {
      cert = await issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr: readFileSync(csrPath), now });
    } catch {
      return; // refusing is a correct outcome
    }
    const c = peculiar(cert.der);
    assert.ok(
      c.notBefore.getTime() <= c.notAfter.getTime(),
      `issued a certificate valid from ${c.notBefore.toISOString()} to ${c.notAfter.toISOString()} ` +
        `(issuer expired ${caNotAfter.toISOString()})`,
    );
  });
});

describe("serial numbers", () => {
  it("randomSerial: 17 octets, 0x01 first, 128 random bits", () => {
    const seen = new Set<string>();
    const ones = new Array(16 * 8).fill(0);
    for (let i = 0; i < 2000; i++) {
      const s = randomSerial();
      assert.equal(s.length, 17);
      assert.equal(s[0], 0x01);
      seen.add(s.toString("hex"));
      for (let b = 0; b < 128; b++) ones[b] += (s[1 + (b >> 3)]! >> (7 - (b & 7))) & 1;
    }
    assert.equal(seen.size, 2000);
    // every one of the 128 bits varies (each is set in roughly half the samples)
    for (let b = 0; b < 128; b++) assert.ok(ones[b] > 800 && ones[b] < 1200, `bit ${b} set ${ones[b]} / 2000 times`);
  });

  it("issued certificates carry positive, 17-octet, unique serials", async () => {
    const { fleet } = p256Fleet;
    const template = await fleet.leafTemplate("devices", "device");
    const spki = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey.export({ type: "spki", format: "der" });
    const serials = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const issued = template.issue("robot-1", [{ uri: "spiffe://fleet.example/device/robot-1" }], {
        spki,
        subjectPublicKey: subjectPublicKeyOf(spki),
        now: new Date(),
        lifetimeMs: DAY,
      });
      // the serial INTEGER as written: TBSCertificate's second field
      const tbs = children(readRoot(issued.der))[0]!;
      const serialEl = children(tbs)[1]!;
      assert.equal(serialEl.tag, 0x02);
      const bytes = content(serialEl);
      assert.equal(bytes.length, 17);
      assert.equal(bytes[0], 0x01, "positive, no sign octet needed");
      assert.equal(bytes.toString("hex"), issued.serialHex);
      assert.equal(parseCertificate(issued.der).serialHex, issued.serialHex);
      serials.add(issued.serialHex);
    }
    assert.equal(serials.size, 1000);
    // independent readers agree
    const one = await issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr: readFileSync(csrPath) });
    assert.equal(peculiar(one.der).serialNumber.toLowerCase(), one.serial);
    assert.equal(new NodeX509(one.der).serialNumber.toLowerCase(), one.serial);
    const r = openssl(["x509", "-noout", "-serial"], one.certificatePem);
    assert.equal(r.stdout.trim(), `serial=${one.serial.toUpperCase()}`);
    assert.match(x509Text(one.certificatePem), /Serial Number:\n\s+01(:[0-9a-f]{2}){16}\n/);
  });

  it("serials are unique across the whole fleet database", async () => {
    const rows = await sqliteStore(p256Fleet.fleet).db.selectFrom("certificates").select("serial").execute();
    assert.ok(rows.length >= 10);
    assert.equal(new Set(rows.map((r) => r.serial)).size, rows.length);
    for (const r of rows) assert.match(r.serial, /^01[0-9a-f]{32}$/);
  });
});

describe("device leaf contents", () => {
  it("UTCTime before 2050 in both validity fields", async () => {
    const { fleet } = p256Fleet;
    const cert = await issueDeviceCertificate(fleet, { deviceId: "robot-1", actor: "test", csr: readFileSync(csrPath) });
    const tbs = children(readRoot(cert.der))[0]!;
    const validity = children(children(tbs)[4]!);
    assert.deepEqual(
      validity.map((e) => e.tag),
      [0x17, 0x17],
    );
    assert.equal(new Date(new NodeX509(cert.der).validTo).getTime(), cert.notAfter.getTime());
    assert.equal(new Date(new NodeX509(cert.der).validFrom).getTime(), cert.notBefore.getTime());
  });
});
