// DER writer/reader: round trips, exact encodings (cross-checked with openssl asn1parse), and the
// reader's strictness on everything DER forbids.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import {
  DerError,
  children,
  content,
  expectTag,
  readBitStringBytes,
  readElement,
  readOid,
  readRoot,
  readSmallInteger,
  readUnsignedInteger,
} from "../src/der/reader.js";
import {
  TAG,
  bitString,
  boolean,
  generalizedTime,
  headerLength,
  ia5String,
  namedBitString,
  nullValue,
  octetString,
  oid,
  printableString,
  sequence,
  smallInteger,
  time,
  unsignedInteger,
  writeHeader,
} from "../src/der/writer.js";
import { OID } from "../src/der/oids.js";
import { openssl } from "./helpers.js";

const hex = (b: Buffer): string => b.toString("hex");
const h = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");

/** Runs fn, expects a DerError whose message matches `pattern`; returns it for further checks. */
function derError(fn: () => unknown, pattern: RegExp): DerError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(
    caught instanceof DerError,
    `expected DerError, got ${caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught)}`,
  );
  assert.match(caught.message, pattern);
  assert.match(caught.message, / at byte \d+$/, "DerError messages carry the offset");
  return caught;
}

/** openssl asn1parse over DER given on stdin. */
function asn1parse(der: Buffer): string {
  const r = openssl(["asn1parse", "-inform", "DER"], der);
  assert.equal(r.status, 0, `openssl asn1parse failed: ${r.stderr}`);
  return r.stdout;
}

describe("DER INTEGER", () => {
  const cases: Array<[string, string, string]> = [
    // magnitude in, full TLV out, magnitude read back
    ["00", "020100", "00"],
    ["01", "020101", "01"],
    ["7f", "02017f", "7f"],
    ["80", "02020080", "80"], // high bit set: a 0x00 sign octet is required
    ["ff", "020200ff", "ff"],
    ["0100", "02020100", "0100"],
    ["000001", "020101", "01"], // leading zero octets are stripped
    ["00000080", "02020080", "80"], // ... but one is kept when the high bit needs it
    ["0000", "020100", "00"], // zero stays one octet
    ["8000000000000000000000000000000001", "0212008000000000000000000000000000000001", "8000000000000000000000000000000001"],
  ];
  for (const [magnitude, encoded, readBack] of cases) {
    it(`unsignedInteger(${magnitude}) is ${encoded} and reads back as ${readBack}`, () => {
      const der = unsignedInteger(h(magnitude));
      assert.equal(hex(der), encoded);
      assert.equal(hex(readUnsignedInteger(readRoot(der))), readBack);
    });
  }

  it("round-trips random magnitudes, always minimal and positive", () => {
    for (let i = 0; i < 500; i++) {
      const m = randomBytes(1 + (i % 40));
      if (i % 3 === 0) m[0] = 0; // exercise stripping
      if (i % 5 === 0) m[0]! |= 0x80; // exercise padding
      const der = unsignedInteger(m);
      const c = content(readRoot(der));
      // minimal: never a redundant leading 0x00
      if (c.length > 1) assert.ok(!(c[0] === 0 && !(c[1]! & 0x80)), `non-minimal ${hex(der)}`);
      assert.equal(c[0]! & 0x80, 0, "never negative");
      const stripped = BigInt("0x" + (hex(m) || "0"));
      assert.equal(BigInt("0x" + hex(readUnsignedInteger(readRoot(der)))), stripped);
    }
  });

  it("smallInteger encodes boundaries and readSmallInteger reads them back", () => {
    const values: Array<[number, string]> = [
      [0, "020100"],
      [127, "02017f"],
      [128, "02020080"],
      [255, "020200ff"],
      [256, "02020100"],
      [65535, "020300ffff"],
      [0x7fffffff, "02047fffffff"],
    ];
    for (const [v, encoded] of values) {
      assert.equal(hex(smallInteger(v)), encoded, `smallInteger(${v})`);
      assert.equal(readSmallInteger(readRoot(smallInteger(v))), v);
    }
    for (const bad of [-1, 1.5, 0x80000000, Number.NaN]) assert.throws(() => smallInteger(bad), RangeError, `smallInteger(${bad})`);
  });

  it("openssl agrees on the encoding of a padded INTEGER", () => {
    const out = asn1parse(unsignedInteger(h("80ff")));
    assert.match(out, /l=\s*3 prim: INTEGER\s+:80FF/);
  });
});

