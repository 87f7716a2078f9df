// One strict reader for absolute times (x509/time.ts), used by the certificate, CRL and OCSP
// parsers and by `audit list --since`. The certificate parser used to roll "month 13" over into
// January of the next year (Date.UTC), and --since took "2026-02-30" as March 1 and "1" as 2001.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { describe, it } from "node:test";
import { DerError, readRoot } from "../src/der/reader.js";
import { OID } from "../src/der/oids.js";
import { generalizedTime, nullValue, octetString, oid, sequence, time, unsignedInteger } from "../src/der/writer.js";
import { signatureSchemeFor } from "../src/x509/algorithms.js";
import { buildCertificate, parseCertificate, randomSerial, type Signer } from "../src/x509/certificate.js";
import { CrlError, buildCrl, parseCrl } from "../src/x509/crl.js";
import { encodeName } from "../src/x509/name.js";
import { buildOcspResponse, ocspResponder } from "../src/x509/ocsp-response.js";
import { toPem } from "../src/x509/pem.js";
import { GENERALIZED_TIME_TAG, InvalidTime, UTC_TIME_TAG, parseRfc3339, readX509Time, utcMs } from "../src/x509/time.js";
import { assertOneLineError, cli, openssl, tempFleet } from "./helpers.js";
import { OcspResponseError, parseOcspResponse } from "./support/ocsp-response.js";

const iso = (ms: number): string => new Date(ms).toISOString();

/** readX509Time over a DER time element. */
function readDer(der: Buffer): number {
  const e = readRoot(der);
  return readX509Time(e.tag, e.source, e.contentStart, e.end);
}

const derTime = (tag: number, text: string): Buffer => Buffer.concat([Buffer.from([tag, text.length]), Buffer.from(text, "latin1")]);

function invalidTime(fn: () => unknown, problem: InvalidTime["problem"], label: string): void {
  assert.throws(fn, (e: unknown) => e instanceof InvalidTime && e.problem === problem, label);
}

describe("utcMs: only real calendar times", () => {
  it("accepts real dates, leap days included, and years 0000-9999", () => {
    assert.equal(iso(utcMs(2024, 2, 29, 23, 59, 59)), "2024-02-29T23:59:59.000Z");
    assert.equal(iso(utcMs(2000, 2, 29, 0, 0, 0)), "2000-02-29T00:00:00.000Z", "divisible by 400: leap");
    assert.equal(iso(utcMs(0, 2, 29, 0, 0, 0)), "0000-02-29T00:00:00.000Z", "year 0 is a leap year, not 1900");
    assert.equal(iso(utcMs(49, 12, 31, 1, 2, 3, 456)), "0049-12-31T01:02:03.456Z");
    assert.equal(iso(utcMs(9999, 12, 31, 23, 59, 59, 999)), "9999-12-31T23:59:59.999Z");
  });

  it("refuses month 13, day 32, Feb 30, Feb 29 of common years, hour 24, minute 60, leap second 60", () => {
    const bad: Array<[string, number[]]> = [
      ["month 0", [2026, 0, 1, 0, 0, 0]],
      ["month 13", [2026, 13, 1, 0, 0, 0]],
      ["day 0", [2026, 1, 0, 0, 0, 0]],
      ["day 32", [2026, 1, 32, 0, 0, 0]],
      ["April 31", [2026, 4, 31, 0, 0, 0]],
      ["Feb 30", [2024, 2, 30, 0, 0, 0]],
      ["Feb 29 2023", [2023, 2, 29, 0, 0, 0]],
      ["Feb 29 2100", [2100, 2, 29, 0, 0, 0]],
      ["hour 24", [2026, 1, 1, 24, 0, 0]],
      ["minute 60", [2026, 1, 1, 0, 60, 0]],
      ["leap second", [2016, 12, 31, 23, 59, 60]],
      ["year 10000", [10000, 1, 1, 0, 0, 0]],
      ["NaN", [NaN, 1, 1, 0, 0, 0]],
    ];
    for (const [label, [y, mo, d, h, mi, s]] of bad) assert.ok(Number.isNaN(utcMs(y!, mo!, d!, h!, mi!, s!)), label);
  });
});

