// `agent run --ros2-keystore DIR`: keeps the robot's SROS2 enclaves renewed and their CRLs fresh.
//
// The keystore is fleetpki's SROS2 layout (docs/ros2.md): .fleetpki-keystore.json, public/, enclaves/<path>/
// with cert.pem, key.pem, ... . Which enclave belongs to which device is the server's knowledge (enclave
// create --device): the agent asks to renew every enclave it finds when it is due, and an enclave the
// server says is not this device's (403) or unknown (404) is left alone and logged once; a revoked one
// (409) is not asked for again until its certificate changes (the enclave created again and copied
// here). Each renewal uses a NEW P-256 key made here (it never leaves the robot).
//
// Crash safety: an enclave's files are replaced as one unit with a redo log in the enclave directory,
// as state.ts does for the agent's own files (a directory swap would move nested enclaves such as
// /a/b inside /a with it): every new file is staged as .<name>.new (complete or absent), then
// .fleetpki-commit.json lists them (the commit point), then each is renamed over its file, key.pem
// and cert.pem first and back to back, then the marker goes. recoverEnclave() finishes a commit whose
// marker exists and discards staged files without one: the enclave holds the old set or the new one.
//
// The CRL of the identity CA is fetched from the status server on every cycle, accepted only when
// signed by the keystore's identity CA (itself checked against the pinned fleet root) and not older
// than the one in place, and written to public/identity_ca.crl.pem and every enclave's crl.pem.
// DDS reads crl.pem only when a node starts, so a newly written CRL is announced (onCrlWritten, the
// --on-renew hook with FLEETPKI_ROS2_EVENT=crl): the operator decides whether nodes restart now.
import { X509Certificate, createPublicKey, type KeyObject } from "node:crypto";
import http from "node:http";
import https from "node:https";
import { chmodSync, existsSync, lstatSync, readFileSync, readdirSync, renameSync, unlinkSync } from "node:fs";
import { join, relative, resolve, sep } from "node:path";
import { OID } from "../der/oids.js";
import { DerError, content, readElement, readRoot } from "../der/reader.js";
import { fsyncDir, writeFileAtomic } from "../keys/files.js";
import { generateKey } from "../keys/keys.js";
import { parseCertificate, type ParsedCertificate } from "../x509/certificate.js";
import { CrlError, parseCrl, verifyCrlSignature, type ParsedCrl } from "../x509/crl.js";
import { PemError, parsePemBlocks, toPem } from "../x509/pem.js";
import { SmimeError, verifySmime } from "../x509/smime.js";
import { systemClock, type Clock } from "./clock.js";
import { DEFAULT_TIMEOUT_MS, RegistrationClient, parseServerUrl, type PinnedRoot } from "./client.js";
import { AgentError, ServerError, TransportError } from "./errors.js";
import { silentLogger, type Logger } from "./log.js";
import { csrForKey } from "./request.js";
import { backoffDelay, renewalTime, type BackoffOptions } from "./schedule.js";
import type { AgentState } from "./state.js";
import { chainToRoot, sameKey } from "./verify.js";

export const ROS2_RENEW_PATH = "/api/v1/ros2/enclaves/renew";
export const KEYSTORE_MARKER = ".fleetpki-keystore.json";
/** The CA whose CRL every enclave's crl.pem holds (served by the status listener at /crl/<ca>.pem). */
export const ROS2_IDENTITY_CA = "ros2-identity";
/** How often the CRL is fetched again when nothing else wakes the loop. */
export const DEFAULT_CRL_INTERVAL_MS = 10 * 60_000;
const MAX_CRL_BYTES = 8 << 20;

/** The files of an enclave and their modes (docs/ros2.md's layout). Apply order: key and certificate first. */
export const ENCLAVE_FILES = [
  ["key.pem", 0o600],
  ["cert.pem", 0o644],
  ["identity_ca.cert.pem", 0o644],
  ["permissions_ca.cert.pem", 0o644],
  ["governance.p7s", 0o644],
  ["permissions.xml", 0o644],
  ["permissions.p7s", 0o644],
  ["crl.pem", 0o644],
] as const;
export type EnclaveFile = (typeof ENCLAVE_FILES)[number][0];
const ENCLAVE_MODE = 0o700;
export const ENCLAVE_COMMIT_MARKER = ".fleetpki-commit.json";
const staged = (name: string) => `.${name}.new`;
const TEMPORARY = /^\..+\.[0-9a-f]{12}\.tmp$/;
const STAGED = /^\.(.+)\.new$/;

