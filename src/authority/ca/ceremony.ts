// Offline root ceremony. The root key lives only on an offline machine:
//   offline:  fleetpki ca root init --dir ROOT            (root key + self-signed certificate)
//   online:   fleetpki init --root-cert root.pem          (intermediate keys + signing requests)
//   offline:  fleetpki ca root sign --dir ROOT REQUEST... (signed intermediates)
//   online:   fleetpki ca intermediate import CERT...     (fleet becomes operational)
// A request file carries the CSR (proof of possession) plus what the root needs to apply its
// profile; the root decides every extension itself.
import { X509Certificate, createPublicKey, type KeyObject } from "node:crypto";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { validateDomain } from "../../config/config.js";
import { parseDuration } from "../../config/duration.js";
import { ensurePrivateDir, writeFileAtomic } from "../../keys/files.js";
import { generateKey, publicSpki, readPassphraseFile, readPrivateKey, writePrivateKey } from "../../keys/keys.js";
import { CA_KEY_TYPES, signatureSchemeFor, type CaKeyType } from "../../x509/algorithms.js";
import { parseCertificate, subjectPublicKeyOf, type ParsedCertificate } from "../../x509/certificate.js";
import { buildCsr, parseCsr, CsrError } from "../../x509/csr.js";
import { nameToString } from "../../x509/name.js";
import { fromPem, toPem, PemError } from "../../x509/pem.js";
import { buildIntermediateCertificate, buildRootCertificate, caName, type CaSubject } from "../../x509/profiles.js";
import { CeremonyError, FleetExists, InvalidArgument } from "../errors.js";
import type { FleetServices } from "../services.js";
import { sha256Fingerprint } from "../../x509/certificate.js";
import { ROS2_CAS, intermediateKeyPurposes, isRos2Ca, layout, type IntermediateRole } from "../layout.js";
import { preparePassphrase } from "./passphrase.js";

const REQUEST_VERSION = 1;

export interface CeremonyRequest {
  fleetpki_ceremony_request: number;
  ca_id: string;
  role: IntermediateRole;
  subject: CaSubject;
  domain: string;
  lifetime: string;
  crl_url: string;
  ocsp_url: string;
  csr: string;
}

/** Writes <fleet>/ceremony/<id>.request.json for the offline root; returns its relative path. */
export function writeCeremonyRequest(
  fleet: FleetServices,
  id: string,
  role: IntermediateRole,
  subject: CaSubject,
  key: KeyObject,
  lifetime: string,
): string {
  const spki = publicSpki(key);
  const csr = buildCsr(caName(subject), spki, { key, scheme: signatureSchemeFor(key) });
  const rootUrls = fleet.statusUrlsFor("root");
  const request: CeremonyRequest = {
    fleetpki_ceremony_request: REQUEST_VERSION,
    ca_id: id,
    role,
    subject,
    domain: fleet.domain,
    lifetime,
    crl_url: rootUrls.crl,
    ocsp_url: rootUrls.ocsp,
    csr: toPem("CERTIFICATE REQUEST", csr),
  };
  ensurePrivateDir(fleet.path(layout.ceremonyDir));
  const rel = layout.ceremonyRequest(id);
  writeFileAtomic(fleet.path(rel), JSON.stringify(request, null, 2) + "\n");
  return rel;
}

/** Requests still waiting for a signed certificate. */
export function pendingRequests(fleet: FleetServices): string[] {
  const dir = fleet.path(layout.ceremonyDir);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".request.json"))
    .map((f) => join(layout.ceremonyDir, f));
}

// ---- offline side ------------------------------------------------------------------------

export const ROOT_CONFIG = "root.yaml";

export interface RootConfig {
  name: string;
  domain: string;
  key_type: CaKeyType;
  passphrase_file: string;
  max_intermediate_lifetime: string;
}

export interface RootInitOptions {
  dir: string;
  name: string;
  domain: string;
  keyType: CaKeyType;
  passphraseFile?: string;
  validity?: string;
  /** The offline machine's time: it signs with no fleet (and no FleetServices) around. */
  now: Date;
}

