// EST CSR attributes (RFC 7030 4.5.2): round trips, what fleetpki announces (and that it
// matches what parseCsr accepts), and third-party samples from GlobalSign's and Cisco's libest
// test suites, each with its expected outcome checked against openssl asn1parse.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { CsrAttrsError, encodeCsrAttrs, fleetCsrAttrs, parseCsrAttrs, type CsrAttr } from "../src/x509/csrattrs.js";
import { Base64Error, fromBase64Body, toBase64Body } from "../src/x509/base64.js";
import { CsrError, parseCsr } from "../src/x509/csr.js";
import { boolean, oid, printableString, sequence, set, smallInteger, utf8String } from "../src/der/writer.js";
import { OID } from "../src/der/oids.js";
import { vectorPath, openssl, opensslCsr, tempDir } from "./helpers.js";

const GLOBALSIGN = vectorPath("globalsign");
const LIBEST = vectorPath("libest");

const hex = (b: Buffer): string => b.toString("hex");
const asn1parse = (der: Buffer) => openssl(["asn1parse", "-inform", "DER", "-i"], der);

/** One line per item: "oid <dotted>" or "attr <type> = <hex of each value>". */
function summary(items: readonly CsrAttr[]): string[] {
  return items.map((i) => ("oid" in i ? `oid ${i.oid}` : `attr ${i.type} = ${i.values.map(hex).join(" ")}`));
}

