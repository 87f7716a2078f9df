// Operators: the people who steer the fleet (admin API, dashboard, gateway). An operator is a row
// of the operators table (name, role, status) and the certificates of kind "operator" with its name
// as subject_id, issued by the operators CA for spiffe://<domain>/operator/<name>. Modelled on
// service identities (services.ts): `removeOperator` revokes every certificate (cessationOfOperation)
// and the name may then be added again. Roles: viewer < operator < admin; the last active admin
// can be neither removed nor demoted, so a fleet never locks itself out of its admin API.
import { randomBytes } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import type { OperatorRole } from "../../access/identity.js";
import { parseDuration } from "../../config/duration.js";
import { ensurePrivateDir, writeFileAtomic } from "../../keys/files.js";
import { generateKey, privateKeyPem, publicSpki } from "../../keys/keys.js";
import type { SubjectCertificateSummary } from "../../store/operations/certificates.js";
import type { Operations } from "../../store/operations.js";
import type { OperatorTable } from "../../store/schema.js";
import { subjectPublicKeyOf } from "../../x509/certificate.js";
import { parsePemBlocks, toPem } from "../../x509/pem.js";
import { operatorSpiffeId } from "../../x509/profiles.js";
import { checkpointAfter } from "../audit-checkpoints.js";
import { InvalidArgument, OperatorExists, UnknownOperator } from "../errors.js";
import type { ChangeFeed } from "../events/change-feed.js";
import { isUnreadableOperatorChange, type FleetEvent } from "../events/events.js";
import { certificateRow, issueAuditDetails, issuedRecord } from "../issue/records.js";
import type { FleetServices } from "../services.js";
import { revokeIdentityCertificates, type StatusChange } from "../status/revocation.js";

export const OPERATOR_ROLES = ["viewer", "operator", "admin"] as const satisfies readonly OperatorRole[];

/** As service names: a SPIFFE path segment, the certificate's CN and a prefix of MQTT client ids. */
export const OPERATOR_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export const OPERATOR_FILES = { key: "key.pem", cert: "cert.pem", chain: "chain.pem", ca: "ca.pem" } as const;

const REMOVE_REASON = "cessationOfOperation";

/** Does a holder of `have` hold at least `need`? (viewer < operator < admin; anything else holds nothing.) */
export function roleAtLeast(have: OperatorRole | null | undefined, need: OperatorRole): boolean {
  const rank = (r: unknown) => OPERATOR_ROLES.indexOf(r as OperatorRole);
  return rank(have) >= 0 && rank(have) >= rank(need);
}

export function isOperatorRole(role: unknown): role is OperatorRole {
  return typeof role === "string" && (OPERATOR_ROLES as readonly string[]).includes(role);
}

export function assertOperatorName(name: unknown): asserts name is string {
  if (typeof name !== "string" || !OPERATOR_NAME_PATTERN.test(name))
    throw new InvalidArgument(
      `invalid operator name ${JSON.stringify(typeof name === "string" ? name.slice(0, 80) : name)}: ` +
        "use 1-63 characters a-z 0-9 _ - starting with a letter or digit",
    );
}

export function assertOperatorRole(role: unknown): asserts role is OperatorRole {
  if (!isOperatorRole(role))
    throw new InvalidArgument(
      `invalid operator role ${JSON.stringify(typeof role === "string" ? role.slice(0, 80) : role)}: use ${OPERATOR_ROLES.join(", ")}`,
    );
}

export interface AddOperatorRequest {
  name: string;
  role: OperatorRole;
  /** Directory for key.pem (0600), cert.pem, chain.pem, ca.pem and <name>.p12 (0600); created 0700 when missing. */
  outDir: string;
  actor: string;
  /** Required when the operator exists: a new key and certificate (the earlier ones stay valid until they expire). */
  renew?: boolean;
  /** The PKCS#12's passphrase; generated (192 bits) when not given. */
  p12Passphrase?: string;
}

export interface AddedOperator {
  name: string;
  role: OperatorRole;
  identity: string;
  serial: string;
  notAfter: Date;
  dir: string;
  files: { key: string; cert: string; chain: string; ca: string; p12: string };
  /** The PKCS#12's passphrase: show it once to whoever imports the file, never log it. */
  p12Passphrase: string;
  /** true when it was generated here (not given by the caller). */
  p12PassphraseGenerated: boolean;
  renewed: boolean;
}