export interface Keystore {
  dir: string;
  id: string;
  domainId: number;
  /**
   * The fleet's ros2-identity CA: chained to the pinned root, or (what keystores ship, since DDS takes no
   * partial chain) its self-signed twin, which every renewal answer from the fleet must name exactly.
   */
  identityCa: X509Certificate;
  /** public/permissions_ca.cert.pem when it is a self-signed anchor: the answer's permissions_ca must equal it. */
  permissionsAnchor?: X509Certificate;
  /** public/permissions_ca.cert.pem (anchor or root-signed): the only signer of governance and permissions this DDS trusts. */
  permissionsCa?: X509Certificate;
}

/** Subject = issuer and its own key verifies it: a trust anchor (the ROS 2 CAs' DDS form). */
function selfSigned(ca: X509Certificate): boolean {
  return ca.checkIssued(ca) && ca.verify(ca.publicKey);
}

export interface Enclave {
  /** "/ns/node" */
  path: string;
  dir: string;
  parsed: ParsedCertificate;
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

function readJsonFile(path: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch {
    throw new AgentError(`${path} is not valid JSON`);
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new AgentError(`${path} is not a JSON object`);
  return parsed as Record<string, unknown>;
}

function certificateFile(path: string): X509Certificate {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new AgentError(`cannot read ${path}`);
  }
  try {
    const block = parsePemBlocks(text).find((b) => b.label === "CERTIFICATE");
    if (!block) throw new AgentError(`${path} holds no certificate`);
    return new X509Certificate(block.der);
  } catch (e) {
    if (e instanceof AgentError) throw e;
    throw new AgentError(`${path}: ${e instanceof PemError ? e.message : "the certificate cannot be parsed"}`);
  }
}

/**
 * Opens a fleetpki keystore for the agent: the marker names this fleet (the pinned root's SHA-256)
 * and public/identity_ca.cert.pem is a CA certificate issued by the pinned root.
 */
export function openKeystore(dirPath: string, root: PinnedRoot): Keystore {
  const dir = resolve(dirPath);
  const markerPath = join(dir, KEYSTORE_MARKER);
  if (!existsSync(markerPath) || !existsSync(join(dir, "enclaves")) || !existsSync(join(dir, "public")))
    throw new AgentError(
      `${dir} is not a fleetpki keystore (no ${KEYSTORE_MARKER}, public/ and enclaves/; see \`fleetpki ros2 keystore init\`)`,
    );
  const marker = readJsonFile(markerPath);
  if (marker.version !== 1 || typeof marker.keystore !== "string" || typeof marker.fleet !== "string")
    throw new AgentError(`${markerPath} is not a fleetpki keystore marker (version 1 with "keystore" and "fleet")`);
  const pinned = root.fingerprint.replace(/^sha256:/, "").toLowerCase();
  if (marker.fleet.toLowerCase() !== pinned)
    throw new AgentError(`${dir} is a keystore of another fleet (root sha256:${marker.fleet}, this agent pins sha256:${pinned})`);
  const caPath = join(dir, "public", "identity_ca.cert.pem");
  const identityCa = certificateFile(caPath);
  if (!identityCa.ca) throw new AgentError(`${caPath} is not a CA certificate`);
  // A self-signed anchor cannot be checked against the root here; renewal answers (over TLS to the pinned
  // root) must name exactly it, so a swapped anchor is refused at the first renewal.
  if (!selfSigned(identityCa))
    try {
      chainToRoot(identityCa, [], root.certificate);
    } catch {
      throw new AgentError(`${caPath} is not issued by the pinned fleet root`);
    }
  const domainId = typeof marker.domain_id === "number" ? marker.domain_id : 0;
  const permissionsPath = join(dir, "public", "permissions_ca.cert.pem");
  const permissionsCa = existsSync(permissionsPath) ? certificateFile(permissionsPath) : undefined;
  const permissionsAnchor = permissionsCa && selfSigned(permissionsCa) ? { permissionsAnchor: permissionsCa } : {};
  return { dir, id: marker.keystore, domainId, identityCa, ...permissionsAnchor, ...(permissionsCa ? { permissionsCa } : {}) };
}

// ---- crash-safe replacement of an enclave's files ---------------------------------------------

export type Recovery = "clean" | "rolled-forward" | "rolled-back";

function unlinkIfPresent(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

const KNOWN_FILES: readonly string[] = ENCLAVE_FILES.map(([name]) => name);

/** Finishes (marker present) or discards (no marker) an interrupted replacement in one enclave directory. */
export function recoverEnclave(dir: string): Recovery {
  const markerPath = join(dir, ENCLAVE_COMMIT_MARKER);
  if (existsSync(markerPath)) {
    let names: string[] = [...KNOWN_FILES];
    try {
      const listed = (JSON.parse(readFileSync(markerPath, "utf8")) as { files?: unknown }).files;
      if (Array.isArray(listed)) names = KNOWN_FILES.filter((n) => listed.includes(n));
    } catch {
      // cannot happen with atomic writes: apply whatever is staged
    }
    for (const name of names) {
      try {
        renameSync(join(dir, staged(name)), join(dir, name));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e; // applied before the crash
      }
    }
    fsyncDir(dir);
    unlinkSync(markerPath);
    fsyncDir(dir);
    return "rolled-forward";
  }
  let removed = false;
  for (const entry of readdirSync(dir)) {
    const m = STAGED.exec(entry);
    if ((m && KNOWN_FILES.includes(m[1]!)) || TEMPORARY.test(entry)) {
      if (!lstatSync(join(dir, entry)).isFile()) continue;
      unlinkIfPresent(join(dir, entry));
      removed = true;
    }
  }
  if (removed) fsyncDir(dir);
  return removed ? "rolled-back" : "clean";
}

export interface EnclaveCommitOptions {
  /** Test hook called after each step; throwing there simulates a crash at that point. */
  onStep?: (step: string) => void;
}

/** Replaces the given files of an enclave as one unit (see the top of this file), with the layout's modes. */
export function commitEnclave(dir: string, files: Partial<Record<EnclaveFile, string>>, options: EnclaveCommitOptions = {}): void {
  const step = options.onStep ?? (() => {});
  recoverEnclave(dir);
  const entries = ENCLAVE_FILES.filter(([name]) => files[name] !== undefined);
  for (const [name, mode] of entries) {
    writeFileAtomic(join(dir, staged(name)), files[name]!, mode);
    step(`staged ${name}`);
  }
  writeFileAtomic(join(dir, ENCLAVE_COMMIT_MARKER), JSON.stringify({ files: entries.map(([n]) => n) }) + "\n", 0o600);
  step("committed");
  for (const [name] of entries) {
    renameSync(join(dir, staged(name)), join(dir, name));
    step(`applied ${name}`);
  }
  fsyncDir(dir);
  unlinkSync(join(dir, ENCLAVE_COMMIT_MARKER));
  fsyncDir(dir);
  chmodSync(dir, ENCLAVE_MODE);
  step("done");
}

// ---- finding the enclaves ---------------------------------------------------------------------

export interface EnclaveScan {
  enclaves: Enclave[];
  /** Directories holding a cert.pem that cannot be used, with the reason. */
  unusable: { path: string; reason: string }[];
}

/** ROS 2 name tokens: no dot-names, so the agent's staged and temporary entries are never enclaves. */
const SEGMENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Every enclave under enclaves/ (a directory with cert.pem), after finishing interrupted replacements. */
export function scanEnclaves(ks: Keystore, log: Logger = silentLogger): EnclaveScan {
  const base = join(ks.dir, "enclaves");
  const out: EnclaveScan = { enclaves: [], unusable: [] };
  const walk = (dir: string, depth: number): void => {
    if (depth > 32) return;
    const recovery = recoverEnclave(dir);
    const path = "/" + relative(base, dir).split(sep).join("/");
    if (recovery !== "clean") log.warn("finished an interrupted enclave update", { enclave: path, recovery });
    if (existsSync(join(dir, "cert.pem"))) {
      try {
        const cert = certificateFile(join(dir, "cert.pem"));
        if (!cert.checkIssued(ks.identityCa) || !cert.verify(ks.identityCa.publicKey))
          throw new AgentError("cert.pem is not issued by the keystore's identity CA");
        const parsed = parseCertificate(Buffer.from(cert.raw));
        out.enclaves.push({ path, dir, parsed, serial: parsed.serialHex, notBefore: parsed.notBefore, notAfter: parsed.notAfter });
      } catch (e) {
        out.unusable.push({ path, reason: (e as Error).message });
      }
    }
    for (const entry of readdirSync(dir).sort()) {
      if (!SEGMENT.test(entry)) continue;
      const child = join(dir, entry);
      if (lstatSync(child).isDirectory()) walk(child, depth + 1);
    }
  };
  for (const entry of readdirSync(base).sort()) {
    const child = join(base, entry);
    if (SEGMENT.test(entry) && lstatSync(child).isDirectory()) walk(child, 1);
  }
  return out;
}

// ---- the CRL ----------------------------------------------------------------------------------

/** The CRL in `text` (PEM "X509 CRL"), checked to be signed by the identity CA and to name it as issuer. */
export function checkIdentityCrl(ks: Keystore, text: string, what: string): ParsedCrl {
  let crl: ParsedCrl;
  try {
    const block = parsePemBlocks(text).find((b) => b.label === "X509 CRL");
    if (!block) throw new AgentError(`${what} holds no X509 CRL`);
    crl = parseCrl(block.der);
  } catch (e) {
    if (e instanceof AgentError) throw e;
    if (e instanceof CrlError || e instanceof PemError) throw new AgentError(`${what}: ${e.message}`);
    throw e;
  }
  const ca = parseCertificate(Buffer.from(ks.identityCa.raw));
  if (!crl.issuer.equals(ca.subject) || !verifyCrlSignature(crl, ks.identityCa.publicKey))
    throw new AgentError(`${what} is not signed by the keystore's identity CA`);
  return crl;
}

/** True when `a` is newer than `b` (by CRL number, then thisUpdate). */
function newer(a: ParsedCrl, b: ParsedCrl): boolean {
  if (a.crlNumber !== undefined && b.crlNumber !== undefined && a.crlNumber !== b.crlNumber) return a.crlNumber > b.crlNumber;
  return a.thisUpdate.getTime() > b.thisUpdate.getTime();
}

function readCrlIfValid(ks: Keystore, path: string): ParsedCrl | undefined {
  try {
    return checkIdentityCrl(ks, readFileSync(path, "utf8"), path);
  } catch {
    return undefined;
  }
}

/**
 * Installs the newest of `candidate` and public/identity_ca.crl.pem into public/ and every enclave's
 * crl.pem that differs. An older candidate never replaces a newer list (a replayed CRL would un-revoke).
 * Returns the enclaves whose crl.pem changed.
 */
export function syncCrls(ks: Keystore, enclaves: readonly Enclave[], candidate: ParsedCrl | undefined, log: Logger): string[] {
  const publicPath = join(ks.dir, "public", "identity_ca.crl.pem");
  const current = readCrlIfValid(ks, publicPath);
  let best = current;
  if (candidate && (!current || newer(candidate, current))) best = candidate;
  else if (candidate && current && !candidate.der.equals(current.der) && newer(current, candidate))
    log.warn("ignored a CRL older than the one in place", {
      crl_number: candidate.crlNumber?.toString(),
      in_place: current.crlNumber?.toString(),
    });
  if (!best) return [];
  const pem = toPem("X509 CRL", best.der);
  if (best !== current) writeFileAtomic(publicPath, pem, 0o644);
  const changed: string[] = [];
  for (const e of enclaves) {
    const path = join(e.dir, "crl.pem");
    let old: string | undefined;
    try {
      old = readFileSync(path, "utf8");
    } catch {
      old = undefined;
    }
    if (old === pem) continue;
    writeFileAtomic(path, pem, 0o644);
    changed.push(e.path);
  }
  return changed;
}

/** GET of the CRL (plain HTTP, or HTTPS trusting the pinned root); the signature check makes the transport irrelevant. */
export function fetchText(url: URL, rootPem: string, timeoutMs: number, signal?: AbortSignal): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const lib = url.protocol === "https:" ? https : http;
    const req = lib.request(url, { method: "GET", agent: false, signal, ...(url.protocol === "https:" ? { ca: rootPem } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > MAX_CRL_BYTES) req.destroy(new AgentError(`GET ${url.href}: response larger than ${MAX_CRL_BYTES} bytes`));
        else chunks.push(c);
      });
      res.on("end", () => {
        const status = res.statusCode ?? 0;
        if (status !== 200) reject(new ServerError(`GET ${url.href}: HTTP ${status}`, status, undefined, undefined));
        else resolvePromise(Buffer.concat(chunks).toString("utf8"));
      });
      res.on("error", (e) => reject(e instanceof AgentError ? e : new TransportError(`GET ${url.href}: ${e.message}`, undefined)));
    });
    req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: "ETIMEDOUT" })));
    req.on("error", (e) => {
      if (e instanceof AgentError) reject(e);
      else reject(new TransportError(`cannot reach ${url.origin}: ${e.message}`, (e as NodeJS.ErrnoException).code));
    });
    req.end();
  });
}

