// `fleetpki ros2 keystore verify DIR`: every file of an SROS2 keystore (layout contract of issue 12) checked as
// the rmw implementations and openssl would, and every problem reported with the file and what is wrong, so an
// operator can fix a keystore before a robot refuses to start (or, worse, starts with something it should not).
// Reads files only; the time is the caller's (`now`); the fleet, when given, says which CAs are this fleet's.
import { X509Certificate, createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { existsSync, lstatSync, readFileSync, readdirSync, statSync, type Stats } from "node:fs";
import { join } from "node:path";
import type { FleetServices } from "../../authority/services.js";
import { describeKey } from "../../x509/algorithms.js";
import { parseCertificate, sha256Fingerprint, type ParsedCertificate } from "../../x509/certificate.js";
import { parseCrl, verifyCrlSignature, type ParsedCrl } from "../../x509/crl.js";
import { nameToString } from "../../x509/name.js";
import { fromPem, parsePemBlocks } from "../../x509/pem.js";
import { SmimeError, verifySmime } from "../../x509/smime.js";
import { GRANT_LEAD_MS, grantTimeText } from "./documents.js";
import { coversDomain, describeDomains, governanceDomains, type DomainRange } from "./governance.js";
import { DEFAULT_LIMITS, decodePolicyBytes, parsePolicyText } from "../policy-xml/tree.js";
import { NotAKeystore } from "./errors.js";
import { ENCLAVE_FILES, KEYSTORE_MARKER, ks, readKeystoreMarker } from "./keystore.js";

export interface KeystoreProblem {
  /** Path relative to the keystore directory ("." for the directory itself). */
  path: string;
  problem: string;
}

export interface KeystoreReport {
  dir: string;
  keystore: string;
  domainId: number;
  /** Enclave paths found ("/talker_listener/talker"), sorted. */
  enclaves: string[];
  problems: KeystoreProblem[];
}

/** What the fleet says a keystore of its own must hold (from its database). */
export interface FleetRos2Trust {
  /** SHA-256 hex of the fleet root certificate's DER (the marker's "fleet"). */
  rootFingerprint: string;
  identityCaDer?: Buffer;
  permissionsCaDer?: Buffer;
}

/** The fleet's root fingerprint and its ROS 2 CAs (those it has: a fleet without them yet has no keystore of its own). */
export async function fleetRos2Trust(fleet: FleetServices): Promise<FleetRos2Trust> {
  // A ROS 2 CA's keystore form is its self-signed anchor (a CA recorded without one: its fleet certificate).
  const der = async (id: string): Promise<Buffer | undefined> => {
    const row = await fleet.store.ops.cas.get(id);
    return row ? fromPem(row.anchor_pem ?? row.certificate_pem, ["CERTIFICATE"]) : undefined;
  };
  const root = await der("root");
  if (!root) throw new Error("the fleet has no root CA record");
  const identityCaDer = await der("ros2-identity");
  const permissionsCaDer = await der("ros2-permissions");
  return {
    rootFingerprint: sha256Fingerprint(root),
    ...(identityCaDer ? { identityCaDer } : {}),
    ...(permissionsCaDer ? { permissionsCaDer } : {}),
  };
}

/** Bigger files than this are not keystore files (and are not read). */
const MAX_FILE_BYTES = 4 * 1024 * 1024;
/** Enclave directories visited at most (a keystore of a large fleet has a few hundred). */
const MAX_DIRECTORIES = 10_000;

const mode = (st: Stats): string => (st.mode & 0o777).toString(8).padStart(4, "0");
const iso = (d: Date): string => d.toISOString().replace(/\.000Z$/, "Z");

/** A grant time "YYYY-MM-DDTHH:MM:SS" (UTC, as fleetpki and sros2 write it), or undefined. */
function parseGrantTime(text: string | undefined): Date | undefined {
  if (text === undefined || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$/.test(text)) return undefined;
  const d = new Date(`${text}Z`);
  return Number.isNaN(d.getTime()) || grantTimeText(d) !== text ? undefined : d;
}

interface Cert {
  parsed: ParsedCertificate;
  x509: X509Certificate;
}

class Checker {
  readonly problems: KeystoreProblem[] = [];
  constructor(
    readonly dir: string,
    readonly now: Date,
  ) {}

  report(path: string, problem: string): void {
    this.problems.push({ path, problem });
  }

  /** lstat of a path inside the keystore, or a "missing" problem. */
  stat(rel: string, what: "file" | "directory"): Stats | undefined {
    const abs = join(this.dir, rel);
    let st: Stats;
    try {
      st = lstatSync(abs);
    } catch {
      this.report(rel, `missing (expected a ${what})`);
      return undefined;
    }
    if (st.isSymbolicLink()) {
      this.report(rel, `is a symbolic link; expected a regular ${what} (copies, not links: tar, rsync and the agent keep them)`);
      return undefined;
    }
    if (what === "file" ? !st.isFile() : !st.isDirectory()) {
      this.report(rel, `is not a ${what}`);
      return undefined;
    }
    return st;
  }

  /** The mode must be exactly `expected` (keys and private directories) or at least not group/world-writable. */
  checkMode(rel: string, st: Stats, expected?: number, why = ""): void {
    const m = st.mode & 0o777;
    if (expected !== undefined && m !== expected)
      this.report(rel, `mode ${mode(st)}, expected ${expected.toString(8).padStart(4, "0")}${why}`);
    else if (m & 0o022) this.report(rel, `mode ${mode(st)} is group- or world-writable`);
  }

  read(rel: string, expectedMode?: number, why?: string): Buffer | undefined {
    const st = this.stat(rel, "file");
    if (!st) return undefined;
    this.checkMode(rel, st, expectedMode, why);
    if (st.size > MAX_FILE_BYTES) {
      this.report(rel, `is ${st.size} bytes; a keystore file is at most ${MAX_FILE_BYTES}`);
      return undefined;
    }
    try {
      return readFileSync(join(this.dir, rel));
    } catch (e) {
      this.report(rel, `cannot be read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      return undefined;
    }
  }

  /** Exactly one PEM certificate. */
  certificate(rel: string, bytes: Buffer | undefined): Cert | undefined {
    if (!bytes) return undefined;
    try {
      const blocks = parsePemBlocks(bytes.toString("latin1"));
      const certs = blocks.filter((b) => b.label === "CERTIFICATE");
      if (certs.length !== 1 || blocks.length !== 1) {
        this.report(
          rel,
          `holds ${certs.length} certificates and ${blocks.length - certs.length} other PEM blocks; expected one certificate`,
        );
        return undefined;
      }
      return { parsed: parseCertificate(certs[0]!.der), x509: new X509Certificate(certs[0]!.der) };
    } catch (e) {
      this.report(rel, `is not a PEM certificate: ${(e as Error).message}`);
      return undefined;
    }
  }

  validity(rel: string, cert: Cert): void {
    if (cert.parsed.notAfter.getTime() < this.now.getTime()) this.report(rel, `expired on ${iso(cert.parsed.notAfter)}`);
    else if (cert.parsed.notBefore.getTime() > this.now.getTime()) this.report(rel, `not yet valid (from ${iso(cert.parsed.notBefore)})`);
  }

  crl(rel: string, bytes: Buffer | undefined, identityCa: Cert | undefined): ParsedCrl | undefined {
    if (!bytes) return undefined;
    let crl: ParsedCrl;
    try {
      const blocks = parsePemBlocks(bytes.toString("latin1"));
      if (blocks.length !== 1 || blocks[0]!.label !== "X509 CRL") {
        this.report(rel, `expected one PEM "X509 CRL" block, found ${blocks.map((b) => `"${b.label}"`).join(", ") || "none"}`);
        return undefined;
      }
      crl = parseCrl(blocks[0]!.der);
    } catch (e) {
      this.report(rel, `is not a CRL: ${(e as Error).message}`);
      return undefined;
    }
    if (identityCa && (!crl.issuer.equals(identityCa.parsed.subject) || !verifyCrlSignature(crl, identityCa.x509.publicKey))) {
      this.report(rel, `is not signed by the keystore's identity CA (issuer ${nameToString(crl.issuer)})`);
      return undefined;
    }
    if (crl.nextUpdate && crl.nextUpdate.getTime() < this.now.getTime())
      this.report(
        rel,
        `is stale: its nextUpdate ${iso(crl.nextUpdate)} has passed (fetch a new one: \`fleetpki ros2 enclave revoke\` rewrites it)`,
      );
    if (crl.thisUpdate.getTime() > this.now.getTime()) this.report(rel, `is not valid yet (thisUpdate ${iso(crl.thisUpdate)})`);
    return crl;
  }

  /** The signed document's content, verified against the permissions CA; undefined (reported) otherwise. */
  smime(rel: string, bytes: Buffer | undefined, permissionsCa: Cert | undefined): Buffer | undefined {
    if (!bytes || !permissionsCa) return undefined;
    try {
      const verified = verifySmime(bytes, permissionsCa.parsed.der);
      // Fast DDS and Cyclone DDS 11 verify with PKCS7_NOINTERN: the signer (issuer and serial) must be the CA file's
      // certificate itself, not one it issued nor a twin with the same key.
      if (!verified.signerCertDer.equals(permissionsCa.parsed.der)) {
        const signer = parseCertificate(verified.signerCertDer);
        this.report(
          rel,
          `names its signer ${nameToString(signer.subject)} (serial ${signer.serialHex}), not the permissions CA certificate ` +
            "itself: DDS implementations (PKCS7_NOINTERN) will refuse it",
        );
        return undefined;
      }
      return verified.content;
    } catch (e) {
      if (!(e instanceof SmimeError)) throw e;
      const what =
        e.reason === "untrusted-signer"
          ? "is not signed by the keystore's permissions CA"
          : e.reason === "digest-mismatch" || e.reason === "bad-signature"
            ? "has a signature that does not verify"
            : "is not a valid S/MIME signature";
      this.report(rel, `${what}: ${e.message}`);
      return undefined;
    }
  }
}

/** Issued by `ca`: the issuer name is its subject and its key verifies the signature. */
function issuedBy(cert: Cert, ca: Cert): boolean {
  return cert.parsed.issuer.equals(ca.parsed.subject) && cert.x509.verify(ca.x509.publicKey);
}

function readMarker(dir: string): { keystore: string; fleet: string; domainId: number } {
  let st: Stats;
  try {
    st = lstatSync(dir);
  } catch {
    throw new NotAKeystore(dir, "no such directory");
  }
  if (!st.isDirectory()) throw new NotAKeystore(dir, "not a directory");
  const m = readKeystoreMarker(dir);
  return { keystore: m.keystore, fleet: m.fleet, domainId: m.domain_id };
}

/** Text of an XML element's content with the five predefined entities decoded. */
const xmlText = (s: string): string =>
  s.replace(/&(lt|gt|amp|quot|apos);/g, (_, e: string) => ({ lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" })[e]!);

function checkGrants(c: Checker, rel: string, xml: string, cert: Cert | undefined): void {
  const grants = [...xml.matchAll(/<grant\s+name="([^"]*)"\s*>([\s\S]*?)<\/grant>/g)];
  if (grants.length === 0) {
    c.report(rel, "has no <grant>");
    return;
  }
  if (!cert) return;
  const subject = nameToString(cert.parsed.subject);
  for (const [, name, body] of grants) {
    const subjectName = /<subject_name>([^<]*)<\/subject_name>/.exec(body!);
    if (!subjectName) c.report(rel, `grant ${name} has no <subject_name>`);
    else if (xmlText(subjectName[1]!) !== subject)
      c.report(rel, `grant ${name} has subject_name "${xmlText(subjectName[1]!)}", but cert.pem's subject is "${subject}"`);
    const notBefore = /<not_before>([^<]*)<\/not_before>/.exec(body!)?.[1];
    const notAfter = /<not_after>([^<]*)<\/not_after>/.exec(body!)?.[1];
    // Enclaves' grants start up to 14 h before the certificate and end up to 14 h after it (documents.ts
    // enclaveGrantValidity: Fast DDS reads them in local time); no wider.
    const from = parseGrantTime(notBefore);
    const until = parseGrantTime(notAfter);
    const earliest = cert.parsed.notBefore.getTime() - GRANT_LEAD_MS;
    const latest = cert.parsed.notAfter.getTime() + GRANT_LEAD_MS;
    if (!from || !until || from.getTime() < earliest || until.getTime() > latest || from > until)
      c.report(
        rel,
        `grant ${name} is valid ${notBefore} to ${notAfter}, not within the certificate's ` +
          `${grantTimeText(cert.parsed.notBefore)} to ${grantTimeText(cert.parsed.notAfter)} widened by up to 14 h for local time zones`,
      );
  }
}

function publicKeyOf(key: KeyObject): Buffer {
  return createPublicKey(key).export({ format: "der", type: "spki" });
}

interface Shared {
  identityCa?: Cert;
  permissionsCa?: Cert;
  identityCaDer?: Buffer;
  permissionsCaDer?: Buffer;
  governanceP7s?: Buffer;
  publicCrl?: Buffer;
  /** Verified CRLs of the identity CA: public/'s, by relative path. */
  crls: Array<[string, ParsedCrl]>;
}

function checkEnclave(c: Checker, rel: string, path: string, shared: Shared): void {
  const st = c.stat(rel, "directory");
  if (st) c.checkMode(rel, st, 0o700, " (an enclave directory holds a private key)");
  const file = (name: string): string => join(rel, name);
  const cert = c.certificate(file(ENCLAVE_FILES.cert), c.read(file(ENCLAVE_FILES.cert)));
  if (cert) {
    const certRel = file(ENCLAVE_FILES.cert);
    const subject = nameToString(cert.parsed.subject);
    if (subject !== `CN=${path}`) c.report(certRel, `subject is "${subject}", expected "CN=${path}" (what permissions.xml names)`);
    if (shared.identityCa && !issuedBy(cert, shared.identityCa))
      c.report(
        certRel,
        `issued by another CA (${nameToString(cert.parsed.issuer)}), not by the keystore's identity CA (foreign certificate)`,
      );
    c.validity(certRel, cert);
  }
  const keyRel = file(ENCLAVE_FILES.key);
  const keyBytes = c.read(keyRel, 0o600, " (a private key readable by others)");
  if (keyBytes) {
    const text = keyBytes.toString("latin1");
    if (!text.includes("-----BEGIN PRIVATE KEY-----"))
      c.report(keyRel, "is not an unencrypted PKCS#8 PEM key (rmw implementations load it without a passphrase)");
    else {
      try {
        const key = createPrivateKey(text);
        if (cert && !publicKeyOf(key).equals(cert.parsed.spki)) c.report(keyRel, "does not match cert.pem (another key pair)");
        const type = describeKey(key);
        if (type !== "p256" && type !== "rsa2048") c.report(keyRel, `is a ${type} key; DDS Security (PKI-DH) takes only P-256 or RSA-2048`);
      } catch (e) {
        c.report(keyRel, `is not a private key: ${(e as Error).message}`);
      }
    }
  }
  const copies: Array<[string, Buffer | undefined, string]> = [
    [ENCLAVE_FILES.identityCa, shared.identityCaDer, ks.identityCa],
    [ENCLAVE_FILES.permissionsCa, shared.permissionsCaDer, ks.permissionsCa],
  ];
  for (const [name, original, originalRel] of copies) {
    const copy = c.certificate(file(name), c.read(file(name)));
    if (copy && original && !copy.parsed.der.equals(original))
      c.report(file(name), `differs from ${originalRel} (a stale or foreign copy)`);
  }
  const governance = c.read(file(ENCLAVE_FILES.governance));
  if (governance && shared.governanceP7s && !governance.equals(shared.governanceP7s))
    c.report(file(ENCLAVE_FILES.governance), `differs from ${ks.governanceP7s} (a stale or foreign copy)`);
  // crl.pem on its own (rmw_dds_common loads it, whatever public/ holds), then as a copy of public/'s.
  const crlRel = file(ENCLAVE_FILES.crl);
  const crlBytes = c.read(crlRel);
  const crl = c.crl(crlRel, crlBytes, shared.identityCa);
  if (crlBytes && crl && shared.publicCrl && !crlBytes.equals(shared.publicCrl))
    c.report(crlRel, `differs from ${ks.identityCrl} (a stale copy: revocations may be missing)`);
  if (cert) {
    for (const [listRel, list] of crl ? [...shared.crls, [crlRel, crl] as [string, ParsedCrl]] : shared.crls) {
      const entry = list.entries.find((e) => e.serialHex === cert.parsed.serialHex);
      if (!entry || !list.issuer.equals(cert.parsed.issuer)) continue;
      const reason = entry.reason ? `, ${entry.reason}` : "";
      c.report(
        file(ENCLAVE_FILES.cert),
        `is revoked (serial ${cert.parsed.serialHex}, ${iso(entry.revokedAt)}${reason}; listed in ${listRel})`,
      );
      break;
    }
  }
  const xml = c.read(file(ENCLAVE_FILES.permissions));
  const signed = c.smime(file(ENCLAVE_FILES.permissionsP7s), c.read(file(ENCLAVE_FILES.permissionsP7s)), shared.permissionsCa);
  if (xml && signed && !signed.equals(Buffer.from(xml.toString("latin1").replace(/\r\n/g, "\n"), "latin1")))
    c.report(file(ENCLAVE_FILES.permissions), "differs from what permissions.p7s signs (tampered, or re-rendered without re-signing)");
  if (xml) checkGrants(c, file(ENCLAVE_FILES.permissions), xml.toString("utf8"), cert);
}

const ENCLAVE_FILE_NAMES = new Set<string>(Object.values(ENCLAVE_FILES));

/** Enclave directories under enclaves/ (those holding any enclave file), as [relative dir, enclave path]. */
function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

function findEnclaves(c: Checker): Array<[string, string]> {
  const found: Array<[string, string]> = [];
  let visited = 0;
  const walk = (rel: string, segments: string[]): void => {
    if (++visited > MAX_DIRECTORIES) throw new Error(`more than ${MAX_DIRECTORIES} directories under ${ks.enclaves}/`);
    const entries = readdirSync(join(c.dir, rel), { withFileTypes: true });
    const isEnclave = segments.length > 0 && entries.some((e) => ENCLAVE_FILE_NAMES.has(e.name) && !e.isDirectory());
    if (isEnclave) found.push([rel, `/${segments.join("/")}`]);
    else if (segments.length > 0) {
      const st = lstatSync(join(c.dir, rel));
      c.checkMode(rel, st);
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(join(rel, e.name), [...segments, e.name]);
      // fleetpki writes through such a link (and never updates a crl.pem behind it): an enclave, its key, outside the keystore.
      else if (e.isSymbolicLink() && statOrUndefined(join(c.dir, rel, e.name))?.isDirectory())
        c.report(join(rel, e.name), "is a symbolic link to a directory; enclaves and their namespaces are directories inside the keystore");
    }
  };
  walk(ks.enclaves, []);
  return found.sort((a, b) => (a[1] < b[1] ? -1 : 1));
}

/** DDS refuses a participant on a domain that no <domain_rule> of the governance covers. */
function checkGovernanceDomain(c: Checker, xml: Buffer, domainId: number): void {
  let domains: DomainRange[];
  try {
    const root = parsePolicyText(decodePolicyBytes(xml, ks.governanceXml, DEFAULT_LIMITS), ks.governanceXml, () => {});
    domains = governanceDomains(root);
  } catch (e) {
    c.report(ks.governanceXml, `cannot be read for its domain rules: ${(e as Error).message}`);
    return;
  }
  if (!coversDomain(domains, domainId))
    c.report(
      ks.governanceXml,
      `its domain rules cover ${describeDomains(domains)}, not the keystore's domain ${domainId}: DDS refuses every participant`,
    );
}

/**
 * Checks the keystore at `dir` and returns every problem found (an empty list: all is well). Throws
 * NotAKeystore when `dir` is not a fleetpki keystore at all (no readable marker). With `fleet`, the
 * keystore must be that fleet's and its CAs the fleet's ros2-identity and ros2-permissions CAs.
 */
export function verifyKeystore(dir: string, fleet: FleetRos2Trust | undefined, now: Date): KeystoreReport {
  const marker = readMarker(dir);
  const c = new Checker(dir, now);
  const top = lstatSync(dir);
  c.checkMode(".", top);
  if (fleet && marker.fleet !== fleet.rootFingerprint)
    c.report(
      KEYSTORE_MARKER,
      `belongs to another fleet (root ${marker.fleet.slice(0, 16)}..., this fleet's is ${fleet.rootFingerprint.slice(0, 16)}...)`,
    );

  for (const d of [ks.public, ks.enclaves]) {
    const st = c.stat(d, "directory");
    if (st) c.checkMode(d, st);
  }
  const priv = c.stat(ks.private, "directory");
  if (priv) {
    c.checkMode(ks.private, priv, 0o700);
    const inside = readdirSync(join(dir, ks.private));
    if (inside.length > 0)
      c.report(ks.private, `holds ${inside.join(", ")}; it stays empty (the CA keys are kept, encrypted, in the fleet directory)`);
  }

  const shared: Shared = { crls: [] };
  const identityCa = c.certificate(ks.identityCa, c.read(ks.identityCa));
  const permissionsCa = c.certificate(ks.permissionsCa, c.read(ks.permissionsCa));
  for (const [rel, ca, role, fleetDer] of [
    [ks.identityCa, identityCa, "ros2-identity", fleet?.identityCaDer],
    [ks.permissionsCa, permissionsCa, "ros2-permissions", fleet?.permissionsCaDer],
  ] as const) {
    if (!ca) continue;
    c.validity(rel, ca);
    if (!ca.x509.ca) c.report(rel, "is not a CA certificate (basicConstraints CA:FALSE)");
    // Neither Fast DDS nor Cyclone DDS verifies to a CA that is not self-signed (no partial chains).
    if (!ca.parsed.issuer.equals(ca.parsed.subject) || !ca.x509.verify(ca.x509.publicKey))
      c.report(
        rel,
        `is not a self-signed trust anchor: DDS implementations will refuse it (issuer ${nameToString(ca.parsed.issuer)}, ` +
          `subject ${nameToString(ca.parsed.subject)})`,
      );
    if (fleet && fleetDer && !ca.parsed.der.equals(fleetDer))
      c.report(rel, `is not this fleet's ${role} CA (fingerprint ${sha256Fingerprint(ca.parsed.der).slice(0, 16)}...)`);
    if (fleet && !fleetDer) c.report(rel, `this fleet has no ${role} CA yet`);
  }
  if (identityCa && permissionsCa && identityCa.parsed.spki.equals(permissionsCa.parsed.spki))
    c.report(ks.permissionsCa, "has the same key as the identity CA; identities and permissions must be signed by different CAs");
  shared.identityCa = identityCa;
  shared.permissionsCa = permissionsCa;
  shared.identityCaDer = identityCa?.parsed.der;
  shared.permissionsCaDer = permissionsCa?.parsed.der;

  shared.publicCrl = c.read(ks.identityCrl);
  const publicCrl = c.crl(ks.identityCrl, shared.publicCrl, identityCa);
  if (publicCrl) shared.crls.push([ks.identityCrl, publicCrl]);

  const governanceXml = c.read(ks.governanceXml);
  shared.governanceP7s = c.read(ks.governanceP7s);
  const governance = c.smime(ks.governanceP7s, shared.governanceP7s, permissionsCa);
  if (governanceXml && governance && !governance.equals(Buffer.from(governanceXml.toString("latin1").replace(/\r\n/g, "\n"), "latin1")))
    c.report(ks.governanceXml, "differs from what governance.p7s signs (tampered, or edited without re-signing)");
  if (governanceXml) checkGovernanceDomain(c, governanceXml, marker.domainId);

  let enclaves: Array<[string, string]> = [];
  if (existsSync(join(dir, ks.enclaves)) && lstatSync(join(dir, ks.enclaves)).isDirectory()) enclaves = findEnclaves(c);
  for (const [rel, path] of enclaves) checkEnclave(c, rel, path, shared);
  return { dir, keystore: marker.keystore, domainId: marker.domainId, enclaves: enclaves.map(([, p]) => p), problems: c.problems };
}