function checkExistence(name: string, row: OperatorTable | undefined, renew: boolean): void {
  const active = row?.status === "active";
  if (active && !renew) throw new OperatorExists(name);
  if (!active && renew)
    throw new InvalidArgument(`operator "${name}" has no certificate to renew${row ? " (it was removed)" : ""}; add it without --renew`);
}

/** Refuses a change that would leave the fleet without an active admin. */
async function keepAnAdmin(tx: Operations, row: OperatorTable, what: string): Promise<void> {
  if (row.status === "active" && row.role === "admin" && (await tx.operators.activeAdmins()) <= 1)
    throw new InvalidArgument(
      `operator "${row.name}" is the last active admin; ${what} would lock every admin out (add another admin first)`,
    );
}

/** Records (in `tx`) an operator issued elsewhere, e.g. the "admin" operator `init` makes. */
export async function recordOperator(
  tx: Operations,
  req: { name: string; role: OperatorRole; serial: string; actor: string; now: Date; identity: string },
): Promise<void> {
  const at = req.now.toISOString();
  await tx.operators.put({ name: req.name, role: req.role, status: "active", created_at: at, updated_at: at });
  await tx.audit.append([
    {
      actor: req.actor,
      action: "operator.add",
      subject: `operator:${req.name}`,
      details: { role: req.role, serial: req.serial, identity: req.identity, renew: false, previous: [] },
      at: req.now,
    },
  ]);
}

const liveCertificates = (rows: readonly SubjectCertificateSummary[]) => rows.filter((r) => r.status !== "revoked");

/**
 * Issues an operator certificate (operators CA, clientAuth only) for a P-256 key generated here,
 * records it with the operator's role and audits it (`certificate.issue` of kind "operator", then
 * `operator.add` with the role), then writes the PEM files and a passphrase-protected PKCS#12 for
 * browsers. Everything that can be refused is refused before anything is written or recorded.
 */
export async function addOperator(fleet: FleetServices, req: AddOperatorRequest): Promise<AddedOperator> {
  assertOperatorName(req.name);
  assertOperatorRole(req.role);
  const renew = req.renew === true;
  // Loaded here: node-forge costs every other command ~35 ms of start-up.
  const { buildPkcs12, P12_PASSPHRASE_PATTERN } = await import("../../keys/pkcs12.js");
  if (req.p12Passphrase !== undefined && !P12_PASSPHRASE_PATTERN.test(req.p12Passphrase))
    throw new InvalidArgument("the PKCS#12 passphrase must be 8-1024 printable ASCII characters");
  if (typeof req.outDir !== "string" || req.outDir === "") throw new InvalidArgument("an output directory is required");
  const dir = resolve(req.outDir);
  const files = {
    key: join(dir, OPERATOR_FILES.key),
    cert: join(dir, OPERATOR_FILES.cert),
    chain: join(dir, OPERATOR_FILES.chain),
    ca: join(dir, OPERATOR_FILES.ca),
    p12: join(dir, `${req.name}.p12`),
  };
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new InvalidArgument(`--out ${req.outDir} exists and is not a directory`);
  // A fresh operator never replaces someone's key; a renewal replaces the operator's own files.
  for (const file of [files.key, files.p12])
    if (!renew && existsSync(file))
      throw new InvalidArgument(`${file} already exists; choose another --out directory (or give --renew to replace it)`);
  const existing = await fleet.store.ops.operators.get(req.name);
  checkExistence(req.name, existing, renew);
  if (existing && renew && req.role !== existing.role) await keepAnAdmin(fleet.store.ops, existing, `making it ${req.role}`);

  const template = await fleet.leafTemplate("operators", "operator");
  const { chain, root } = await fleet.chainPem("operators");
  const lifetimeMs = parseDuration(fleet.config.validity.operator);
  const identity = operatorSpiffeId(fleet.domain, req.name);
  const key = generateKey("p256");
  const spki = publicSpki(key);
  const now = fleet.clock.now();
  const issued = template.issue(req.name, [{ uri: identity }], { spki, subjectPublicKey: subjectPublicKeyOf(spki), now, lifetimeMs });
  const record = issuedRecord(issued, { issuerCa: "operators", kind: "operator", subjectId: req.name, deviceId: null });
  const generated = req.p12Passphrase === undefined;
  const p12Passphrase = req.p12Passphrase ?? randomBytes(24).toString("base64url");
  // Built before anything is recorded: it cannot fail halfway through.
  const p12 = buildPkcs12({
    key,
    certificates: [issued.der, ...parsePemBlocks(chain).map((b) => b.der)],
    passphrase: p12Passphrase,
    friendlyName: `${req.name} (fleetpki operator, ${fleet.domain})`,
  });
  // The directory first: a path that cannot be created fails here, before anything is recorded.
  if (!existsSync(dir)) ensurePrivateDir(dir);
  const at = now.toISOString();
  await fleet.store.transaction(async (tx) => {
    const row = await tx.operators.get(req.name);
    checkExistence(req.name, row, renew); // another process may have added or removed it meanwhile
    if (row && renew && req.role !== row.role) await keepAnAdmin(tx, row, `making it ${req.role}`);
    const previous = liveCertificates(await tx.certificates.ofKind("operator", req.name)).map((r) => r.serial);
    await tx.cas.recordOwnCertificate(certificateRow(record, now));
    await tx.operators.put({ name: req.name, role: req.role, status: "active", created_at: row?.created_at ?? at, updated_at: at });
    const subject = `operator:${req.name}`;
    await tx.audit.append([
      { actor: req.actor, action: "certificate.issue", subject, details: issueAuditDetails(record, { subject_id: req.name }), at: now },
      {
        actor: req.actor,
        action: "operator.add",
        subject,
        details: { role: req.role, serial: record.issued.serialHex, identity, renew, previous },
        at: now,
      },
    ]);
  });
  // The key before the certificate: a reader never pairs the new certificate with the old key.
  writeFileAtomic(files.key, privateKeyPem(key), 0o600);
  writeFileAtomic(files.cert, toPem("CERTIFICATE", issued.der));
  writeFileAtomic(files.chain, chain);
  writeFileAtomic(files.ca, root);
  writeFileAtomic(files.p12, p12, 0o600);
  await checkpointAfter(fleet, req.actor);
  return {
    name: req.name,
    role: req.role,
    identity,
    serial: issued.serialHex,
    notAfter: issued.notAfter,
    dir,
    files,
    p12Passphrase,
    p12PassphraseGenerated: generated,
    renewed: renew,
  };
}