describe("readX509Time (RFC 5280 4.1.2.5)", () => {
  it("reads back what der/writer time() and generalizedTime() write, across both forms and their boundary", () => {
    const instants = [
      Date.UTC(1950, 0, 1),
      Date.UTC(1949, 11, 31, 23, 59, 59),
      Date.UTC(2024, 1, 29, 12, 0, 0),
      Date.UTC(2049, 11, 31, 23, 59, 59),
      Date.UTC(2050, 0, 1),
      Date.UTC(2100, 1, 28, 23, 59, 59),
      -62167219200000, // 0000-01-01
      -62162035200000, // 0000-03-01, after year 0's Feb 29
      253402300799000, // 9999-12-31T23:59:59Z
    ];
    for (const ms of instants) {
      assert.equal(readDer(time(new Date(ms))), ms, iso(ms));
      assert.equal(readDer(generalizedTime(new Date(ms))), ms, `${iso(ms)} as GeneralizedTime`);
    }
    assert.equal(iso(readDer(derTime(UTC_TIME_TAG, "500101000000Z"))), "1950-01-01T00:00:00.000Z", "UTCTime 50 is 1950");
    assert.equal(iso(readDer(derTime(UTC_TIME_TAG, "491231235959Z"))), "2049-12-31T23:59:59.000Z", "UTCTime 49 is 2049");
  });

  it("refuses times that do not exist", () => {
    for (const [tag, text] of [
      [UTC_TIME_TAG, "261301000000Z"], // month 13
      [UTC_TIME_TAG, "260132000000Z"], // day 32
      [UTC_TIME_TAG, "260230000000Z"], // Feb 30
      [UTC_TIME_TAG, "230229000000Z"], // Feb 29 2023
      [UTC_TIME_TAG, "260101240000Z"], // hour 24
      [UTC_TIME_TAG, "260101006000Z"], // minute 60
      [UTC_TIME_TAG, "161231235960Z"], // leap second
      [GENERALIZED_TIME_TAG, "20261301000000Z"],
      [GENERALIZED_TIME_TAG, "21000229000000Z"],
      [GENERALIZED_TIME_TAG, "20260101240000Z"],
      [GENERALIZED_TIME_TAG, "20161231235960Z"],
    ] as const)
      invalidTime(() => readDer(derTime(tag, text)), "value", text);
  });

  it("refuses what RFC 5280 does not allow: no seconds, fractions, offsets, lower-case z, non-digits, other tags", () => {
    for (const [tag, text] of [
      [UTC_TIME_TAG, "2601011200Z"], // no seconds
      [UTC_TIME_TAG, "260101120000"], // no Z
      [UTC_TIME_TAG, "260101120000z"],
      [UTC_TIME_TAG, "260101120000+0100"],
      [UTC_TIME_TAG, "26010112000aZ"],
      [UTC_TIME_TAG, "2601011200-0Z"],
      [UTC_TIME_TAG, " 60101120000Z"],
      [UTC_TIME_TAG, "20260101120000Z"], // a GeneralizedTime text in a UTCTime
      [GENERALIZED_TIME_TAG, "20260101120000.5Z"],
      [GENERALIZED_TIME_TAG, "202601011200Z"],
      [GENERALIZED_TIME_TAG, "260101120000Z"],
      [GENERALIZED_TIME_TAG, "2026010112000+Z"],
      [0x04, "260101120000Z"], // OCTET STRING
    ] as const)
      invalidTime(() => readDer(derTime(tag, text)), "form", `${tag.toString(16)} ${text}`);
  });
});

// Each parser that reads times from DER must take the same decisions; inputs are patched into
// signed objects in place (same length), so only the time differs.
const SAME_LENGTH_VARIANTS: Array<[string, "ok" | "bad"]> = [
  ["300102030405Z", "ok"],
  ["240229000000Z", "ok"],
  ["301302030405Z", "bad"], // month 13: the certificate parser read it as 2031-01-02
  ["300132030405Z", "bad"],
  ["300230030405Z", "bad"],
  ["300102240405Z", "bad"],
  ["300102036005Z", "bad"],
  ["300102030460Z", "bad"],
  ["3001020304O5Z", "bad"],
];
const asGeneralized = (utc: string): string => `20${utc}`;