describe("DER OBJECT IDENTIFIER", () => {
  const known: Array<[string, string]> = [
    [OID.sha256WithRSAEncryption, "06092a864886f70d01010b"],
    [OID.basicConstraints, "0603551d13"],
    [OID.ecPublicKey, "06072a8648ce3d0201"],
    [OID.ed25519, "06032b6570"],
    ["0.0", "060100"],
    ["0.39", "060127"],
    ["1.39", "06014f"],
    ["2.999.3", "0603883703"], // X.690 8.19.5 example: first subidentifier 1079 takes two octets
    ["2.5.4.3", "0603550403"],
  ];
  for (const [dotted, encoded] of known) {
    it(`${dotted} encodes as ${encoded} and decodes back`, () => {
      assert.equal(hex(oid(dotted)), encoded);
      assert.equal(readOid(readRoot(oid(dotted))), dotted);
    });
  }

  it("round-trips large arcs (128-bit UUID arc, 2^64, 2^32, 127/128 boundaries)", () => {
    const uuid = BigInt("0x" + "f81d4fae7dec11d0a76500a0c91e6bf6");
    const samples = [
      `2.25.${uuid}`,
      `1.3.6.1.4.1.${2n ** 64n}`,
      `1.2.${2 ** 32}.${2 ** 32 - 1}`,
      "1.2.127.128.16383.16384.2097151.2097152",
      "2.40.0", // first subidentifier 120, still one octet
      "2.47.1", // first subidentifier 127
      "2.48.1", // first subidentifier 128: two octets
      "2.100000",
    ];
    for (const s of samples) assert.equal(readOid(readRoot(oid(s))), s, s);
    // 2^64 = 2 * 128^9: ten base-128 digits, 0x82 then nine zero digits
    assert.equal(hex(oid("1.2.18446744073709551616")), "060b2a82808080808080808000");
  });

  it("openssl asn1parse reads large arcs the same way", () => {
    const uuidArc = "12980742146337069071326240823050241";
    const der = sequence(oid("2.999.3"), oid(`2.25.${uuidArc}`), oid("1.2.127.128.16384"));
    const out = asn1parse(der);
    assert.match(out, /OBJECT\s+:2\.999\.3\n/);
    assert.match(out, new RegExp(`OBJECT\\s+:2\\.25\\.${uuidArc}\\n`));
    assert.match(out, /OBJECT\s+:1\.2\.127\.128\.16384\n/);
  });

  it("oid() rejects text that is not a dotted OID", () => {
    for (const bad of ["", "1", "1.", ".1", "1..2", "1.2.a", "1.-2", "1.2 ", "x"])
      assert.throws(() => oid(bad), RangeError, JSON.stringify(bad));
  });

  it("oid() rejects arcs that have no encoding (first arc > 2, second arc >= 40 under 0 and 1)", () => {
    // X.660: the first arc is 0, 1 or 2; below 0 and 1 the second arc is 0..39. Encoding "1.40"
    // as subidentifier 80 silently produces 2.0, so a round trip would change the OID.
    for (const bad of ["1.40", "0.40", "3.1", "1.2000"]) assert.throws(() => oid(bad), RangeError, bad);
  });

  it("the reader rejects non-minimal, truncated and empty OIDs", () => {
    derError(() => readOid(readRoot(h("0604 2a 8086 48"))), /non-minimal OID arc/); // 0x80 leading octet
    derError(() => readOid(readRoot(h("0603 808001"))), /non-minimal OID arc/); // ... also in the first subidentifier
    derError(() => readOid(readRoot(h("0602 2a86"))), /truncated OID arc/); // last octet has the continuation bit
    derError(() => readOid(readRoot(h("0600"))), /empty OBJECT IDENTIFIER/);
    derError(() => readOid(readRoot(h("0401 00"))), /expected OBJECT IDENTIFIER \(tag 0x6\), found tag 0x4/);
  });
});

