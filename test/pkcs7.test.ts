// Certs-only PKCS#7 (EST /cacerts, /simpleenroll responses) and EST base64 bodies: our encoder
// checked against openssl, openssl's output and libest's vectors parsed back, and bad input.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Base64Error, certsOnly, fromBase64Body, parseCertsOnly, toBase64Body } from "../src/x509/pkcs7.js";
import { fromPem, parsePemBlocks, toPem } from "../src/x509/pem.js";
import { implicitConstructed, octetString, oid, sequence, set, smallInteger } from "../src/der/writer.js";
import { OID } from "../src/der/oids.js";
import { vectorPath, openssl, tempDir, tempFleet, writeTemp } from "./helpers.js";

const LIBEST = vectorPath("libest");

/** openssl run with binary (DER) stdin/stdout; helpers.openssl decodes stdout as UTF-8. */
function opensslBinary(args: readonly string[], input?: Buffer): { status: number; stdout: Buffer; stderr: string } {
  const r = spawnSync("openssl", args, { input, timeout: 60_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString("utf8") };
}

const certPems = (text: string): Buffer[] =>
  parsePemBlocks(text)
    .filter((b) => b.label === "CERTIFICATE")
    .map((b) => b.der);
const commonName = (der: Buffer): string => /^CN=(.*)$/m.exec(new X509Certificate(der).subject)![1]!;
const sortedCopy = (list: readonly Buffer[]): Buffer[] => [...list].sort(Buffer.compare);

/** Hand-built ContentInfo around a SignedData made of the given fields. */
const contentInfo = (type: string, ...signedDataFields: Buffer[]): Buffer =>
  sequence(oid(type), implicitConstructed(0, sequence(...signedDataFields)));

describe("certs-only PKCS#7", () => {
  let devices: Buffer;
  let root: Buffer;
  let close: () => Promise<void>;
  const tmp = tempDir("fleetpki-pkcs7-");
  let devicesPem: string;
  let rootPem: string;

  before(async () => {
    const fleet = await tempFleet();
    close = fleet.close;
    const devicesText = readFileSync(join(fleet.dir, "ca", "devices", "cert.pem"), "utf8");
    const rootText = readFileSync(join(fleet.dir, "ca", "root", "cert.pem"), "utf8");
    devices = fromPem(devicesText, ["CERTIFICATE"]);
    root = fromPem(rootText, ["CERTIFICATE"]);
    devicesPem = writeTemp(tmp.path, "devices.pem", devicesText);
    rootPem = writeTemp(tmp.path, "root.pem", rootText);
  });
  after(async () => {
    await close?.();
    tmp.cleanup();
  });

  it("openssl reads both certificates back byte for byte and prints both subjects", () => {
    const der = certsOnly([devices, root]);
    const r = openssl(["pkcs7", "-inform", "DER", "-print_certs"], der);
    assert.equal(r.status, 0, r.stderr);
    const subjects = r.stdout.split("\n").filter((l) => l.startsWith("subject="));
    assert.equal(subjects.length, 2);
    assert.ok(
      subjects.some((s) => s.includes(`CN = ${commonName(devices)}`)),
      r.stdout,
    );
    assert.ok(
      subjects.some((s) => s.includes(`CN = ${commonName(root)}`)),
      r.stdout,
    );
    assert.notEqual(commonName(devices), commonName(root));
    assert.deepEqual(sortedCopy(certPems(r.stdout)), sortedCopy([devices, root]));
  });

  it("is exactly the DER openssl writes, with the certificates in DER SET OF order", () => {
    const der = certsOnly([devices, root]);
    // Input order does not matter, identical certificates appear once.
    assert.deepEqual(certsOnly([root, devices]), der);
    assert.deepEqual(certsOnly([root, devices, root]), der);
    // openssl keeps the order it is given; given the sorted order it must produce our bytes.
    const [first, second] = Buffer.compare(devices, root) < 0 ? [devicesPem, rootPem] : [rootPem, devicesPem];
    const theirs = opensslBinary(["crl2pkcs7", "-nocrl", "-certfile", first, "-certfile", second, "-outform", "DER"]);
    assert.equal(theirs.status, 0, theirs.stderr);
    assert.deepEqual(der, theirs.stdout);
    // And openssl re-encodes our structure unchanged.
    const reencoded = opensslBinary(["pkcs7", "-inform", "DER", "-outform", "DER"], der);
    assert.equal(reencoded.status, 0, reencoded.stderr);
    assert.deepEqual(reencoded.stdout, der);
  });

  it("has the degenerate SignedData fields of RFC 8551 3.8", () => {
    const der = certsOnly([root]);
    const r = openssl(["asn1parse", "-inform", "DER"], der);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.split("\n");
    assert.match(lines[1]!, /OBJECT\s+:pkcs7-signedData/);
    assert.match(lines[4]!, /INTEGER\s+:01$/); // version 1
    assert.match(lines[5]!, /l=\s*0 cons: SET/); // digestAlgorithms {}
    assert.match(lines[7]!, /OBJECT\s+:pkcs7-data/); // encapContentInfo { id-data }, no eContent
    assert.match(lines[8]!, /cont \[ 0 \]/); // certificates
    assert.match(lines.filter((l) => l.trim()).at(-1)!, /l=\s*0 cons: SET/); // signerInfos {}
    assert.ok(!r.stdout.includes("cont [ 1 ]"), "no CRLs");
  });

  it("parseCertsOnly round-trips certsOnly", () => {
    assert.deepEqual(parseCertsOnly(certsOnly([devices, root])), sortedCopy([devices, root]));
    assert.deepEqual(parseCertsOnly(certsOnly([root])), [root]);
  });

  it("parseCertsOnly reads what openssl crl2pkcs7 -nocrl writes, in its order", () => {
    const r = opensslBinary(["crl2pkcs7", "-nocrl", "-certfile", devicesPem, "-certfile", rootPem, "-outform", "DER"]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(parseCertsOnly(r.stdout), [devices, root]);
  });

  it("base64 body: 64-character lines, trailing newline, openssl base64 -d decodes it", () => {
    const der = certsOnly([devices, root]);
    const body = toBase64Body(der);
    assert.ok(body.endsWith("\n"));
    const lines = body.slice(0, -1).split("\n");
    assert.ok(lines.length > 2);
    for (const line of lines.slice(0, -1)) assert.equal(line.length, 64);
    assert.ok(lines.at(-1)!.length > 0 && lines.at(-1)!.length <= 64);
    const decoded = opensslBinary(["base64", "-d"], Buffer.from(body));
    assert.equal(decoded.status, 0, decoded.stderr);
    assert.deepEqual(decoded.stdout, der);
    assert.deepEqual(fromBase64Body(body), der);
    assert.deepEqual(fromBase64Body(Buffer.from(body)), der);
    assert.deepEqual(fromBase64Body(body.replaceAll("\n", "\r\n")), der);
    assert.deepEqual(fromBase64Body(` \t${body.replaceAll("\n", " ")}\r\n\r\n`), der);
    assert.deepEqual(fromBase64Body(der.toString("base64")), der); // one long line
    assert.equal(toBase64Body(Buffer.alloc(48)), "A".repeat(64) + "\n"); // exactly one full line
    // openssl's own base64 (its own line length) decodes with ours
    const theirs = openssl(["base64", "-e"], der);
    assert.deepEqual(fromBase64Body(theirs.stdout), der);
  });

  it("toPem is the same base64 body between armour lines; openssl pkcs7 reads it and writes the same text", () => {
    const der = certsOnly([devices, root]);
    const pem = toPem("PKCS7", der);
    assert.equal(pem, `-----BEGIN PKCS7-----\n${toBase64Body(der)}-----END PKCS7-----\n`);
    assert.deepEqual(fromPem(pem, ["PKCS7"]), der);
    const r = openssl(["pkcs7"], pem);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, pem); // openssl's PEM writer: same 64-character lines and trailing newline
    assert.equal(toPem("X509 CRL", Buffer.alloc(0)), "-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n");
  });

  describe("libest vectors", () => {
    it("US4880 tc2-new-cert.pkcs7b64: base64 certs-only with one RSA certificate", () => {
      const text = readFileSync(join(LIBEST, "US4880__tc2-new-cert.pkcs7b64"));
      const der = fromBase64Body(text);
      const certs = parseCertsOnly(der);
      assert.equal(certs.length, 1);
      const x = new X509Certificate(certs[0]!);
      assert.equal(x.subject, "CN=US4752-TC5");
      assert.equal(x.issuer, "CN=estExampleCA");
      assert.equal(x.publicKey.asymmetricKeyType, "rsa");
      // libest writes the same degenerate structure we do.
      assert.deepEqual(certsOnly(certs), der);
    });

    it("CA__estCA__cacert.crt (a PEM certificate, not PKCS#7): certsOnly matches openssl crl2pkcs7", () => {
      const file = join(LIBEST, "CA__estCA__cacert.crt");
      const certs = certPems(readFileSync(file, "utf8"));
      assert.equal(certs.length, 1);
      const theirs = opensslBinary(["crl2pkcs7", "-nocrl", "-certfile", file, "-outform", "DER"]);
      assert.equal(theirs.status, 0, theirs.stderr);
      assert.deepEqual(certsOnly(certs), theirs.stdout);
      assert.deepEqual(parseCertsOnly(theirs.stdout), certs);
    });

    it("CA__estCA__multicacerts.crt (two PEM certificates): both survive certsOnly and openssl", () => {
      const certs = certPems(readFileSync(join(LIBEST, "CA__estCA__multicacerts.crt"), "utf8"));
      assert.equal(certs.length, 2);
      const der = certsOnly(certs);
      const r = openssl(["pkcs7", "-inform", "DER", "-print_certs"], der);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /subject=CN = estEXTERNALCA/);
      assert.match(r.stdout, /subject=CN = estExampleCA/);
      assert.deepEqual(sortedCopy(certPems(r.stdout)), sortedCopy(certs));
      assert.deepEqual(parseCertsOnly(der), sortedCopy(certs));
    });

    it("CA__estCA__cacertandcrl.crt (PEM certificate + CRL): SignedData with CRLs gives the certificate only", () => {
      const file = join(LIBEST, "CA__estCA__cacertandcrl.crt");
      const certs = certPems(readFileSync(file, "utf8"));
      assert.equal(certs.length, 1);
      const withCrl = opensslBinary(["crl2pkcs7", "-in", file, "-certfile", file, "-outform", "DER"]);
      assert.equal(withCrl.status, 0, withCrl.stderr);
      // The CRL really is in there ([1] crls), so this exercises the tolerant path.
      assert.match(openssl(["asn1parse", "-inform", "DER"], withCrl.stdout).stdout, /cont \[ 1 \]/);
      assert.deepEqual(parseCertsOnly(withCrl.stdout), certs);
      // CRLs only, no certificates at all: a valid (if useless) certs-only message.
      const crlOnly = opensslBinary(["crl2pkcs7", "-in", join(LIBEST, "CA__estCA__crl.pem"), "-outform", "DER"]);
      assert.equal(crlOnly.status, 0, crlOnly.stderr);
      assert.deepEqual(parseCertsOnly(crlOnly.stdout), []);
    });
  });

  describe("bad input", () => {
    it("garbage, empty and PEM input", () => {
      assert.throws(() => parseCertsOnly(Buffer.from("hello, world")), { name: "Pkcs7Error", message: /PKCS#7: malformed DER/ });
      assert.throws(() => parseCertsOnly(Buffer.alloc(0)), { name: "Pkcs7Error", message: /empty input/ });
      assert.throws(() => parseCertsOnly(Buffer.from([0x02, 0x01, 0x05])), {
        name: "Pkcs7Error",
        message: /expected ContentInfo SEQUENCE/,
      });
      assert.throws(() => parseCertsOnly(Buffer.from(`-----BEGIN PKCS7-----\n${toBase64Body(certsOnly([root]))}-----END PKCS7-----\n`)), {
        name: "Pkcs7Error",
        message: /PEM text, expected DER/,
      });
    });

    it("truncated input and trailing bytes", () => {
      const der = certsOnly([devices, root]);
      for (const cut of [1, 10, der.length - 100, der.length - 1])
        assert.throws(() => parseCertsOnly(der.subarray(0, cut)), { name: "Pkcs7Error", message: /truncated/ }, `cut at ${cut}`);
      assert.throws(() => parseCertsOnly(Buffer.concat([der, Buffer.from([0])])), { name: "Pkcs7Error", message: /trailing bytes/ });
    });

    it("BER with indefinite lengths is refused, not misread", () => {
      const der = certsOnly([root]);
      const ber = Buffer.concat([Buffer.from([0x30, 0x80]), der.subarray(4), Buffer.from([0, 0])]);
      assert.throws(() => parseCertsOnly(ber), { name: "Pkcs7Error", message: /indefinite length/ });
    });

    it("content types other than signedData", () => {
      const data = sequence(oid(OID.idData), implicitConstructed(0, octetString(Buffer.from("x"))));
      assert.throws(() => parseCertsOnly(data), {
        name: "Pkcs7Error",
        message: /content type is idData \(1\.2\.840\.113549\.1\.7\.1\), expected signedData/,
      });
      const enveloped = sequence(oid(OID.idEnvelopedData), implicitConstructed(0, sequence()));
      assert.throws(() => parseCertsOnly(enveloped), { name: "Pkcs7Error", message: /content type is idEnvelopedData/ });
      const unknown = sequence(oid("1.2.3.4"), implicitConstructed(0, sequence()));
      assert.throws(() => parseCertsOnly(unknown), { name: "Pkcs7Error", message: /content type is 1\.2\.3\.4, expected/ });
      // openssl's own non-signedData PKCS#7 is refused the same way.
      const der = certsOnly([root]);
      const wrongOid = Buffer.from(der);
      assert.equal(wrongOid[4 + 2 + 8], 0x02); // last arc of 1.2.840.113549.1.7.2
      wrongOid[4 + 2 + 8] = 0x03;
      assert.throws(() => parseCertsOnly(wrongOid), { name: "Pkcs7Error", message: /content type is idEnvelopedData/ });
    });

    it("a bare certificate is named as such", () => {
      assert.throws(() => parseCertsOnly(root), { name: "Pkcs7Error", message: /single X\.509 certificate, not a ContentInfo/ });
    });

    it("signed messages, encapsulated content and odd versions are not certs-only", () => {
      const v1 = smallInteger(1);
      const encap = sequence(oid(OID.idData));
      const certs = implicitConstructed(0, [root]);
      // sanity: the hand-built degenerate form parses
      assert.deepEqual(parseCertsOnly(contentInfo(OID.idSignedData, v1, set(), encap, certs, set())), [root]);
      const withContent = sequence(oid(OID.idData), implicitConstructed(0, octetString(Buffer.from("hi"))));
      assert.throws(() => parseCertsOnly(contentInfo(OID.idSignedData, v1, set(), withContent, certs, set())), {
        name: "Pkcs7Error",
        message: /carries encapsulated content/,
      });
      const signer = sequence(smallInteger(1));
      assert.throws(() => parseCertsOnly(contentInfo(OID.idSignedData, v1, set(), encap, certs, set(signer))), {
        name: "Pkcs7Error",
        message: /has signerInfos/,
      });
      assert.throws(() => parseCertsOnly(contentInfo(OID.idSignedData, smallInteger(2), set(), encap, certs, set())), {
        name: "Pkcs7Error",
        message: /unsupported SignedData version 2/,
      });
      assert.throws(() => parseCertsOnly(contentInfo(OID.idSignedData, v1, set(), encap, certs)), {
        name: "Pkcs7Error",
        message: /missing signerInfos SET/,
      });
      assert.throws(() => parseCertsOnly(contentInfo(OID.idSignedData, v1, set(), encap, certs, set(), set())), {
        name: "Pkcs7Error",
        message: /after signerInfos/,
      });
      const attrCert = implicitConstructed(0, [implicitConstructed(2, sequence())]);
      assert.throws(() => parseCertsOnly(contentInfo(OID.idSignedData, v1, set(), encap, attrCert, set())), {
        name: "Pkcs7Error",
        message: /unsupported CertificateChoices element \(tag 0xa2\)/,
      });
      const notACert = implicitConstructed(0, [sequence(smallInteger(1))]);
      assert.throws(() => parseCertsOnly(contentInfo(OID.idSignedData, v1, set(), encap, notACert, set())), {
        name: "Pkcs7Error",
        message: /certificate 0 is not a DER certificate/,
      });
    });

    it("certsOnly refuses an empty list and non-certificates", () => {
      assert.throws(() => certsOnly([]), { name: "Pkcs7Error", message: /at least one certificate/ });
      assert.throws(() => certsOnly([root, Buffer.from("not a certificate")]), {
        name: "Pkcs7Error",
        message: /certificate 1 is not a DER certificate/,
      });
      assert.throws(() => certsOnly([Buffer.concat([root, Buffer.from([0])])]), { name: "Pkcs7Error", message: /trailing bytes/ });
    });

    it("bad base64 bodies", () => {
      const good = toBase64Body(certsOnly([root]));
      assert.throws(
        () => fromBase64Body("MAthisis badsGCSqGSIb3DQEJBw=="),
        (e: unknown) => {
          // whitespace is fine, so this one fails on its length: 29 base64 characters
          assert.ok(e instanceof Base64Error);
          assert.match(e.message, /29 base64 characters is not a multiple of 4/);
          return true;
        },
      );
      assert.throws(() => fromBase64Body(good.slice(0, -3)), { name: "Base64Error", message: /not a multiple of 4 \(truncated/ });
      assert.throws(() => fromBase64Body(good.replace("M", "M!")), {
        name: "Base64Error",
        message: /character "!" at offset 1 is not base64/,
      });
      assert.throws(() => fromBase64Body("MA-_"), { name: "Base64Error", message: /character "-" at offset 2/ });
      assert.throws(() => fromBase64Body("MAA=MAA="), { name: "Base64Error", message: /data after "=" padding/ });
      assert.throws(() => fromBase64Body("MA=\u00e9"), { name: "Base64Error", message: /character 0xe9 at offset 3/ });
      assert.throws(() => fromBase64Body(Buffer.from([0x4d, 0x41, 0x00, 0x3d])), {
        name: "Base64Error",
        message: /character 0x00 at offset 2/,
      });
      assert.throws(() => fromBase64Body("A==="), { name: "Base64Error", message: /3 "=" padding characters/ });
      assert.throws(() => fromBase64Body(" \r\n"), { name: "Base64Error", message: /empty body/ });
      // well-formed base64 of something that is not PKCS#7 gets through base64 and fails in the parser
      assert.throws(() => parseCertsOnly(fromBase64Body("MAA=")), { name: "Pkcs7Error", message: /ContentInfo has 0 fields/ });
    });
  });
});
