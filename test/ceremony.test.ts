// The offline root ceremony end to end through the CLI:
//   ca root init (offline) -> init --root-cert (online) -> ca root sign (offline) -> ca intermediate import (online)
// and what must be refused on the way: a foreign root, a request for another domain, a tampered CSR.
import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cli, cliAsync, openssl, opensslCsr, tempDir, writeTemp, type RunResult, assertOk, assertOneLineError } from "./helpers.js";

const P1 = "offline-root-passphrase";
const P2 = "online-fleet-passphrase";

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

function spki(key: KeyObject): Buffer {
  return key.export({ type: "spki", format: "der" });
}

/** Tries the passphrases (and none) on a private key file; the key, or undefined if none opens it. */
function openKey(file: string, passphrases: string[]): { key: KeyObject; passphrase: string | null } | undefined {
  const pem = readFileSync(file, "utf8");
  for (const passphrase of passphrases) {
    try {
      return { key: createPrivateKey({ key: pem, format: "pem", passphrase }), passphrase };
    } catch {
      /* next */
    }
  }
  try {
    return { key: createPrivateKey({ key: pem, format: "pem" }), passphrase: null };
  } catch {
    return undefined;
  }
}

function verify(args: string[]): RunResult {
  return openssl(["verify", "-x509_strict", ...args]);
}