/**
 * Revokes every certificate of the operator not revoked yet (cessationOfOperation), each its own
 * `certificate.revoke` event (so CRLs, OCSP and the gateway follow), marks it removed, ends its
 * browser sessions and spends its unused login links, then `operator.remove`; one transaction. The last active admin stays.
 */
export async function removeOperator(fleet: FleetServices, req: { name: string; actor: string }): Promise<StatusChange> {
  assertOperatorName(req.name);
  const now = fleet.clock.now();
  const at = now.toISOString();
  const change = await fleet.store.transaction(async (tx) => {
    const row = await tx.operators.get(req.name);
    if (!row) throw new UnknownOperator(req.name);
    if (row.status !== "active") throw new InvalidArgument(`operator "${req.name}" is already removed`);
    await keepAnAdmin(tx, row, "removing it");
    const { serials, cas, events } = await revokeIdentityCertificates(tx, await tx.certificates.ofKind("operator", req.name), {
      name: req.name,
      reason: REMOVE_REASON,
      actor: req.actor,
      now,
    });
    await tx.operators.update(req.name, { status: "removed", updated_at: at });
    const sessions = await tx.operators.endSessionsOf(req.name, at);
    // A link given out before the removal must not open a session if the name is added again later.
    await tx.operators.spendLoginsOf(req.name, at);
    await tx.audit.append([
      ...events,
      {
        actor: req.actor,
        action: "operator.remove",
        subject: `operator:${req.name}`,
        details: { reason: REMOVE_REASON, serials, cas, role: row.role, sessions_ended: sessions },
        at: now,
      },
    ]);
    return { serials, cas };
  });
  await checkpointAfter(fleet, req.actor);
  return change;
}

/** Changes an active operator's role (`operator.role`); false when it already had it (nothing recorded). */
export async function setOperatorRole(fleet: FleetServices, req: { name: string; role: OperatorRole; actor: string }): Promise<boolean> {
  assertOperatorName(req.name);
  assertOperatorRole(req.role);
  const now = fleet.clock.now();
  return fleet.store.transaction(async (tx) => {
    const row = await tx.operators.get(req.name);
    if (!row) throw new UnknownOperator(req.name);
    if (row.status !== "active") throw new InvalidArgument(`operator "${req.name}" is removed; add it again instead`);
    if (row.role === req.role) return false;
    await keepAnAdmin(tx, row, `making it ${req.role}`);
    await tx.operators.update(req.name, { role: req.role, updated_at: now.toISOString() });
    await tx.audit.append([
      {
        actor: req.actor,
        action: "operator.role",
        subject: `operator:${req.name}`,
        details: { role: req.role, previous: row.role },
        at: now,
      },
    ]);
    return true;
  });
}