/** The first URI of a certificate's CRL distribution points, if any. */
export function crlDistributionUri(parsed: ParsedCertificate): string | undefined {
  const ext = parsed.extensions.get(OID.crlDistributionPoints);
  if (!ext) return undefined;
  const find = (der: Buffer, start: number, end: number, depth: number): string | undefined => {
    for (let at = start; at < end && depth < 8;) {
      const el = readElement(der, at, end);
      if (el.tag === 0x86) return content(el).toString("latin1");
      if (el.tag & 0x20) {
        const inner = find(der, el.contentStart, el.end, depth + 1);
        if (inner) return inner;
      }
      at = el.end;
    }
    return undefined;
  };
  try {
    const root = readRoot(ext.value);
    return find(ext.value, root.start, root.end, 0);
  } catch (e) {
    if (e instanceof DerError) return undefined;
    throw e;
  }
}

/** Where the identity CA's CRL is: next to the device certificate's CRL (…/crl/devices.crl -> …/crl/ros2-identity.pem). */
export function defaultCrlUrl(state: AgentState): URL {
  const uri = crlDistributionUri(state.parsed);
  const m = uri ? /^(https?:\/\/.+\/)[^/]+\.crl$/.exec(uri) : null;
  if (!m) throw new AgentError("the device certificate names no CRL distribution point to find the status server; give --ros2-crl-url");
  return new URL(`${m[1]}${ROS2_IDENTITY_CA}.pem`);
}

