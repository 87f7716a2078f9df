// `ros2 keystore verify`: a keystore laid out by the contract of issue 12, then one fault at a time, each
// reported with its file and a specific message; openssl agrees where it has a say.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID, type KeyObject } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OID } from "../src/der/oids.js";
import { generateKey, privateKeyPem, publicSpki } from "../src/keys/keys.js";
import { NotAKeystore } from "../src/ros2/keystore/errors.js";
import { verifyKeystore, type FleetRos2Trust, type KeystoreProblem } from "../src/ros2/keystore/verify.js";
import { renderPermissions } from "../src/ros2/permissions.js";
import type { Sros2Policy } from "../src/ros2/policy-model.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { buildCertificate, parseCertificate, randomSerial, sha256Fingerprint, type Signer } from "../src/x509/certificate.js";
import { buildCrl, type RevokedEntry } from "../src/x509/crl.js";
import { basicConstraints, keyUsage } from "../src/x509/extensions.js";
import { encodeName } from "../src/x509/name.js";
import { toPem } from "../src/x509/pem.js";
import { signSmime } from "../src/x509/smime.js";
import { cli, openssl, tempDir, tempFleet } from "./helpers.js";
import { FleetServices } from "../src/authority/services.js";
import { fleetRos2Trust } from "../src/ros2/keystore/verify.js";

const NOW = new Date("2026-06-01T12:00:00Z");
const DAY = 86_400_000;
const tmp = tempDir("fleetpki-ros2-verify-");
after(() => tmp.cleanup());

interface Ca {
  der: Buffer;
  signer: Signer;
  key: KeyObject;
}

function makeCa(cn: string, issuer?: Ca): Ca {
  const key = generateKey("p256");
  const signer = { key, scheme: signatureSchemeFor(key) };
  const spki = publicSpki(key);
  const subject = encodeName([{ type: OID.commonName, value: cn }]);
  const der = buildCertificate(
    {
      serial: randomSerial(),
      issuer: issuer ? parseCertificate(issuer.der).subject : subject,
      subject,
      notBefore: new Date(NOW.getTime() - 10 * DAY),
      notAfter: new Date(NOW.getTime() + 3650 * DAY),
      spki,
      extensions: [basicConstraints(true, issuer ? 0 : undefined), keyUsage(["digitalSignature", "keyCertSign", "cRLSign"])],
    },
    issuer?.signer ?? signer,
  );
  return { der, signer, key };
}

/** The same subject and key as `ca`, certified by `issuer`: the fleet's record of a ROS 2 CA, not a DDS trust anchor. */
function twinUnder(ca: Ca, issuer: Ca): Buffer {
  const cert = parseCertificate(ca.der);
  return buildCertificate(
    {
      serial: randomSerial(),
      issuer: parseCertificate(issuer.der).subject,
      subject: cert.subject,
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
      spki: cert.spki,
      extensions: [basicConstraints(true, 0), keyUsage(["digitalSignature", "keyCertSign", "cRLSign"])],
    },
    issuer.signer,
  );
}

function leaf(ca: Ca, cn: string, key: KeyObject, days = 30, notBefore = new Date(NOW.getTime() - DAY)): Buffer {
  return buildCertificate(
    {
      serial: randomSerial(),
      issuer: parseCertificate(ca.der).subject,
      subject: encodeName([{ type: OID.commonName, value: cn }]),
      notBefore,
      notAfter: new Date(notBefore.getTime() + days * DAY),
      spki: publicSpki(key),
      extensions: [basicConstraints(false), keyUsage(["digitalSignature"])],
    },
    ca.signer,
  );
}

function crlOf(ca: Ca, entries: RevokedEntry[] = [], thisUpdate = new Date(NOW.getTime() - DAY), days = 7): string {
  const der = buildCrl(
    { certificate: parseCertificate(ca.der), signer: ca.signer },
    { crlNumber: 1n, thisUpdate, nextUpdate: new Date(thisUpdate.getTime() + days * DAY), entries },
  );
  return toPem("X509 CRL", der);
}

const allowAll = (path: string): Sros2Policy => ({
  enclaves: [
    {
      path,
      profileSets: [[{ ns: "/", node: "default", rules: [{ kind: "topics", publish: "ALLOW", subscribe: "ALLOW", names: ["/*"] }] }]],
    },
  ],
});