function patched(der: Buffer, from: string, to: string): Buffer {
  const at = der.indexOf(Buffer.from(from, "latin1"));
  assert.ok(at > 0 && der.indexOf(Buffer.from(from, "latin1"), at + 1) === -1, `${from} occurs once`);
  const copy = Buffer.from(der);
  copy.write(to, at, "latin1");
  return copy;
}

function testSigner(): { signer: Signer; spki: Buffer } {
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { signer: { key: privateKey, scheme: signatureSchemeFor(privateKey) }, spki: publicKey.export({ type: "spki", format: "der" }) };
}

function certificateWithNotAfter(notAfter: Date): Buffer {
  const { signer, spki } = testSigner();
  const name = encodeName([{ type: OID.commonName, value: "time test" }]);
  const notBefore = new Date(Date.UTC(2020, 0, 1));
  return buildCertificate({ serial: randomSerial(), issuer: name, subject: name, notBefore, notAfter, spki, extensions: [] }, signer);
}

function ocspThisUpdate(der: Buffer): Date {
  const parsed = parseOcspResponse(der);
  assert.ok("responses" in parsed);
  return parsed.responses[0]!.thisUpdate;
}

describe("every DER time parser takes the same decisions", () => {
  const utcCert = certificateWithNotAfter(new Date(Date.UTC(2030, 0, 1, 0, 0, 0)));
  const genCert = certificateWithNotAfter(new Date(Date.UTC(2050, 0, 1, 0, 0, 0)));
  const { signer } = testSigner();
  const issuer = { certificate: parseCertificate(utcCert), signer };
  const crl = buildCrl(issuer, {
    crlNumber: 1n,
    thisUpdate: new Date(Date.UTC(2029, 0, 1)),
    nextUpdate: new Date(Date.UTC(2029, 0, 8)),
    entries: [{ serialHex: "01", revokedAt: new Date(Date.UTC(2030, 0, 1)) }],
  });
  const [nameHash, keyHash] = [Buffer.alloc(32, 1), Buffer.alloc(32, 2)];
  const serial = unsignedInteger(Buffer.from([7]));
  const certId = sequence(sequence(oid(OID.sha256), nullValue()), octetString(nameHash), octetString(keyHash), serial);
  const ocsp = buildOcspResponse(ocspResponder(issuer.certificate, signer), {
    producedAt: new Date(Date.UTC(2029, 0, 1)),
    responses: [
      {
        certId: { hashAlgorithm: "sha256", issuerNameHash: nameHash, issuerKeyHash: keyHash, serialHex: "07", der: certId },
        status: { status: "good" },
        thisUpdate: new Date(Date.UTC(2030, 0, 1)),
      },
    ],
    includeCertificate: false,
  });

  for (const [text, verdict] of SAME_LENGTH_VARIANTS) {
    it(`${text} / ${asGeneralized(text)}: ${verdict === "ok" ? "read alike" : "refused"} by the certificate, CRL and OCSP parsers`, () => {
      const cases: Array<[string, () => Date, new (...args: never[]) => Error]> = [
        ["certificate UTCTime", () => parseCertificate(patched(utcCert, "300101000000Z", text)).notAfter, DerError],
        ["certificate GeneralizedTime", () => parseCertificate(patched(genCert, "20500101000000Z", `20${text}`)).notAfter, DerError],
        ["CRL revocationDate", () => parseCrl(patched(crl, "300101000000Z", text)).entries[0]!.revokedAt, CrlError],
        ["OCSP thisUpdate", () => ocspThisUpdate(patched(ocsp, "20300101000000Z", asGeneralized(text))), OcspResponseError],
      ];
      for (const [where, read, errorClass] of cases) {
        if (verdict === "bad") {
          assert.throws(read, errorClass, where);
          continue;
        }
        const want = readDer(derTime(UTC_TIME_TAG, text));
        assert.equal(read().getTime(), want, where);
      }
      if (verdict === "bad") {
        const crlInput = patched(crl, "300101000000Z", text);
        assert.throws(
          () => parseCrl(crlInput),
          (e: unknown) => e instanceof CrlError && e.reason === "invalid-time",
        );
        const ocspInput = patched(ocsp, "20300101000000Z", asGeneralized(text));
        assert.throws(
          () => parseOcspResponse(ocspInput),
          (e: unknown) => e instanceof OcspResponseError && e.reason === "bad-time",
        );
      }
    });
  }

  it("openssl, too, refuses a certificate whose notAfter has month 13", () => {
    const pem = toPem("CERTIFICATE", patched(utcCert, "300101000000Z", "301302030405Z"));
    const r = openssl(["x509", "-noout", "-enddate"], pem);
    assert.match(r.stdout + r.stderr, /Bad time value/);
  });
});

