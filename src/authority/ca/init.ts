// `fleetpki init`: the CA hierarchy, server and admin certificates, configuration and database,
// created together; on any failure nothing is left behind.
import { chmodSync, existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { isIP } from "node:net";
import { hostname, networkInterfaces } from "node:os";
import { dirname, join } from "node:path";
import { CONFIG_FILE, ConfigError, defaultConfig, renderConfig, validateDomain, validatePublicUrl } from "../../config/config.js";
import { parseDuration } from "../../config/duration.js";
import { ensurePrivateDir, writeFileAtomic } from "../../keys/files.js";
import { generateKey, publicSpki, readPrivateKey, writePrivateKey } from "../../keys/keys.js";
import { CA_KEY_TYPES, signatureSchemeFor, type CaKeyType } from "../../x509/algorithms.js";
import { subjectPublicKeyOf } from "../../x509/certificate.js";
import { fromPem, toPem } from "../../x509/pem.js";
import { OPERATOR_FILES, recordOperator } from "../identities/operators.js";
import { buildRootCertificate, deviceDnsZone, inDeviceDnsZone, operatorSpiffeId } from "../../x509/profiles.js";
import type { GeneralName } from "../../x509/extensions.js";
import { checkpointAfter, ensureAuditKey } from "../audit-checkpoints.js";
import { caSubjectFor, createIntermediate, recordCa, ros2TrustAnchor, writeCaAnchor, writeCaFiles } from "./cas.js";
import { matchSignedIntermediates, pendingRequests, readCertificateFile, removeRequest } from "./ceremony.js";
import { CeremonyError, FleetExists, InvalidArgument } from "../errors.js";
import { FleetServices, openDatabase } from "../services.js";
import { systemClock, type Clock } from "../clock.js";
import { sha256Fingerprint } from "../../x509/certificate.js";
import { STANDARD_INTERMEDIATES, isRos2Ca, layout } from "../layout.js";
import { DEFAULT_POLICY } from "../../access/default-policy.js";
import { preparePassphrase } from "./passphrase.js";
import { certificateRow, issueAuditDetails, issuedRecord, type IssuedRecord } from "../issue/records.js";

export interface InitOptions {
  dir: string;
  name?: string;
  domain?: string;
  keyType?: string;
  passphraseFile?: string;
  /** Default: this machine's names (defaultServerNames). */
  serverNames?: string[];
  /** Base URL of the status listener written into certificates; default http://<first server name>:8080. */
  publicUrl?: string;
  /** PEM of a root created offline (`ca root init`); the root key then never enters this directory. */
  rootCertFile?: string;
  /** Where "now" comes from (the fleet's FleetServices gets it too); the system clock by default. */
  clock?: Clock;
}

export interface InitResult {
  dir: string;
  rootFingerprint: string;
  passphraseGenerated: boolean;
  passphraseFile: string;
  serverNames: string[];
  publicUrl: string;
  /** Ceremony requests waiting for the offline root (empty when the fleet is ready). */
  pending: string[];
}

const HOSTNAME = /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

export function serverGeneralName(name: string): GeneralName {
  if (isIP(name)) return { ip: name };
  if (!HOSTNAME.test(name)) throw new InvalidArgument(`invalid server name "${name}": a DNS name or an IP address`);
  return { dns: name.toLowerCase() };
}

/**
 * What robots on the network may call this machine: its host name and its non-loopback
 * addresses, besides localhost/127.0.0.1/::1 for clients on the machine itself. Link-local
 * addresses are left out (they need a zone id no certificate can carry).
 */
export function defaultServerNames(host = hostname(), interfaces = networkInterfaces(), domain?: string): string[] {
  const names: string[] = [];
  const add = (n: string) => {
    if (!names.includes(n)) names.push(n);
  };
  const h = host.toLowerCase();
  // A host name that is not a valid DNS name (e.g. with "_") or sits in the device zone is skipped.
  if (HOSTNAME.test(h) && !(domain && inDeviceDnsZone(domain, h))) add(h);
  for (const n of ["localhost", "127.0.0.1", "::1"]) add(n);
  for (const list of Object.values(interfaces))
    for (const i of list ?? []) {
      if (i.internal || /^fe[89ab]/i.test(i.address) || i.address.startsWith("169.254.") || i.address.includes("%")) continue;
      add(i.address);
    }
  return names;
}

/** The development fleet `npm start` creates: a reserved name (RFC 2606) that cannot clash with a real one. */
export const DEV_DOMAIN = "dev.fleet.invalid";

const FLEET_MARKERS = [CONFIG_FILE, "fleetpki.db", "ca"];

export async function initFleet(opts: InitOptions): Promise<InitResult> {
  const dir = opts.dir;
  if (FLEET_MARKERS.some((m) => existsSync(join(dir, m)))) throw new FleetExists(dir);
  const name = opts.name ?? "fleetpki";
  if (name.trim() === "" || name.length > 64) throw new InvalidArgument("--name must be 1-64 characters");
  const keyType = (opts.keyType ?? "p256") as CaKeyType;
  if (!CA_KEY_TYPES.includes(keyType)) throw new InvalidArgument(`--key-type must be one of ${CA_KEY_TYPES.join(", ")}`);
  opts.serverNames?.forEach(serverGeneralName);
  let publicUrl: string | undefined;
  try {
    publicUrl = opts.publicUrl === undefined ? undefined : validatePublicUrl(opts.publicUrl, "--public-url");
  } catch (e) {
    throw e instanceof ConfigError ? new InvalidArgument(e.message) : e;
  }
  const externalRoot = opts.rootCertFile ? readRootCertificate(opts.rootCertFile) : undefined;
  if (opts.passphraseFile && !existsSync(opts.passphraseFile))
    throw new InvalidArgument(`passphrase file ${opts.passphraseFile} not found`);
  // The domain is baked into the CAs' name constraints for their whole life: no silent default.
  if (opts.domain === undefined || opts.domain === "")
    throw new InvalidArgument(
      "--domain is required: the fleet's trust domain (e.g. fleet.acme.example) is fixed in the CA certificates for good",
    );
  const domain = validateDomain(opts.domain);
  const serverNames = opts.serverNames?.length ? opts.serverNames : defaultServerNames(undefined, undefined, domain);
  // A robot's certificate names <id>.devices.<domain>: it could impersonate a server named there.
  const inZone = serverNames.find((n) => inDeviceDnsZone(domain, n));
  if (inZone)
    throw new InvalidArgument(
      `--server-name ${inZone} is in ${deviceDnsZone(domain)}, the zone of device certificates; use a name outside it`,
    );

  const existedBefore = existsSync(dir);
  const entriesBefore = new Set(existedBefore ? readdirSync(dir) : []);
  const modeBefore = existedBefore ? statSync(dir).mode & 0o7777 : 0;
  ensurePrivateDir(dir);
  let fleet: FleetServices | undefined;
  try {
    const pass = preparePassphrase(dir, opts.passphraseFile);
    const config = defaultConfig({ name, domain, keyType, passphraseFile: pass.configPath, serverNames, publicUrl });
    const store = await openDatabase(dir, config, { create: true });
    fleet = FleetServices.attach(dir, config, store, { passphrase: pass.passphrase, clock: opts.clock ?? systemClock });
    // One time for the whole hierarchy: every record and event of init carries the same.
    const now = fleet.clock.now();
    const actor = "cli:init";

    let rootDer: Buffer;
    if (externalRoot) {
      rootDer = externalRoot;
      writeCaFiles(dir, "root", rootDer, "");
      await store.transaction((tx) => recordCa(tx, { id: "root", der: rootDer, keyFile: null, issuerId: "root" }, actor, now));
    } else {
      const key = generateKey(keyType);
      const spki = publicSpki(key);
      const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000 - 60_000);
      rootDer = buildRootCertificate({
        subject: caSubjectFor(name, "root"),
        spki,
        subjectPublicKey: subjectPublicKeyOf(spki),
        signer: { key, scheme: signatureSchemeFor(key) },
        notBefore,
        notAfter: new Date(notBefore.getTime() + parseDuration(config.validity.root)),
      }).der;
      writeCaFiles(dir, "root", rootDer, "", key, pass.passphrase);
      await store.transaction((tx) =>
        recordCa(tx, { id: "root", der: rootDer, keyFile: layout.caKey("root"), issuerId: "root" }, actor, now),
      );
    }
    for (const id of STANDARD_INTERMEDIATES) await createIntermediate(fleet, id, config.validity.intermediate, actor, now);
    await completeFleet(fleet, actor, now);
    writeFileAtomic(join(dir, CONFIG_FILE), renderConfig(config));
    writeFileAtomic(join(dir, layout.policy), DEFAULT_POLICY); // 0644: no secret in it
    await store.transaction((tx) =>
      tx.audit.append([
        {
          actor,
          action: "fleet.init",
          subject: `fleet:${domain}`,
          details: { name, domain, key_type: keyType, offline_root: !!externalRoot },
          at: now,
        },
      ]),
    );
    await checkpointAfter(fleet, actor);
    return {
      dir,
      rootFingerprint: sha256Fingerprint(rootDer),
      passphraseGenerated: pass.generated,
      passphraseFile: pass.generated ? join(dir, pass.configPath) : pass.configPath,
      serverNames,
      publicUrl: config.server.public_url!,
      pending: pendingRequests(fleet),
    };
  } catch (e) {
    await fleet?.close().catch(() => {});
    fleet = undefined;
    if (!existedBefore) rmSync(dir, { recursive: true, force: true });
    else {
      for (const entry of readdirSync(dir)) if (!entriesBefore.has(entry)) rmSync(join(dir, entry), { recursive: true, force: true });
      chmodSync(dir, modeBefore);
    }
    throw e;
  } finally {
    await fleet?.close();
  }
}