export function initOfflineRoot(opts: RootInitOptions): { certificatePath: string; fingerprint: string; passphraseGenerated: boolean } {
  if (existsSync(join(opts.dir, ROOT_CONFIG)) || existsSync(join(opts.dir, "cert.pem"))) throw new FleetExists(opts.dir);
  validateDomain(opts.domain);
  if (!(CA_KEY_TYPES as readonly string[]).includes(opts.keyType))
    throw new InvalidArgument(`--key-type must be one of ${CA_KEY_TYPES.join(", ")}`);
  const lifetimeMs = parseDuration(opts.validity ?? "20y");
  ensurePrivateDir(opts.dir);
  const pass = preparePassphrase(opts.dir, opts.passphraseFile);
  const key = generateKey(opts.keyType);
  const spki = publicSpki(key);
  const now = opts.now;
  const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000 - 60_000);
  const root = buildRootCertificate({
    subject: { organization: opts.name, commonName: `${opts.name} Root CA` },
    spki,
    subjectPublicKey: subjectPublicKeyOf(spki),
    signer: { key, scheme: signatureSchemeFor(key) },
    notBefore,
    notAfter: new Date(notBefore.getTime() + lifetimeMs),
  });
  writePrivateKey(join(opts.dir, "key.pem"), key, pass.passphrase);
  writeFileAtomic(join(opts.dir, "cert.pem"), toPem("CERTIFICATE", root.der));
  const config: RootConfig = {
    name: opts.name,
    domain: opts.domain,
    key_type: opts.keyType,
    passphrase_file: pass.configPath,
    max_intermediate_lifetime: "10y",
  };
  writeFileAtomic(join(opts.dir, ROOT_CONFIG), "# Offline root CA (fleetpki ca root init)\n" + stringifyYaml(config));
  return { certificatePath: join(opts.dir, "cert.pem"), fingerprint: sha256Fingerprint(root.der), passphraseGenerated: pass.generated };
}

export interface SignedIntermediate {
  caId: string;
  role: string;
  subject: string;
  serial: string;
  notAfter: string;
  file: string;
}

function readRequest(file: string): CeremonyRequest {
  let request: CeremonyRequest;
  try {
    request = JSON.parse(readFileSync(file, "utf8"));
  } catch {
    throw new CeremonyError(`${file}: not a fleetpki ceremony request (unreadable or not JSON)`);
  }
  if (!request || typeof request !== "object" || request.fleetpki_ceremony_request !== REQUEST_VERSION)
    throw new CeremonyError(`${file}: not a fleetpki ceremony request (version ${request?.fleetpki_ceremony_request})`);
  for (const field of ["ca_id", "domain", "lifetime", "crl_url", "ocsp_url", "csr"] as const)
    if (typeof request[field] !== "string" || request[field] === "")
      throw new CeremonyError(`${file}: field "${field}" missing or not a string`);
  if (typeof request.subject?.commonName !== "string")
    throw new CeremonyError(`${file}: field "subject.commonName" missing or not a string`);
  if (!["devices", "services", "operators", "local", "ros2-identity", "ros2-permissions"].includes(request.role))
    throw new CeremonyError(`${file}: unknown role "${request.role}"`);
  return request;
}

/** Signs ceremony requests with the offline root; writes <out>/<ca_id>.pem for each. */
export interface OfflineRoot {
  config: RootConfig;
  certificate: ParsedCertificate;
  key: KeyObject;
}

/** The offline root directory's configuration, certificate and decrypted key. */
export function openOfflineRoot(rootDir: string): OfflineRoot {
  const configPath = join(rootDir, ROOT_CONFIG);
  if (!existsSync(configPath))
    throw new CeremonyError(`${rootDir} is not an offline root directory (${ROOT_CONFIG} missing; run \`fleetpki ca root init\`)`);
  const config = parseYaml(readFileSync(configPath, "utf8")) as RootConfig;
  const passphrase = readPassphraseFile(resolve(rootDir, config.passphrase_file));
  const key = readPrivateKey(join(rootDir, "key.pem"), passphrase);
  const certificate = parseCertificate(fromPem(readFileSync(join(rootDir, "cert.pem"), "utf8"), ["CERTIFICATE"]));
  return { config, certificate, key };
}

