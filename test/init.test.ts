// `fleetpki init` through the real CLI: layout, file modes, encrypted keys, refusal to overwrite,
// no partial state on bad input, key types, server names, the configuration file and `ca list`.
import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey, createPublicKey } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { hostname, networkInterfaces, type NetworkInterfaceInfo } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { ConfigError, defaultConfig, parseConfig, parseConfigWithNotes, renderConfig } from "../src/config/config.js";
import { InvalidArgument } from "../src/authority/errors.js";
import { defaultServerNames, initFleet } from "../src/authority/ca/init.js";
import { cli, cliAsync, openssl, tempDir, writeTemp, type RunResult } from "./helpers.js";

const PASSPHRASE = "correct horse battery staple";

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

function octal(n: number): string {
  return "0" + n.toString(8);
}

/** Non-zero exit and exactly one clean line on stderr: "fleetpki: ...", no stack trace. */
function assertOneLineError(r: RunResult, pattern?: RegExp): string {
  assert.notEqual(r.status, 0, `expected a non-zero exit; stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `expected exactly one line on stderr, got:\n${r.stderr}`);
  const line = lines[0]!;
  assert.match(line, /^fleetpki: \S/, `stderr should start with "fleetpki:": ${line}`);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  if (pattern) assert.match(line, pattern);
  return line;
}

/** openssl's "sha256 Fingerprint=AB:CD:..." as lower-case hex without colons. */
function opensslFingerprint(certFile: string): string {
  const r = openssl(["x509", "-noout", "-fingerprint", "-sha256", "-in", certFile]);
  assert.equal(r.status, 0, r.stderr);
  const value = r.stdout.trim().split("=")[1];
  assert.ok(value, `unexpected openssl output: ${r.stdout}`);
  return value.replace(/:/g, "").toLowerCase();
}

function spkiOf(key: { export: (o: { type: "spki"; format: "der" }) => Buffer }): Buffer {
  return key.export({ type: "spki", format: "der" });
}

/** This machine's addresses robots could use: not loopback, not link-local. */
function ownAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((i) => i && !i.internal && !/^fe80:/i.test(i.address) && !i.address.startsWith("169.254."))
    .map((i) => i!.address);
}

const KEY_DIRS = ["ca/root", "ca/devices", "ca/services", "ca/operators", "server", "operators/admin"];

// The suites are independent (own temp dirs); running them side by side halves the wall time.
describe("init", { concurrency: true }, () => {
  describe("fleetpki init (passphrase file)", { concurrency: false }, () => {
    const tmp = tempDir();
    const dir = join(tmp.path, "fleet");
    const passFile = writeTemp(tmp.path, "passphrase.txt", PASSPHRASE + "\n");
    let initResult: RunResult;

    before(() => {
      initResult = cli(["init", "--dir", dir, "--name", "Acme Robots", "--domain", "fleet.example", "--passphrase-file", passFile]);
    });
    after(() => tmp.cleanup());

    it("exits 0 and reports the root fingerprint, without a development-setup warning", () => {
      assert.equal(initResult.status, 0, initResult.stderr);
      const fp = opensslFingerprint(join(dir, "ca/root/cert.pem"));
      assert.ok(initResult.stdout.includes(`sha256:${fp}`), `stdout should name the root fingerprint ${fp}:\n${initResult.stdout}`);
      assert.doesNotMatch(initResult.stdout, /DEVELOPMENT/i);
      assert.equal(existsSync(join(dir, "secrets")), false, "no generated passphrase when --passphrase-file is given");
    });

    it("creates the CA hierarchy, server and admin files, config and database", () => {
      for (const id of ["root", "devices", "services", "operators"]) {
        assert.ok(existsSync(join(dir, "ca", id, "cert.pem")), `ca/${id}/cert.pem`);
        assert.ok(existsSync(join(dir, "ca", id, "key.pem")), `ca/${id}/key.pem`);
      }
      for (const id of ["devices", "services", "operators"]) {
        const chain = readFileSync(join(dir, "ca", id, "chain.pem"), "utf8");
        const cert = readFileSync(join(dir, "ca", id, "cert.pem"), "utf8");
        const root = readFileSync(join(dir, "ca/root/cert.pem"), "utf8");
        assert.equal(chain, cert + root, `ca/${id}/chain.pem is the CA certificate followed by the root`);
      }
      for (const leaf of ["server", "operators/admin"])
        for (const f of ["cert.pem", "key.pem", "chain.pem"]) assert.ok(existsSync(join(dir, leaf, f)), `${leaf}/${f}`);
      assert.ok(existsSync(join(dir, "fleetpki.yaml")));
      assert.ok(existsSync(join(dir, "fleetpki.db")));
    });

    it("the server certificate names this host and its addresses; every certificate's CRL/OCSP URLs are on this host", () => {
      const host = hostname().toLowerCase();
      const server = new X509Certificate(readFileSync(join(dir, "server/cert.pem")));
      const sans = (server.subjectAltName ?? "").split(", ");
      assert.ok(sans.includes(`DNS:${host}`), `DNS:${host} in ${server.subjectAltName}`);
      for (const a of ownAddresses().filter((x) => !x.includes(":")))
        assert.ok(sans.includes(`IP Address:${a}`), `${a} in ${server.subjectAltName}`);
      const verify = openssl([
        "verify",
        "-CAfile",
        join(dir, "ca/root/cert.pem"),
        "-untrusted",
        join(dir, "server/chain.pem"),
        "-verify_hostname",
        host,
        join(dir, "server/cert.pem"),
      ]);
      assert.equal(verify.status, 0, verify.stdout + verify.stderr);
      // The intermediates made by init too: their URLs can never change afterwards.
      for (const [file, ca] of [
        ["ca/devices/cert.pem", "root"],
        ["ca/services/cert.pem", "root"],
        ["server/cert.pem", "services"],
        ["operators/admin/cert.pem", "operators"],
      ] as const) {
        const text = openssl(["x509", "-in", join(dir, file), "-noout", "-ext", "crlDistributionPoints,authorityInfoAccess"]).stdout;
        assert.ok(text.includes(`URI:http://${host}:8080/crl/${ca}.crl`), `${file}:\n${text}`);
        assert.ok(text.includes(`OCSP - URI:http://${host}:8080/ocsp`), `${file}:\n${text}`);
        assert.doesNotMatch(text, /localhost/, file);
      }
      assert.match(initResult.stdout, new RegExp(`CRL and OCSP URLs in certificates: http://${host}:8080/crl/<ca>\\.crl`));
    });

    it("key files are 0600, their directories and the fleet directory 0700, the database 0600", () => {
      assert.equal(octal(mode(dir)), "0700", "fleet dir");
      for (const d of ["ca", "operators", ...KEY_DIRS]) assert.equal(octal(mode(join(dir, d))), "0700", `${d}/`);
      for (const d of KEY_DIRS) assert.equal(octal(mode(join(dir, d, "key.pem"))), "0600", `${d}/key.pem`);
      assert.equal(octal(mode(join(dir, "fleetpki.db"))), "0600", "fleetpki.db");
    });

    it("private keys are encrypted with the passphrase (openssl decrypts only with it)", () => {
      for (const d of ["ca/root", "ca/devices", "server"]) {
        const keyFile = join(dir, d, "key.pem");
        const text = readFileSync(keyFile, "utf8");
        assert.ok(text.startsWith("-----BEGIN ENCRYPTED PRIVATE KEY-----"), `${d}/key.pem header: ${text.split("\n")[0]}`);
        const ok = openssl(["pkey", "-in", keyFile, "-passin", `file:${passFile}`, "-noout"]);
        assert.equal(ok.status, 0, `${d}: openssl with the passphrase: ${ok.stderr}`);
        for (const pass of ["pass:", "pass:wrong-passphrase"]) {
          const bad = openssl(["pkey", "-in", keyFile, "-passin", pass, "-noout"]);
          assert.notEqual(bad.status, 0, `${d}: openssl must not decrypt with ${pass}`);
        }
      }
    });

    it("each key matches its certificate", () => {
      for (const d of KEY_DIRS) {
        const key = createPrivateKey({ key: readFileSync(join(dir, d, "key.pem"), "utf8"), passphrase: PASSPHRASE });
        const cert = new X509Certificate(readFileSync(join(dir, d, "cert.pem")));
        assert.ok(spkiOf(createPublicKey(key)).equals(spkiOf(cert.publicKey)), `${d}: key.pem does not match cert.pem`);
      }
    });

    it("the whole chain verifies with openssl", () => {
      const root = join(dir, "ca/root/cert.pem");
      for (const id of ["devices", "services", "operators"]) {
        const r = openssl(["verify", "-x509_strict", "-CAfile", root, join(dir, "ca", id, "cert.pem")]);
        assert.equal(r.status, 0, `${id}: ${r.stdout}${r.stderr}`);
      }
      const server = openssl([
        "verify",
        "-purpose",
        "sslserver",
        "-CAfile",
        root,
        "-untrusted",
        join(dir, "ca/services/cert.pem"),
        join(dir, "server/cert.pem"),
      ]);
      assert.equal(server.status, 0, server.stdout + server.stderr);
      const admin = openssl([
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        root,
        "-untrusted",
        join(dir, "ca/operators/cert.pem"),
        join(dir, "operators/admin/cert.pem"),
      ]);
      assert.equal(admin.status, 0, admin.stdout + admin.stderr);
      // server/chain.pem is what a TLS server sends: the services CA (and nothing that would not chain).
      const chain = openssl(["verify", "-CAfile", root, "-untrusted", join(dir, "server/chain.pem"), join(dir, "server/cert.pem")]);
      assert.equal(chain.status, 0, chain.stdout + chain.stderr);
    });

    it("fleetpki.yaml holds every section with the defaults", () => {
      const config = parseYaml(readFileSync(join(dir, "fleetpki.yaml"), "utf8"));
      assert.deepEqual(config.fleet, { name: "Acme Robots", domain: "fleet.example" });
      assert.equal(config.keys.type, "p256");
      assert.equal(config.keys.passphrase_file, resolve(passFile));
      assert.deepEqual(config.validity, {
        root: "20y",
        intermediate: "10y",
        local_ca: "5y",
        device: "30d",
        factory: "1y",
        server: "1y",
        operator: "1y",
        service: "90d",
        ros2_enclave: "30d",
      });
      // Only keys something reads: no urls section (server.public_url replaced it).
      assert.equal(config.urls, undefined);
      assert.deepEqual(Object.keys(config.listen).sort(), ["admin", "gateway", "registration", "status"]);
      assert.deepEqual(config.admin, { metrics_allow: ["127.0.0.1/32", "::1/128"], session_lifetime: "12h" });
      // The machine's own names, so robots on the network can reach it (issue 9, section 3).
      const host = hostname().toLowerCase();
      assert.equal(config.server.names[0], host);
      for (const n of ["localhost", "127.0.0.1", "::1", ...ownAddresses()])
        assert.ok(config.server.names.includes(n), `${n} in ${config.server.names}`);
      assert.equal(config.server.public_url, `http://${host}:8080`);
      assert.deepEqual(config.database, { url: "sqlite:fleetpki.db" });
      assert.deepEqual(config.renewal, { after_expiry_grace: "7d" });
      // The enclaves' CRL outlives the enclaves: DDS reads crl.pem only when a node starts.
      assert.equal(config.revocation.crl_validity, "24h");
      assert.equal(config.revocation.ros2_crl_validity, "45d");
    });

    it("refuses to overwrite an existing fleet and leaves it untouched", async () => {
      const files = ["ca/root/cert.pem", "ca/root/key.pem", "server/cert.pem", "fleetpki.yaml", "fleetpki.db"];
      const before = files.map((f) => readFileSync(join(dir, f)));
      const entriesBefore = readdirSync(dir).sort();
      // Once with the same options, once as a development setup (which would write secrets/).
      const [again, dev] = await Promise.all([
        cliAsync(["init", "--dir", dir, "--name", "Other", "--domain", "other.example", "--passphrase-file", passFile]),
        cliAsync(["init", "--dir", dir]),
      ]);
      for (const r of [again, dev]) assertOneLineError(r, /exists/);
      files.forEach((f, i) => assert.ok(readFileSync(join(dir, f)).equals(before[i]!), `${f} changed`));
      assert.deepEqual(readdirSync(dir).sort(), entriesBefore);
    });

    it("ca list --json describes root, devices, services and operators like openssl does", () => {
      const r = cli(["ca", "list", "--dir", dir, "--json"]);
      assert.equal(r.status, 0, r.stderr);
      const cas = JSON.parse(r.stdout) as Record<string, unknown>[];
      assert.deepEqual(
        cas.map((c) => c.id),
        ["root", "devices", "services", "operators"],
      );
      const rootSubject = "O=Acme Robots, CN=Acme Robots Root CA";
      const titles: Record<string, string> = { root: "Root CA", devices: "Devices CA", services: "Services CA", operators: "Operators CA" };
      for (const c of cas) {
        const id = c.id as string;
        const certFile = join(dir, "ca", id, "cert.pem");
        const x = new X509Certificate(readFileSync(certFile));
        assert.equal(c.subject, `O=Acme Robots, CN=Acme Robots ${titles[id]}`, `${id} subject`);
        assert.equal(c.issuer, rootSubject, `${id} issuer`);
        assert.equal(c.fingerprintSha256, opensslFingerprint(certFile), `${id} fingerprint`);
        const serial = openssl(["x509", "-noout", "-serial", "-in", certFile])
          .stdout.trim()
          .replace(/^serial=/, "")
          .toLowerCase();
        assert.equal(c.serial, serial, `${id} serial`);
        assert.equal(new Date(c.notBefore as string).getTime(), new Date(x.validFrom).getTime(), `${id} notBefore`);
        assert.equal(new Date(c.notAfter as string).getTime(), new Date(x.validTo).getTime(), `${id} notAfter`);
        assert.equal(c.keyType, "p256", `${id} keyType`);
        assert.equal(c.status, "active");
        assert.equal(c.keyOnline, true);
      }
      // Intermediates never outlive the root.
      const rootNotAfter = Date.parse(cas[0]!.notAfter as string);
      for (const c of cas.slice(1)) assert.ok(Date.parse(c.notAfter as string) <= rootNotAfter, `${String(c.id)} outlives the root`);
    });

    it("a broken fleetpki.yaml makes commands fail with a one-line message naming the file and field", async () => {
      const original = readFileSync(join(dir, "fleetpki.yaml"), "utf8");
      const invalid = join(tmp.path, "invalid-yaml");
      const forever = join(tmp.path, "forever");
      cpSync(dir, invalid, { recursive: true });
      cpSync(dir, forever, { recursive: true });
      writeFileSync(join(invalid, "fleetpki.yaml"), original + "\nfleet: [unclosed\n  : :\n");
      const edited = original.replace(/^(\s*device:\s*)30d/m, '$1"forever"');
      assert.notEqual(edited, original, "the device validity line was found");
      writeFileSync(join(forever, "fleetpki.yaml"), edited);
      const [a, b] = await Promise.all([cliAsync(["ca", "list", "--dir", invalid]), cliAsync(["ca", "list", "--dir", forever])]);
      assertOneLineError(a, /fleetpki\.yaml/);
      const line = assertOneLineError(b, /fleetpki\.yaml/);
      assert.match(line, /validity\.device/);
      assert.match(line, /forever/);
    });
  });

  describe("fleetpki init without --passphrase-file (development setup)", { concurrency: false }, () => {
    const tmp = tempDir();
    const dir = join(tmp.path, "dev");
    after(() => tmp.cleanup());

    it("generates secrets/passphrase (0600), says so, and the keys decrypt with it", () => {
      const r = cli(["init", "--dir", dir, "--domain", "fleet.example"]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /DEVELOPMENT SETUP/);
      assert.match(r.stdout, /--passphrase-file/);
      const passFile = join(dir, "secrets/passphrase");
      assert.ok(existsSync(passFile));
      assert.equal(octal(mode(passFile)), "0600");
      assert.equal(octal(mode(join(dir, "secrets"))), "0700");
      assert.ok(readFileSync(passFile, "utf8").trim().length >= 16, "a strong generated passphrase");
      for (const d of ["ca/root", "ca/devices", "server"]) {
        const keyFile = join(dir, d, "key.pem");
        assert.ok(readFileSync(keyFile, "utf8").startsWith("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        const ok = openssl(["pkey", "-in", keyFile, "-passin", `file:${passFile}`, "-noout"]);
        assert.equal(ok.status, 0, `${d}: ${ok.stderr}`);
        assert.notEqual(openssl(["pkey", "-in", keyFile, "-passin", "pass:", "-noout"]).status, 0);
      }
      const config = parseYaml(readFileSync(join(dir, "fleetpki.yaml"), "utf8"));
      assert.equal(config.keys.passphrase_file, "secrets/passphrase", "relative to the fleet directory, so the directory can move");
    });
  });

  describe("fleetpki init with bad input leaves no partial state", { concurrency: false }, () => {
    const tmp = tempDir();
    after(() => tmp.cleanup());
    const shortPass = writeTemp(tmp.path, "short.txt", "short\n");
    const goodPass = writeTemp(tmp.path, "good.txt", PASSPHRASE + "\n");

    const cases: { name: string; args: string[]; pattern: RegExp }[] = [
      { name: "domain with spaces", args: ["--domain", "Not A Domain"], pattern: /domain/ },
      { name: "single-label domain", args: ["--domain", "localhost"], pattern: /domain/ },
      { name: "unknown key type", args: ["--key-type", "rsa1024"], pattern: /key-type/ },
      { name: "bad server name", args: ["--server-name", "bad name!"], pattern: /server name/ },
      { name: "missing passphrase file", args: ["--passphrase-file", join(tmp.path, "does-not-exist")], pattern: /passphrase file/ },
      {
        name: "passphrase under 8 characters",
        args: ["--domain", "fleet.example", "--passphrase-file", shortPass],
        pattern: /8 characters/,
      },
      // fleet.example used to be baked silently into the CAs' name constraints, for good.
      { name: "no --domain", args: ["--passphrase-file", goodPass], pattern: /--domain is required/ },
      // The other malformed URLs are refused by the same check (tested below without a process each).
      {
        name: "public URL with credentials",
        args: ["--domain", "fleet.example", "--public-url", "http://user:secret@pki.example:8080"],
        pattern: /--public-url .*credentials/,
      },
    ];

    it("refuses each with one line and creates no directory", async () => {
      // A few at a time: each CLI start is CPU-bound, and the machine is shared.
      const results: RunResult[] = [];
      for (let i = 0; i < cases.length; i += 4)
        results.push(
          ...(await Promise.all(
            cases.slice(i, i + 4).map((c, j) => cliAsync(["init", "--dir", join(tmp.path, `fleet-${i + j}`), ...c.args])),
          )),
        );
      results.forEach((r, i) => {
        const c = cases[i]!;
        assertOneLineError(r, c.pattern);
        assert.equal(existsSync(join(tmp.path, `fleet-${i}`)), false, `${c.name}: the directory must not exist afterwards`);
      });
    });

    it("a directory that existed before keeps exactly its previous content", async () => {
      const empty = join(tmp.path, "pre-empty");
      const withNotes = join(tmp.path, "pre-notes");
      mkdirSync(empty);
      mkdirSync(withNotes);
      writeFileSync(join(withNotes, "NOTES.txt"), "keep me\n");
      // Both failures happen after the directory was taken over (passphrase read, server name check).
      const [a, b] = await Promise.all([
        cliAsync(["init", "--dir", empty, "--domain", "fleet.example", "--passphrase-file", shortPass]),
        cliAsync([
          "init",
          "--dir",
          withNotes,
          "--domain",
          "fleet.example",
          "--passphrase-file",
          goodPass,
          "--server-name",
          "ok.example",
          "--server-name",
          "bad name!",
        ]),
      ]);
      assertOneLineError(a, /8 characters/);
      assertOneLineError(b, /server name/);
      assert.deepEqual(readdirSync(empty), []);
      assert.deepEqual(readdirSync(withNotes), ["NOTES.txt"]);
      assert.equal(readFileSync(join(withNotes, "NOTES.txt"), "utf8"), "keep me\n");
    });
  });

  describe("fleetpki init --key-type and --server-name", { concurrency: false }, () => {
    const tmp = tempDir();
    const passFile = writeTemp(tmp.path, "pass.txt", PASSPHRASE + "\n");
    const results = new Map<string, RunResult>();
    const types = ["p384", "ed25519", "rsa3072"] as const;

    before(async () => {
      const runs = await Promise.all(
        types.map((t) =>
          cliAsync([
            "init",
            "--dir",
            join(tmp.path, t),
            "--key-type",
            t,
            "--domain",
            "fleet.example",
            "--passphrase-file",
            passFile,
            // The names are checked on one of them.
            ...(t === "p384" ? ["--server-name", "pki.fleet.example", "--server-name", "10.0.0.5"] : []),
          ]),
        ),
      );
      types.forEach((t, i) => results.set(t, runs[i]!));
    });
    after(() => tmp.cleanup());

    const expected: Record<string, { type: string; detail?: Record<string, unknown> }> = {
      p384: { type: "ec", detail: { namedCurve: "secp384r1" } },
      ed25519: { type: "ed25519" },
      rsa3072: { type: "rsa", detail: { modulusLength: 3072 } },
    };

    for (const t of types) {
      it(`${t}: a working fleet whose server certificate verifies with openssl`, () => {
        const r = results.get(t)!;
        assert.equal(r.status, 0, r.stderr);
        const dir = join(tmp.path, t);
        const v = openssl([
          "verify",
          "-CAfile",
          join(dir, "ca/root/cert.pem"),
          "-untrusted",
          join(dir, "ca/services/cert.pem"),
          join(dir, "server/cert.pem"),
        ]);
        assert.equal(v.status, 0, v.stdout + v.stderr);
        assert.match(v.stdout, /server\/cert\.pem: OK/);
        for (const f of ["ca/root/cert.pem", "ca/devices/cert.pem", "server/cert.pem", "operators/admin/cert.pem"]) {
          const pub = new X509Certificate(readFileSync(join(dir, f))).publicKey;
          assert.equal(pub.asymmetricKeyType, expected[t]!.type, `${f} key type`);
          for (const [k, val] of Object.entries(expected[t]!.detail ?? {}))
            assert.equal((pub.asymmetricKeyDetails as Record<string, unknown>)[k], val, `${f} ${k}`);
        }
        assert.equal(parseYaml(readFileSync(join(dir, "fleetpki.yaml"), "utf8")).keys.type, t);
        const key = readFileSync(join(dir, "ca/root/key.pem"), "utf8");
        assert.ok(key.startsWith("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        assert.equal(openssl(["pkey", "-in", join(dir, "ca/root/key.pem"), "-passin", `file:${passFile}`, "-noout"]).status, 0);
      });
    }

    it("--server-name puts DNS and IP SANs in server/cert.pem and the first name into the URLs", () => {
      const dir = join(tmp.path, "p384");
      assert.equal(results.get("p384")!.status, 0);
      const cert = new X509Certificate(readFileSync(join(dir, "server/cert.pem")));
      const sans = (cert.subjectAltName ?? "").split(", ").sort();
      assert.deepEqual(sans, ["DNS:pki.fleet.example", "IP Address:10.0.0.5"]);
      const host = openssl([
        "verify",
        "-CAfile",
        join(dir, "ca/root/cert.pem"),
        "-untrusted",
        join(dir, "ca/services/cert.pem"),
        "-verify_hostname",
        "pki.fleet.example",
        join(dir, "server/cert.pem"),
      ]);
      assert.equal(host.status, 0, host.stdout + host.stderr);
      const ip = openssl([
        "verify",
        "-CAfile",
        join(dir, "ca/root/cert.pem"),
        "-untrusted",
        join(dir, "ca/services/cert.pem"),
        "-verify_ip",
        "10.0.0.5",
        join(dir, "server/cert.pem"),
      ]);
      assert.equal(ip.status, 0, ip.stdout + ip.stderr);
      const other = openssl([
        "verify",
        "-CAfile",
        join(dir, "ca/root/cert.pem"),
        "-untrusted",
        join(dir, "ca/services/cert.pem"),
        "-verify_hostname",
        "localhost",
        join(dir, "server/cert.pem"),
      ]);
      assert.notEqual(other.status, 0, "localhost is not a name of this server");
      const config = parseYaml(readFileSync(join(dir, "fleetpki.yaml"), "utf8"));
      assert.equal(config.server.public_url, "http://pki.fleet.example:8080");
      assert.deepEqual(config.server.names, ["pki.fleet.example", "10.0.0.5"]);
    });
  });
});

describe("server.names and the device zone", () => {
  const base = renderConfig(
    defaultConfig({
      name: "t",
      domain: "fleet.example",
      keyType: "p256",
      passphraseFile: "secrets/passphrase",
      serverNames: ["pki.fleet.example"],
    }),
  );
  const withNames = (names: string[]) => {
    const doc = parseYaml(base) as { server: { names: string[] } };
    doc.server.names = names;
    return stringifyYaml(doc);
  };
  it("accepts names outside devices.<domain>", () => {
    assert.deepEqual(parseConfig(withNames(["pki.fleet.example", "devices-gw.fleet.example", "10.0.0.5"])).server.names, [
      "pki.fleet.example",
      "devices-gw.fleet.example",
      "10.0.0.5",
    ]);
  });
  it("init refuses a --server-name in the device zone before creating anything", () => {
    const dir = join(tempDir("fleetpki-init-zone-").path, "fleet");
    const r = cli(["init", "--dir", dir, "--domain", "fleet.example", "--server-name", "robot-1.devices.fleet.example"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /robot-1\.devices\.fleet\.example is in devices\.fleet\.example, the zone of device certificates/);
    assert.equal(existsSync(dir), false);
  });
  for (const name of ["devices.fleet.example", "robot-0001.devices.fleet.example", "X.Devices.Fleet.Example"])
    it(`refuses ${name}: a robot's certificate could condition it`, () => {
      assert.throws(
        () => parseConfig(withNames(["pki.fleet.example", name])),
        (e: Error) => e instanceof ConfigError && /zone of device certificates/.test(e.message),
      );
    });
});

describe("init --public-url", () => {
  const tmp = tempDir("fleetpki-init-url-");
  after(() => tmp.cleanup());

  it("is written into server.public_url and into every certificate init makes, intermediates included", () => {
    const dir = join(tmp.path, "fleet");
    const r = cli([
      "init",
      "--dir",
      dir,
      "--domain",
      "fleet.example",
      "--public-url",
      "https://status.fleet.example/pki/",
      "--server-name",
      "pki.fleet.example",
    ]);
    assert.equal(r.status, 0, r.stderr);
    const config = parseYaml(readFileSync(join(dir, "fleetpki.yaml"), "utf8"));
    assert.equal(config.server.public_url, "https://status.fleet.example/pki", "normalized: no trailing slash");
    for (const [file, ca] of [
      ["ca/devices/cert.pem", "root"],
      ["ca/operators/cert.pem", "root"],
      ["server/cert.pem", "services"],
      ["operators/admin/cert.pem", "operators"],
    ] as const) {
      const text = openssl(["x509", "-in", join(dir, file), "-noout", "-ext", "crlDistributionPoints,authorityInfoAccess"]).stdout;
      assert.ok(text.includes(`URI:https://status.fleet.example/pki/crl/${ca}.crl`), `${file}:\n${text}`);
      assert.ok(text.includes("OCSP - URI:https://status.fleet.example/pki/ocsp"), `${file}:\n${text}`);
    }
  });
});

describe("init refuses a malformed public URL before creating anything", () => {
  const tmp = tempDir("fleetpki-init-badurl-");
  after(() => tmp.cleanup());
  for (const [url, pattern] of [
    ["ftp://pki.example", /http:\/\/ or https:\/\//],
    ["http://pki.example:8080/?a=b", /query or fragment/],
    ["http://pki.example:8080/#x", /query or fragment/],
    ["pki.example:8080", /http:\/\/ or https:\/\//],
    ["http://", /not a URL/],
  ] as const)
    it(url, async () => {
      const dir = join(tmp.path, encodeURIComponent(url));
      await assert.rejects(
        initFleet({ dir, domain: "fleet.example", publicUrl: url }),
        (e: Error) => e instanceof InvalidArgument && /--public-url/.test(e.message) && pattern.test(e.message),
      );
      assert.equal(existsSync(dir), false);
    });
});

describe("defaultServerNames", () => {
  const iface = (address: string, internal = false) =>
    ({ address, internal, family: address.includes(":") ? "IPv6" : "IPv4" }) as NetworkInterfaceInfo;
  it("host name first, then the loopback names, then addresses that are neither loopback nor link-local", () => {
    const names = defaultServerNames("Robot-Hub", {
      lo: [iface("127.0.0.1", true), iface("::1", true)],
      eth0: [iface("10.1.2.3"), iface("fe80::1"), iface("2001:db8::5")],
      wl: [iface("169.254.9.9")],
    });
    assert.deepEqual(names, ["robot-hub", "localhost", "127.0.0.1", "::1", "10.1.2.3", "2001:db8::5"]);
  });
  it("leaves out a host name that is no DNS name or that lies in the device zone", () => {
    assert.deepEqual(defaultServerNames("my_host", {}), ["localhost", "127.0.0.1", "::1"]);
    assert.deepEqual(defaultServerNames("r1.devices.fleet.example", {}, "fleet.example"), ["localhost", "127.0.0.1", "::1"]);
  });
});

describe("fleetpki.yaml: unknown and unused keys, server.public_url", () => {
  const base = renderConfig(
    defaultConfig({
      name: "t",
      domain: "fleet.example",
      keyType: "p256",
      passphraseFile: "secrets/passphrase",
      serverNames: ["pki.fleet.example"],
    }),
  );
  const lineOf = (text: string, prefix: string) => text.split("\n").findIndex((l) => l.startsWith(prefix)) + 1;

  it("refuses a misspelt key, naming it, its line and the key meant (a typo must not leave a default in force)", () => {
    const typo = base.replace(/^  approval: false/m, "  aproval: true");
    assert.notEqual(typo, base);
    assert.throws(
      () => parseConfig(typo),
      (e: Error) =>
        e instanceof ConfigError &&
        e.message.includes(`line ${lineOf(typo, "  aproval:")}: unknown key "enrollment.aproval" (did you mean enrollment.approval?)`),
    );
    const port = base.replace(/^  session_lifetime: .*$/m, "  port: 9443");
    assert.throws(
      () => parseConfig(port),
      (e: Error) => e instanceof ConfigError && /line \d+: unknown key "admin\.port"/.test(e.message),
    );
  });

  it("reads the admin section; refuses a bad public_url, metrics address or session lifetime", () => {
    const old = base.replace(/^admin:\n(  .*\n)+/m, "").replace(/^  admin: .*\n/m, "");
    assert.deepEqual(parseConfig(old).listen.admin, "0.0.0.0:9443", "files from before the admin API get its default");
    assert.deepEqual(parseConfig(old).admin.metrics_allow, ["127.0.0.1/32", "::1/128"]);
    const set = (line: string) => base.replace(/^  metrics_allow: .*$/m, line);
    assert.deepEqual(parseConfig(set('  metrics_allow: ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]')).admin.metrics_allow, [
      "10.0.0.0/8",
      "fd00::/8",
      "192.0.2.7",
    ]);
    for (const bad of ['["10.0.0.0/33"]', '["example.com"]', '"10.0.0.1"', '["10.0.0.1/8/1"]', "[7]"])
      assert.throws(() => parseConfig(set(`  metrics_allow: ${bad}`)), /admin\.metrics_allow/, bad);
    const url = (u: string) => base.replace(/^  # public_url: .*$/m, `  public_url: ${JSON.stringify(u)}`);
    assert.equal(parseConfig(url("https://pki.example:9443/")).admin.public_url, "https://pki.example:9443");
    for (const bad of ["http://pki.example:9443", "https://u:p@pki.example", "https://pki.example/?x=1", "nope"])
      assert.throws(() => parseConfig(url(bad)), /admin\.public_url/, bad);
    assert.throws(() => parseConfig(base.replace(/^  session_lifetime: .*$/m, "  session_lifetime: forever")), /session_lifetime/);
  });

  it("reads the urls section of older files; refuses it beside server.public_url", () => {
    const legacy =
      base.replace(/^  public_url: .*$/m, "") +
      'urls:\n  crl_base: "http://old.example:8080/crl"\n  ocsp: "http://old.example:8080/ocsp"\n' +
      '  est: "https://old.example:8443/.well-known/est"\n';
    const { config, notes } = parseConfigWithNotes(legacy);
    assert.deepEqual(config.urls, { crl_base: "http://old.example:8080/crl", ocsp: "http://old.example:8080/ocsp" });
    assert.deepEqual(
      notes.map((n) => n.key),
      ["urls.est"],
    );
    const both = base + 'urls:\n  crl_base: "http://old.example:8080/crl"\n  ocsp: "http://old.example:8080/ocsp"\n';
    assert.throws(
      () => parseConfig(both),
      (e: Error) => e instanceof ConfigError && /both server\.public_url and the older urls section/.test(e.message),
    );
  });

  for (const [url, pattern] of [
    ["file:///etc/passwd", /http:\/\/ or https:\/\//],
    ["http://admin:pw@pki.example:8080", /credentials/],
    ["http://pki.example:8080/?x=1", /query or fragment/],
    ["http://pki.example:8080#top", /query or fragment/],
    ["not a url", /not a URL/],
  ] as const)
    it(`refuses server.public_url ${url}`, () => {
      const text = base.replace(/^  public_url: .*$/m, `  public_url: ${JSON.stringify(url)}`);
      assert.throws(
        () => parseConfig(text),
        (e: Error) => e instanceof ConfigError && /server\.public_url/.test(e.message) && pattern.test(e.message),
      );
    });

  it("derives the CRL base and OCSP URL from server.public_url", () => {
    const text = base.replace(/^  public_url: .*$/m, '  public_url: "https://pki.fleet.example:9000/status/"');
    assert.deepEqual(parseConfig(text).urls, {
      crl_base: "https://pki.fleet.example:9000/status/crl",
      ocsp: "https://pki.fleet.example:9000/status/ocsp",
    });
  });
});