/** "YYYY-MM-DDTHH:MM:SS" UTC, as the layout contract states grant validity. */
const grantTime = (d: Date): string => d.toISOString().slice(0, 19);

function permissionsFor(path: string, certDer: Buffer, subjectPath = path): string {
  const cert = parseCertificate(certDer);
  const xml = renderPermissions(allowAll(path), {
    notBefore: grantTime(cert.notBefore),
    notAfter: grantTime(cert.notAfter),
    allowRosDiscoveryTopic: false,
    domainId: 7,
  });
  return subjectPath === path
    ? xml
    : xml.replace(`<subject_name>CN=${path}</subject_name>`, `<subject_name>CN=${subjectPath}</subject_name>`);
}

interface Keystore {
  dir: string;
  root: Ca;
  identity: Ca;
  permissions: Ca;
  enclave: (path: string) => string;
  sign: (content: string | Buffer, by?: Ca) => string;
  certDer: (path: string) => Buffer;
}

const GOVERNANCE =
  '<?xml version="1.0" encoding="UTF-8"?>\n<dds><domain_access_rules><domain_rule><domains><id>7</id></domains></domain_rule>' +
  "</domain_access_rules></dds>\n";

/** A keystore as the layout contract describes it, with the given enclaves. */
function buildKeystore(enclaves: string[] = ["/talker_listener/talker", "/talker_listener/listener"]): Keystore {
  const dir = join(tmp.path, randomUUID());
  const root = makeCa("Test Robots root");
  // Self-signed, as DDS needs its trust anchors (fleetpki also has the root certify the same keys: twinUnder).
  const identity = makeCa("ros2-identity");
  const permissions = makeCa("ros2-permissions");
  const sign = (content: string | Buffer, by = permissions): string =>
    signSmime(Buffer.from(content), by.der, by.signer, { signingTime: NOW });
  const write = (rel: string, content: string | Buffer, mode = 0o644): void => {
    writeFileSync(join(dir, rel), content, { mode });
    chmodSync(join(dir, rel), mode);
  };
  for (const [rel, mode] of [
    ["", 0o755],
    ["public", 0o755],
    ["private", 0o700],
    ["enclaves", 0o755],
  ] as const) {
    mkdirSync(join(dir, rel), { recursive: true });
    chmodSync(join(dir, rel), mode);
  }
  write(
    ".fleetpki-keystore.json",
    JSON.stringify({ version: 1, keystore: randomUUID(), fleet: sha256Fingerprint(root.der), domain_id: 7 }),
  );
  write("public/identity_ca.cert.pem", toPem("CERTIFICATE", identity.der));
  write("public/permissions_ca.cert.pem", toPem("CERTIFICATE", permissions.der));
  const crl = crlOf(identity);
  write("public/identity_ca.crl.pem", crl);
  write("enclaves/governance.xml", GOVERNANCE);
  const governanceP7s = sign(GOVERNANCE);
  write("enclaves/governance.p7s", governanceP7s);
  const enclave = (path: string): string => join("enclaves", ...path.slice(1).split("/"));
  for (const path of enclaves) {
    const rel = enclave(path);
    mkdirSync(join(dir, rel), { recursive: true, mode: 0o755 });
    chmodSync(join(dir, rel), 0o700);
    const key = generateKey("p256");
    const cert = leaf(identity, path, key);
    write(join(rel, "cert.pem"), toPem("CERTIFICATE", cert));
    write(join(rel, "key.pem"), privateKeyPem(key), 0o600);
    write(join(rel, "identity_ca.cert.pem"), toPem("CERTIFICATE", identity.der));
    write(join(rel, "permissions_ca.cert.pem"), toPem("CERTIFICATE", permissions.der));
    write(join(rel, "governance.p7s"), governanceP7s);
    const xml = permissionsFor(path, cert);
    write(join(rel, "permissions.xml"), xml);
    write(join(rel, "permissions.p7s"), sign(xml));
    write(join(rel, "crl.pem"), crl);
  }
  const certDer = (path: string): Buffer =>
    Buffer.from(
      readFileSync(join(dir, enclave(path), "cert.pem"), "utf8")
        .replace(/-----[^-]+-----/g, "")
        .replace(/\s/g, ""),
      "base64",
    );
  return { dir, root, identity, permissions, enclave, sign, certDer };
}

