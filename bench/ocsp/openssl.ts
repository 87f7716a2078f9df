// The openssl peer: its responder's files (index.txt, a delegated responder certificate), its
// reading of the bench's requests, and `openssl ca -gencrl` over the same entries as fleetpki's CRL.
import { generateKeyPairSync } from "node:crypto";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { layout } from "../../src/authority/layout.js";
import { FleetServices } from "../../src/authority/services.js";
import { parseDuration } from "../../src/config/duration.js";
import { subjectPublicKeyOf } from "../../src/x509/certificate.js";
import { parseCrl, type RevocationReason } from "../../src/x509/crl.js";
import { fromPem, toPem } from "../../src/x509/pem.js";
import { buildOcspResponderCertificate } from "../../src/x509/profiles.js";
import { check, fmtRate } from "../lib.js";
import type { Fixture } from "./fleet.js";
import { NONCE_BYTES } from "./settings.js";

export function openssl(args: readonly string[], timeoutMs = 60_000) {
  return spawnSync("openssl", args, { encoding: "utf8", timeout: timeoutMs, maxBuffer: 256 * 1024 * 1024 });
}

/** YYMMDDHHMMSSZ, the time format of openssl's index.txt (years 1950-2049). */
function indexTime(ms: number): string {
  return new Date(ms).toISOString().replace(/^\d\d(\d\d)-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d).*$/, "$1$2$3$4$5$6Z");
}

/** One line of an openssl CA database (index.txt): status, expiry, revocation[,reason], serial, file, subject. */
export function indexLine(c: {
  serialHex: string;
  notAfter: Date;
  revokedAtMs?: number;
  reason?: RevocationReason;
  subject: string;
}): string {
  const revoked =
    c.revokedAtMs === undefined ? "" : indexTime(c.revokedAtMs) + (c.reason && c.reason !== "unspecified" ? `,${c.reason}` : "");
  // openssl looks serials up as BN_bn2hex prints them: upper case, whole octets, no leading 00.
  return [
    c.revokedAtMs === undefined ? "V" : "R",
    indexTime(c.notAfter.getTime()),
    revoked,
    c.serialHex.toUpperCase(),
    "unknown",
    `/CN=${c.subject}`,
  ].join("\t");
}

export interface OpensslFiles {
  index: string;
  caCert: string;
  responderCert: string;
  responderKey: string;
  responderDer: Buffer;
}

/**
 * index.txt with a V or R line per certificate, and a delegated responder certificate for the
 * devices CA made by the same profile fleetpki uses for its own (buildOcspResponderCertificate:
 * P-256, id-kp-OCSPSigning, signed by the devices CA key). It is not recorded in the fleet: it
 * exists only for this run.
 */
