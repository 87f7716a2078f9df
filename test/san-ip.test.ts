// iPAddress SANs (x509/extensions.ts): every textual IPv6 form must become the 16 octets
// RFC 4291 gives it. The old encoder read the dotted quad of "::ffff:10.0.0.1" as one hex group
// (0x10) and dropped zone ids silently. Judged against OpenSSL's own encoder (req -addext), its
// -text rendering and its -checkip matcher.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { OID } from "../src/der/oids.js";
import { children, content, readRoot } from "../src/der/reader.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { buildCertificate, parseCertificate, randomSerial } from "../src/x509/certificate.js";
import { ipAddressBytes, subjectAltName } from "../src/x509/extensions.js";
import { encodeName } from "../src/x509/name.js";
import { toPem } from "../src/x509/pem.js";
import { assertOk, openssl, tempDir, writeTemp } from "./helpers.js";

const tmp = tempDir("fleetpki-san-ip-");
after(() => tmp.cleanup());

// [text, the 16 (or 4) octets in hex, how `openssl x509 -text` prints them]
const VALID: Array<[string, string, string]> = [
  ["::", "00000000000000000000000000000000", "0:0:0:0:0:0:0:0"],
  ["::1", "00000000000000000000000000000001", "0:0:0:0:0:0:0:1"],
  ["1::", "00010000000000000000000000000000", "1:0:0:0:0:0:0:0"],
  ["2001:db8::1:0:0:1", "20010db8000000000001000000000001", "2001:DB8:0:0:1:0:0:1"],
  ["2001:DB8:0:0:1::1", "20010db8000000000001000000000001", "2001:DB8:0:0:1:0:0:1"],
  ["fe80::1", "fe800000000000000000000000000001", "FE80:0:0:0:0:0:0:1"],
  ["1:2:3:4:5:6:7:8", "00010002000300040005000600070008", "1:2:3:4:5:6:7:8"],
  ["1:2:3:4:5:6:7::", "00010002000300040005000600070000", "1:2:3:4:5:6:7:0"],
  ["::2:3:4:5:6:7:8", "00000002000300040005000600070008", "0:2:3:4:5:6:7:8"],
  ["::ffff:10.0.0.1", "00000000000000000000ffff0a000001", "0:0:0:0:0:FFFF:A00:1"],
  ["::FFFF:192.168.1.254", "00000000000000000000ffffc0a801fe", "0:0:0:0:0:FFFF:C0A8:1FE"],
  ["::1.2.3.4", "00000000000000000000000001020304", "0:0:0:0:0:0:102:304"],
  ["64:ff9b::192.0.2.33", "0064ff9b0000000000000000c0000221", "64:FF9B:0:0:0:0:C000:221"],
  ["1:2:3:4:5:6:1.2.3.4", "00010002000300040005000601020304", "1:2:3:4:5:6:102:304"],
  ["10.0.0.1", "0a000001", "10.0.0.1"],
  ["0.0.0.0", "00000000", "0.0.0.0"],
  ["255.255.255.255", "ffffffff", "255.255.255.255"],
];

const INVALID = [
  "fe80::1%eth0", // zone id: an interface of one host, not an address
  "fe80::1%25eth0",
  "::ffff:10.0.0.1%1",
  "1:2:3:4:5:6:7:8:9",
  "1::2::3",
  "12345::",
  "010.0.0.1",
  "::ffff:010.0.0.1",
  "1.2.3",
  "[::1]",
  "localhost",
  "",
];

/** A self-signed certificate whose only extension is a SAN with the given IP addresses. */
function certificateWithIps(ips: readonly string[]): string {
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const name = encodeName([{ type: OID.commonName, value: "san-ip" }]);
  const der = buildCertificate(
    {
      serial: randomSerial(),
      issuer: name,
      subject: name,
      notBefore: new Date(Date.UTC(2030, 0, 1)),
      notAfter: new Date(Date.UTC(2030, 0, 2)),
      spki: publicKey.export({ type: "spki", format: "der" }),
      extensions: [subjectAltName(ips.map((ip) => ({ ip })))],
    },
    { key: privateKey, scheme: signatureSchemeFor(privateKey) },
  );
  return writeTemp(tmp.path, `ours-${ips.length}.pem`, toPem("CERTIFICATE", der));
}

/** The extnValue (here DER GeneralNames) of an encoded Extension. */
function extensionValue(extension: Buffer): Buffer {
  return content(children(readRoot(extension)).at(-1)!);
}

describe("iPAddress SANs", () => {
  it("every IPv4 and IPv6 form encodes to its RFC 4291 octets", () => {
    for (const [text, hex] of VALID) assert.equal(ipAddressBytes(text).toString("hex"), hex, text);
  });

  it("OpenSSL encodes the same octets for the same text (req -addext subjectAltName)", () => {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const key = writeTemp(tmp.path, "key.pem", privateKey.export({ type: "pkcs8", format: "pem" }));
    const theirsPath = join(tmp.path, "theirs.der");
    const san = `subjectAltName=${VALID.map(([text]) => `IP:${text}`).join(",")}`;
    const r = openssl([
      "req",
      "-x509",
      "-key",
      key,
      "-subj",
      "/CN=san-ip",
      "-days",
      "1",
      "-addext",
      san,
      "-outform",
      "DER",
      "-out",
      theirsPath,
    ]);
    assertOk(r, "openssl req -addext");
    const theirs = parseCertificate(readFileSync(theirsPath)).extensions.get(OID.subjectAltName)!.value;
    const ourValue = extensionValue(subjectAltName(VALID.map(([text]) => ({ ip: text }))));
    assert.equal(ourValue.toString("hex"), theirs.toString("hex"));
  });

  it("openssl x509 -text shows each address, and -checkip matches each form against the certificate", () => {
    const path = certificateWithIps(VALID.map(([text]) => text));
    const r = openssl(["x509", "-in", path, "-noout", "-ext", "subjectAltName"]);
    assertOk(r, "openssl x509 -ext subjectAltName");
    const shown = r.stdout
      .split("\n")[1]!
      .trim()
      .split(", ")
      .map((s) => s.replace(/^IP Address:/, ""));
    assert.deepEqual(
      shown,
      VALID.map(([, , printed]) => printed),
    );
    for (const [text] of VALID) {
      const check = openssl(["x509", "-in", path, "-noout", "-checkip", text]);
      assert.match(check.stdout, /does match certificate/, `${text}: ${check.stdout}${check.stderr}`);
    }
    const other = certificateWithIps(["::ffff:10.0.0.2"]);
    const control = openssl(["x509", "-in", other, "-noout", "-checkip", "::ffff:10.0.0.1"]);
    assert.match(control.stdout, /does NOT match/, "control: another address does not match");
  });

  it("refuses zone ids and malformed addresses with a RangeError naming the input", () => {
    for (const text of INVALID) {
      assert.throws(
        () => ipAddressBytes(text),
        (e: unknown) => e instanceof RangeError && e.message.includes(text),
        JSON.stringify(text),
      );
      assert.throws(() => subjectAltName([{ ip: text }]), RangeError, JSON.stringify(text));
    }
    assert.throws(() => ipAddressBytes("fe80::1%eth0"), /zone id/);
  });
});