const TALKER = "/talker_listener/talker";
const TALKER_DIR = "enclaves/talker_listener/talker";
const fmt = (problems: KeystoreProblem[]): string[] => problems.map((p) => `${p.path}: ${p.problem}`);
const problemsOf = (k: Keystore, now = NOW, fleet?: FleetRos2Trust): string[] => fmt(verifyKeystore(k.dir, fleet, now).problems);

describe("ros2 keystore verify", () => {
  it("a sound keystore has no problems, and openssl agrees with its signatures and chains", () => {
    const k = buildKeystore();
    const report = verifyKeystore(k.dir, undefined, NOW);
    assert.deepEqual(fmt(report.problems), []);
    assert.deepEqual(report.enclaves, ["/talker_listener/listener", "/talker_listener/talker"]);
    assert.equal(report.domainId, 7);
    const p = (rel: string): string => join(k.dir, rel);
    const smime = openssl(
      ["smime", "-verify", "-CAfile", p("public/permissions_ca.cert.pem")].concat([
        "-in",
        p(`${TALKER_DIR}/permissions.p7s`),
        "-out",
        p("../out.xml"),
      ]),
    );
    assert.equal(smime.status, 0, smime.stderr);
    const chain = openssl(
      ["verify", "-CAfile", p("public/identity_ca.cert.pem"), "-attime", String(NOW.getTime() / 1000)].concat([
        p(`${TALKER_DIR}/cert.pem`),
      ]),
    );
    assert.equal(chain.status, 0, chain.stderr);
  });

  it("loosened modes: key.pem, the enclave directory, private/, a group-writable file", () => {
    const k = buildKeystore();
    chmodSync(join(k.dir, TALKER_DIR, "key.pem"), 0o644);
    chmodSync(join(k.dir, TALKER_DIR), 0o755);
    chmodSync(join(k.dir, "private"), 0o755);
    chmodSync(join(k.dir, TALKER_DIR, "permissions.xml"), 0o664);
    assert.deepEqual(problemsOf(k), [
      "private: mode 0755, expected 0700",
      `${TALKER_DIR}: mode 0755, expected 0700 (an enclave directory holds a private key)`,
      `${TALKER_DIR}/key.pem: mode 0644, expected 0600 (a private key readable by others)`,
      `${TALKER_DIR}/permissions.xml: mode 0664 is group- or world-writable`,
    ]);
  });

  it("missing files, a symbolic link instead of a copy, a key left in private/", () => {
    const k = buildKeystore();
    rmSync(join(k.dir, TALKER_DIR, "permissions.p7s"));
    rmSync(join(k.dir, TALKER_DIR, "crl.pem"));
    rmSync(join(k.dir, TALKER_DIR, "identity_ca.cert.pem"));
    symlinkSync(join(k.dir, "public/identity_ca.cert.pem"), join(k.dir, TALKER_DIR, "identity_ca.cert.pem"));
    writeFileSync(join(k.dir, "private/identity_ca.key.pem"), "x", { mode: 0o600 });
    assert.deepEqual(problemsOf(k), [
      "private: holds identity_ca.key.pem; it stays empty (the CA keys are kept, encrypted, in the fleet directory)",
      `${TALKER_DIR}/identity_ca.cert.pem: is a symbolic link; expected a regular file ` +
        "(copies, not links: tar, rsync and the agent keep them)",
      `${TALKER_DIR}/crl.pem: missing (expected a file)`,
      `${TALKER_DIR}/permissions.p7s: missing (expected a file)`,
    ]);
  });

  it("a foreign certificate (another CA, its own key), with a subject that is not the enclave's", () => {
    const k = buildKeystore();
    const other = makeCa("some other CA");
    const key = generateKey("p256");
    writeFileSync(join(k.dir, TALKER_DIR, "cert.pem"), toPem("CERTIFICATE", leaf(other, "/intruder", key)));
    writeFileSync(join(k.dir, TALKER_DIR, "key.pem"), privateKeyPem(key));
    const problems = problemsOf(k);
    assert.deepEqual(problems.slice(0, 2), [
      `${TALKER_DIR}/cert.pem: subject is "CN=/intruder", expected "CN=${TALKER}" (what permissions.xml names)`,
      `${TALKER_DIR}/cert.pem: issued by another CA (CN=some other CA), not by the keystore's identity CA (foreign certificate)`,
    ]);
    assert.ok(
      problems.includes(
        `${TALKER_DIR}/permissions.xml: grant ${TALKER} has subject_name "CN=${TALKER}", but cert.pem's subject is "CN=/intruder"`,
      ),
    );
  });

  it("expired and not yet valid certificates (injected now); the CRLs are stale then too", () => {
    const k = buildKeystore(["/a"]);
    const later = new Date(NOW.getTime() + 40 * DAY);
    const cert = parseCertificate(k.certDer("/a"));
    const problems = problemsOf(k, later);
    assert.ok(
      problems.includes(`enclaves/a/cert.pem: expired on ${cert.notAfter.toISOString().replace(".000Z", "Z")}`),
      problems.join("\n"),
    );
    assert.ok(problems.some((p) => p.startsWith("public/identity_ca.crl.pem: is stale: its nextUpdate")));
    assert.ok(problems.some((p) => p.startsWith("enclaves/a/crl.pem: is stale: its nextUpdate")));
    const earlier = new Date(NOW.getTime() - 2 * DAY);
    assert.ok(
      problemsOf(k, earlier).includes(`enclaves/a/cert.pem: not yet valid (from ${cert.notBefore.toISOString().replace(".000Z", "Z")})`),
    );
  });

  it("a tampered permissions.xml, and one re-signed by the identity CA", () => {
    const k = buildKeystore(["/a"]);
    const file = join(k.dir, "enclaves/a/permissions.xml");
    writeFileSync(file, readFileSync(file, "utf8").replace("<allow_rule>", "<allow_rule><!-- more -->"));
    assert.deepEqual(problemsOf(k), [
      "enclaves/a/permissions.xml: differs from what permissions.p7s signs (tampered, or re-rendered without re-signing)",
    ]);
    writeFileSync(join(k.dir, "enclaves/a/permissions.p7s"), k.sign(readFileSync(file), k.identity));
    assert.deepEqual(problemsOf(k), [
      "enclaves/a/permissions.p7s: is not signed by the keystore's permissions CA: " +
        "S/MIME: the signer CN=ros2-identity is neither the trusted CA " +
        "CN=ros2-permissions nor issued by it",
    ]);
  });

  it("permissions signed by a certificate the permissions CA issued, not by the CA itself (DDS verifies with NOINTERN)", () => {
    const k = buildKeystore(["/a"]);
    const key = generateKey("p256");
    const signer = { der: leaf(k.permissions, "document signer", key), signer: { key, scheme: signatureSchemeFor(key) }, key };
    const xml = readFileSync(join(k.dir, "enclaves/a/permissions.xml"), "utf8");
    writeFileSync(join(k.dir, "enclaves/a/permissions.p7s"), k.sign(xml, signer));
    const serial = parseCertificate(signer.der).serialHex;
    assert.deepEqual(problemsOf(k), [
      `enclaves/a/permissions.p7s: names its signer CN=document signer (serial ${serial}), not the permissions CA certificate ` +
        "itself: DDS implementations (PKCS7_NOINTERN) will refuse it",
    ]);
  });

  it("a grant whose subject_name is not the certificate's, properly signed", () => {
    const k = buildKeystore(["/a"]);
    const xml = permissionsFor("/a", k.certDer("/a"), "/b");
    writeFileSync(join(k.dir, "enclaves/a/permissions.xml"), xml);
    writeFileSync(join(k.dir, "enclaves/a/permissions.p7s"), k.sign(xml));
    assert.deepEqual(problemsOf(k), ['enclaves/a/permissions.xml: grant /a has subject_name "CN=/b", but cert.pem\'s subject is "CN=/a"']);
  });

  it("governance: tampered governance.xml, a stale copy in an enclave, a signature by another CA", () => {
    const k = buildKeystore(["/a"]);
    writeFileSync(join(k.dir, "enclaves/governance.xml"), GOVERNANCE.replace("<id>7</id>", "<id>7</id><id>8</id>"));
    writeFileSync(join(k.dir, "enclaves/a/governance.p7s"), k.sign(GOVERNANCE));
    assert.deepEqual(problemsOf(k), [
      "enclaves/governance.xml: differs from what governance.p7s signs (tampered, or edited without re-signing)",
      "enclaves/a/governance.p7s: differs from enclaves/governance.p7s (a stale or foreign copy)",
    ]);
    writeFileSync(join(k.dir, "enclaves/governance.p7s"), k.sign(GOVERNANCE, makeCa("stranger")));
    assert.ok(
      problemsOf(k).includes(
        "enclaves/governance.p7s: is not signed by the keystore's permissions CA: " +
          "S/MIME: the signer CN=stranger is neither the trusted CA " +
          "CN=ros2-permissions nor issued by it",
      ),
    );
  });

  it("governance whose domain rules do not cover the keystore's domain id (7)", () => {
    const k = buildKeystore(["/a"]);
    const withDomains = (domains: string) => {
      const xml = GOVERNANCE.replace("<domains><id>7</id></domains>", `<domains>${domains}</domains>`);
      writeFileSync(join(k.dir, "enclaves/governance.xml"), xml);
      const p7s = k.sign(xml);
      writeFileSync(join(k.dir, "enclaves/governance.p7s"), p7s);
      writeFileSync(join(k.dir, "enclaves/a/governance.p7s"), p7s);
      return problemsOf(k);
    };
    const not7 = (covered: string) =>
      `enclaves/governance.xml: its domain rules cover ${covered}, not the keystore's domain 7: DDS refuses every participant`;
    assert.deepEqual(withDomains("<id>8</id>"), [not7("8")]);
    assert.deepEqual(withDomains("<id>0</id><id_range><min>8</min><max>20</max></id_range>"), [not7("0, 8-20")]);
    assert.deepEqual(withDomains("<id_range><min>10</min></id_range>"), [not7("10 and above")]);
    assert.deepEqual(withDomains("<id_range><min>5</min><max>9</max></id_range>"), []);
    assert.deepEqual(withDomains("<id_range><min>0</min></id_range>"), []);
    assert.deepEqual(withDomains("<id>seven</id>"), [
      'enclaves/governance.xml: cannot be read for its domain rules: <id> "seven" is not a domain id',
    ]);
  });

  it("CA copies that differ from public/, and identity and permissions CAs that share a key", () => {
    const k = buildKeystore(["/a"]);
    writeFileSync(join(k.dir, "enclaves/a/identity_ca.cert.pem"), toPem("CERTIFICATE", k.permissions.der));
    assert.deepEqual(problemsOf(k), [
      "enclaves/a/identity_ca.cert.pem: differs from public/identity_ca.cert.pem (a stale or foreign copy)",
    ]);
    // sros2#282: one CA for both roles. A permissions CA certificate over the identity CA's key.
    const shared = buildCertificate(
      {
        serial: randomSerial(),
        issuer: parseCertificate(k.root.der).subject,
        subject: encodeName([{ type: OID.commonName, value: "ros2-permissions" }]),
        notBefore: new Date(NOW.getTime() - DAY),
        notAfter: new Date(NOW.getTime() + DAY),
        spki: publicSpki(k.identity.key),
        extensions: [basicConstraints(true, 0)],
      },
      k.root.signer,
    );
    writeFileSync(join(k.dir, "public/permissions_ca.cert.pem"), toPem("CERTIFICATE", shared));
    assert.ok(
      problemsOf(k).includes(
        "public/permissions_ca.cert.pem: has the same key as the identity CA; identities and permissions must be signed by different CAs",
      ),
    );
  });

  it("crl.pem: not signed by the identity CA, stale, an old copy, and a certificate it lists (revoked; openssl agrees)", () => {
    const k = buildKeystore(["/a", "/b"]);
    writeFileSync(join(k.dir, "enclaves/a/crl.pem"), crlOf(k.permissions));
    const serialHex = parseCertificate(k.certDer("/b")).serialHex;
    const revoked = crlOf(k.identity, [{ serialHex, revokedAt: new Date(NOW.getTime() - 3600_000), reason: "keyCompromise" }], NOW);
    writeFileSync(join(k.dir, "public/identity_ca.crl.pem"), revoked);
    writeFileSync(join(k.dir, "enclaves/b/crl.pem"), revoked);
    assert.deepEqual(problemsOf(k), [
      "enclaves/a/crl.pem: is not signed by the keystore's identity CA (issuer CN=ros2-permissions)",
      `enclaves/b/cert.pem: is revoked (serial ${serialHex}, 2026-06-01T11:00:00Z, keyCompromise; listed in public/identity_ca.crl.pem)`,
    ]);
    const p = (rel: string): string => join(k.dir, rel);
    const r = openssl(
      ["verify", "-crl_check", "-CAfile", p("public/identity_ca.cert.pem"), "-CRLfile", p("enclaves/b/crl.pem")].concat([
        "-attime",
        String(NOW.getTime() / 1000 + 60),
        p("enclaves/b/cert.pem"),
      ]),
    );
    assert.notEqual(r.status, 0);
    assert.match(r.stdout + r.stderr, /certificate revoked/);
    // An enclave still holding the old CRL does not see the revocation.
    writeFileSync(join(k.dir, "enclaves/a/crl.pem"), crlOf(k.identity));
    assert.ok(
      problemsOf(k).includes("enclaves/a/crl.pem: differs from public/identity_ca.crl.pem (a stale copy: revocations may be missing)"),
    );
  });

  it("key.pem that does not match cert.pem, one that is encrypted, one of a type DDS does not take", () => {
    const k = buildKeystore(["/a"]);
    const p384 = generateKey("p384");
    writeFileSync(join(k.dir, "enclaves/a/key.pem"), privateKeyPem(p384));
    writeFileSync(join(k.dir, "enclaves/a/cert.pem"), toPem("CERTIFICATE", leaf(k.identity, "/a", p384)));
    assert.ok(problemsOf(k).includes("enclaves/a/key.pem: is a p384 key; DDS Security (PKI-DH) takes only P-256 or RSA-2048"));
    writeFileSync(join(k.dir, "enclaves/a/key.pem"), privateKeyPem(generateKey("p256")));
    assert.deepEqual(problemsOf(k), ["enclaves/a/key.pem: does not match cert.pem (another key pair)"]);
    writeFileSync(join(k.dir, "enclaves/a/key.pem"), privateKeyPem(generateKey("p256"), "secret"));
    assert.deepEqual(problemsOf(k), [
      "enclaves/a/key.pem: is not an unencrypted PKCS#8 PEM key (rmw implementations load it without a passphrase)",
    ]);
  });

  it("with the fleet: a keystore of another fleet, CAs that are not the fleet's ros2 CAs", () => {
    const k = buildKeystore(["/a"]);
    const otherIdentity = makeCa("ros2-identity");
    const fleet = { rootFingerprint: "ab".repeat(32), identityCaDer: otherIdentity.der, permissionsCaDer: k.permissions.der };
    const fp = sha256Fingerprint(k.identity.der).slice(0, 16);
    assert.deepEqual(problemsOf(k, NOW, fleet), [
      `.fleetpki-keystore.json: belongs to another fleet (root ${sha256Fingerprint(k.root.der).slice(0, 16)}..., ` +
        "this fleet's is abababababababab...)",
      `public/identity_ca.cert.pem: is not this fleet's ros2-identity CA (fingerprint ${fp}...)`,
    ]);
    assert.deepEqual(
      problemsOf(k, NOW, {
        rootFingerprint: sha256Fingerprint(k.root.der),
        identityCaDer: k.identity.der,
        permissionsCaDer: k.permissions.der,
      }),
      [],
    );
  });

  it("CA files that are not self-signed trust anchors (the root-signed intermediates): DDS would refuse them", () => {
    const k = buildKeystore(["/a"]);
    // The same subject and key under the root: every signature still verifies, only the anchor is wrong.
    const identity = toPem("CERTIFICATE", twinUnder(k.identity, k.root));
    const permissions = toPem("CERTIFICATE", twinUnder(k.permissions, k.root));
    for (const dir of ["public", "enclaves/a"]) {
      writeFileSync(join(k.dir, dir, "identity_ca.cert.pem"), identity);
      writeFileSync(join(k.dir, dir, "permissions_ca.cert.pem"), permissions);
    }
    const why = "is not a self-signed trust anchor: DDS implementations will refuse it";
    // The documents name the self-signed certificate as signer: with this CA file, DDS finds no signer either.
    const signer = `names its signer CN=ros2-permissions (serial ${parseCertificate(k.permissions.der).serialHex}), not the permissions CA`;
    assert.deepEqual(problemsOf(k), [
      `public/identity_ca.cert.pem: ${why} (issuer CN=Test Robots root, subject CN=ros2-identity)`,
      `public/permissions_ca.cert.pem: ${why} (issuer CN=Test Robots root, subject CN=ros2-permissions)`,
      `enclaves/governance.p7s: ${signer} certificate itself: DDS implementations (PKCS7_NOINTERN) will refuse it`,
      `enclaves/a/permissions.p7s: ${signer} certificate itself: DDS implementations (PKCS7_NOINTERN) will refuse it`,
    ]);
    // openssl agrees: without -partial_chain, the intermediate alone is no trust anchor.
    const v = openssl(
      ["verify", "-attime", String(NOW.getTime() / 1000), "-CAfile", join(k.dir, "public/identity_ca.cert.pem")].concat([
        join(k.dir, "enclaves/a/cert.pem"),
      ]),
    );
    assert.notEqual(v.status, 0);
    // Self-issued but signed by another key is no anchor either.
    const forged = buildCertificate(
      {
        serial: randomSerial(),
        issuer: parseCertificate(k.identity.der).subject,
        subject: parseCertificate(k.identity.der).subject,
        notBefore: new Date(NOW.getTime() - DAY),
        notAfter: new Date(NOW.getTime() + DAY),
        spki: publicSpki(k.identity.key),
        extensions: [basicConstraints(true)],
      },
      k.root.signer,
    );
    writeFileSync(join(k.dir, "public/identity_ca.cert.pem"), toPem("CERTIFICATE", forged));
    assert.ok(problemsOf(k).includes(`public/identity_ca.cert.pem: ${why} (issuer CN=ros2-identity, subject CN=ros2-identity)`));
  });

  it("grant validity: up to 14 h before and after the certificate (Fast DDS reads local time), no wider", () => {
    const k = buildKeystore(["/a"]);
    const cert = parseCertificate(k.certDer("/a"));
    const write = (notBefore: Date, notAfter: Date) => {
      const xml = renderPermissions(allowAll("/a"), {
        notBefore: grantTime(notBefore),
        notAfter: grantTime(notAfter),
        allowRosDiscoveryTopic: false,
        domainId: 7,
      });
      writeFileSync(join(k.dir, "enclaves/a/permissions.xml"), xml);
      writeFileSync(join(k.dir, "enclaves/a/permissions.p7s"), k.sign(xml));
      return problemsOf(k);
    };
    const H = 3600_000;
    const [nb, na] = [cert.notBefore.getTime(), cert.notAfter.getTime()];
    assert.deepEqual(write(new Date(nb - 14 * H), new Date(na + 14 * H)), []);
    assert.deepEqual(write(new Date(nb + H), new Date(na - H)), []);
    const window =
      `not within the certificate's ${grantTime(cert.notBefore)} to ${grantTime(cert.notAfter)} ` +
      "widened by up to 14 h for local time zones";
    assert.deepEqual(write(new Date(nb - 14 * H - 1000), cert.notAfter), [
      `enclaves/a/permissions.xml: grant /a is valid ${grantTime(new Date(nb - 14 * H - 1000))} to ${grantTime(cert.notAfter)}, ${window}`,
    ]);
    const late = new Date(na + 14 * H + 1000);
    assert.deepEqual(write(cert.notBefore, late), [
      `enclaves/a/permissions.xml: grant /a is valid ${grantTime(cert.notBefore)} to ${grantTime(late)}, ${window}`,
    ]);
  });

  it("a directory that is not a keystore: NotAKeystore", () => {
    const dir = join(tmp.path, "plain");
    mkdirSync(dir);
    assert.throws(
      () => verifyKeystore(dir, undefined, NOW),
      (e: unknown) => e instanceof NotAKeystore && /\.fleetpki-keystore\.json is missing/.test(e.message),
    );
    writeFileSync(join(dir, ".fleetpki-keystore.json"), "{not json");
    assert.throws(
      () => verifyKeystore(dir, undefined, NOW),
      (e: unknown) => e instanceof NotAKeystore && /is not JSON/.test(e.message),
    );
    assert.throws(
      () => verifyKeystore(join(tmp.path, "nowhere"), undefined, NOW),
      (e: unknown) => e instanceof NotAKeystore && /no such directory/.test(e.message),
    );
  });
});