export interface OperatorSummary {
  name: string;
  role: OperatorRole;
  status: "active" | "removed";
  identity: string;
  /** The newest certificate's (null: none recorded). */
  serial: string | null;
  notAfter: string | null;
  /** Of the newest certificate. */
  certificateStatus: "valid" | "expired" | "revoked" | "hold" | "none";
}

/** Every operator ever added, removed ones included, by name, with its newest certificate. */
export async function listOperators(fleet: FleetServices): Promise<OperatorSummary[]> {
  const now = fleet.clock.now().toISOString();
  const newest = new Map<string, SubjectCertificateSummary>();
  // Ordered by subject, newest first: the first row of each name is its newest.
  for (const row of await fleet.store.ops.certificates.ofKind("operator")) if (!newest.has(row.subject_id)) newest.set(row.subject_id, row);
  return (await fleet.store.ops.operators.list()).map((o) => {
    const c = newest.get(o.name);
    const certificateStatus = !c
      ? "none"
      : c.status === "revoked" || c.status === "hold"
        ? c.status
        : c.not_after <= now
          ? "expired"
          : "valid";
    return {
      name: o.name,
      role: o.role,
      status: o.status,
      identity: operatorSpiffeId(fleet.domain, o.name),
      serial: c?.serial ?? null,
      notAfter: c?.not_after ?? null,
      certificateStatus,
    };
  });
}

/**
 * Operators' roles in memory, kept current from the change feed (as CertificateStatus keeps
 * certificates): the gateway's admission and the admin API ask it on every request. Load it after
 * the feed started and follow the feed: events the snapshot already holds are skipped.
 */
export class OperatorDirectory {
  /** Active operators only. */
  private roles = new Map<string, OperatorRole>();
  private loadedSeq = 0;
  private readonly listeners = new Set<() => void>();
  private reloading: Promise<void> | undefined;
  private duringReload: FleetEvent[] | undefined;

  private constructor(private readonly fleet: FleetServices) {}

  static async load(fleet: FleetServices): Promise<OperatorDirectory> {
    const directory = new OperatorDirectory(fleet);
    await directory.fill();
    return directory;
  }

  /**
   * The head first, then the rows: an event committed in between is in the rows and applied again
   * after; each event sets a final state (role, removed), so applying it twice in order changes nothing.
   */
  private async fill(): Promise<void> {
    const seq = await this.fleet.store.ops.changes.headSeq();
    const rows = await this.fleet.store.ops.operators.list();
    this.roles = new Map(rows.filter((r) => r.status === "active").map((r) => [r.name, r.role]));
    this.loadedSeq = seq;
  }

  /** The active operator's role; null when unknown or removed. */
  role(name: string): OperatorRole | null {
    return this.roles.get(name) ?? null;
  }

  /** Told after a batch of events changed some role (e.g. to re-admit gateway sessions). Returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  follow(changes: ChangeFeed): () => void {
    return changes.subscribe((events) => this.apply(events));
  }

  /** Resolves once a reload under way has finished. */
  async settled(): Promise<void> {
    while (this.reloading) await this.reloading;
  }

  apply(events: readonly FleetEvent[]): void {
    this.duringReload?.push(...events);
    let changed = false;
    for (const event of events) {
      if (event.seq <= this.loadedSeq) continue;
      if (isUnreadableOperatorChange(event)) {
        this.reload();
        continue;
      }
      switch (event.type) {
        case "OperatorAdded":
          this.roles.set(event.name, event.role);
          changed = true;
          break;
        case "OperatorRoleChanged":
          if (this.roles.has(event.name)) this.roles.set(event.name, event.role);
          changed = true;
          break;
        case "OperatorRemoved":
          this.roles.delete(event.name);
          changed = true;
          break;
        default:
          break;
      }
    }
    if (changed) this.notify();
  }

  /** An operator change whose row cannot be read: every role is read again (events meanwhile applied on top). */
  private reload(): void {
    if (this.reloading) return;
    const during: FleetEvent[] = [];
    this.duringReload = during;
    this.reloading = (async () => {
      try {
        await this.fill();
        this.duringReload = undefined;
        this.apply(during);
        this.notify();
      } catch {
        // Kept as it was; the next unreadable change tries again.
      } finally {
        this.duringReload = undefined;
        this.reloading = undefined;
      }
    })();
  }

  private notify(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch {
        // One listener's failure keeps neither the others nor the directory from the batch.
      }
    }
  }
}