describe("CSR attributes", () => {
  it("round-trips OIDs and Attributes, writing Attribute values in DER SET OF order", () => {
    const items: CsrAttr[] = [
      { oid: OID.challengePassword },
      { type: "2.999.1", values: [utf8String("zeta"), boolean(true), smallInteger(7)] },
      { oid: "2.999.2" },
      { type: OID.extensionRequest, values: [oid(OID.macAddress)] },
    ];
    const der = encodeCsrAttrs(items);
    assert.equal(asn1parse(der).status, 0);
    const parsed = parseCsrAttrs(der);
    assert.deepEqual(parsed, [
      items[0],
      { type: "2.999.1", values: [boolean(true), smallInteger(7), utf8String("zeta")] },
      items[2],
      items[3],
    ]);
    assert.deepEqual(encodeCsrAttrs(parsed), der);
    assert.deepEqual(encodeCsrAttrs([]), Buffer.from([0x30, 0x00]));
    assert.deepEqual(parseCsrAttrs(Buffer.from([0x30, 0x00])), []);
    // The values come back as copies, not views of the input.
    const copy = Buffer.from(der);
    const values = (parseCsrAttrs(copy)[1] as { values: Buffer[] }).values;
    copy.fill(0);
    assert.deepEqual(values[0], boolean(true));
  });

  describe("fleetCsrAttrs", () => {
    it("announces exactly the accepted key types, in RFC 7030 example style", () => {
      const der = fleetCsrAttrs();
      assert.deepEqual(parseCsrAttrs(der), [
        { oid: "1.2.840.10045.4.3.2" }, // ecdsa-with-SHA256
        // id-ecPublicKey { secp384r1, secp256r1 }: SET OF in DER order (shorter encoding first)
        { type: "1.2.840.10045.2.1", values: [Buffer.from("06052b81040022", "hex"), Buffer.from("06082a8648ce3d030107", "hex")] },
        { oid: "1.3.101.112" }, // id-Ed25519
        { type: "1.2.840.113549.1.1.1", values: [Buffer.from("02020800", "hex")] }, // rsaEncryption { INTEGER 2048 }
      ]);
      assert.equal(toBase64Body(der), "MEAGCCqGSM49BAMCMBwGByqGSM49AgExEQYFK4EEACIGCCqGSM49AwEHBgMrZXAw\nEQYJKoZIhvcNAQEBMQQCAggA\n");
      // A fresh copy each time: callers cannot corrupt what the next client gets.
      der.fill(0);
      assert.notDeepEqual(fleetCsrAttrs(), der);
    });

    it("openssl asn1parse accepts it and sees the same structure", () => {
      const r = asn1parse(fleetCsrAttrs());
      assert.equal(r.status, 0, r.stderr);
      const fields = r.stdout
        .trim()
        .split("\n")
        .map((l) =>
          l
            .replace(/^.*?(prim|cons):\s*/, "")
            .replace(/\s+/g, " ")
            .trim(),
        );
      assert.deepEqual(fields, [
        "SEQUENCE",
        "OBJECT :ecdsa-with-SHA256",
        "SEQUENCE",
        "OBJECT :id-ecPublicKey",
        "SET",
        "OBJECT :secp384r1",
        "OBJECT :prime256v1",
        "OBJECT :ED25519",
        "SEQUENCE",
        "OBJECT :rsaEncryption",
        "SET",
        "INTEGER :0800",
      ]);
      // Through the base64 body as a client receives it (asn1parse's default input is base64).
      const fromBody = openssl(["asn1parse", "-i"], toBase64Body(fleetCsrAttrs()));
      assert.equal(fromBody.status, 0, fromBody.stderr);
      assert.equal(fromBody.stdout, r.stdout);
    });

    describe("matches the key policy of parseCsr", () => {
      const tmp = tempDir("fleetpki-csrattrs-");
      after(() => tmp.cleanup());
      const csr = (name: string, keyArgs: string[]): Buffer => readFileSync(opensslCsr(tmp.path, name, keyArgs).csr);

      it("every announced key type is accepted", () => {
        const cases: [string, string[], string][] = [
          ["p256", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "p256"],
          ["p384", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], "p384"],
          ["ed25519", ["-newkey", "ed25519"], "ed25519"],
          ["rsa2048", ["-newkey", "rsa:2048"], "rsa2048"],
        ];
        for (const [name, args, keyType] of cases) assert.equal(parseCsr(csr(name, args)).keyType, keyType, name);
      });

      it("key types just outside the announcement are refused", () => {
        for (const [name, args] of [
          ["p521", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"]],
          ["rsa1024", ["-newkey", "rsa:1024"]],
          ["ed448", ["-newkey", "ed448"]],
        ] as [string, string[]][])
          assert.throws(
            () => parseCsr(csr(name, args)),
            (e: unknown) => e instanceof CsrError && e.reason === "key-type-not-allowed",
            name,
          );
      });
    });
  });

  describe("GlobalSign samples", () => {
    const sample = (name: string): Buffer => readFileSync(join(GLOBALSIGN, `csrattrs-${name}.der`));

    it("empty", () => {
      assert.deepEqual(parseCsrAttrs(sample("empty")), []);
    });

    it("various attribute types: one Attribute with BOOLEAN, INTEGER and PrintableString values", () => {
      const der = sample("various-attribute-types");
      assert.deepEqual(parseCsrAttrs(der), [{ type: "1.2.3.4", values: [boolean(true), smallInteger(42), printableString("beans")] }]);
      assert.deepEqual(encodeCsrAttrs(parseCsrAttrs(der)), der);
    });

    it("the RFC 7030 4.5.2 example", () => {
      const der = sample("rfc7030-example");
      // openssl asn1parse: challengePassword, ecdsa-with-SHA384,
      // { extensionRequest, { macAddress 1.3.6.1.1.1.1.22 } }, { id-ecPublicKey, { secp384r1 } }
      assert.equal(asn1parse(der).status, 0);
      assert.deepEqual(parseCsrAttrs(der), [
        { oid: OID.challengePassword },
        { oid: OID.ecdsaWithSHA384 },
        { type: OID.extensionRequest, values: [oid(OID.macAddress)] },
        { type: OID.ecPublicKey, values: [oid(OID.secp384r1)] },
      ]);
      assert.deepEqual(encodeCsrAttrs(parseCsrAttrs(der)), der);
      // The base64 text printed in RFC 7030 4.5.2 has the same items in another order.
      const rfcText = "MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJ\nBgcrBgEBAQEWBggqhkjOPQQDAw==\n";
      const fromRfc = parseCsrAttrs(fromBase64Body(rfcText));
      assert.deepEqual(summary(fromRfc).sort(), summary(parseCsrAttrs(der)).sort());
    });
  });

  describe("libest us895 samples", () => {
    const samples = JSON.parse(readFileSync(join(LIBEST, "csrattrs-samples.us895.json"), "utf8")) as Record<
      string,
      { base64: string; valid_base64: boolean }
    >;

    // Recurring items of these samples, as summary() prints them.
    const ATTR_2_999_2 = "attr 2.999.2 = 0603883703 0603883704 1319" + hex(Buffer.from("Parse SET as 2.999.2 data"));
    const ATTR_2_999_2_SHORT = "attr 2.999.2 = 0603883703 0603883704 1314" + hex(Buffer.from("Parse SET as 2.999.2"));
    const ATTR_2_999_1 = "attr 2.999.1 = 1319" + hex(Buffer.from("Parse SET as 2.999.1 data"));
    const SHA384 = "oid 2.16.840.1.101.3.4.2.2";
    const BRAINPOOL_P384R1 = "oid 1.3.36.3.3.2.8.1.1.11";
    const MAC = `oid ${OID.macAddress}`;
    const POP = `oid ${OID.challengePassword}`;
    const long1 = (tail: string) =>
      "attr 2.999.1 = " + printableString("Parse SET as 2.999.1 data 123456789012345678901234567890ab" + tail).toString("hex");
    const ATTR_2_999_2_LONG =
      "attr 2.999.2 = 0603883703 0603883704 " + printableString("Parse SET as 2.999.2 " + "1234567890".repeat(6)).toString("hex");
    const NOPOP = [ATTR_2_999_2, SHA384, BRAINPOOL_P384R1, ATTR_2_999_1, MAC];
    const NOPOP_117 = [ATTR_2_999_2_SHORT, SHA384, BRAINPOOL_P384R1, ATTR_2_999_1, MAC, MAC];

    /**
     * What each sample must give, decided by reading it with `openssl asn1parse` (which agrees:
     * it parses exactly the ones listed with items, and fails on TEST_ATTR7 and TEST_ATTR8).
     */
    const EXPECTED: Record<string, string[] | { error: typeof Base64Error | typeof CsrAttrsError; message: RegExp }> = {
      TEST_ATTR_POP: [POP],
      TEST_ATTR_NOPOP: NOPOP,
      TEST_ATTR_NOPOPPOP: [...NOPOP, POP],
      TEST_ATTR_POPADDED: [...NOPOP, POP],
      TEST_ATTR1: [MAC, POP, `oid ${OID.secp384r1}`, SHA384],
      TEST_ATTR2: [],
      // "MA==" is the single byte 0x30
      TEST_ATTR7: { error: CsrAttrsError, message: /malformed DER: unexpected end of data in length \(truncated\)/ },
      TEST_ATTR2_POP: [POP],
      // "MAthisis badsGCSqGSIb3DQEJBw==": marked invalid base64 by libest
      TEST_ATTR8: { error: Base64Error, message: /not a multiple of 4/ },
      TEST_ATTR3: [
        "attr 2.999.2 = " +
          ["2.999.2", "2.999.3", "2.999.4"].map((n) => printableString(`Parse SET as ${n} data`).toString("hex")).join(" "),
        POP,
        ATTR_2_999_1,
        MAC,
      ],
      TEST_ATTR4_122: [...NOPOP, MAC],
      TEST_ATTR4_122POP: [...NOPOP, MAC, POP],
      TEST_ATTR5_117: NOPOP_117,
      TEST_ATTR5_117POP: [...NOPOP_117, POP],
      TEST_ATTR6_116: [
        ATTR_2_999_2_SHORT,
        SHA384,
        BRAINPOOL_P384R1,
        "attr 2.999.1 = 1318" + hex(Buffer.from("Parse SET as 2.999.1 dat")),
        MAC,
        MAC,
      ],
      TEST_ATTR_244: [ATTR_2_999_2_LONG, SHA384, BRAINPOOL_P384R1, long1("1234567890".repeat(3) + "1234"), MAC, MAC],
      TEST_ATTR_245: [ATTR_2_999_2_LONG, SHA384, BRAINPOOL_P384R1, long1("1234567890".repeat(3) + "12345"), MAC, MAC],
      TEST_ATTR_250: [ATTR_2_999_2_LONG, SHA384, BRAINPOOL_P384R1, long1("1234567890".repeat(3) + "1234512345"), MAC, MAC],
      TEST_ATTR_250POP: [ATTR_2_999_2_LONG, SHA384, BRAINPOOL_P384R1, long1("1234567890".repeat(3) + "1234512345"), MAC, MAC, POP],
    };

    it("every sample has an expectation", () => {
      assert.deepEqual(Object.keys(samples).sort(), Object.keys(EXPECTED).sort());
    });

    for (const [name, expected] of Object.entries(EXPECTED)) {
      it(name, () => {
        const sample = samples[name]!;
        if (Array.isArray(expected)) {
          assert.equal(sample.valid_base64, true);
          const der = fromBase64Body(sample.base64);
          const r = asn1parse(der);
          assert.equal(r.status, 0, `openssl asn1parse refuses it: ${r.stderr}`);
          const items = parseCsrAttrs(der);
          assert.deepEqual(summary(items), expected);
          assert.deepEqual(encodeCsrAttrs(items), der, "re-encoding gives the same bytes");
        } else {
          let der: Buffer;
          try {
            der = fromBase64Body(sample.base64);
          } catch (e) {
            assert.ok(e instanceof expected.error, `${String(e)}`);
            assert.match((e as Error).message, expected.message);
            assert.equal(expected.error, Base64Error);
            assert.equal(sample.valid_base64, false);
            return;
          }
          assert.notEqual(asn1parse(der).status, 0, "openssl asn1parse should refuse it too");
          assert.throws(
            () => parseCsrAttrs(der),
            (e: unknown) => e instanceof expected.error && expected.message.test((e as Error).message),
          );
        }
      });
    }
  });

  describe("libest US1159 static csrattrs (openssl asn1parse -genconf)", () => {
    const tmp = tempDir("fleetpki-csrattrs-");
    let der: Buffer;
    before(() => {
      const out = join(tmp.path, "static.der");
      const r = openssl(["asn1parse", "-genconf", join(LIBEST, "US1159__static_csrattrs.txt"), "-noout", "-out", out]);
      assert.equal(r.status, 0, r.stderr);
      der = readFileSync(out);
    });
    after(() => tmp.cleanup());

    it("parses to the configured items", () => {
      // The config sets field6 twice (serialNumber, then ecdsa-with-SHA256); in an openssl config
      // the later value of a repeated name wins, so serialNumber is not in the output.
      assert.deepEqual(summary(parseCsrAttrs(der)), [
        `oid ${OID.macAddress}`,
        "attr 2.999.1 = " + printableString("Parse SET as 2.999.1 data").toString("hex"),
        "attr 2.999.2 = 0603883703 0603883704 " + printableString("Parse SET as 2.999.2 data").toString("hex"),
        `oid ${OID.secp384r1}`,
        `oid ${OID.commonName}`,
        `oid ${OID.ecdsaWithSHA256}`,
      ]);
      assert.deepEqual(encodeCsrAttrs(parseCsrAttrs(der)), der);
    });

    it("survives the README's `| openssl base64` step", () => {
      const b64 = openssl(["base64"], der); // 64-character lines, as libest is given it
      assert.equal(b64.status, 0);
      assert.deepEqual(parseCsrAttrs(fromBase64Body(b64.stdout)), parseCsrAttrs(der));
      assert.deepEqual(fromBase64Body(toBase64Body(der)), der);
    });
  });

  describe("bad input", () => {
    const attr = (...fields: Buffer[]) => sequence(...fields);

    it("parse refuses what is not a CsrAttrs", () => {
      const cases: [Buffer, RegExp][] = [
        [Buffer.alloc(0), /malformed DER: unexpected end of data \(truncated\)/],
        [set(oid("1.2.3")), /expected CsrAttrs SEQUENCE \(tag 0x30\), found tag 0x31/],
        [sequence(smallInteger(5)), /item 0 has tag 0x2, expected an OBJECT IDENTIFIER or an Attribute SEQUENCE/],
        [sequence(oid("1.2.3"), attr(oid("1.2.4"))), /item 1 is an Attribute with 1 fields, expected 2/],
        [sequence(attr(oid("1.2.4"), set(smallInteger(1)), set())), /item 0 is an Attribute with 3 fields/],
        [sequence(attr(oid("1.2.4"), set())), /item 0 \(Attribute 1\.2\.4\) has no values/],
        [sequence(attr(oid("1.2.4"), sequence(smallInteger(1)))), /expected Attribute values SET/],
        [sequence(attr(smallInteger(1), set(smallInteger(1)))), /expected Attribute type/],
        [Buffer.concat([sequence(oid("1.2.3")), Buffer.from([0])]), /1 trailing bytes/],
        [Buffer.from([0x30, 0x03, 0x06, 0x01]), /truncated/],
        [Buffer.from([0x30, 0x80, 0x00, 0x00]), /indefinite length/],
        [Buffer.from([0x30, 0x02, 0x06, 0x00]), /empty OBJECT IDENTIFIER/],
      ];
      for (const [der, message] of cases) assert.throws(() => parseCsrAttrs(der), { name: "CsrAttrsError", message }, hex(der));
    });

    it("encode refuses bad OIDs, Attributes without values and values that are not one DER element", () => {
      assert.throws(() => encodeCsrAttrs([{ oid: "1.2.3" }, { oid: "not.an.oid" }]), {
        name: "CsrAttrsError",
        message: /CSR attribute 1: bad OID not\.an\.oid/,
      });
      assert.throws(() => encodeCsrAttrs([{ type: "3.1", values: [smallInteger(1)] }]), {
        name: "CsrAttrsError",
        message: /first arc must be 0-2/,
      });
      assert.throws(() => encodeCsrAttrs([{ type: "1.2.3", values: [] }]), { name: "CsrAttrsError", message: /needs at least one value/ });
      assert.throws(() => encodeCsrAttrs([{ type: "1.2.3", values: [Buffer.from([0x02, 0x05, 0x01])] }]), {
        name: "CsrAttrsError",
        message: /not exactly one DER element.*truncated/,
      });
      assert.throws(() => encodeCsrAttrs([{ type: "1.2.3", values: [Buffer.concat([smallInteger(1), smallInteger(2)])] }]), {
        name: "CsrAttrsError",
        message: /not exactly one DER element.*trailing bytes/,
      });
    });
  });
});
