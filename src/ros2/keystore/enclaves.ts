// SROS2 enclaves: `ros2 enclave create|renew|revoke`, and renewEnclave for a robot's agent. An
// enclave's identity certificate comes from the ros2-identity CA (subject "CN=<enclave path>", what
// permissions.xml names), its permissions.xml from a stored source, signed by the ros2-permissions CA.
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, type Stats } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { loadPolicyFile } from "../../access/policy-file.js";
import { deviceAccessIdentity, registeredDeviceIds } from "../../access/registry.js";
import { deriveEnclavePolicy } from "../../access/ros2-policy.js";
import { checkpointAfter } from "../../authority/audit-checkpoints.js";
import { DeviceNotActive, InvalidArgument, UnknownDevice } from "../../authority/errors.js";
import { assertDeviceId, keyFromCsr } from "../../authority/issue/issuance.js";
import { certificateRow, issueAuditDetails, issuedRecord, type IssuedRecord } from "../../authority/issue/records.js";
import { layout, ROS2_CAS } from "../../authority/layout.js";
import type { FleetServices } from "../../authority/services.js";
import { crlPem, resignCrls, currentCrl } from "../../authority/status/crls.js";
import { parseRevokeReason, revokeIdentityCertificates } from "../../authority/status/revocation.js";
import { parseDuration } from "../../config/duration.js";
import { fsyncDir, writeFileAtomic } from "../../keys/files.js";
import { generateKey, privateKeyPem, publicSpki } from "../../keys/keys.js";
import type { Operations } from "../../store/operations.js";
import type { Ros2EnclaveTable } from "../../store/schema.js";
import { subjectPublicKeyOf } from "../../x509/certificate.js";
import { toPem } from "../../x509/pem.js";
import { enclavePathProblem } from "../names.js";
import type { Sros2Policy } from "../policy-model.js";
import { allowAllPolicy, enclaveGrantValidity, enclaveOf, readPolicyFile, renderEnclavePermissions, signDocument } from "./documents.js";
import {
  EnclaveExists,
  EnclaveNotOwned,
  EnclaveRevoked,
  EnclaveSubjectTaken,
  InvalidEnclavePath,
  PermissionsSourceRequired,
  UnknownKeystoreEnclave,
} from "./errors.js";
import { ENCLAVE_FILES, ks, openKeystore, ros2Anchor } from "./keystore.js";

/**
 * What is wrong with an enclave path: rcl's namespace rules (src/ros2/names.ts), and "/" itself,
 * which sros2 allows but whose directory would be enclaves/ itself, beside governance.xml.
 */
export function keystoreEnclavePathProblem(path: string): string | undefined {
  if (typeof path !== "string") return "is not a string";
  const problem = enclavePathProblem(path);
  if (problem) return problem;
  if (path === "/")
    return 'is the root "/", which cannot be an enclave of a keystore (its directory would be enclaves/); name one, e.g. /robot/node';
  return undefined;
}

function assertEnclavePath(path: string): void {
  const problem = keystoreEnclavePathProblem(path);
  if (problem) throw new InvalidEnclavePath(path, problem);
}

/** A grant's validity as sros2 writes it: the certificate's UTC time without zone ("YYYY-MM-DDTHH:MM:SS"). */
export function grantTime(d: Date): string {
  return d.toISOString().slice(0, 19);
}

/** The certificates table's subject_id of an enclave: unique across keystores. */
export const enclaveSubjectId = (keystoreId: string, path: string): string => `${keystoreId}:${path}`;

export type PermissionsSource = { kind: "policy"; policy: Sros2Policy } | { kind: "allow-all" } | { kind: "fleet-policy" };

/**
 * The policy an enclave's permissions are rendered from, by its stored source. "fleet-policy" is
 * derived from <dir>/policy.yaml as it is now (src/access/ros2-policy.ts), so a renewal carries
 * the policy's changes to the robot.
 */
