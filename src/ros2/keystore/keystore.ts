// SROS2 keystores (docs: the layout contract of issue 12): the two ROS 2 CAs of a fleet, and
// `ros2 keystore init`, which writes the public CA certificates, the identity CA's CRL and the signed
// governance. The CA keys never enter a keystore: they stay in the fleet directory, encrypted.
import { randomUUID } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { createIntermediate } from "../../authority/ca/cas.js";
import { pendingRequests } from "../../authority/ca/ceremony.js";
import { checkpointAfter } from "../../authority/audit-checkpoints.js";
import { CaNotActive, InvalidArgument } from "../../authority/errors.js";
import { ROS2_CAS, layout, type Ros2CaRole } from "../../authority/layout.js";
import type { FleetServices } from "../../authority/services.js";
import { crlPem, currentCrl } from "../../authority/status/crls.js";
import { fsyncDir, writeFileAtomic } from "../../keys/files.js";
import { sha256Fingerprint } from "../../x509/certificate.js";
import { fromPem } from "../../x509/pem.js";
import { defaultGovernance } from "../default-governance.js";
import { Sros2PolicyError } from "../errors.js";
import { DEFAULT_LIMITS, decodePolicyBytes, parsePolicyText, type XElement } from "../policy-xml/tree.js";
import { signDocument } from "./documents.js";
import { coversDomain, describeDomains, governanceDomains, type DomainRange } from "./governance.js";
import {
  ForeignKeystore,
  InvalidDomainId,
  KeystoreAlreadyInitialised,
  KeystoreDirNotEmpty,
  NotAKeystore,
  Ros2AnchorMissing,
  Ros2CasPending,
} from "./errors.js";

export const KEYSTORE_MARKER = ".fleetpki-keystore.json";

/** Paths inside a keystore (relative to it), as sros2 lays them out. */
export const ks = {
  marker: KEYSTORE_MARKER,
  public: "public",
  private: "private",
  enclaves: "enclaves",
  identityCa: join("public", "identity_ca.cert.pem"),
  permissionsCa: join("public", "permissions_ca.cert.pem"),
  identityCrl: join("public", "identity_ca.crl.pem"),
  governanceXml: join("enclaves", "governance.xml"),
  governanceP7s: join("enclaves", "governance.p7s"),
} as const;

/** The files of one enclave directory. */
export const ENCLAVE_FILES = {
  cert: "cert.pem",
  key: "key.pem",
  identityCa: "identity_ca.cert.pem",
  permissionsCa: "permissions_ca.cert.pem",
  governance: "governance.p7s",
  permissions: "permissions.xml",
  permissionsP7s: "permissions.p7s",
  crl: "crl.pem",
} as const;

export interface KeystoreMarker {
  version: 1;
  keystore: string;
  /** SHA-256 (hex) of the fleet root certificate's DER. */
  fleet: string;
  domain_id: number;
}

/** Limit on a governance file given with --governance. */
const MAX_GOVERNANCE_BYTES = 1024 * 1024;

export function parseDomainId(text: string | number | undefined): number {
  if (text === undefined) return 0;
  const s = String(text).trim();
  if (!/^\d{1,3}$/.test(s) || Number(s) > 232) throw new InvalidDomainId(String(text));
  return Number(s);
}

export async function rootFingerprint(fleet: FleetServices): Promise<string> {
  return sha256Fingerprint(fromPem((await fleet.caRecord("root")).certificate_pem, ["CERTIFICATE"]));
}

/** The keystore marker of `dir`, checked field by field (also read by `keystore verify`, without a fleet). */
export function readKeystoreMarker(dir: string): KeystoreMarker {
  const file = join(dir, KEYSTORE_MARKER);
  if (!existsSync(file)) throw new NotAKeystore(dir, `${KEYSTORE_MARKER} is missing`);
  let m: Partial<Record<keyof KeystoreMarker, unknown>>;
  try {
    const text = readFileSync(file, "utf8");
    if (text.length > 64 * 1024) throw new Error("too large");
    m = JSON.parse(text) as typeof m;
  } catch {
    throw new NotAKeystore(dir, `${KEYSTORE_MARKER} is not JSON`);
  }
  if (
    !m ||
    m.version !== 1 ||
    typeof m.keystore !== "string" ||
    !/^[0-9a-f-]{36}$/.test(m.keystore) ||
    typeof m.fleet !== "string" ||
    !/^[0-9a-f]{64}$/.test(m.fleet) ||
    typeof m.domain_id !== "number" ||
    !Number.isInteger(m.domain_id) ||
    m.domain_id < 0 ||
    m.domain_id > 232
  )
    throw new NotAKeystore(dir, `${KEYSTORE_MARKER} lacks version 1, keystore, fleet or domain_id`);
  return m as KeystoreMarker;
}

/**
 * The keystore at `dir`, checked to be one (marker and SROS2 tree) and this fleet's (same root
 * and recorded in the database).
 */