describe("DER lengths", () => {
  const cases: Array<[number, string]> = [
    [0, "04 00"],
    [127, "04 7f"],
    [128, "04 8180"],
    [255, "04 81ff"],
    [256, "04 820100"],
    [65535, "04 82ffff"],
    [65536, "04 83010000"],
    [70000, "04 83011170"],
  ];
  for (const [length, header] of cases) {
    it(`length ${length} uses header ${header} and reads back`, () => {
      const body = randomBytes(length);
      const der = octetString(body);
      const expectedHeader = h(header);
      assert.equal(hex(der.subarray(0, expectedHeader.length)), hex(expectedHeader));
      assert.equal(der.length, expectedHeader.length + length);
      const e = readRoot(der);
      assert.equal(e.tag, TAG.OCTET_STRING);
      assert.equal(e.contentStart, expectedHeader.length);
      assert.equal(e.end, der.length);
      assert.ok(content(e).equals(body));
    });
  }

  it("tlv() accepts a list of parts and nests correctly past the 1- and 2-octet length forms", () => {
    const inner = Array.from({ length: 300 }, (_, i) => smallInteger(i)); // > 256 bytes of content
    const der = sequence(...inner, octetString(Buffer.alloc(65536)));
    const kids = children(readRoot(der));
    assert.equal(kids.length, 301);
    kids.slice(0, 300).forEach((k, i) => assert.equal(readSmallInteger(k), i));
    assert.equal(content(kids[300]!).length, 65536);
    // openssl agrees on the structure
    const out = asn1parse(der);
    assert.match(out, new RegExp(`^\\s*0:d=0\\s+hl=5 l=${der.length - 5} cons: SEQUENCE`));
    assert.match(out, /d=1\s+hl=2 l=\s*2 prim: INTEGER\s+:012B\n/); // 299 needs two octets
    assert.match(out, /hl=5 l=65536 prim: OCTET STRING/);
  });

  it("writeHeader/headerLength (the one header writer, also behind tlv) at every length-form boundary", () => {
    const boundaries: Array<[number, string]> = [
      ...cases,
      [0xffffff, "30 83ffffff"],
      [0x1000000, "30 8401000000"],
      [0xffffffff, "30 84ffffffff"],
    ];
    for (const [length, header] of boundaries) {
      const expected = h(`30${header.slice(3)}`);
      assert.equal(headerLength(length), expected.length, `headerLength(${length})`);
      // Written mid-buffer, as the CRL and OCSP encoders do: returns the position after the header.
      const out = Buffer.alloc(3 + expected.length + 2, 0xee);
      assert.equal(writeHeader(out, 3, TAG.SEQUENCE, length), 3 + expected.length);
      assert.equal(hex(out.subarray(3, 3 + expected.length)), hex(expected), `header for ${length}`);
      assert.equal(hex(out.subarray(0, 3)) + hex(out.subarray(3 + expected.length)), "eeeeeeeeee"); // nothing else touched
    }
    assert.throws(() => writeHeader(Buffer.alloc(8), 0, TAG.SEQUENCE, 2 ** 32), RangeError);
  });

  it("the reader accepts 3- and 4-octet length forms", () => {
    const body = Buffer.alloc(65536); // 3 length octets
    assert.equal(readRoot(Buffer.concat([h("04 83010000"), body])).end, 5 + body.length);
    const big = Buffer.alloc(0x01000000 + 6);
    big.set(h("04 8401000000"));
    assert.equal(readRoot(big).end, big.length);
  });
});

