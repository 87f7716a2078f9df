// X.501 name rendering (x509/name.ts) for the string types other CAs and openssl write:
// BMPString (UCS-2) and UniversalString (UCS-4) are big-endian; they were read as UTF-16LE,
// which turned "Röbot" into CJK mojibake in `ca list`, audit subjects and the CN of an EST
// approval request. Names made by openssl itself, compared with `openssl x509 -subject`.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { requestedDeviceId } from "../src/authority/enroll/enrollment.js";
import { CsrInvalid } from "../src/authority/errors.js";
import { DerError, children, readRoot } from "../src/der/reader.js";
import { OID } from "../src/der/oids.js";
import { oid, sequence, set, tlv } from "../src/der/writer.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { buildCertificate, parseCertificate, randomSerial } from "../src/x509/certificate.js";
import { buildCsr } from "../src/x509/csr.js";
import { commonNameOf, directoryStringText, nameToString } from "../src/x509/name.js";
import { assertOk, openssl, tempDir, writeTemp } from "./helpers.js";

const tmp = tempDir("fleetpki-name-");
after(() => tmp.cleanup());

const CN = "Röbot 東京 €";
const O = "Ünïcode Fleet";

const BMP_STRING = 0x1e;
const UNIVERSAL_STRING = 0x1c;
const T61_STRING = 0x14;

/** A self-signed certificate (DER) with this subject, for openssl to read. */
function selfSigned(subject: Buffer): Buffer {
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return buildCertificate(
    {
      serial: randomSerial(),
      issuer: subject,
      subject,
      notBefore: new Date(Date.UTC(2030, 0, 1)),
      notAfter: new Date(Date.UTC(2030, 0, 2)),
      spki: publicKey.export({ type: "spki", format: "der" }),
      extensions: [],
    },
    { key: privateKey, scheme: signatureSchemeFor(privateKey) },
  );
}

/**
 * A self-signed certificate from `openssl req` whose subject strings openssl writes with the
 * string type `mask` allows only (OpenSSL's B_ASN1_* bits: 0x800 BMPString, 0x100 UniversalString).
 */