export async function openKeystore(fleet: FleetServices, dir: string): Promise<KeystoreMarker> {
  const m = readKeystoreMarker(dir);
  for (const d of [ks.public, ks.private, ks.enclaves])
    if (!existsSync(join(dir, d)) || !statSync(join(dir, d)).isDirectory()) throw new NotAKeystore(dir, `${d}/ is missing`);
  for (const f of [ks.identityCa, ks.permissionsCa, ks.identityCrl, ks.governanceP7s])
    if (!existsSync(join(dir, f))) throw new NotAKeystore(dir, `${f} is missing`);
  if (m.fleet !== (await rootFingerprint(fleet))) throw new ForeignKeystore(dir, m.fleet);
  if (!(await fleet.store.ops.ros2.getKeystore(m.keystore)))
    throw new NotAKeystore(dir, `keystore ${m.keystore} is not recorded in this fleet's database`);
  return m;
}

/**
 * The fleet's ROS 2 CAs, made on first use: intermediates under the root (P-256, the permissions CA
 * with digitalSignature), recorded and audited like every CA. With the root offline, the ceremony
 * requests are written and Ros2CasPending says what to do.
 */
export async function ensureRos2Cas(fleet: FleetServices, actor: string): Promise<void> {
  const pending: string[] = [];
  for (const id of [ROS2_CAS.identity, ROS2_CAS.permissions] as Ros2CaRole[]) {
    const row = await fleet.store.ops.cas.get(id);
    if (row) {
      if (row.status !== "active") throw new CaNotActive(`the ${id} CA is ${row.status}; no keystore can be made with it`);
      continue;
    }
    // A request already waits for the offline root: a second key would orphan it.
    const request = layout.ceremonyRequest(id);
    if (pendingRequests(fleet).includes(request)) {
      pending.push(request);
      continue;
    }
    const r = await createIntermediate(fleet, id, fleet.config.validity.intermediate, actor, fleet.clock.now());
    if (r.status === "pending") pending.push(r.requestFile);
  }
  if (pending.length > 0)
    throw new Ros2CasPending(
      `the ROS 2 CAs wait for the offline root: sign ${pending.join(" and ")} on the root machine ` +
        "(`fleetpki ca root sign --dir ROOT REQUEST... --out OUT`), import the certificates here " +
        "(`fleetpki ca intermediate import OUT/*.pem`), then run `fleetpki ros2 keystore init` again",
    );
}

/**
 * A ROS 2 CA's self-signed trust anchor (src/authority/ca/cas.ts ros2TrustAnchor): what public/*.pem and
 * every enclave's copies hold, and the signer certificate embedded in every .p7s. Fast DDS and Cyclone DDS
 * take no partial chain, so the root-signed certificate in `cas` would not load.
 */
export async function ros2Anchor(fleet: FleetServices, id: Ros2CaRole): Promise<{ pem: string; der: Buffer }> {
  const row = await fleet.caRecord(id);
  if (!row.anchor_pem) throw new Ros2AnchorMissing(id);
  return { pem: row.anchor_pem, der: fromPem(row.anchor_pem, ["CERTIFICATE"]) };
}

export interface InitKeystoreRequest {
  dir: string;
  domainId?: number;
  /** A governance.xml to sign instead of sros2's default (used as given). */
  governanceFile?: string;
  actor: string;
}

export interface InitKeystoreResult {
  dir: string;
  keystoreId: string;
  domainId: number;
  identityCaFingerprint: string;
  permissionsCaFingerprint: string;
}

function readGovernance(file: string, domainId: number): string {
  let data: Buffer;
  try {
    if (statSync(file).size > MAX_GOVERNANCE_BYTES) throw new InvalidArgument(`--governance ${file}: larger than 1 MiB`);
    data = readFileSync(file);
  } catch (e) {
    if (e instanceof InvalidArgument) throw e;
    throw new InvalidArgument(`--governance ${file}: cannot be read`);
  }
  // The permissions CA signs it for every robot, whose DDS parses it: read it as strictly as a policy
  // (UTF-8, well-formed, no DOCTYPE, entities or processing instructions; src/ros2/policy-xml/tree.ts).
  let root: XElement;
  let text: string;
  try {
    text = decodePolicyBytes(data, `--governance ${file}`, DEFAULT_LIMITS);
    root = parsePolicyText(text, `--governance ${file}`, () => {});
  } catch (e) {
    if (e instanceof Sros2PolicyError) throw new InvalidArgument(e.message.replace("a policy file", "a governance file"));
    throw e;
  }
  if (root.ns !== null || root.local !== "dds" || !root.children.some((c) => c.kind === "element" && c.local === "domain_access_rules"))
    throw new InvalidArgument(`--governance ${file}: not a DDS governance document (no <dds> with <domain_access_rules>)`);
  let domains: DomainRange[];
  try {
    domains = governanceDomains(root);
  } catch (e) {
    throw new InvalidArgument(`--governance ${file}: ${(e as Error).message}`);
  }
  // DDS refuses a participant on a domain no rule covers: every node of the keystore would fail to start.
  if (!coversDomain(domains, domainId))
    throw new InvalidArgument(
      `--governance ${file}: its domain rules cover ${describeDomains(domains)}, not the keystore's domain ${domainId} ` +
        "(--domain-id); add it to a <domain_rule>'s <domains>, or give the domain id the governance is for",
    );
  return text;
}