export async function enclavePolicy(
  fleet: FleetServices,
  row: Pick<Ros2EnclaveTable, "path" | "permissions_source" | "permissions_policy" | "device_id">,
) {
  if (row.permissions_source === "allow-all") return allowAllPolicy(row.path);
  if (row.permissions_source === "policy" && row.permissions_policy) return JSON.parse(row.permissions_policy) as Sros2Policy;
  if (row.permissions_source === "fleet-policy") {
    if (row.device_id === null)
      throw new PermissionsSourceRequired(`enclave ${row.path}: permissions from the fleet policy need the device that runs it (--device)`);
    const { identity } = await deviceAccessIdentity(fleet, row.device_id);
    return deriveEnclavePolicy(loadPolicyFile(fleet.path(layout.policy)), identity, row.path, await registeredDeviceIds(fleet));
  }
  throw new InvalidArgument(`enclave ${row.path}: permissions source "${row.permissions_source}" is not available in this build`);
}

interface EnclaveDocuments {
  record: IssuedRecord;
  certificatePem: string;
  permissionsXml: string;
  permissionsP7s: string;
}

/** Issues the identity certificate for `key` and renders and signs the permissions valid as long. */
async function issueEnclaveDocuments(
  fleet: FleetServices,
  ctx: { keystoreId: string; path: string; domainId: number; policy: Sros2Policy; lifetimeMs: number; now: Date },
  key: { spki: Buffer; subjectPublicKey: Buffer },
): Promise<EnclaveDocuments> {
  const template = await fleet.leafTemplate(ROS2_CAS.identity, "ros2-enclave");
  const issued = template.issue(ctx.path, [], { ...key, now: ctx.now, lifetimeMs: ctx.lifetimeMs });
  const record = issuedRecord(issued, {
    issuerCa: ROS2_CAS.identity,
    kind: "ros2-enclave",
    subjectId: enclaveSubjectId(ctx.keystoreId, ctx.path),
    deviceId: null,
  });
  const validity = enclaveGrantValidity(issued.notBefore, issued.notAfter);
  const permissionsXml = renderEnclavePermissions(ctx.policy, {
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
    // sros2 sets it for every rmw that publishes ros_discovery_info (Connext, Cyclone DDS, Fast DDS).
    allowRosDiscoveryTopic: true,
    domainId: ctx.domainId,
  });
  const permissionsCa = await fleet.issuingCa(ROS2_CAS.permissions);
  const anchor = await ros2Anchor(fleet, ROS2_CAS.permissions);
  const permissionsP7s = signDocument(Buffer.from(permissionsXml), anchor.der, permissionsCa.signer, ctx.now);
  return { record, certificatePem: toPem("CERTIFICATE", issued.der), permissionsXml, permissionsP7s };
}

async function certificateEvents(
  tx: Operations,
  docs: EnclaveDocuments,
  req: { actor: string; now: Date; extra: Record<string, unknown> },
) {
  await tx.cas.recordOwnCertificate(certificateRow(docs.record, req.now));
  await tx.audit.append([
    {
      actor: req.actor,
      action: "certificate.issue",
      subject: `ros2-enclave:${docs.record.subjectId}`,
      details: issueAuditDetails(docs.record, { subject_id: docs.record.subjectId, ...req.extra }),
      at: req.now,
    },
  ]);
}

function lifetimeOf(fleet: FleetServices, validity: string | undefined): number {
  try {
    return parseDuration(validity ?? fleet.config.validity.ros2_enclave);
  } catch (e) {
    throw new InvalidArgument(`--validity: ${(e as Error).message}`);
  }
}

async function checkDevice(tx: Operations, deviceId: string): Promise<void> {
  assertDeviceId(deviceId);
  const device = await tx.devices.get(deviceId);
  if (!device) throw new UnknownDevice(deviceId);
  if (device.status !== "active") throw new DeviceNotActive(deviceId, device.status);
}