describe("DER times (RFC 5280 4.1.2.5)", () => {
  const cases: Array<[string, "UTCTIME" | "GENERALIZEDTIME", string]> = [
    ["1950-01-01T00:00:00Z", "UTCTIME", "500101000000Z"],
    ["1949-12-31T23:59:59Z", "GENERALIZEDTIME", "19491231235959Z"],
    ["2026-03-04T05:06:07.999Z", "UTCTIME", "260304050607Z"], // fractions are dropped, not rounded
    ["2049-12-31T23:59:59Z", "UTCTIME", "491231235959Z"],
    ["2050-01-01T00:00:00Z", "GENERALIZEDTIME", "20500101000000Z"],
    ["9999-12-31T23:59:59Z", "GENERALIZEDTIME", "99991231235959Z"],
  ];
  for (const [iso, kind, text] of cases) {
    it(`${iso} is ${kind} ${text}`, () => {
      const der = time(new Date(iso));
      const e = readRoot(der);
      assert.equal(e.tag, kind === "UTCTIME" ? TAG.UTC_TIME : TAG.GENERALIZED_TIME);
      assert.equal(content(e).toString("latin1"), text);
      assert.match(asn1parse(der), new RegExp(`${kind}\\s+:${text}`));
    });
  }

  it("generalizedTime() always writes GeneralizedTime", () => {
    const e = readRoot(generalizedTime(new Date("2026-01-02T03:04:05Z")));
    assert.equal(e.tag, TAG.GENERALIZED_TIME);
    assert.equal(content(e).toString("latin1"), "20260102030405Z");
  });
});

describe("DER other primitives", () => {
  it("boolean, null, octet string, bit string", () => {
    assert.equal(hex(boolean(true)), "0101ff");
    assert.equal(hex(boolean(false)), "010100");
    assert.equal(hex(nullValue()), "0500");
    assert.equal(hex(octetString(h("0102"))), "04020102");
    assert.equal(hex(bitString(h("abcd"))), "030300abcd");
    assert.equal(hex(readBitStringBytes(readRoot(bitString(h("abcd"))))), "abcd");
  });

  it("namedBitString drops trailing zero bits (X.690 11.2.2)", () => {
    assert.equal(hex(namedBitString([0])), "03020780"); // digitalSignature
    assert.equal(hex(namedBitString([5, 6])), "03020106"); // keyCertSign, cRLSign
    assert.equal(hex(namedBitString([7])), "03020001");
    assert.equal(hex(namedBitString([8])), "0303070080");
    assert.equal(hex(namedBitString([])), "030100");
  });

  it("string types enforce their alphabets", () => {
    assert.equal(hex(printableString("US")), "13025553");
    assert.throws(() => printableString("a@b"), RangeError);
    assert.throws(() => printableString("ä"), RangeError);
    assert.equal(hex(ia5String("a@b")), "1603614062");
    assert.throws(() => ia5String("é"), RangeError);
  });

  it("expectTag names what it wanted and what it found", () => {
    const e = readRoot(h("0500"));
    assert.equal(expectTag(e, 0x05, "NULL"), e);
    derError(() => expectTag(e, 0x30, "SEQUENCE"), /expected SEQUENCE \(tag 0x30\), found tag 0x5/);
    derError(() => expectTag(undefined, 0x30, "signature"), /missing signature/);
  });
});