export function parseCrlUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new AgentError(`invalid --ros2-crl-url "${text}" (expected http://HOST:PORT/crl/ros2-identity.pem)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new AgentError(`--ros2-crl-url "${text}" must be http:// or https://`);
  if (url.username || url.password) throw new AgentError(`--ros2-crl-url "${text}" must not contain credentials`);
  return url;
}

// ---- renewing one enclave ---------------------------------------------------------------------

export interface EnclaveRenewal {
  path: string;
  serial: string;
  previousSerial: string;
  notBefore: Date;
  notAfter: Date;
}

function textField(body: Record<string, unknown>, field: string, max = 1 << 20): string {
  const v = body[field];
  if (typeof v !== "string" || v.length === 0 || v.length > max) throw new AgentError(`POST ${ROS2_RENEW_PATH}: answer has no "${field}"`);
  return v;
}

function onePem(text: string, label: string, what: string): Buffer {
  let blocks;
  try {
    blocks = parsePemBlocks(text).filter((b) => b.label === label);
  } catch (e) {
    throw new AgentError(`${what}: ${e instanceof PemError ? e.message : "not PEM"}`);
  }
  if (blocks.length !== 1) throw new AgentError(`${what} must hold exactly one ${label}`);
  return blocks[0]!.der;
}

/** A CA certificate of the answer: chained to the pinned root, or the keystore's own self-signed `anchor` exactly. */
function caFromAnswer(text: string, what: string, root: PinnedRoot, anchor: X509Certificate | undefined): X509Certificate {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(onePem(text, "CERTIFICATE", what));
  } catch (e) {
    throw e instanceof AgentError ? e : new AgentError(`${what}: the certificate cannot be parsed`);
  }
  if (!cert.ca) throw new AgentError(`${what} is not a CA certificate`);
  if (anchor && cert.raw.equals(anchor.raw)) return cert;
  try {
    chainToRoot(cert, [], root.certificate);
  } catch {
    throw new AgentError(`${what} is not issued by the pinned fleet root, nor the keystore's own trust anchor`);
  }
  return cert;
}