describe("parseRfc3339 (absolute times typed by operators)", () => {
  it("accepts RFC 3339 times with Z or an offset, optional seconds and fractions, and dates alone (00:00 UTC)", () => {
    const good: Array<[string, string]> = [
      ["2026-05-01T12:00:00Z", "2026-05-01T12:00:00.000Z"],
      ["2026-05-01t12:00:00z", "2026-05-01T12:00:00.000Z"],
      ["2026-05-01T12:00Z", "2026-05-01T12:00:00.000Z"],
      ["2026-05-01T14:00:00+02:00", "2026-05-01T12:00:00.000Z"],
      ["2026-05-01T00:30:00-01:30", "2026-05-01T02:00:00.000Z"],
      ["2026-11-22T00:36:07.123Z", "2026-11-22T00:36:07.123Z"], // the audit log's own `at` format
      ["2026-11-22T00:36:07.123456789Z", "2026-11-22T00:36:07.123Z"], // truncated, not rounded
      ["2026-11-22T00:36:07.9999Z", "2026-11-22T00:36:07.999Z"],
      ["2024-02-29", "2024-02-29T00:00:00.000Z"],
      ["2026-12-31T23:59:59Z", "2026-12-31T23:59:59.000Z"],
    ];
    for (const [text, want] of good) assert.equal(parseRfc3339(text).toISOString(), want, text);
  });

  it("refuses dates and times that do not exist, leap seconds and bad offsets", () => {
    for (const text of [
      "2026-13-01",
      "2026-02-30T00:00:00Z",
      "2023-02-29",
      "2026-01-32",
      "2026-04-31T00:00:00Z",
      "2026-01-01T24:00:00Z",
      "2026-01-01T23:60:00Z",
      "2016-12-31T23:59:60Z",
      "2026-01-01T00:00:00+24:00",
      "2026-01-01T00:00:00+01:60",
    ])
      invalidTime(() => parseRfc3339(text), "value", text);
  });

  it("refuses a time of day without a zone (UTC or local?), garbage, and what new Date() guesses at", () => {
    for (const text of [
      "2026-05-01T12:00:00",
      "2026-05-01 12:00:00",
      "2026-05-01T12:00",
      "1",
      "2026",
      "2026-05",
      "yesterday",
      "Jan 5 2026",
      "5/1/2026",
      "2026-5-1",
      "+002026-05-01T00:00:00Z",
      "2026-05-01T12:00:00 Z",
      " 2026-05-01",
      "2026-05-01T12:00:00+0200",
      "",
    ])
      invalidTime(() => parseRfc3339(text), "form", JSON.stringify(text));
    assert.throws(() => parseRfc3339("2026-05-01T12:00:00"), /no time zone/);
  });
});

describe("audit list --since uses the strict parser", () => {
  it("a non-existent date or a zoneless time is a one-line error; a valid date still lists", async () => {
    const ctx = await tempFleet();
    try {
      for (const since of ["2026-02-30T00:00:00Z", "2026-05-01T12:00:00"])
        assertOneLineError(cli(["audit", "list", "--dir", ctx.dir, "--since", since]), /--since/);
      const ok = cli(["audit", "list", "--dir", ctx.dir, "--json", "--since", "2000-01-01"]);
      assert.equal(ok.status, 0, ok.stderr);
      assert.ok((JSON.parse(ok.stdout) as unknown[]).length > 0, "init's events are listed");
    } finally {
      await ctx.close();
    }
  });
});