describe("fleetpki ros2 keystore verify (a keystore made by `ros2 keystore init` and `ros2 enclave create`)", () => {
  it("exit 0 when sound, 1 with each problem on its own line, 2 for a directory that is not a keystore", async () => {
    const { dir: fleetDir, close } = await tempFleet();
    try {
      const ks = join(tmp.path, "cli-keystore");
      const run = (args: string[]) => cli(["ros2", ...args, "--dir", fleetDir]);
      assert.equal(run(["keystore", "init", ks, "--domain-id", "7"]).status, 0);
      for (const path of ["/talker_listener/talker", "/talker_listener/listener"])
        assert.equal(run(["enclave", "create", ks, path, "--allow-all"]).status, 0);

      const sound = run(["keystore", "verify", ks]);
      assert.equal(sound.status, 0, sound.stdout + sound.stderr);
      assert.equal(sound.stdout, `keystore ${ks} is sound (2 enclaves, CAs checked against the fleet)\n`);
      const alone = cli(["ros2", "keystore", "verify", ks]);
      assert.equal(alone.status, 0, alone.stdout + alone.stderr);

      chmodSync(join(ks, TALKER_DIR, "key.pem"), 0o640);
      const xml = join(ks, "enclaves/talker_listener/listener/permissions.xml");
      writeFileSync(xml, readFileSync(xml, "utf8").replace("<default>DENY</default>", "<default>ALLOW</default>"));
      const bad = run(["keystore", "verify", ks]);
      assert.equal(bad.status, 1);
      assert.equal(
        bad.stdout,
        "enclaves/talker_listener/listener/permissions.xml: differs from what permissions.p7s signs " +
          "(tampered, or re-rendered without re-signing)\n" +
          `${TALKER_DIR}/key.pem: mode 0640, expected 0600 (a private key readable by others)\n`,
      );
      assert.equal(bad.stderr, `fleetpki: keystore ${ks}: 2 problem(s) in 2 enclaves\n`);

      // The fleet's own clock decides expiry: the domain function with a later now, on the same real keystore.
      const fleet = await FleetServices.open(fleetDir);
      try {
        const trust = await fleetRos2Trust(fleet);
        const later = new Date(Date.now() + 400 * DAY);
        const problems = fmt(verifyKeystore(ks, trust, later).problems);
        assert.ok(
          problems.some((p) => /^enclaves\/talker_listener\/listener\/cert\.pem: expired on /.test(p)),
          problems.join("\n"),
        );
        // Another fleet's view of this keystore: foreign.
        const other = { ...trust, rootFingerprint: "00".repeat(32) };
        assert.ok(fmt(verifyKeystore(ks, other, new Date()).problems)[0]!.startsWith(".fleetpki-keystore.json: belongs to another fleet"));
      } finally {
        await fleet.close();
      }

      // An enclave revoked with `ros2 enclave revoke`: its certificate is listed in every crl.pem.
      assert.equal(run(["enclave", "revoke", ks, "/talker_listener/talker"]).status, 0);
      const revoked = run(["keystore", "verify", ks]);
      assert.equal(revoked.status, 1);
      assert.match(
        revoked.stdout,
        new RegExp(
          `^${TALKER_DIR}/cert\\.pem: is revoked \\(serial [0-9a-f]+, [0-9T:-]+Z(, [A-Za-z]+)?; ` +
            "listed in public/identity_ca\\.crl\\.pem\\)$",
          "m",
        ),
      );

      const notKeystore = cli(["ros2", "keystore", "verify", fleetDir]);
      assert.equal(notKeystore.status, 2);
      assert.equal(notKeystore.stderr, `fleetpki: ${fleetDir} is not a fleetpki keystore: .fleetpki-keystore.json is missing\n`);
    } finally {
      await close();
    }
  });
});