/** Creates a directory with `mode` exactly (the umask would narrow it). */
function mkdirMode(path: string, mode: number): void {
  mkdirSync(path, { mode });
  chmodSync(path, mode);
}

/**
 * `ros2 keystore init DIR`: builds the keystore in a temporary directory beside DIR, records it
 * (audited ros2.keystore.init), then renames it into place: a failure leaves neither files nor rows.
 */
export async function initKeystore(fleet: FleetServices, req: InitKeystoreRequest): Promise<InitKeystoreResult> {
  const dir = resolve(req.dir);
  const domainId = req.domainId ?? 0;
  if (!Number.isInteger(domainId) || domainId < 0 || domainId > 232) throw new InvalidDomainId(String(domainId));
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw new KeystoreDirNotEmpty(`${dir} exists and is not a directory`);
    if (existsSync(join(dir, KEYSTORE_MARKER))) {
      const m = readKeystoreMarker(dir);
      if (m.fleet !== (await rootFingerprint(fleet))) throw new ForeignKeystore(dir, m.fleet);
      // Asking again for what exists is not an error; asking for another domain or governance is.
      const given = req.governanceFile === undefined ? undefined : readGovernance(req.governanceFile, m.domain_id);
      const sameGovernance = given === undefined || given === readFileSync(join(dir, ks.governanceXml), "utf8");
      const otherDomain = req.domainId !== undefined && m.domain_id !== domainId;
      if (otherDomain || !sameGovernance)
        throw new KeystoreDirNotEmpty(
          `${dir} is already this fleet's keystore ${m.keystore} (domain ${m.domain_id}) with ` +
            `${otherDomain ? `another domain than ${domainId}` : "another governance.xml"}; give a new or empty directory`,
        );
      const message = `${dir} is already this fleet's keystore ${m.keystore} (domain ${m.domain_id}); nothing to do`;
      throw new KeystoreAlreadyInitialised(message, m.keystore);
    }
    if (readdirSync(dir).length > 0) throw new KeystoreDirNotEmpty(`${dir} exists and is not empty; give a new or empty directory`);
  }
  if (!existsSync(dirname(dir))) throw new InvalidArgument(`${dirname(dir)} does not exist`);
  const governanceXml = req.governanceFile ? readGovernance(req.governanceFile, domainId) : defaultGovernance(domainId);

  await ensureRos2Cas(fleet, req.actor);
  const identity = await ros2Anchor(fleet, ROS2_CAS.identity);
  const permissions = await ros2Anchor(fleet, ROS2_CAS.permissions);
  const permissionsCa = await fleet.issuingCa(ROS2_CAS.permissions);
  const crl = crlPem(await currentCrl(fleet, ROS2_CAS.identity));
  const keystoreId = randomUUID();
  // The anchor is the embedded signer: Cyclone DDS 0.10 chain-verifies the signer it finds in the .p7s.
  const governanceP7s = signDocument(Buffer.from(governanceXml), permissions.der, permissionsCa.signer, fleet.clock.now());
  const marker: KeystoreMarker = { version: 1, keystore: keystoreId, fleet: await rootFingerprint(fleet), domain_id: domainId };

  const tmp = join(dirname(dir), `.${basename(dir)}.${keystoreId.slice(0, 8)}.tmp`);
  try {
    mkdirMode(tmp, 0o755);
    mkdirMode(join(tmp, ks.public), 0o755);
    mkdirMode(join(tmp, ks.private), 0o700);
    mkdirMode(join(tmp, ks.enclaves), 0o755);
    writeFileAtomic(join(tmp, ks.identityCa), identity.pem);
    writeFileAtomic(join(tmp, ks.permissionsCa), permissions.pem);
    writeFileAtomic(join(tmp, ks.identityCrl), crl);
    writeFileAtomic(join(tmp, ks.governanceXml), governanceXml);
    writeFileAtomic(join(tmp, ks.governanceP7s), governanceP7s);
    writeFileAtomic(join(tmp, KEYSTORE_MARKER), JSON.stringify(marker, null, 2) + "\n");
    const now = fleet.clock.now();
    await fleet.store.transaction(async (tx) => {
      await tx.ros2.createKeystore({
        id: keystoreId,
        dir,
        domain_id: domainId,
        governance_p7s: governanceP7s,
        created_at: now.toISOString(),
      });
      await tx.audit.append([
        {
          actor: req.actor,
          action: "ros2.keystore.init",
          subject: `ros2-keystore:${keystoreId}`,
          details: { dir, domain_id: domainId, governance: req.governanceFile ? "file" : "default" },
          at: now,
        },
      ]);
    });
    // An empty DIR is replaced by the finished tree in one rename.
    renameSync(tmp, dir);
    fsyncDir(dirname(dir));
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  await checkpointAfter(fleet, req.actor);
  return {
    dir,
    keystoreId,
    domainId,
    identityCaFingerprint: sha256Fingerprint(identity.der),
    permissionsCaFingerprint: sha256Fingerprint(permissions.der),
  };
}