function opensslCertificate(label: string, mask: number): { der: Buffer; path: string } {
  const config = writeTemp(
    tmp.path,
    `${label}.cnf`,
    `[req]\ndistinguished_name = dn\nstring_mask = MASK:0x${mask.toString(16)}\nutf8 = yes\nprompt = no\n[dn]\nCN = ${CN}\nO = ${O}\n`,
  );
  const path = join(tmp.path, `${label}.der`);
  const key = join(tmp.path, `${label}.key`);
  const r = openssl([
    ...["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key],
    ...["-config", config, "-days", "1", "-outform", "DER", "-out", path],
  ]);
  assertOk(r, `openssl req (${label})`);
  return { der: readFileSync(path), path };
}

function opensslSubject(path: string): string {
  const r = openssl(["x509", "-inform", "DER", "-in", path, "-noout", "-subject", "-nameopt", "utf8"]);
  assertOk(r, "openssl x509 -subject");
  return r.stdout.trim().replace(/^subject=/, "");
}

/** The tags of the attribute values in a Name, in order. */
function valueTags(name: Buffer): number[] {
  return children(readRoot(name))
    .flatMap((rdn) => children(rdn))
    .map((atv) => children(atv)[1]!.tag);
}

describe("names in BMPString, UniversalString and T61String", () => {
  it("BMPString written by openssl req: nameToString and commonNameOf agree with openssl x509 -subject -nameopt utf8", () => {
    const { der, path } = opensslCertificate("bmp", 0x800);
    const subject = parseCertificate(der).subject;
    assert.deepEqual(valueTags(subject), [BMP_STRING, BMP_STRING], "openssl wrote BMPString values");
    assert.equal(opensslSubject(path), `CN=${CN}, O=${O}`, "what openssl reads");
    assert.equal(nameToString(subject), `CN=${CN}, O=${O}`);
    assert.equal(commonNameOf(subject), CN);
  });

  it("UniversalString and T61String (which openssl req will not write for a CN) in a certificate we sign: openssl agrees", () => {
    const utf32be = Buffer.alloc(4 * [...CN].length);
    [...CN].forEach((ch, i) => utf32be.writeUInt32BE(ch.codePointAt(0)!, i * 4));
    const subject = sequence(
      set(sequence(oid(OID.commonName), tlv(UNIVERSAL_STRING, utf32be))),
      set(sequence(oid(OID.organizationName), tlv(T61_STRING, Buffer.from(O, "latin1")))),
    );
    const path = writeTemp(tmp.path, "universal.der", selfSigned(subject));
    assert.equal(opensslSubject(path), `CN=${CN}, O=${O}`, "what openssl reads");
    assert.equal(nameToString(subject), `CN=${CN}, O=${O}`);
    assert.equal(commonNameOf(subject), CN);
  });

  it("a BMPString built by hand: big-endian code units, a surrogate pair included", () => {
    const text = "Zürich 🤖";
    const be = Buffer.from(text, "utf16le").swap16();
    const name = sequence(set(sequence(oid(OID.commonName), tlv(BMP_STRING, be))));
    assert.equal(nameToString(name), `CN=${text}`);
    assert.equal(commonNameOf(name), text);
  });

  it("malformed BMPString / UniversalString lengths and code points are DerErrors, not mojibake", () => {
    const bad: Array<[string, Buffer]> = [
      ["odd-length BMPString", tlv(BMP_STRING, Buffer.from([0x00, 0x41, 0x00]))],
      ["UniversalString of 6 octets", tlv(UNIVERSAL_STRING, Buffer.from([0, 0, 0, 0x41, 0, 0]))],
      ["UniversalString beyond U+10FFFF", tlv(UNIVERSAL_STRING, Buffer.from([0, 0x11, 0, 0]))],
      ["UniversalString holding a surrogate", tlv(UNIVERSAL_STRING, Buffer.from([0, 0, 0xd8, 0]))],
    ];
    for (const [label, value] of bad) {
      assert.throws(() => directoryStringText(readRoot(value)), DerError, label);
      const name = sequence(set(sequence(oid(OID.commonName), value)));
      assert.throws(() => nameToString(name), DerError, label);
      assert.throws(() => commonNameOf(name), DerError, label);
    }
  });

  it("UTF8String and PrintableString are unchanged", () => {
    const name = sequence(
      set(sequence(oid(OID.countryName), tlv(0x13, Buffer.from("DE")))),
      set(sequence(oid(OID.commonName), tlv(0x0c, Buffer.from(CN)))),
    );
    assert.equal(nameToString(name), `C=DE, CN=${CN}`);
  });
});

describe("the device id of an EST approval request (the CSR's commonName)", () => {
  it("is read from a BMPString CN that openssl req wrote", () => {
    const cnf = "[req]\ndistinguished_name = dn\nstring_mask = MASK:0x800\nprompt = no\n[dn]\nCN = robot-0007\n";
    const config = writeTemp(tmp.path, "csr.cnf", cnf);
    const csr = join(tmp.path, "bmp.csr");
    const key = join(tmp.path, "csr.key");
    const r = openssl([
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      key,
      "-config",
      config,
      "-out",
      csr,
    ]);
    assertOk(r, "openssl req -new");
    assert.match(openssl(["asn1parse", "-in", csr]).stdout, /BMPSTRING/);
    assert.equal(requestedDeviceId(readFileSync(csr, "latin1")), "robot-0007");
  });

  it("a CN that is no text (odd-length BMPString) is CsrInvalid, a 400, not an internal error", () => {
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const subject = sequence(set(sequence(oid(OID.commonName), tlv(BMP_STRING, Buffer.from([0x00, 0x72, 0x00])))));
    const spki = publicKey.export({ type: "spki", format: "der" });
    const csr = buildCsr(subject, spki, { key: privateKey, scheme: signatureSchemeFor(privateKey) });
    assert.throws(
      () => requestedDeviceId(csr),
      (e: unknown) => e instanceof CsrInvalid && e.reason === "malformed" && /BMPString/.test(e.message),
    );
  });
});