/**
 * Refuses `path` while another live enclave (not revoked, certificate not expired) of any keystore has it:
 * its subject "CN=<path>" is what DDS matches grants by. `self` (a renewal) is not "another".
 */
async function assertSubjectFree(tx: Operations, path: string, now: Date, self?: { keystoreId: string; deviceId?: string }) {
  const other = (await tx.ros2.liveEnclavesWithPath(path, now.toISOString())).find((e) => e.keystore_id !== self?.keystoreId);
  if (!other) return;
  // "/<device>/<path>" when the device id makes a ROS 2 namespace token ("amr-1" gives "amr_1").
  const token = self?.deviceId?.replace(/[^A-Za-z0-9_]/g, "_");
  const suggestion = token && !keystoreEnclavePathProblem(`/${token}${path}`) ? `/${token}${path}` : `/<robot>${path}`;
  throw new EnclaveSubjectTaken(path, { keystoreId: other.keystore_id, dir: other.keystore_dir, deviceId: other.device_id }, suggestion);
}

/** The public files every enclave carries a copy of (regular files: tar, rsync and the agent copy them as they are). */
function sharedFiles(keystoreDir: string): Record<string, string> {
  const read = (rel: string) => readText(join(keystoreDir, rel));
  return {
    [ENCLAVE_FILES.identityCa]: read(ks.identityCa),
    [ENCLAVE_FILES.permissionsCa]: read(ks.permissionsCa),
    [ENCLAVE_FILES.governance]: read(ks.governanceP7s),
    [ENCLAVE_FILES.crl]: read(ks.identityCrl),
  };
}

function readText(file: string): string {
  return readFileSync(file, "utf8");
}