/** The content an S/MIME document of the answer signs, checked to be signed by the keystore's permissions CA. */
function signedByPermissionsCa(p7s: string, what: string, permissionsCa: X509Certificate): Buffer {
  try {
    return verifySmime(p7s, Buffer.from(permissionsCa.raw)).content;
  } catch (e) {
    if (e instanceof SmimeError) throw new AgentError(`the answer's ${what} is not signed by the keystore's permissions CA: ${e.message}`);
    throw e;
  }
}

/** The files of the renewed enclave from the server's answer, each checked before anything is written. */
export function enclaveFilesFrom(
  body: Record<string, unknown>,
  expected: { path: string; key: KeyObject; root: PinnedRoot; ks: Keystore },
): { files: Record<EnclaveFile, string>; parsed: ParsedCertificate; crl: ParsedCrl } {
  const ks = expected.ks;
  const identityAnchor = selfSigned(ks.identityCa) ? ks.identityCa : undefined;
  const identityCa = caFromAnswer(textField(body, "identity_ca"), "identity_ca", expected.root, identityAnchor);
  const permissionsCa = caFromAnswer(textField(body, "permissions_ca"), "permissions_ca", expected.root, ks.permissionsAnchor);
  if (!identityCa.raw.equals(expected.ks.identityCa.raw))
    throw new AgentError("the answer's identity_ca is not the keystore's public/identity_ca.cert.pem");
  // Any CA under the root chains; only the keystore's permissions CA may sign what this robot's DDS obeys.
  if (!ks.permissionsCa || !permissionsCa.raw.equals(ks.permissionsCa.raw))
    throw new AgentError("the answer's permissions_ca is not the keystore's public/permissions_ca.cert.pem");
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(onePem(textField(body, "certificate"), "CERTIFICATE", "certificate"));
  } catch (e) {
    throw e instanceof AgentError ? e : new AgentError("certificate: the certificate cannot be parsed");
  }
  if (!sameKey(cert.publicKey, expected.key))
    throw new AgentError("the issued enclave certificate does not carry the key this robot generated");
  if (cert.ca) throw new AgentError("the issued enclave certificate is a CA certificate");
  if (!cert.checkIssued(identityCa) || !cert.verify(identityCa.publicKey))
    throw new AgentError("the issued enclave certificate is not issued by the identity CA");
  if (cert.subject !== `CN=${expected.path}`)
    throw new AgentError(`the issued enclave certificate names "${cert.subject}", expected "CN=${expected.path}"`);
  const parsed = parseCertificate(Buffer.from(cert.raw));
  if (parsed.notAfter.getTime() <= parsed.notBefore.getTime()) throw new AgentError("the issued enclave certificate has an empty validity");
  const crlText = textField(body, "crl", MAX_CRL_BYTES);
  const crl = checkIdentityCrl(expected.ks, crlText, "crl");
  const permissionsXml = textField(body, "permissions_xml");
  const governanceP7s = textField(body, "governance_p7s");
  const permissionsP7s = textField(body, "permissions_p7s");
  signedByPermissionsCa(governanceP7s, "governance_p7s", permissionsCa);
  const signed = signedByPermissionsCa(permissionsP7s, "permissions_p7s", permissionsCa);
  if (!signed.equals(Buffer.from(permissionsXml.replace(/\r\n/g, "\n"))))
    throw new AgentError("the answer's permissions_xml is not what permissions_p7s signs");
  return {
    parsed,
    crl,
    files: {
      "key.pem": expected.key.export({ type: "pkcs8", format: "pem" }).toString(),
      "cert.pem": toPem("CERTIFICATE", Buffer.from(cert.raw)),
      "identity_ca.cert.pem": toPem("CERTIFICATE", Buffer.from(identityCa.raw)),
      "permissions_ca.cert.pem": toPem("CERTIFICATE", Buffer.from(permissionsCa.raw)),
      "governance.p7s": governanceP7s,
      "permissions.xml": permissionsXml,
      "permissions.p7s": permissionsP7s,
      "crl.pem": toPem("X509 CRL", crl.der),
    },
  };
}