function readRootCertificate(file: string): Buffer {
  const cert = readCertificateFile(file, (problem) => new InvalidArgument(`--root-cert ${file}: ${problem}`));
  if (!cert.issuer.equals(cert.subject)) throw new InvalidArgument(`--root-cert ${file}: not a self-signed root certificate`);
  return cert.der;
}

export interface OwnLeaf {
  caId: string;
  kind: "server" | "operator";
  commonName: string;
  sans: GeneralName[];
  dirRel: string;
  lifetime: string;
}

/** The registration server's certificate as fleetpki.yaml names it (server.names), from the services CA. */
export function serverLeaf(fleet: FleetServices): OwnLeaf {
  const names = fleet.config.server.names;
  return {
    caId: "services",
    kind: "server",
    commonName: names[0]!,
    sans: names.map(serverGeneralName),
    dirRel: layout.serverDir,
    lifetime: fleet.config.validity.server,
  };
}

/**
 * Issues a certificate for a key generated here (server, operator), records it, then writes
 * key, cert and chain (in that order: a crash in between leaves a key that does not match the
 * certificate, which `serve` notices and repairs by reissuing).
 */
export async function issueOwnLeaf(
  fleet: FleetServices,
  leaf: OwnLeaf,
  actor: string,
  now: Date,
  auditExtra: Record<string, unknown> = {},
): Promise<IssuedRecord> {
  const template = await fleet.leafTemplate(leaf.caId, leaf.kind);
  const key = generateKey(fleet.config.keys.type as CaKeyType);
  const spki = publicSpki(key);
  const issued = template.issue(leaf.commonName, leaf.sans, {
    spki,
    subjectPublicKey: subjectPublicKeyOf(spki),
    now,
    lifetimeMs: parseDuration(leaf.lifetime),
  });
  const record = issuedRecord(issued, { issuerCa: leaf.caId, kind: leaf.kind, subjectId: leaf.commonName, deviceId: null });
  const { chain } = await fleet.chainPem(leaf.caId);
  const passphrase = fleet.passphrase();
  await fleet.store.transaction(async (tx) => {
    await tx.cas.recordOwnCertificate(certificateRow(record, now));
    await tx.audit.append([
      {
        actor,
        action: "certificate.issue",
        subject: `${leaf.kind}:${leaf.commonName}`,
        details: issueAuditDetails(record, auditExtra),
        at: now,
      },
    ]);
  });
  const dir = fleet.path(leaf.dirRel);
  ensurePrivateDir(dir);
  writePrivateKey(join(dir, "key.pem"), key, passphrase);
  writeFileAtomic(join(dir, "cert.pem"), toPem("CERTIFICATE", issued.der));
  writeFileAtomic(join(dir, "chain.pem"), chain);
  return record;
}