// Two independent suites; side by side they use both cores.
describe("ceremony", { concurrency: true }, () => {
  describe("offline root ceremony", { concurrency: false }, () => {
    const tmp = tempDir();
    const off = join(tmp.path, "offline-root");
    const foreign = join(tmp.path, "foreign-root");
    const fleet = join(tmp.path, "fleet");
    const signed = join(tmp.path, "signed");
    const p1 = writeTemp(tmp.path, "p1.txt", P1 + "\n");
    const p2 = writeTemp(tmp.path, "p2.txt", P2 + "\n");
    let fleetInit: RunResult;
    const requests = () =>
      readdirSync(join(fleet, "ceremony"))
        .filter((f) => f.endsWith(".request.json"))
        .sort();

    before(async () => {
      const [a, b] = await Promise.all([
        cliAsync(["ca", "root", "init", "--dir", off, "--name", "Acme Robots", "--domain", "fleet.example", "--passphrase-file", p1]),
        // Same name and domain, different key: only the signature tells them apart.
        cliAsync(["ca", "root", "init", "--dir", foreign, "--name", "Acme Robots", "--domain", "fleet.example", "--passphrase-file", p1]),
      ]);
      assertOk(a, "ca root init");
      assertOk(b, "ca root init (foreign)");
      fleetInit = cli([
        "init",
        "--dir",
        fleet,
        "--name",
        "Acme Robots",
        "--domain",
        "fleet.example",
        "--root-cert",
        join(off, "cert.pem"),
        "--passphrase-file",
        p2,
      ]);
    });
    after(() => tmp.cleanup());

    it("ca root init keeps the encrypted root key in the offline directory", () => {
      const key = readFileSync(join(off, "key.pem"), "utf8");
      assert.ok(key.startsWith("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
      assert.equal(statSync(join(off, "key.pem")).mode & 0o777, 0o600);
      assert.equal(openssl(["pkey", "-in", join(off, "key.pem"), "-passin", `file:${p1}`, "-noout"]).status, 0);
      const cert = new X509Certificate(readFileSync(join(off, "cert.pem")));
      assert.equal(cert.subject, cert.issuer);
      assert.ok(cert.ca);
      assert.ok(cert.verify(cert.publicKey), "self-signed");
    });

    it("init --root-cert prints the pending requests and leaves the fleet incomplete", () => {
      assertOk(fleetInit, "init --root-cert");
      assert.match(fleetInit.stdout, /offline/i);
      assert.deepEqual(requests(), ["devices.request.json", "operators.request.json", "services.request.json"]);
      for (const r of requests()) assert.ok(fleetInit.stdout.includes(join("ceremony", r)), `stdout names ${r}`);
      assert.equal(existsSync(join(fleet, "server/cert.pem")), false, "no server certificate before the ceremony");
      assert.equal(existsSync(join(fleet, "operators/admin/cert.pem")), false);
      assert.equal(existsSync(join(fleet, "ca/root/key.pem")), false);
      assert.ok(
        readFileSync(join(fleet, "ca/root/cert.pem")).equals(readFileSync(join(off, "cert.pem"))),
        "the root certificate is the offline one",
      );
      for (const id of ["devices", "services", "operators"]) {
        assert.ok(existsSync(join(fleet, "ca", id, "key.pem")), `${id} key generated online`);
        assert.equal(existsSync(join(fleet, "ca", id, "cert.pem")), false, `${id} not signed yet`);
      }
    });

    it("refuses a request whose CSR signature is broken, and a request for another domain, signing nothing", async () => {
      const good = join(fleet, "ceremony/devices.request.json");
      const request = JSON.parse(readFileSync(good, "utf8"));
      // Flip the last byte of the CSR: inside the signature value, so the structure still parses.
      const b64 = (request.csr as string).replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
      const der = Buffer.from(b64, "base64");
      der[der.length - 1]! ^= 0x01;
      const tampered = writeTemp(
        tmp.path,
        "tampered.request.json",
        JSON.stringify({
          ...request,
          csr:
            `-----BEGIN CERTIFICATE REQUEST-----\n` +
            `${der.toString("base64").replace(/(.{64})/g, "$1\n")}\n-----END CERTIFICATE REQUEST-----\n`,
        }),
      );
      const otherDomain = writeTemp(tmp.path, "other-domain.request.json", JSON.stringify({ ...request, domain: "other.example" }));
      const out1 = join(tmp.path, "out-tampered");
      const out2 = join(tmp.path, "out-domain");
      const [t, d] = await Promise.all([
        // The good request comes first: a bad batch must sign nothing at all.
        cliAsync(["ca", "root", "sign", "--dir", off, "--out", out1, good, tampered]),
        cliAsync(["ca", "root", "sign", "--dir", off, "--out", out2, good, otherDomain]),
      ]);
      assertOneLineError(t, /tampered\.request\.json/);
      assert.match(t.stderr, /signature/i);
      const line = assertOneLineError(d, /other-domain\.request\.json/);
      assert.match(line, /other\.example/);
      assert.match(line, /fleet\.example/);
      for (const out of [out1, out2]) assert.ok(!existsSync(out) || readdirSync(out).length === 0, `${out} must stay empty`);
      assert.ok(!existsSync(join(off, "signed")) || readdirSync(join(off, "signed")).length === 0, "nothing recorded as signed offline");
    });

    it("refuses intermediates signed by a different root", () => {
      const foreignOut = join(tmp.path, "foreign-signed");
      assertOk(
        cli(["ca", "root", "sign", "--dir", foreign, "--out", foreignOut, ...requests().map((r) => join(fleet, "ceremony", r))]),
        "foreign sign",
      );
      const r = cli(["ca", "intermediate", "import", "--dir", fleet, join(foreignOut, "devices.pem")]);
      const line = assertOneLineError(r, /devices\.pem/);
      assert.match(line, /root/i);
      // Nothing changed: still waiting for all three.
      assert.equal(requests().length, 3);
      assert.equal(existsSync(join(fleet, "ca/devices/cert.pem")), false);
      assert.equal(existsSync(join(fleet, "server/cert.pem")), false);
    });

    it("malformed ceremony files are refused with a message naming the file", async () => {
      // A PEM block whose content is not a certificate, and a request without its CSR.
      const garbage = writeTemp(tmp.path, "garbage-intermediate.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
      const request = JSON.parse(readFileSync(join(fleet, "ceremony/devices.request.json"), "utf8"));
      delete request.csr;
      const noCsr = writeTemp(tmp.path, "no-csr.request.json", JSON.stringify(request));
      const out = join(tmp.path, "out-no-csr");
      const [imp, sign] = await Promise.all([
        cliAsync(["ca", "intermediate", "import", "--dir", fleet, garbage]),
        cliAsync(["ca", "root", "sign", "--dir", off, "--out", out, noCsr]),
      ]);
      const errors: string[] = [];
      const check = (r: RunResult, file: RegExp) => {
        try {
          const line = assertOneLineError(r, file);
          assert.doesNotMatch(line, /--debug/, "an expected input error, not an internal one");
        } catch (e) {
          errors.push((e as Error).message.split("\n").slice(0, 4).join(" "));
        }
      };
      check(imp, /garbage-intermediate\.pem/);
      check(sign, /no-csr\.request\.json/);
      assert.equal(requests().length, 3, "nothing imported");
      assert.ok(!existsSync(out) || readdirSync(out).length === 0, "nothing signed");
      assert.deepEqual(errors, []);
    });

    it("sign + import completes the fleet", () => {
      const s = cli(["ca", "root", "sign", "--dir", off, "--out", signed, ...requests().map((r) => join(fleet, "ceremony", r))]);
      assertOk(s, "ca root sign");
      assert.deepEqual(readdirSync(signed).sort(), ["devices.pem", "operators.pem", "services.pem"]);
      const imp = cli(["ca", "intermediate", "import", "--dir", fleet, ...readdirSync(signed).map((f) => join(signed, f))]);
      assertOk(imp, "ca intermediate import");
      assert.match(imp.stdout, /ready/);
      assert.deepEqual(requests(), [], "requests are consumed");
      for (const f of ["server/cert.pem", "server/key.pem", "server/chain.pem", "operators/admin/cert.pem", "operators/admin/key.pem"])
        assert.ok(existsSync(join(fleet, f)), f);
    });

    it("the chain verifies with openssl against the offline root", () => {
      const root = join(off, "cert.pem");
      for (const id of ["devices", "services", "operators"]) {
        const r = verify(["-CAfile", root, join(fleet, "ca", id, "cert.pem")]);
        assert.equal(r.status, 0, `${id}: ${r.stdout}${r.stderr}`);
        assert.equal(
          readFileSync(join(fleet, "ca", id, "chain.pem"), "utf8"),
          readFileSync(join(fleet, "ca", id, "cert.pem"), "utf8") + readFileSync(root, "utf8"),
        );
      }
      const server = verify([
        "-purpose",
        "sslserver",
        "-CAfile",
        root,
        "-untrusted",
        join(fleet, "ca/services/cert.pem"),
        join(fleet, "server/cert.pem"),
      ]);
      assert.equal(server.status, 0, server.stdout + server.stderr);
      const admin = verify([
        "-purpose",
        "sslclient",
        "-CAfile",
        root,
        "-untrusted",
        join(fleet, "ca/operators/cert.pem"),
        join(fleet, "operators/admin/cert.pem"),
      ]);
      assert.equal(admin.status, 0, admin.stdout + admin.stderr);
      // And not against the foreign root with the same name.
      const wrong = verify(["-CAfile", join(foreign, "cert.pem"), join(fleet, "ca/devices/cert.pem")]);
      assert.notEqual(wrong.status, 0);
    });

    it("ca list shows the root key as offline", async () => {
      const table = await cliAsync(["ca", "list", "--dir", fleet]);
      assertOk(table, "ca list");
      const rootLine = table.stdout.split("\n").find((l) => l.startsWith("root "));
      assert.ok(rootLine, table.stdout);
      assert.match(rootLine, /\(offline\)/);
      for (const id of ["devices", "services", "operators"]) {
        const line = table.stdout.split("\n").find((l) => l.startsWith(`${id} `));
        assert.ok(line, `${id} row`);
        assert.doesNotMatch(line, /offline/, `${id} key is online`);
      }
    });

    it("a device can be added and a CSR issued by hand; openssl verifies the certificate", () => {
      assertOk(cli(["device", "add", "robot-0001", "--dir", fleet]), "device add");
      const { csr } = opensslCsr(tmp.path, "robot-0001");
      const certFile = join(tmp.path, "robot-0001.crt");
      assertOk(cli(["device", "issue", "robot-0001", "--dir", fleet, "--csr", csr, "--out", certFile]), "device issue");
      const r = verify([
        "-purpose",
        "sslclient",
        "-CAfile",
        join(off, "cert.pem"),
        "-untrusted",
        join(fleet, "ca/devices/chain.pem"),
        certFile,
      ]);
      assert.equal(r.status, 0, r.stdout + r.stderr);
      const cert = new X509Certificate(readFileSync(certFile));
      assert.equal(cert.subject, "CN=robot-0001");
      assert.match(cert.subjectAltName ?? "", /URI:spiffe:\/\/fleet\.example\/device\/robot-0001/);
    });

    it("create-local with the offline root writes a request; after sign + import it is an active local CA", async () => {
      const create = cli(["ca", "create-local", "--dir", fleet, "--name", "line1"]);
      assertOk(create, "ca create-local");
      assert.match(create.stdout, /ca root sign/);
      assert.deepEqual(requests(), ["local-line1.request.json"]);
      assert.equal(existsSync(join(fleet, "ca/local-line1/cert.pem")), false);

      const out = join(tmp.path, "signed-local");
      assertOk(cli(["ca", "root", "sign", "--dir", off, "--out", out, join(fleet, "ceremony/local-line1.request.json")]), "sign local");
      assertOk(cli(["ca", "intermediate", "import", "--dir", fleet, join(out, "local-line1.pem")]), "import local");
      assert.deepEqual(requests(), []);

      const bundles = join(tmp.path, "line1-bundles");
      const [list, batch] = await Promise.all([
        cliAsync(["ca", "list", "--dir", fleet, "--json"]),
        cliAsync(["ca", "issue-batch", "--dir", fleet, "--local", "line1", "--ids", "line1-01..line1-02", "--out", bundles]),
      ]);
      assertOk(list, "ca list");
      const cas = JSON.parse(list.stdout) as { id: string; role: string; status: string; keyOnline: boolean }[];
      assert.deepEqual(
        cas.map((c) => [c.id, c.keyOnline, c.status]),
        [
          ["root", false, "active"],
          ["devices", true, "active"],
          ["services", true, "active"],
          ["operators", true, "active"],
          ["local-line1", true, "active"],
        ],
      );
      const local = cas.find((c) => c.id === "local-line1");
      assert.ok(local, "local-line1 listed");
      assert.equal(local.role, "local");
      assert.equal(local.status, "active");
      assert.equal(local.keyOnline, true);
      const localCert = join(fleet, "ca/local-line1/cert.pem");
      const v = verify(["-CAfile", join(off, "cert.pem"), localCert]);
      assert.equal(v.status, 0, v.stdout + v.stderr);
      // It issues: a factory bundle verifies up to the offline root.
      assertOk(batch, "issue-batch from local-line1");
      const b = verify([
        "-purpose",
        "sslclient",
        "-CAfile",
        join(off, "cert.pem"),
        "-untrusted",
        join(bundles, "line1-01/chain.pem"),
        join(bundles, "line1-01/cert.pem"),
        join(bundles, "line1-02/cert.pem"),
      ]);
      assert.equal(b.status, 0, b.stdout + b.stderr);
    });

    it("revoke-local with the offline root: a CRL request, signed offline, imported; openssl then rejects the line's bundles", async () => {
      const bundles = join(tmp.path, "line1-bundles");
      const revoke = await cliAsync(["ca", "revoke-local", "line1", "--dir", fleet]);
      assertOk(revoke, "ca revoke-local");
      assert.match(revoke.stderr, /root key is offline.*ca root sign-crl/);
      const request = join(fleet, "ceremony", "root-crl.request.json");
      const body = JSON.parse(readFileSync(request, "utf8")) as { entries: { reason: string }[] };
      assert.deepEqual(
        body.entries.map((e) => e.reason),
        ["cACompromise"],
      );

      const out = join(tmp.path, "signed-crl");
      const sign = await cliAsync(["ca", "root", "sign-crl", "--dir", off, "--out", out, request]);
      assertOk(sign, "ca root sign-crl");
      // Another root cannot feed us a CRL, and an import is refused a second time (number not newer).
      const foreignOut = join(tmp.path, "foreign-crl");
      assertOk(await cliAsync(["ca", "root", "sign-crl", "--dir", foreign, "--out", foreignOut, request]), "foreign sign-crl");
      assertOneLineError(
        await cliAsync(["crl", "import", "--dir", fleet, join(foreignOut, "root.crl")]),
        /not a CRL signed by this fleet's root/,
      );
      assertOk(await cliAsync(["crl", "import", "--dir", fleet, join(out, "root.crl")]), "crl import");
      assertOneLineError(await cliAsync(["crl", "import", "--dir", fleet, join(out, "root.crl.pem")]), /not newer/);

      const exported = join(tmp.path, "crls");
      assertOk(await cliAsync(["crl", "export", "--dir", fleet, "--out", exported]), "crl export");
      const v = verify([
        "-crl_check_all",
        "-CAfile",
        join(off, "cert.pem"),
        "-untrusted",
        join(bundles, "line1-01/chain.pem"),
        "-CRLfile",
        join(exported, "root.pem"),
        "-CRLfile",
        join(exported, "local-line1.pem"),
        join(bundles, "line1-01/cert.pem"),
      ]);
      assert.notEqual(v.status, 0);
      assert.match(v.stdout + v.stderr, /certificate revoked/);
    });

    it("the fleet directory holds no copy of the root private key", () => {
      const rootPub = new X509Certificate(readFileSync(join(off, "cert.pem"))).publicKey;
      const rootKey = createPrivateKey({ key: readFileSync(join(off, "key.pem"), "utf8"), passphrase: P1 });
      assert.ok(spki(createPublicKey(rootKey)).equals(spki(rootPub)), "sanity: the offline key is the root's");
      const encryptedPem = readFileSync(join(off, "key.pem"));
      const plainDer = rootKey.export({ type: "pkcs8", format: "der" });
      const plainPem = rootKey.export({ type: "pkcs8", format: "pem" }).toString();
      const jwk = rootKey.export({ format: "jwk" });
      const scalar = Buffer.from(jwk.d!, "base64url");
      const needles: [string, Buffer][] = [
        ["encrypted key file", encryptedPem],
        ["PKCS#8 DER", plainDer],
        ["PKCS#8 PEM first line", Buffer.from(plainPem.split("\n")[1]!)],
        ["private scalar", scalar],
        ["private scalar (hex)", Buffer.from(scalar.toString("hex"))],
        ["private scalar (base64url)", Buffer.from(jwk.d!)],
      ];

      assert.equal(existsSync(join(fleet, "ca/root/key.pem")), false);
      const files = walk(fleet);
      assert.ok(
        files.some((f) => f.endsWith("fleetpki.db")),
        "the database is part of the walk",
      );
      for (const f of files) {
        const content = readFileSync(f);
        for (const [what, needle] of needles) assert.ok(!content.includes(needle), `${f} contains the root key (${what})`);
      }
      const keyFiles = files.filter((f) => f.endsWith("key.pem") || /PRIVATE KEY-----/.test(readFileSync(f, "latin1")));
      assert.ok(keyFiles.length >= 6, `found key files: ${keyFiles.join(", ")}`);
      for (const f of keyFiles) {
        const opened = openKey(f, [P2, P1]);
        assert.ok(opened, `${f} does not open with the fleet passphrase`);
        assert.equal(opened.passphrase, P2, `${f} must be encrypted with the fleet passphrase`);
        assert.ok(!spki(createPublicKey(opened.key)).equals(spki(rootPub)), `${f} is the root private key`);
      }
    });

    it("audit verify passes after the whole ceremony", () => {
      const audit = cli(["audit", "verify", "--dir", fleet]);
      assertOk(audit, "audit verify");
      assert.match(audit.stdout, /intact/);
    });
  });

  describe("init --root-cert input checks", { concurrency: false }, () => {
    const tmp = tempDir();
    after(() => tmp.cleanup());

    it("refuses a certificate that is not a self-signed root, leaving nothing behind", async () => {
      const notRoot = writeTemp(tmp.path, "garbage.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
      // A leaf: issuer differs from subject.
      const { key } = opensslCsr(tmp.path, "ca-key");
      const caCert = join(tmp.path, "ca.pem");
      assert.equal(openssl(["req", "-x509", "-key", key, "-subj", "/CN=Some CA", "-days", "1", "-out", caCert]).status, 0);
      const { csr } = opensslCsr(tmp.path, "leaf");
      const leaf = join(tmp.path, "leaf.pem");
      assert.equal(openssl(["x509", "-req", "-in", csr, "-CA", caCert, "-CAkey", key, "-days", "1", "-out", leaf]).status, 0);
      const [a, c] = await Promise.all([
        cliAsync(["init", "--dir", join(tmp.path, "f1"), "--root-cert", leaf]),
        cliAsync(["init", "--dir", join(tmp.path, "f3"), "--root-cert", notRoot]),
      ]);
      assertOneLineError(a, /self-signed/);
      // The message must say which file is wrong (today it is a bare DER parser message).
      assertOneLineError(c, /garbage\.pem/);
      for (const d of ["f1", "f3"]) assert.equal(existsSync(join(tmp.path, d)), false, `${d} must not exist`);
    });
  });
});