export interface EnclaveRenewOptions {
  log?: Logger;
  timeoutMs?: number;
  signal?: AbortSignal;
  commit?: EnclaveCommitOptions;
}

/** Renews one enclave with a new key over mTLS (the device's current certificate) and replaces its files. */
export async function renewEnclave(
  state: AgentState,
  ks: Keystore,
  enclave: Enclave,
  options: EnclaveRenewOptions = {},
): Promise<EnclaveRenewal & { crl: ParsedCrl }> {
  const fresh = csrForKey(enclave.path, generateKey("p256"));
  const client = new RegistrationClient(parseServerUrl(state.config.server), {
    rootPem: state.root.pem,
    identity: { certChainPem: state.certPem.replace(/\s*$/, "\n") + state.chainPem, keyPem: state.keyPem },
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    signal: options.signal,
  });
  let body: Record<string, unknown>;
  try {
    const payload = { keystore: ks.id, enclave: enclave.path, csr: fresh.csrDer.toString("base64") };
    body = (await client.postJson(ROS2_RENEW_PATH, payload)).body;
  } finally {
    client.close();
  }
  const { files, parsed, crl } = enclaveFilesFrom(body, { path: enclave.path, key: fresh.key, root: state.root, ks });
  commitEnclave(enclave.dir, files, options.commit);
  return {
    path: enclave.path,
    serial: parsed.serialHex,
    previousSerial: enclave.serial,
    notBefore: parsed.notBefore,
    notAfter: parsed.notAfter,
    crl,
  };
}

// ---- the loop ---------------------------------------------------------------------------------

/** The problem type (suffix) of a 403 for an enclave that is not this device's. */
export const NOT_OWNED_SUFFIX = "/enclave-not-owned";

/** Why an enclave is no longer asked for (until the agent restarts). */
type Parked = "not-this-device" | "unknown" | "revoked" | "unusable";

interface Tracked {
  /** Serial the schedule below is for. */
  serial: string;
  renewAt: number;
  attempt: number;
  /** When to try again after a failure. */
  retryAt?: number;
  parked?: Parked;
}