export async function writeOpensslFiles(fixture: Fixture, dir: string): Promise<OpensslFiles> {
  mkdirSync(dir, { recursive: true });
  const index = join(dir, "index.txt");
  writeFileSync(index, fixture.certs.map((c) => indexLine({ ...c, subject: c.deviceId })).join("\n") + "\n");
  const fleet = await FleetServices.open(fixture.dir);
  try {
    const ca = await fleet.issuingCa("devices");
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const spki = publicKey.export({ format: "der", type: "spki" });
    const issued = buildOcspResponderCertificate(ca, {
      spki,
      subjectPublicKey: subjectPublicKeyOf(spki),
      now: new Date(),
      lifetimeMs: parseDuration(fleet.config.revocation.ocsp_responder_validity),
    });
    const responderCert = join(dir, "responder.pem");
    const responderKey = join(dir, "responder.key");
    writeFileSync(responderCert, toPem("CERTIFICATE", issued.der));
    writeFileSync(responderKey, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    return { index, caCert: join(fixture.dir, layout.caCert("devices")), responderCert, responderKey, responderDer: issued.der };
  } finally {
    await fleet.close();
  }
}

/** `openssl ocsp` as a responder over those files: one process (no -multi), ResponderID byKey as fleetpki's. */
export function opensslResponderArgs(files: OpensslFiles): string[] {
  return [
    "ocsp",
    "-index",
    files.index,
    "-CA",
    files.caCert,
    "-rsigner",
    files.responderCert,
    "-rkey",
    files.responderKey,
    "-port",
    "0",
    "-nmin",
    "1",
    "-ignore_err",
    "-resp_key_id",
  ];
}

/** openssl must read the bench's request as meant: SHA-1 CertID, the serial, the nonce where the load loop writes it. */
export function checkRequestText(requestFile: string, request: Buffer, serialHex: string): string {
  const reqText = openssl(["ocsp", "-reqin", requestFile, "-req_text"]);
  check(reqText.status === 0, `openssl ocsp -reqin -req_text failed:\n${reqText.stdout}${reqText.stderr}`);
  const nonceHex = request
    .subarray(request.length - NONCE_BYTES)
    .toString("hex")
    .toUpperCase();
  check(
    /Hash Algorithm: sha1/.test(reqText.stdout) &&
      reqText.stdout.includes(`Serial Number: ${serialHex.toUpperCase()}`) &&
      reqText.stdout.replace(/[\s:]/g, "").includes(nonceHex),
    `openssl ocsp -req_text does not show the request's hash, serial and nonce:\n${reqText.stdout}`,
  );
  return "openssl ocsp -req_text reads the bench's request as sent (SHA-1 CertID, serial, 16-byte nonce)";
}

/**
 * `openssl ca -gencrl`: OpenSSL's CRL generator, from an index.txt holding the same entries
 * (status R, revocation time, reason), with the same CA key (decrypted by openssl with -passin)
 * and the same extensions (AKI, CRL number), ECDSA-SHA256. Timed per run as a whole process.
 */
export function opensslGencrl(
  dir: string,
  fleetDir: string,
  lines: readonly string[],
  runs: number,
): { ms: number[]; derBytes: number; checks: string[] } {
  mkdirSync(dir, { recursive: true });
  const index = join(dir, "index.txt");
  writeFileSync(index, lines.join("\n") + "\n");
  writeFileSync(join(dir, "index.txt.attr"), "unique_subject = no\n");
  writeFileSync(join(dir, "crlnumber"), "01\n");
  const config = join(dir, "ca.cnf");
  writeFileSync(
    config,
    [
      "[ ca ]",
      "default_ca = bench",
      "[ bench ]",
      `database = ${index}`,
      `crlnumber = ${join(dir, "crlnumber")}`,
      `certificate = ${join(fleetDir, layout.caCert("devices"))}`,
      `private_key = ${join(fleetDir, layout.caKey("devices"))}`,
      "default_md = sha256",
      "default_crl_days = 1",
      "unique_subject = no",
      "crl_extensions = crl_ext",
      "[ crl_ext ]",
      "authorityKeyIdentifier = keyid:always",
      "",
    ].join("\n"),
  );
  const out = join(dir, "crl.pem");
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = openssl(["ca", "-config", config, "-gencrl", "-passin", `file:${join(fleetDir, layout.passphrase)}`, "-out", out], 120_000);
    ms.push(performance.now() - t0);
    check(r.status === 0, `openssl ca -gencrl failed (${r.status}):\n${r.stdout}${r.stderr}`);
  }
  const der = fromPem(readFileSync(out, "utf8"), ["X509 CRL"]);
  const parsed = parseCrl(der);
  check(
    parsed.entries.length === lines.length,
    `openssl ca -gencrl listed ${parsed.entries.length} entries, expected ${fmtRate(lines.length)}`,
  );
  return {
    ms,
    derBytes: der.length,
    checks: [
      `openssl ca -gencrl over the same ${fmtRate(lines.length)}-line index.txt: ` +
        `its CRL (read by parseCrl) lists ${fmtRate(parsed.entries.length)} entries`,
    ],
  };
}