/** Once the three standard intermediates exist: the server certificate and the admin operator certificate. */
export async function completeFleet(fleet: FleetServices, actor: string, now: Date): Promise<boolean> {
  const ids = new Set((await fleet.store.ops.cas.list()).map((c) => c.id));
  if (!STANDARD_INTERMEDIATES.every((id) => ids.has(id))) return false;
  const have = await fleet.store.ops.cas.kindsIssued(["server", "operator"]);
  if (!have.includes("server")) await issueOwnLeaf(fleet, serverLeaf(fleet), actor, now);
  if (!have.includes("operator")) {
    const identity = operatorSpiffeId(fleet.domain, "admin");
    const admin = await issueOwnLeaf(
      fleet,
      {
        caId: "operators",
        kind: "operator",
        commonName: "admin",
        sans: [{ uri: identity }],
        dirRel: layout.operatorDir("admin"),
        lifetime: fleet.config.validity.operator,
      },
      actor,
      now,
    );
    // The root beside it, so the directory is a whole operator bundle (`--server URL --operator DIR`
    // verifies the server against DIR/ca.pem), as `operator add --out` writes one.
    const { root } = await fleet.chainPem("operators");
    writeFileAtomic(join(fleet.path(layout.operatorDir("admin")), OPERATOR_FILES.ca), root);
    // The first operator is the fleet's admin (role admin in the admin API and the policy).
    await fleet.store.transaction((tx) =>
      recordOperator(tx, { name: "admin", role: "admin", serial: admin.issued.serialHex, actor, now, identity }),
    );
  }
  // The audit key signs checkpoints of the audit log (audit-checkpoints.ts).
  await ensureAuditKey(fleet, actor, now);
  return true;
}