export interface Ros2Options {
  keystoreDir: string;
  /** Where the identity CA's CRL is fetched (default: next to the device certificate's CRL distribution point). */
  crlUrl?: URL;
  crlIntervalMs?: number;
  log?: Logger;
  clock?: Clock;
  random?: () => number;
  backoff?: BackoffOptions;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** The agent's current state (re-read before each cycle: the device certificate renews too). */
  loadState: () => AgentState;
  /** Runs fn while the device renewal cannot replace the agent's files. */
  exclusive?: <T>(fn: () => Promise<T>) => Promise<T>;
  /** After each enclave renewal (the --on-renew hook). */
  onRenewed?: (renewal: EnclaveRenewal, enclaveDir: string) => void | Promise<void>;
  /** After a CRL was written into enclaves' crl.pem (never for one already in place): their paths and the CRL. */
  onCrlWritten?: (written: { enclaves: string[]; crl: ParsedCrl; publicPath: string }) => void | Promise<void>;
  commit?: EnclaveCommitOptions;
}

/** One pass and the schedule between passes; tests drive cycle() directly. */
export class Ros2Keeper {
  private readonly tracked = new Map<string, Tracked>();
  private readonly logged = new Set<string>();
  private nextCrlAt = 0;
  private crlAttempt = 0;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly random: () => number;

  constructor(private readonly options: Ros2Options) {
    this.log = options.log ?? silentLogger;
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
  }

  private once(key: string, fn: () => void): void {
    if (this.logged.has(key)) return;
    this.logged.add(key);
    fn();
  }

  /** Refreshes the CRL when due, renews every due enclave; returns when to run again (ms since epoch). */
  async cycle(): Promise<number> {
    const state = this.options.loadState();
    const ks = openKeystore(this.options.keystoreDir, state.root);
    const scan = scanEnclaves(ks, this.log);
    for (const u of scan.unusable)
      this.once(`unusable ${u.path} ${u.reason}`, () =>
        this.log.warn("enclave left alone: cannot use its files", { enclave: u.path, reason: u.reason }),
      );
    const now = this.clock.now();
    let crl: ParsedCrl | undefined;
    if (now >= this.nextCrlAt) crl = await this.fetchCrl(ks, state);

    for (const enclave of scan.enclaves) {
      let t = this.tracked.get(enclave.path);
      // New, or renewed or created again by someone else (`ros2 enclave renew|create` on the CA machine, copied here):
      // a new certificate is a new start, even for an enclave parked as revoked (its path was created again).
      if (!t || t.serial !== enclave.serial) {
        t = {
          serial: enclave.serial,
          attempt: 0,
          renewAt: renewalTime(enclave.notBefore.getTime(), enclave.notAfter.getTime(), this.random),
        };
        this.tracked.set(enclave.path, t);
        this.log.info("enclave renewal scheduled", {
          enclave: enclave.path,
          serial: enclave.serial,
          not_after: enclave.notAfter,
          renew_at: new Date(t.renewAt),
        });
      }
      if (t.parked) continue;
      const due = Math.max(t.renewAt, t.retryAt ?? 0);
      if (this.clock.now() < due || this.options.signal?.aborted) continue;
      const renewed = await this.renewOne(ks, enclave, t);
      if (renewed && (!crl || newer(renewed.crl, crl))) crl = renewed.crl;
    }
    const changed = syncCrls(ks, scanEnclaves(ks).enclaves, crl, this.log);
    if (changed.length > 0) {
      // What was written is public/'s CRL (the newest), which may be newer than this cycle's candidate.
      const publicPath = join(ks.dir, "public", "identity_ca.crl.pem");
      const written = readCrlIfValid(ks, publicPath);
      this.log.info("CRL written", { enclaves: changed, crl_number: written?.crlNumber?.toString() });
      // A failing hook is the runner's to log; the files are in place either way.
      if (written) await this.options.onCrlWritten?.({ enclaves: changed, crl: written, publicPath });
    }

    let next = this.nextCrlAt;
    for (const t of this.tracked.values()) if (!t.parked) next = Math.min(next, Math.max(t.renewAt, t.retryAt ?? 0));
    return next;
  }

  private async fetchCrl(ks: Keystore, state: AgentState): Promise<ParsedCrl | undefined> {
    const interval = this.options.crlIntervalMs ?? DEFAULT_CRL_INTERVAL_MS;
    let url: URL;
    try {
      url = this.options.crlUrl ?? defaultCrlUrl(state);
    } catch (e) {
      this.once("crl-url", () => this.log.error("cannot refresh the enclaves' CRL", { error: (e as Error).message }));
      this.nextCrlAt = this.clock.now() + interval;
      return undefined;
    }
    try {
      const text = await fetchText(url, state.root.pem, this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS, this.options.signal);
      const crl = checkIdentityCrl(ks, text, `GET ${url.href}`);
      this.crlAttempt = 0;
      this.nextCrlAt = this.clock.now() + interval;
      return crl;
    } catch (e) {
      const delay = Math.min(
        interval,
        Math.round(backoffDelay(this.crlAttempt++, interval * 10, this.random, undefined, this.options.backoff)),
      );
      const fields = { ...describeError(e), url: url.href, retry_in_ms: delay };
      if (e instanceof TransportError || (e instanceof ServerError && e.transient)) this.log.warn("CRL refresh failed; retrying", fields);
      else this.log.error("CRL refused; keeping the one in place", fields);
      this.nextCrlAt = this.clock.now() + delay;
      return undefined;
    }
  }