describe("DER reader strictness", () => {
  it("rejects indefinite length", () => {
    const err = derError(() => readRoot(h("3080 0500 0000")), /indefinite length is not DER/);
    assert.equal(err.offset, 1);
  });

  it("rejects non-minimal lengths", () => {
    derError(() => readRoot(h("04 8105 0102030405")), /non-minimal length encoding is not DER/); // fits the short form
    derError(() => readRoot(Buffer.concat([h("04 820080"), Buffer.alloc(128)])), /non-minimal length encoding/); // leading zero octet
    derError(() => readRoot(Buffer.concat([h("04 83000100"), Buffer.alloc(256)])), /non-minimal length encoding/);
    derError(() => readRoot(h("04 8100")), /non-minimal length encoding/);
  });

  it("rejects lengths of more than four octets", () => {
    derError(() => readRoot(h("04 850000000001 00")), /length too large/);
  });

  it("rejects truncated elements", () => {
    derError(() => readRoot(Buffer.alloc(0)), /unexpected end of data \(truncated\)/);
    derError(() => readRoot(h("30")), /unexpected end of data in length \(truncated\)/);
    derError(() => readRoot(h("04 82 01")), /unexpected end of data in length \(truncated\)/);
    const err = derError(() => readRoot(h("04 05 010203")), /element of length 5 runs past the end of its container \(truncated\)/);
    assert.equal(err.offset, 0);
    // a valid element cut in half
    const whole = sequence(oid(OID.sha256WithRSAEncryption), nullValue(), octetString(randomBytes(300)));
    derError(() => readRoot(whole.subarray(0, whole.length >> 1)), /truncated/);
  });

  it("rejects children that overrun their parent", () => {
    // SEQUENCE of length 4 whose child conditions 4 bytes of content but has 2
    const parent = readRoot(h("3004 0404 0102"));
    derError(() => children(parent), /runs past the end of its container \(truncated\)/);
    // a child whose length octets are cut off by the parent's end
    derError(() => children(readRoot(h("3001 04"))), /unexpected end of data in length/);
  });

  it("rejects trailing bytes after the outer element", () => {
    const err = derError(() => readRoot(h("0500 00")), /^1 trailing bytes after the outer element at byte 2$/);
    assert.equal(err.offset, 2);
    derError(() => readRoot(Buffer.concat([sequence(nullValue()), h("deadbeef")])), /4 trailing bytes/);
  });

  it("rejects multi-byte (high-number) tags", () => {
    derError(() => readRoot(h("1f2100")), /multi-byte tags are not supported/);
  });

  it("rejects negative, non-minimal and empty INTEGERs", () => {
    derError(() => readUnsignedInteger(readRoot(h("020180"))), /negative INTEGER/);
    derError(() => readUnsignedInteger(readRoot(h("0201ff"))), /negative INTEGER/);
    derError(() => readUnsignedInteger(readRoot(h("0202ff7f"))), /negative INTEGER/);
    derError(() => readUnsignedInteger(readRoot(h("0202ff80"))), /non-minimal INTEGER/);
    derError(() => readUnsignedInteger(readRoot(h("02020001"))), /non-minimal INTEGER/);
    derError(() => readUnsignedInteger(readRoot(h("0200"))), /empty INTEGER/);
    derError(() => readSmallInteger(readRoot(h("020701000000000000"))), /INTEGER too large/);
    // and the positive padded form is fine
    assert.equal(hex(readUnsignedInteger(readRoot(h("02020080")))), "80");
  });

  it("rejects BIT STRINGs with unused bits where whole octets are required, and empty ones", () => {
    derError(() => readBitStringBytes(readRoot(h("030207 80"))), /unused bits/);
    derError(() => readBitStringBytes(readRoot(h("0300"))), /empty BIT STRING/);
  });

  it("children() of a primitive element is an error", () => {
    derError(() => children(readRoot(h("0401 00"))), /expected a constructed element/);
  });

  it("readElement honours an explicit limit", () => {
    const buf = h("0403 010203 0500");
    assert.equal(readElement(buf, 0).end, 5);
    derError(() => readElement(buf, 0, 4), /truncated/);
    assert.equal(readElement(buf, 5).tag, 0x05);
  });
});

describe("der/ and x509/ stay pure (ARCHITECTURE: bytes in, bytes out, no I/O, no clock)", () => {
  it("import only node:crypto, isIP from node:net and each other, and never read the clock", () => {
    const root = new URL("../src/", import.meta.url);
    const problems: string[] = [];
    for (const dir of ["der", "x509"])
      for (const file of readdirSync(new URL(`${dir}/`, root)).filter((f) => f.endsWith(".ts"))) {
        const text = readFileSync(new URL(`${dir}/${file}`, root), "utf8");
        for (const [, spec] of text.matchAll(/^(?:import|export)\s[^;]*?from\s+"([^"]+)"/gm)) {
          const allowed =
            spec === "node:crypto" || spec === "node:net" || /^\.\/[\w-]+\.js$/.test(spec!) || /^\.\.\/(der|x509)\/[\w-]+\.js$/.test(spec!);
          if (!allowed) problems.push(`${dir}/${file} imports ${spec}`);
        }
        if (/from "node:net"/.test(text) && !/import \{ isIP \} from "node:net"/.test(text))
          problems.push(`${dir}/${file}: more than isIP from node:net`);
        for (const clock of ["Date.now(", "new Date()", "performance.now(", "process."])
          if (text.includes(clock)) problems.push(`${dir}/${file} uses ${clock}`);
      }
    assert.deepEqual(problems, []);
  });
});