export function signCeremonyRequests(rootDir: string, files: readonly string[], outDir: string, now: Date): SignedIntermediate[] {
  const { config, certificate: rootCert, key } = openOfflineRoot(rootDir);
  const maxLifetime = parseDuration(config.max_intermediate_lifetime);
  // Validate every request before signing any, so a bad batch signs nothing.
  const prepared = files.map((file) => {
    const request = readRequest(file);
    if (request.domain !== config.domain)
      throw new CeremonyError(`${file}: request is for domain ${request.domain}, this root serves ${config.domain}`);
    let csr;
    try {
      csr = parseCsr(request.csr);
    } catch (e) {
      if (e instanceof CsrError || e instanceof PemError) throw new CeremonyError(`${file}: ${e.message}`);
      throw e;
    }
    let lifetimeMs: number;
    try {
      lifetimeMs = Math.min(parseDuration(request.lifetime), maxLifetime);
    } catch (e) {
      throw new CeremonyError(`${file}: ${(e as Error).message}`);
    }
    return { file, request, csr, lifetimeMs };
  });
  ensurePrivateDir(join(rootDir, "signed"));
  ensurePrivateDir(outDir);
  return prepared.map(({ request, csr, lifetimeMs }) => {
    const issued = buildIntermediateCertificate(
      { certificate: rootCert, signer: { key, scheme: signatureSchemeFor(key) }, status: { crl: request.crl_url, ocsp: request.ocsp_url } },
      {
        subject: caName({ organization: config.name, commonName: request.subject.commonName }),
        spki: csr.spki,
        subjectPublicKey: csr.subjectPublicKey,
        now,
        lifetimeMs,
        // The ROS 2 CAs name enclave paths, not fleet names; the permissions CA signs documents itself.
        constrainToDomain: request.role === "services" || isRos2Ca(request.role) ? undefined : config.domain,
        signsDocuments: request.role === ROS2_CAS.permissions,
        keyPurposes: isRos2Ca(request.role) ? intermediateKeyPurposes(request.role) : undefined,
      },
    );
    const pem = toPem("CERTIFICATE", issued.der);
    writeFileAtomic(join(rootDir, "signed", `${request.ca_id}-${issued.serialHex}.pem`), pem);
    const out = join(outDir, `${request.ca_id}.pem`);
    writeFileAtomic(out, pem);
    return {
      caId: request.ca_id,
      role: request.role,
      subject: nameToString(parseCertificate(issued.der).subject),
      serial: issued.serialHex,
      notAfter: issued.notAfter.toISOString(),
      file: out,
    };
  });
}

// ---- back online -------------------------------------------------------------------------

export interface ImportedIntermediate {
  caId: string;
  file: string;
}

/** A PEM certificate file, read and parsed; `fail` turns what went wrong into the caller's error. */
export function readCertificateFile(file: string, fail: (problem: string) => Error): ParsedCertificate {
  try {
    return parseCertificate(fromPem(readFileSync(file, "utf8"), ["CERTIFICATE"]));
  } catch (e) {
    throw fail(`not a readable certificate: ${(e as Error).message}`);
  }
}

/** Matches each signed certificate to a pending request by public key and checks it chains to our root. */
export function matchSignedIntermediates(
  fleet: FleetServices,
  files: readonly string[],
  rootDer: Buffer,
): { caId: string; der: Buffer; requestFile: string; file: string }[] {
  const pending = pendingRequests(fleet).map((rel) => {
    const request = readRequest(fleet.path(rel));
    return { rel, request, spki: parseCsr(request.csr).spki };
  });
  const rootKey = createPublicKey({ key: parseCertificate(rootDer).spki, format: "der", type: "spki" });
  const rootCert = parseCertificate(rootDer);
  return files.map((file) => {
    const cert = readCertificateFile(file, (problem) => new CeremonyError(`${file}: ${problem}`));
    const der = cert.der;
    const match = pending.find((p) => p.spki.equals(cert.spki));
    if (!match) throw new CeremonyError(`${basename(file)}: no pending request in ${layout.ceremonyDir}/ has this public key`);
    if (!cert.issuer.equals(rootCert.subject)) throw new CeremonyError(`${basename(file)}: not issued by this fleet's root CA`);
    if (!new X509Certificate(der).verify(rootKey))
      throw new CeremonyError(`${basename(file)}: signature does not verify against this fleet's root CA`);
    return { caId: match.request.ca_id, der, requestFile: match.rel, file };
  });
}

export function removeRequest(fleet: FleetServices, rel: string): void {
  rmSync(fleet.path(rel), { force: true });
}