/** Imports intermediates signed by the offline root; completes the fleet when all are present. */
export async function importIntermediates(
  fleet: FleetServices,
  files: readonly string[],
  actor: string,
): Promise<{ imported: string[]; ready: boolean }> {
  if (files.length === 0) throw new InvalidArgument("no certificate files given");
  const rootDer = fromPem((await fleet.caRecord("root")).certificate_pem, ["CERTIFICATE"]);
  const matched = matchSignedIntermediates(fleet, files, rootDer);
  const { root: rootPem } = await fleet.chainPem("root");
  const now = fleet.clock.now();
  for (const m of matched) {
    if (!existsSync(fleet.path(layout.caKey(m.caId))))
      throw new CeremonyError(`${m.file}: the key for ${m.caId} is missing from ${dirname(layout.caKey(m.caId))}`);
    writeCaFiles(fleet.dir, m.caId, m.der, rootPem);
    // A ROS 2 CA's key waited here for the root's signature: it self-signs its DDS trust anchor now.
    const anchorDer = isRos2Ca(m.caId)
      ? ros2TrustAnchor(m.caId, m.der, readPrivateKey(fleet.path(layout.caKey(m.caId)), fleet.passphrase()))
      : undefined;
    if (anchorDer) writeCaAnchor(fleet.dir, m.caId, anchorDer);
    const record = { id: m.caId, der: m.der, keyFile: layout.caKey(m.caId), issuerId: "root", ...(anchorDer ? { anchorDer } : {}) };
    await fleet.store.transaction((tx) => recordCa(tx, record, actor, now));
    removeRequest(fleet, m.requestFile);
  }
  const ready = await completeFleet(fleet, actor, now);
  await checkpointAfter(fleet, actor);
  return { imported: matched.map((m) => m.caId), ready };
}
