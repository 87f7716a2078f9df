// Service identities (issue 10, section 2): `fleetpki service add|list|remove`. A backend gets a
// client certificate from the services CA naming spiffe://<domain>/service/<name>, never usable as
// a server certificate; removal revokes every certificate of it, and CRLs, OCSP and the in-memory
// CertificateStatus follow like any revocation.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { InvalidArgument } from "../src/authority/errors.js";
import { addService, listServices } from "../src/authority/identities/services.js";
import { silentLogger } from "../src/log.js";
import { startFleetServer, type FleetServer } from "../src/server.js";
import { loadConfig } from "../src/config/config.js";
import { fromPem } from "../src/x509/pem.js";
import { assertOk, assertOneLineError, cliAsync, openssl, tempDir, tempFleet } from "./helpers.js";

const DAY = 86_400_000;

describe("fleetpki service add|list|remove", { concurrency: false }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let work: { path: string; cleanup: () => void };
  let server: FleetServer;
  const d = () => ["--dir", f.dir];
  const head = () => f.fleet.store.ops.changes.headSeq();
  const serviceRows = (name: string) => f.fleet.store.ops.certificates.ofKind("service", name);

  before(async () => {
    f = await tempFleet();
    work = tempDir("fleetpki-service-");
    server = await startFleetServer({ dir: f.dir, only: [], logger: silentLogger });
    await server.changes.stop(); // polled by hand
  });
  after(async () => {
    await server?.close();
    await f?.close();
    work?.cleanup();
  });

  it("add: key.pem 0600 in a 0700 directory, cert.pem, chain.pem, ca.pem (the root); a client certificate only", async () => {
    const out = join(work.path, "telemetry");
    const r = await cliAsync(["service", "add", "telemetry", "--out", out, "--json", ...d()]);
    assertOk(r, "service add");
    const added = JSON.parse(r.stdout);
    assert.equal(added.identity, "spiffe://fleet.example/service/telemetry");
    assert.equal(statSync(out).mode & 0o777, 0o700);
    assert.equal(statSync(join(out, "key.pem")).mode & 0o777, 0o600);
    assert.match(
      readFileSync(join(out, "key.pem"), "utf8"),
      /^-----BEGIN PRIVATE KEY-----\n/,
      "unencrypted PKCS#8, as mosquitto_pub reads it",
    );
    assert.equal(readFileSync(join(out, "ca.pem"), "utf8"), readFileSync(join(f.dir, "ca", "root", "cert.pem"), "utf8"));
    assert.equal(readFileSync(join(out, "chain.pem"), "utf8"), readFileSync(join(f.dir, "ca", "services", "cert.pem"), "utf8"));

    const files = ["-CAfile", join(out, "ca.pem"), "-untrusted", join(out, "chain.pem"), join(out, "cert.pem")];
    assertOk(openssl(["verify", "-x509_strict", "-purpose", "sslclient", ...files]), "openssl verify sslclient");
    // The services CA signs the servers' certificates too: a service's must not pass for one.
    const asServer = openssl(["verify", "-x509_strict", "-purpose", "sslserver", ...files]);
    assert.notEqual(asServer.status, 0, "a service certificate is no server certificate");
    assert.match(asServer.stdout + asServer.stderr, /unsuitable certificate purpose/);
    const ext = openssl(["x509", "-in", join(out, "cert.pem"), "-noout", "-subject", "-ext", "subjectAltName,extendedKeyUsage,keyUsage"]);
    assertOk(ext, "openssl x509");
    assert.match(ext.stdout, /URI:spiffe:\/\/fleet\.example\/service\/telemetry/);
    assert.match(ext.stdout, /subject=CN\s*=\s*telemetry/);
    assert.match(ext.stdout, /TLS Web Client Authentication/);
    assert.doesNotMatch(ext.stdout, /TLS Web Server Authentication/);
    assert.match(ext.stdout, /Digital Signature/);
    // The key is P-256 and belongs to the certificate.
    const cert = new X509Certificate(readFileSync(join(out, "cert.pem")));
    assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
    const keyPub = openssl(["pkey", "-in", join(out, "key.pem"), "-pubout"]);
    assert.equal(keyPub.stdout, cert.publicKey.export({ type: "spki", format: "pem" }).toString());
    // validity.service: 90 days by default.
    const lifetime = Date.parse(cert.validTo) - Date.parse(cert.validFrom);
    assert.ok(Math.abs(lifetime - 90 * DAY) < 2 * 60_000, `lifetime ${lifetime / DAY} days`);

    // Recorded as kind "service" with its name, audited as certificate.issue and service.add.
    const rows = await serviceRows("telemetry");
    assert.deepEqual(
      rows.map((c) => [c.serial, c.issuer_ca, c.kind, c.subject_id, c.status]),
      [[added.serial, "services", "service", "telemetry", "valid"]],
    );
    const audit = (await f.fleet.store.ops.audit.list({})).filter((a) => a.subject === "service:telemetry");
    assert.deepEqual(
      audit.map((a) => a.action),
      ["certificate.issue", "service.add"],
    );
    assert.equal(JSON.parse(audit[0]!.details).kind, "service");
  });

  it("CertificateStatus knows a service certificate (kind and subject) once the feed delivers it", async () => {
    const [row] = await serviceRows("telemetry");
    const ask = () => server.certificateStatus.certificate({ issuerCa: "services", serial: row!.serial });
    assert.equal(ask().status, "unknown", "from memory: not yet delivered");
    await server.changes.poll();
    const answer = ask();
    assert.deepEqual([answer.status, answer.kind, answer.subjectId, answer.deviceId], ["good", "service", "telemetry", null]);
    const der = fromPem(readFileSync(join(work.path, "telemetry", "cert.pem"), "utf8"), ["CERTIFICATE"]);
    assert.equal(server.certificateStatus.certificate({ der }).subjectId, "telemetry");
  });

  it("a second add of the same name is refused, and leaves no directory, row or audit event; --renew issues a new one", async () => {
    const seq = await head();
    const out = join(work.path, "telemetry-again");
    assertOneLineError(
      await cliAsync(["service", "add", "telemetry", "--out", out, ...d()]),
      /service "telemetry" already exists.*--renew/,
    );
    assert.equal(existsSync(out), false);
    assert.equal(await head(), seq);
    assert.equal((await serviceRows("telemetry")).length, 1);

    // Renewal into the service's own directory replaces its files.
    const dir = join(work.path, "telemetry");
    const before = readFileSync(join(dir, "key.pem"), "utf8");
    const r = await cliAsync(["service", "add", "telemetry", "--out", dir, "--renew", "--json", ...d()]);
    assertOk(r, "service add --renew");
    assert.notEqual(readFileSync(join(dir, "key.pem"), "utf8"), before);
    assert.equal(new X509Certificate(readFileSync(join(dir, "cert.pem"))).serialNumber.toLowerCase(), JSON.parse(r.stdout).serial);
    assert.equal((await serviceRows("telemetry")).length, 2);
    // --renew of a service that does not exist is refused too.
    assertOneLineError(
      await cliAsync(["service", "add", "nobody", "--out", join(work.path, "nobody"), "--renew", ...d()]),
      /no certificate to renew/,
    );
    assert.equal(existsSync(join(work.path, "nobody")), false);
  });

  it("add refuses to overwrite a key.pem it did not make (an --out directory already in use)", async () => {
    const out = join(work.path, "occupied");
    mkdirSync(out);
    writeFileSync(join(out, "key.pem"), "someone else's key\n");
    const seq = await head();
    assertOneLineError(await cliAsync(["service", "add", "ingest", "--out", out, ...d()]), /key\.pem already exists/);
    assert.equal(readFileSync(join(out, "key.pem"), "utf8"), "someone else's key\n");
    assert.equal(await head(), seq);
    assert.deepEqual(await serviceRows("ingest"), []);
  });

  it("hostile names are refused with one line, before anything is written or recorded", async () => {
    const seq = await head();
    for (const name of ["../etc", "a/b", "Telemetry", "tele+metry", "#", "$SYS", "a.b", "_lead", "x".repeat(64), " "]) {
      const out = join(work.path, `hostile-${Buffer.from(name).toString("hex")}`);
      const r = await cliAsync(["service", "add", name, "--out", out, ...d()]);
      assertOneLineError(r, /invalid service name/);
      assert.equal(existsSync(out), false, `no directory for ${JSON.stringify(name)}`);
    }
    // argv cannot carry a NUL; the domain refuses it as well.
    const nul = join(work.path, "nul");
    await assert.rejects(addService(f.fleet, { name: "nul\u0000byte", outDir: nul, actor: "test" }), InvalidArgument);
    assert.equal(existsSync(nul), false);
    assert.equal(await head(), seq, "no audit event");
    assert.deepEqual(
      (await listServices(f.fleet)).map((s) => s.name),
      ["telemetry"],
    );
  });

  it("list: name, newest serial, expiry, status (table and --json)", async () => {
    const newest = (await serviceRows("telemetry"))[0]!;
    const json = await cliAsync(["service", "list", "--json", ...d()]);
    assertOk(json, "service list --json");
    assert.deepEqual(JSON.parse(json.stdout), [
      {
        name: "telemetry",
        identity: "spiffe://fleet.example/service/telemetry",
        serial: newest.serial,
        notAfter: newest.not_after,
        status: "valid",
        certificates: 2,
      },
    ]);
    const table = await cliAsync(["service", "list", ...d()]);
    assertOk(table, "service list");
    assert.match(table.stdout, /^NAME\s+SERIAL\s+EXPIRES\s+STATUS$/m);
    assert.match(table.stdout, new RegExp(`^telemetry\\s+${newest.serial}\\s+${newest.not_after}\\s+valid$`, "m"));
  });

  it("remove revokes every certificate (cessationOfOperation), a certificate.revoke each; CRL and CertificateStatus follow", async () => {
    const serials = (await serviceRows("telemetry")).map((c) => c.serial).sort();
    const seq = await head();
    const heard: unknown[] = [];
    const stop = server.certificateStatus.onChange((c) => void heard.push(c));
    const r = await cliAsync(["service", "remove", "telemetry", "--json", ...d()]);
    assertOk(r, "service remove");
    const removed = JSON.parse(r.stdout);
    assert.deepEqual({ ...removed, serials: [...removed.serials].sort() }, { service: "telemetry", serials, cas: ["services"] });
    const rows = await serviceRows("telemetry");
    assert.ok(rows.every((c) => c.status === "revoked" && c.revocation_reason === "cessationOfOperation"));
    const audit = (await f.fleet.store.ops.audit.list({})).filter((a) => a.seq > seq);
    assert.deepEqual(
      audit.map((a) => a.action),
      ["certificate.revoke", "certificate.revoke", "service.remove"],
    );

    // The services CA's CRL, re-signed by the command, lists both.
    const crl = join(work.path, "services.crl");
    writeFileSync(crl, (await f.fleet.store.ops.status.storedCrl("services"))!.der);
    const text = openssl(["crl", "-inform", "DER", "-in", crl, "-noout", "-text"]).stdout.toLowerCase().replace(/:/g, "");
    for (const serial of serials) assert.ok(text.includes(serial.replace(/^0+/, "")), `${serial} on the CRL`);
    assert.match(text, /cessation of operation/);

    await server.changes.poll();
    for (const serial of serials) {
      const a = server.certificateStatus.certificate({ issuerCa: "services", serial });
      assert.deepEqual([a.status, a.reason, a.subjectId], ["revoked", "cessationOfOperation", "telemetry"]);
    }
    stop();
    assert.deepEqual(heard, [{ deviceIds: [], serials, cas: ["services"], all: false }]);

    // Gone: a second remove is refused, the list says revoked, and the name may be added afresh.
    assertOneLineError(await cliAsync(["service", "remove", "telemetry", ...d()]), /already removed/);
    assertOneLineError(await cliAsync(["service", "remove", "never-added", ...d()]), /unknown service "never-added"/);
    assert.equal((await listServices(f.fleet))[0]!.status, "revoked");
    assertOk(await cliAsync(["service", "add", "telemetry", "--out", join(work.path, "telemetry-2"), ...d()]), "add after remove");
    assertOk(await cliAsync(["audit", "verify", ...d()]), "audit verify");
  });
});