  private async renewOne(ks: Keystore, enclave: Enclave, t: Tracked): Promise<(EnclaveRenewal & { crl: ParsedCrl }) | undefined> {
    const fields = { enclave: enclave.path, serial: enclave.serial, attempt: t.attempt + 1 };
    this.log.info("renewing enclave", fields);
    try {
      // The state is read again in turn: a device renewal may just have replaced the certificate to present.
      const run = () =>
        renewEnclave(this.options.loadState(), ks, enclave, {
          log: this.log,
          timeoutMs: this.options.timeoutMs,
          signal: this.options.signal,
          commit: this.options.commit,
        });
      const r = await (this.options.exclusive ? this.options.exclusive(run) : run());
      this.log.info("enclave renewed", { enclave: r.path, serial: r.serial, previous_serial: r.previousSerial, not_after: r.notAfter });
      this.tracked.set(enclave.path, {
        serial: r.serial,
        attempt: 0,
        renewAt: renewalTime(r.notBefore.getTime(), r.notAfter.getTime(), this.random),
      });
      await this.options.onRenewed?.(r, enclave.dir);
      return r;
    } catch (e) {
      // Only the enclave's own refusals park it; a 403 about the device (not active, certificate revoked) backs off as any refusal.
      const parked: Parked | undefined = !(e instanceof ServerError)
        ? undefined
        : e.status === 409
          ? "revoked"
          : e.status === 404
            ? "unknown"
            : e.status === 403 && e.type?.endsWith(NOT_OWNED_SUFFIX)
              ? "not-this-device"
              : undefined;
      if (parked) {
        t.parked = parked;
        if (t.parked === "revoked")
          this.log.error("enclave revoked; it is not renewed until it is created again (fleetpki ros2 enclave create on the CA machine)", {
            ...fields,
            ...describeError(e),
          });
        else
          this.log.warn(
            t.parked === "unknown" ? "enclave unknown to the server; left alone" : "enclave not renewed by this device; left alone",
            { ...fields, ...describeError(e) },
          );
        return undefined;
      }
      const lifetime = enclave.notAfter.getTime() - enclave.notBefore.getTime();
      const retryAfter = e instanceof ServerError ? e.retryAfterMs : undefined;
      const delay = Math.round(backoffDelay(t.attempt++, lifetime, this.random, retryAfter, this.options.backoff));
      t.retryAt = this.clock.now() + delay;
      const out = { ...fields, ...describeError(e), retry_in_ms: delay };
      if (e instanceof TransportError || (e instanceof ServerError && e.transient)) this.log.warn("enclave renewal failed; retrying", out);
      else this.log.error("enclave renewal refused; retrying", out);
      return undefined;
    }
  }

  /** Runs cycles until the signal aborts. An unusable keystore is logged and tried again later, never fatal to the device's own renewal. */
  async run(maxSleepMs: number): Promise<void> {
    const signal = this.options.signal;
    while (!signal?.aborted) {
      let next: number;
      try {
        next = await this.cycle();
      } catch (e) {
        this.log.error("ROS 2 keystore cycle failed", { keystore: this.options.keystoreDir, ...describeError(e) });
        next = this.clock.now() + (this.options.crlIntervalMs ?? DEFAULT_CRL_INTERVAL_MS);
      }
      for (let left = next - this.clock.now(); left > 0 && !signal?.aborted; left = next - this.clock.now())
        await this.clock.sleep(Math.min(left, maxSleepMs), signal);
    }
  }
}

function describeError(e: unknown): Record<string, unknown> {
  if (e instanceof ServerError) return { error: e.message, status: e.status, problem_type: e.type };
  if (e instanceof TransportError) return { error: e.message, code: e.code, kind: "network" };
  return { error: e instanceof Error ? e.message : String(e) };
}

/** Test helper and `agent status`: the public key of an enclave's key.pem matches its cert.pem. */
export function enclaveKeyMatches(dir: string): boolean {
  try {
    const cert = certificateFile(join(dir, "cert.pem"));
    return sameKey(cert.publicKey, createPublicKey(readFileSync(join(dir, "key.pem"), "utf8")));
  } catch {
    return false;
  }
}