/** Writes a complete enclave into a new 0700 temporary directory inside enclaves/; returns its path. */
function stageEnclave(keystoreDir: string, files: Record<string, string>, keyPem: string): string {
  const tmp = join(keystoreDir, ks.enclaves, `.enclave.${randomBytes(6).toString("hex")}.tmp`);
  mkdirSync(tmp, { mode: 0o700 });
  chmodSync(tmp, 0o700);
  try {
    for (const [name, content] of Object.entries(files)) writeFileAtomic(join(tmp, name), content);
    // rmw implementations load the key without a passphrase: 0600 in a 0700 directory is its protection.
    writeFileAtomic(join(tmp, ENCLAVE_FILES.key), keyPem, 0o600);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return tmp;
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/**
 * enclaves/ and every existing directory on the way to an enclave must be real directories: a link
 * would put the enclave and its private key outside the keystore, where no revocation's crl.pem reaches it.
 */
function assertNoLinks(keystoreDir: string, path: string): void {
  let at = join(keystoreDir, ks.enclaves);
  for (const s of ["", ...path.slice(1).split("/")]) {
    at = s === "" ? at : join(at, s);
    const st = lstatOrUndefined(at);
    if (!st) return;
    if (st.isSymbolicLink())
      throw new InvalidEnclavePath(path, `goes through ${at}, a symbolic link; enclaves are directories inside the keystore`);
  }
}

/** Creates the missing parents of an enclave directory (0755); returns those it made, deepest last. */
function makeParents(keystoreDir: string, path: string): string[] {
  assertNoLinks(keystoreDir, path);
  const made: string[] = [];
  const segments = path.slice(1).split("/").slice(0, -1);
  let at = join(keystoreDir, ks.enclaves);
  for (const s of segments) {
    at = join(at, s);
    const st = lstatOrUndefined(at);
    if (st) {
      if (!st.isDirectory()) throw new InvalidArgument(`${at} exists and is not a directory`);
      continue;
    }
    mkdirSync(at, { mode: 0o755 });
    chmodSync(at, 0o755);
    made.push(at);
  }
  return made;
}

/** The enclave's row when it is revoked, undefined when there is none; EnclaveExists when it is live. */
async function revokedOrAbsent(tx: Operations, keystoreId: string, path: string): Promise<Ros2EnclaveTable | undefined> {
  const row = await tx.ros2.getEnclave(keystoreId, path);
  if (row && row.status !== "revoked") throw new EnclaveExists(path);
  return row;
}

interface EnclaveSwap {
  /** Puts the old directory back (the staged one is removed). */
  undo(): void;
  /** Removes the old directory. */
  finish(): void;
}

/**
 * Replaces the enclave directory `target` with `staged` by two renames, after moving target's subdirectories
 * (nested enclaves and namespaces, e.g. enclaves/a/b of /a/b inside /a) into `staged` so that they stay.
 * Enclave file names have a ".", which no ROS 2 name token has: they never collide with a subdirectory.
 */
function swapEnclaveDir(keystoreDir: string, target: string, staged: string): EnclaveSwap {
  const old = join(keystoreDir, ks.enclaves, `.enclave.${randomBytes(6).toString("hex")}.old`);
  const nested = readdirSync(target, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);
  for (const n of nested) renameSync(join(target, n), join(staged, n));
  renameSync(target, old);
  renameSync(staged, target);
  fsyncDir(dirname(target));
  return {
    undo() {
      renameSync(target, staged);
      renameSync(old, target);
      for (const n of nested) renameSync(join(staged, n), join(target, n));
      fsyncDir(dirname(target));
      rmSync(staged, { recursive: true, force: true });
    },
    finish() {
      rmSync(old, { recursive: true, force: true });
    },
  };
}

function enclaveDir(keystoreDir: string, path: string): string {
  return join(keystoreDir, ks.enclaves, ...path.slice(1).split("/"));
}

export interface CreateEnclaveRequest {
  /** The keystore directory. */
  dir: string;
  path: string;
  deviceId?: string;
  policyFile?: string;
  allowAll?: boolean;
  /** Permissions derived from the ros2 section of <dir>/policy.yaml for deviceId (re-derived at each renewal). */
  fromFleetPolicy?: boolean;
  validity?: string;
  actor: string;
}

export interface EnclaveResult {
  keystoreId: string;
  path: string;
  dir: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  deviceId: string | null;
  source: Ros2EnclaveTable["permissions_source"];
}

/** The source given on the command line, checked; `policy` holds just this enclave's part. */
function permissionsSourceOf(req: CreateEnclaveRequest): PermissionsSource {
  if ([req.policyFile !== undefined, req.allowAll === true, req.fromFleetPolicy === true].filter(Boolean).length > 1)
    throw new PermissionsSourceRequired("give one of --policy FILE, --allow-all and --from-fleet-policy");
  if (req.allowAll) return { kind: "allow-all" };
  if (req.fromFleetPolicy) return { kind: "fleet-policy" };
  if (req.policyFile === undefined)
    throw new PermissionsSourceRequired(
      `enclave ${req.path} needs permissions: --policy FILE (an SROS2 policy naming the enclave), --allow-all ` +
        "(sros2's default policy: every topic, service and action) or --from-fleet-policy --device ID",
    );
  const policy = enclaveOf(readPolicyFile(req.policyFile), req.path);
  if (!policy) throw new InvalidArgument(`--policy ${req.policyFile}: the policy has no enclave ${req.path}`);
  return { kind: "policy", policy };
}

/** `ros2 enclave create DIR PATH`: key, certificate, permissions and copies, all or nothing. */
export async function createEnclave(fleet: FleetServices, req: CreateEnclaveRequest): Promise<EnclaveResult> {
  const dir = resolve(req.dir);
  assertEnclavePath(req.path);
  const keystore = await openKeystore(fleet, dir);
  const lifetimeMs = lifetimeOf(fleet, req.validity);
  if (req.deviceId !== undefined) await checkDevice(fleet.store.ops, req.deviceId);
  // A revoked enclave's path may be created again: the new enclave replaces its row and its leftover directory.
  const revoked = await revokedOrAbsent(fleet.store.ops, keystore.keystore, req.path);
  const target = enclaveDir(dir, req.path);
  assertNoLinks(dir, req.path);
  const leftover = lstatOrUndefined(target);
  if (leftover && !revoked) throw new EnclaveExists(req.path);
  if (leftover && !leftover.isDirectory()) throw new InvalidArgument(`${target} exists and is not a directory`);
  const self = { keystoreId: keystore.keystore, ...(req.deviceId !== undefined ? { deviceId: req.deviceId } : {}) };
  await assertSubjectFree(fleet.store.ops, req.path, fleet.clock.now(), self);
  const source = permissionsSourceOf(req);
  const deviceId = req.deviceId ?? null;
  const fleetRow = { path: req.path, permissions_source: "fleet-policy" as const, permissions_policy: null, device_id: deviceId };
  const policy =
    source.kind === "policy"
      ? source.policy
      : source.kind === "fleet-policy"
        ? await enclavePolicy(fleet, fleetRow)
        : allowAllPolicy(req.path);

  const key = generateKey("p256");
  const spki = publicSpki(key);
  const now = fleet.clock.now();
  const docs = await issueEnclaveDocuments(
    fleet,
    { keystoreId: keystore.keystore, path: req.path, domainId: keystore.domain_id, policy, lifetimeMs, now },
    { spki, subjectPublicKey: subjectPublicKeyOf(spki) },
  );
  const staged = stageEnclave(
    dir,
    {
      ...sharedFiles(dir),
      [ENCLAVE_FILES.cert]: docs.certificatePem,
      [ENCLAVE_FILES.permissions]: docs.permissionsXml,
      [ENCLAVE_FILES.permissionsP7s]: docs.permissionsP7s,
    },
    privateKeyPem(key),
  );
  let parents: string[] = [];
  let placed = false;
  let swap: EnclaveSwap | undefined;
  try {
    await fleet.store.transaction(async (tx) => {
      // Checked again inside the write transaction: two racing creates record one enclave.
      const replaced = await revokedOrAbsent(tx, keystore.keystore, req.path);
      if (replaced?.serial !== revoked?.serial) throw new EnclaveExists(req.path);
      if (req.deviceId !== undefined) await checkDevice(tx, req.deviceId);
      await assertSubjectFree(tx, req.path, now, self);
      const extra = { keystore: keystore.keystore, enclave: req.path };
      await certificateEvents(tx, docs, { actor: req.actor, now, extra });
      const row: Ros2EnclaveTable = {
        keystore_id: keystore.keystore,
        path: req.path,
        device_id: req.deviceId ?? null,
        serial: docs.record.issued.serialHex,
        permissions_source: source.kind,
        permissions_policy: source.kind === "policy" ? JSON.stringify(source.policy) : null,
        status: "active",
        created_at: now.toISOString(),
        renewed_at: null,
        revoked_at: null,
        validity: req.validity ?? null,
      };
      // The revoked enclave's row is superseded (its certificates stay in `certificates`, revoked).
      if (replaced) await tx.ros2.updateEnclave(keystore.keystore, req.path, row);
      else await tx.ros2.createEnclave(row);
      const replaces = replaced ? { replaces: { serial: replaced.serial, revoked_at: replaced.revoked_at } } : {};
      await tx.audit.append([
        {
          actor: req.actor,
          action: "ros2.enclave.create",
          subject: `ros2-enclave:${enclaveSubjectId(keystore.keystore, req.path)}`,
          details: { ...extra, device: req.deviceId ?? null, serial: docs.record.issued.serialHex, source: source.kind, ...replaces },
          at: now,
        },
      ]);
      // Put in place last, inside the transaction: a file system error rolls the rows back, and a
      // failed commit takes the directory out again (below).
      parents = makeParents(dir, req.path);
      if (lstatOrUndefined(target)) swap = swapEnclaveDir(dir, target, staged);
      else {
        renameSync(staged, target);
        placed = true;
        fsyncDir(dirname(target));
      }
    });
  } catch (e) {
    if (swap) swap.undo();
    else rmSync(placed ? target : staged, { recursive: true, force: true });
    for (const p of parents.reverse()) if (readdirSync(p).length === 0) rmSync(p, { recursive: true, force: true });
    throw e;
  }
  swap?.finish();
  await checkpointAfter(fleet, req.actor);
  return resultOf(keystore.keystore, req.path, target, docs, req.deviceId ?? null, source.kind);
}

function resultOf(
  keystoreId: string,
  path: string,
  dir: string,
  docs: EnclaveDocuments,
  deviceId: string | null,
  source: Ros2EnclaveTable["permissions_source"],
): EnclaveResult {
  const issued = docs.record.issued;
  return { keystoreId, path, dir, serial: issued.serialHex, notBefore: issued.notBefore, notAfter: issued.notAfter, deviceId, source };
}

export interface RenewEnclaveRequest {
  keystoreId: string;
  path: string;
  /** The robot's CSR (DER PKCS#10, P-256): the key never leaves it. */
  csrDer?: Buffer;
  /** The device asking (the agent): it must own the enclave. */
  deviceId?: string;
  validity?: string;
  actor: string;
}

/** What a renewed enclave's directory needs, besides its key. */
export interface RenewedEnclave {
  serial: string;
  notBefore: Date;
  notAfter: Date;
  certificatePem: string;
  permissionsXml: string;
  permissionsP7s: string;
  governanceP7s: string;
  identityCaPem: string;
  permissionsCaPem: string;
  crlPem: string;
}

/**
 * Renews an enclave for a CSR (the agent's renewal) or, without one, for `generated` (the CLI's new
 * key): a new certificate, permissions re-rendered from the stored source with its validity and
 * re-signed. The old certificate is superseded, not revoked. Audited ros2.enclave.renew.
 */
export async function renewEnclave(
  fleet: FleetServices,
  req: RenewEnclaveRequest,
  generated?: { spki: Buffer; subjectPublicKey: Buffer },
): Promise<RenewedEnclave> {
  assertEnclavePath(req.path);
  lifetimeOf(fleet, req.validity);
  const keystore = await fleet.store.ops.ros2.getKeystore(req.keystoreId);
  if (!keystore) throw new InvalidArgument(`unknown keystore ${req.keystoreId}`);
  const check = async (tx: Operations): Promise<Ros2EnclaveTable> => {
    const row = await tx.ros2.getEnclave(req.keystoreId, req.path);
    if (!row) throw new UnknownKeystoreEnclave(req.path);
    if (req.deviceId !== undefined && row.device_id !== req.deviceId) throw new EnclaveNotOwned(req.path, req.deviceId);
    if (row.status === "revoked") throw new EnclaveRevoked(req.path);
    // A held robot's enclaves are not renewed either, by its agent or by the CLI (a new certificate would escape the hold).
    if (row.device_id !== null) await checkDevice(tx, row.device_id);
    // An expired enclave freed its subject; another keystore may have taken it since.
    await assertSubjectFree(tx, req.path, fleet.clock.now(), { keystoreId: req.keystoreId });
    return row;
  };
  const row = await check(fleet.store.ops);
  // The renewal's own --validity, else the one the enclave was created with, else validity.ros2_enclave.
  const lifetimeMs = lifetimeOf(fleet, req.validity ?? row.validity ?? undefined);
  let key = generated;
  if (req.csrDer) {
    const k = await keyFromCsr(req.csrDer);
    // DDS Security PKI-DH: the identity key is P-256 (or RSA-2048, which fleetpki does not issue).
    if (k.keyType !== "p256") throw new InvalidArgument(`an enclave key must be P-256 (DDS Security PKI-DH); the CSR has ${k.keyType}`);
    key = { spki: k.spki, subjectPublicKey: k.subjectPublicKey };
  }
  if (!key) throw new InvalidArgument("renewEnclave needs a CSR");
  const now = fleet.clock.now();
  const docs = await issueEnclaveDocuments(
    fleet,
    { keystoreId: req.keystoreId, path: req.path, domainId: keystore.domain_id, policy: await enclavePolicy(fleet, row), lifetimeMs, now },
    key,
  );
  await fleet.store.transaction(async (tx) => {
    const current = await check(tx);
    const extra = { keystore: req.keystoreId, enclave: req.path, supersedes: current.serial };
    await certificateEvents(tx, docs, { actor: req.actor, now, extra });
    await tx.ros2.updateEnclave(req.keystoreId, req.path, { serial: docs.record.issued.serialHex, renewed_at: now.toISOString() });
    await tx.audit.append([
      {
        actor: req.actor,
        action: "ros2.enclave.renew",
        subject: `ros2-enclave:${enclaveSubjectId(req.keystoreId, req.path)}`,
        details: { ...extra, serial: docs.record.issued.serialHex, csr: req.csrDer !== undefined },
        at: now,
      },
    ]);
  });
  await checkpointAfter(fleet, req.actor);
  const [identity, permissions] = [await ros2Anchor(fleet, ROS2_CAS.identity), await ros2Anchor(fleet, ROS2_CAS.permissions)];
  const issued = docs.record.issued;
  return {
    serial: issued.serialHex,
    notBefore: issued.notBefore,
    notAfter: issued.notAfter,
    certificatePem: docs.certificatePem,
    permissionsXml: docs.permissionsXml,
    permissionsP7s: docs.permissionsP7s,
    governanceP7s: keystore.governance_p7s,
    identityCaPem: identity.pem,
    permissionsCaPem: permissions.pem,
    crlPem: crlPem(await currentCrl(fleet, ROS2_CAS.identity)),
  };
}

/**
 * `ros2 enclave renew DIR PATH`: a new key made here, renewEnclave, then the enclave directory
 * swapped whole (the new one staged beside it, two renames).
 */
export async function renewEnclaveInKeystore(
  fleet: FleetServices,
  req: { dir: string; path: string; validity?: string; actor: string },
): Promise<EnclaveResult> {
  const dir = resolve(req.dir);
  assertEnclavePath(req.path);
  const keystore = await openKeystore(fleet, dir);
  const target = enclaveDir(dir, req.path);
  const row = await fleet.store.ops.ros2.getEnclave(keystore.keystore, req.path);
  if (!row) throw new UnknownKeystoreEnclave(req.path);
  if (row.status === "revoked") throw new EnclaveRevoked(req.path);
  lifetimeOf(fleet, req.validity);
  const key = generateKey("p256");
  const spki = publicSpki(key);
  const keyPem = privateKeyPem(key);
  const renewed = await renewEnclave(
    fleet,
    { keystoreId: keystore.keystore, path: req.path, validity: req.validity, actor: req.actor },
    { spki, subjectPublicKey: subjectPublicKeyOf(spki) },
  );
  writeRenewedEnclave(dir, req.path, renewed, keyPem);
  return {
    keystoreId: keystore.keystore,
    path: req.path,
    dir: target,
    serial: renewed.serial,
    notBefore: renewed.notBefore,
    notAfter: renewed.notAfter,
    deviceId: row.device_id,
    source: row.permissions_source,
  };
}

/** Replaces an enclave directory with a renewed one (staged complete, then swapped by two renames). */
export function writeRenewedEnclave(keystoreDir: string, path: string, renewed: RenewedEnclave, keyPem: string): void {
  const target = enclaveDir(keystoreDir, path);
  const staged = stageEnclave(
    keystoreDir,
    {
      [ENCLAVE_FILES.cert]: renewed.certificatePem,
      [ENCLAVE_FILES.identityCa]: renewed.identityCaPem,
      [ENCLAVE_FILES.permissionsCa]: renewed.permissionsCaPem,
      [ENCLAVE_FILES.governance]: renewed.governanceP7s,
      [ENCLAVE_FILES.permissions]: renewed.permissionsXml,
      [ENCLAVE_FILES.permissionsP7s]: renewed.permissionsP7s,
      [ENCLAVE_FILES.crl]: renewed.crlPem,
    },
    keyPem,
  );
  makeParents(keystoreDir, path);
  if (existsSync(target)) swapEnclaveDir(keystoreDir, target, staged).finish();
  else {
    renameSync(staged, target);
    fsyncDir(dirname(target));
  }
}

/** Enclave directories under DIR/enclaves (those holding a cert.pem), as paths "/a/b". */
export function enclavesOnDisk(keystoreDir: string): string[] {
  const found: string[] = [];
  const walk = (abs: string, path: string) => {
    for (const e of readdirSync(abs, { withFileTypes: true })) {
      if (!e.isDirectory() || e.name.startsWith(".")) continue;
      const p = `${path}/${e.name}`;
      if (existsSync(join(abs, e.name, ENCLAVE_FILES.cert))) found.push(p);
      walk(join(abs, e.name), p);
    }
  };
  walk(join(keystoreDir, ks.enclaves), "");
  return found.sort();
}

/** Writes the identity CA's CRL into public/ and into every enclave of the keystore. */
export function writeCrlEverywhere(keystoreDir: string, pem: string): string[] {
  writeFileAtomic(join(keystoreDir, ks.identityCrl), pem);
  const paths = enclavesOnDisk(keystoreDir);
  for (const p of paths) writeFileAtomic(join(enclaveDir(keystoreDir, p), ENCLAVE_FILES.crl), pem);
  return paths;
}

/**
 * `ros2 enclave revoke DIR PATH`: the current certificate revoked (as every revocation: CRL re-signed,
 * OCSP and running servers follow), the enclave marked revoked (no renewal), and the new CRL written
 * into public/ and every enclave's crl.pem.
 */
export async function revokeEnclave(
  fleet: FleetServices,
  req: { dir: string; path: string; reason?: string; actor: string },
): Promise<{ serial: string; crlNumber: bigint; updated: string[] }> {
  const dir = resolve(req.dir);
  assertEnclavePath(req.path);
  const reason = parseRevokeReason(req.reason);
  const keystore = await openKeystore(fleet, dir);
  const now = fleet.clock.now();
  const serial = await fleet.store.transaction(async (tx) => {
    const row = await tx.ros2.getEnclave(keystore.keystore, req.path);
    if (!row) throw new UnknownKeystoreEnclave(req.path);
    if (row.status === "revoked") throw new InvalidArgument(`enclave ${req.path} is already revoked`);
    // Every certificate it ever had that is not expired (a superseded one still authenticates until then).
    const subjectId = enclaveSubjectId(keystore.keystore, req.path);
    const certs = (await tx.certificates.ofKind("ros2-enclave", subjectId)).filter((c) => c.not_after > now.toISOString());
    const { events, serials } = await revokeIdentityCertificates(tx, certs, { name: subjectId, reason, actor: req.actor, now });
    await tx.ros2.updateEnclave(keystore.keystore, req.path, { status: "revoked", revoked_at: now.toISOString() });
    await tx.audit.append([
      ...events,
      {
        actor: req.actor,
        action: "ros2.enclave.revoke",
        subject: `ros2-enclave:${subjectId}`,
        details: { keystore: keystore.keystore, enclave: req.path, reason, serials },
        at: now,
      },
    ]);
    return row.serial;
  });
  await checkpointAfter(fleet, req.actor);
  const [outcome] = await resignCrls(fleet, [ROS2_CAS.identity]);
  if (!outcome || outcome.outcome !== "signed")
    throw new InvalidArgument(`enclave ${req.path} is revoked, but the ros2-identity CRL could not be signed here`);
  const updated = writeCrlEverywhere(dir, crlPem(outcome.crl));
  return { serial, crlNumber: outcome.crl.crlNumber, updated };
}