describe("validity.service in fleetpki.yaml", () => {
  it("is written by init, read, and used; a file from before it existed gets 90d", async () => {
    const f = await tempFleet();
    const work = tempDir("fleetpki-service-validity-");
    try {
      const file = join(f.dir, "fleetpki.yaml");
      const text = readFileSync(file, "utf8");
      assert.match(text, /^ {2}service: 90d +# /m);
      assert.equal(loadConfig(f.dir).validity.service, "90d");
      writeFileSync(file, text.replace(/^ {2}service: 90d.*\n/m, ""));
      assert.equal(loadConfig(f.dir).validity.service, "90d", "older files: the default");
      writeFileSync(file, text.replace(/^ {2}service: 90d/m, "  service: 7d"));
      const r = await cliAsync(["service", "add", "short", "--out", join(work.path, "short"), "--json", "--dir", f.dir]);
      assertOk(r, "service add");
      const cert = new X509Certificate(readFileSync(join(work.path, "short", "cert.pem")));
      const lifetime = Date.parse(cert.validTo) - Date.parse(cert.validFrom);
      assert.ok(Math.abs(lifetime - 7 * DAY) < 2 * 60_000, `lifetime ${lifetime / DAY} days`);
      writeFileSync(file, text.replace(/^ {2}service: 90d/m, "  service: soon"));
      assertOneLineError(await cliAsync(["service", "list", "--dir", f.dir]), /validity\.service/);
    } finally {
      await f.close();
      work.cleanup();
    }
  });
});
