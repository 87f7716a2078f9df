// The audit key and signed checkpoints of the audit log (docs/audit.md): the key and its
// certificate (services CA, encrypted at rest like every key), made by `init` or on first need in
// older fleets; checkpoints written after every CA operation and periodically by `serve`; and
// `audit verify`, which checks the chain, the checkpoints kept outside the database and the state
// tables against the log; and `audit list`.
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  CheckpointInvalid,
  auditIdentity,
  checkpointFileName,
  signCheckpoint,
  verifyCheckpoint,
  checkpointSignerProblem,
  type AuditSigner,
  type CheckpointTrust,
} from "../audit/checkpoints.js";
import { listAudit, verifyAudit, verifyAuditRange, AuditBroken, type AuditRecord, type AuditVerdict } from "../audit/log.js";
import { StateReplay } from "../audit/replay.js";
import { parseDuration } from "../config/duration.js";
import { ensurePrivateDir, writeFileAtomic } from "../keys/files.js";
import { KeyError, generateKey, publicSpki, readPrivateKey, writePrivateKey } from "../keys/keys.js";
import type { Operations } from "../store/operations.js";
import { parseCertificate, subjectPublicKeyOf } from "../x509/certificate.js";
import { fromPem, toPem } from "../x509/pem.js";
import { parseRfc3339 } from "../x509/time.js";
import { InvalidArgument } from "./errors.js";
import type { FleetServices } from "./services.js";
import { layout } from "./layout.js";
import { certificateRow, issueAuditDetails, issuedRecord } from "./issue/records.js";

/** Where the audit key, its certificate and the services CA chain live in the fleet directory. */
export const AUDIT_KEY_DIR = "audit";

function currentAuditCertificate(ops: Operations, now: Date) {
  return ops.checkpoints.currentSigner(now.toISOString());
}

/**
 * The audit key and certificate, issued by the services CA like the server certificate when the
 * fleet has none that is valid (new fleets at init; older fleets, or an expired or revoked one, on
 * first need). Created under the database's write lock so that two processes never both make one.
 */
export async function ensureAuditKey(fleet: FleetServices, actor: string, now: Date): Promise<void> {
  if (await currentAuditCertificate(fleet.store.ops, now)) return;
  const template = await fleet.leafTemplate("services", "audit");
  const { chain } = await fleet.chainPem("services");
  await fleet.store.transaction(async (tx) => {
    if (await currentAuditCertificate(tx, now)) return; // another process made it meanwhile
    const key = generateKey(fleet.config.keys.type);
    const spki = publicSpki(key);
    const issued = template.issue("audit", [{ uri: auditIdentity(fleet.domain) }], {
      spki,
      subjectPublicKey: subjectPublicKeyOf(spki),
      now,
      lifetimeMs: parseDuration(fleet.config.validity.server),
    });
    const record = issuedRecord(issued, { issuerCa: "services", kind: "audit", subjectId: "audit", deviceId: null });
    const dir = fleet.path(AUDIT_KEY_DIR);
    ensurePrivateDir(dir);
    writePrivateKey(join(dir, "key.pem"), key, fleet.passphrase());
    writeFileAtomic(join(dir, "cert.pem"), toPem("CERTIFICATE", issued.der));
    writeFileAtomic(join(dir, "chain.pem"), chain);
    await tx.cas.recordOwnCertificate(certificateRow(record, now));
    const event = { actor, action: "certificate.issue", subject: `audit:${fleet.domain}`, details: issueAuditDetails(record), at: now };
    await tx.audit.append([event]);
  });
}

const signers = new WeakMap<FleetServices, { serial: string; signer: AuditSigner }>();

async function auditSigner(fleet: FleetServices, actor: string, now: Date): Promise<AuditSigner> {
  await ensureAuditKey(fleet, actor, now);
  const row = await currentAuditCertificate(fleet.store.ops, now);
  if (!row) throw new KeyError("no valid audit certificate"); // only if it was revoked this very moment
  const cached = signers.get(fleet);
  if (cached?.serial === row.serial) return cached.signer;
  const dir = fleet.path(AUDIT_KEY_DIR);
  let certPem: string;
  try {
    certPem = readFileSync(join(dir, "cert.pem"), "utf8");
  } catch {
    throw new KeyError(`cannot read ${join(dir, "cert.pem")}`);
  }
  const der = Buffer.from(row.der);
  if (!fromPem(certPem, ["CERTIFICATE"]).equals(der))
    throw new KeyError(`${join(dir, "cert.pem")} is not the audit certificate recorded in the database`);
  const key = readPrivateKey(join(dir, "key.pem"), fleet.passphrase());
  if (!publicSpki(key).equals(parseCertificate(der).spki))
    throw new KeyError(`${join(dir, "key.pem")} does not belong to the audit certificate`);
  const signer: AuditSigner = { key, certificateDer: der, chainPem: (await fleet.chainPem("services")).chain };
  signers.set(fleet, { serial: row.serial, signer });
  return signer;
}

/** The fleet's domain and root, as the fleet directory holds them (ca/root/cert.pem). */
function trustOf(fleet: FleetServices): CheckpointTrust {
  const read = (id: string, what: string): Buffer => {
    const file = fleet.path(layout.caCert(id));
    let pem: string;
    try {
      pem = readFileSync(file, "utf8");
    } catch {
      throw new InvalidArgument(`cannot read the fleet ${what} ${file}`);
    }
    return fromPem(pem, ["CERTIFICATE"]);
  };
  return { domain: fleet.domain, rootDer: read("root", "root"), servicesCaDer: read("services", "services CA") };
}

export interface WrittenCheckpoint {
  seq: number;
  hash: string;
  at: string;
  /** The checkpoint file's text. */
  document: string;
  /** False when the head had not moved since the newest checkpoint (that one is returned). */
  created: boolean;
}

/**
 * Signs the current head unless the newest checkpoint already covers it. Refuses (AuditBroken) when
 * the log no longer extends the newest stored checkpoint: signing then would bless a rewrite.
 */
export async function writeCheckpoint(fleet: FleetServices, opts: { actor?: string } = {}): Promise<WrittenCheckpoint> {
  const now = fleet.clock.now();
  const ops = fleet.store.ops;
  // First: creating the key appends its own event, which the checkpoint then covers.
  const signer = await auditSigner(fleet, opts.actor ?? "audit", now);
  const head = await ops.audit.head();
  if (!head) throw new AuditBroken("the audit log is empty: nothing to checkpoint");
  const latest = await ops.checkpoints.latest();
  if (latest && latest.seq === head.seq && latest.hash === head.hash) return { ...latest, created: false };
  const broken = await verifyAuditRange(ops.audit, latest, head);
  if (broken)
    throw new AuditBroken(
      latest
        ? `refusing to sign a checkpoint: the log does not extend checkpoint ${latest.seq} (${broken}); run \`fleetpki audit verify\``
        : `refusing to sign a checkpoint: the audit log is broken (${broken}); run \`fleetpki audit verify\``,
    );
  const at = new Date(Math.max(now.getTime(), latest ? Date.parse(latest.at) : 0)).toISOString();
  const checkpoint = { seq: head.seq, hash: head.hash, at };
  const document = signCheckpoint(trustOf(fleet), checkpoint, signer);
  await ops.checkpoints.store({ ...checkpoint, document });
  // A concurrent writer may have stored one for the same head first: return what is stored.
  const stored = await ops.checkpoints.at(head.seq);
  if (!stored) throw new AuditBroken(`checkpoint ${head.seq} was stored but cannot be read back`);
  return { ...stored, created: stored.document === document };
}

function warnOnStderr(message: string): void {
  process.stderr.write(`fleetpki: warning: ${message}\n`);
}

/**
 * The one call after every CA operation (CA created or revoked, certificates revoked, held or
 * released, batch issuance, CRL import): a checkpoint of the head that includes its events. The
 * operation is already committed, so a failure here only warns; the next checkpoint covers it.
 */
export async function checkpointAfter(fleet: FleetServices, actor: string, warn = warnOnStderr): Promise<void> {
  try {
    // An offline-root fleet still waiting for its intermediates has no services CA, so no audit key yet.
    if (!(await fleet.store.ops.cas.get("services"))) return;
    await writeCheckpoint(fleet, { actor });
  } catch (e) {
    warn(`no audit checkpoint was written after this operation (${(e as Error).message}); \`fleetpki audit checkpoint\` writes one`);
  }
}

/** `serve`: a checkpoint at start (making the audit key of an older fleet), every interval when the head moved, and at stop. */
export class CheckpointSchedule {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly fleet: FleetServices,
    private readonly intervalMs: number,
    private readonly onError: (e: unknown) => void,
  ) {}

  async start(): Promise<void> {
    await this.tick();
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /** One checkpoint now (if the head moved); never two at once. */
  tick(): Promise<void> {
    this.running = this.running.then(() => writeCheckpoint(this.fleet, { actor: "serve" }).then(() => undefined, this.onError));
    return this.running;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.tick();
  }
}

export interface AuditReport {
  ok: boolean;
  /** Rows of the chain checked. */
  rows: number;
  headHash?: string;
  chain: AuditVerdict;
  /** Every problem found, the chain's first. */
  problems: string[];
  notes: string[];
  checkpoints: { outside: number; stored: number; newestOutside?: { seq: number; at: string; file: string } };
}

function checkpointFiles(dir: string): string[] {
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) throw new Error();
    names = readdirSync(dir);
  } catch {
    throw new InvalidArgument(`--checkpoints ${dir}: not a readable directory`);
  }
  const files = names.filter((n) => n.endsWith(".json")).sort();
  if (files.length === 0)
    throw new InvalidArgument(`--checkpoints ${dir}: no checkpoint files (*.json); make them with \`fleetpki audit checkpoint --out\``);
  return files.map((n) => join(dir, n));
}

async function checkAgainstLog(ops: Operations, where: string, cp: { seq: number; hash: string; at: string }): Promise<string | undefined> {
  const row = await ops.audit.row(cp.seq);
  if (!row) return `${where} (row ${cp.seq}, signed ${cp.at}): the log has no row ${cp.seq} any more (truncated or wiped)`;
  if (row.hash !== cp.hash) return `${where} (row ${cp.seq}, signed ${cp.at}): row ${cp.seq} now has another hash (the log was rewritten)`;
  return undefined;
}

/**
 * `audit verify`: the chain from row 1 to the head; every checkpoint kept outside (`checkpointsDir`)
 * and every stored one (signed by an audit certificate under this fleet's root, and matched by the
 * row at its sequence number); and the state tables replayed from the log.
 */
export async function verifyFleetAudit(fleet: FleetServices, opts: { checkpointsDir?: string } = {}): Promise<AuditReport> {
  const ops = fleet.store.ops;
  const files = opts.checkpointsDir !== undefined ? checkpointFiles(opts.checkpointsDir) : [];
  const problems: string[] = [];
  const notes: string[] = [];
  const replay = new StateReplay();
  const chain = await verifyAudit(ops.audit, { onRow: (row) => replay.apply(row) });
  if (!chain.ok) problems.push(`audit log broken at sequence number ${chain.firstBadSeq}: ${chain.problem}`);

  const trust = trustOf(fleet);
  const dbRoot = await ops.cas.get("root");
  if (!dbRoot || !fromPem(dbRoot.certificate_pem, ["CERTIFICATE"]).equals(trust.rootDer))
    problems.push(`the root certificate in the database is not ${fleet.path(layout.caCert("root"))}`);

  let newestOutside: AuditReport["checkpoints"]["newestOutside"];
  for (const file of files) {
    try {
      const cp = verifyCheckpoint(readFileSync(file, "utf8"), trust);
      const signer = await checkpointSignerProblem(ops.checkpoints, cp);
      if (signer) throw new CheckpointInvalid(signer);
      const mismatch = await checkAgainstLog(ops, `checkpoint ${file}`, cp);
      if (mismatch) problems.push(mismatch);
      else if (!newestOutside || cp.seq > newestOutside.seq) newestOutside = { seq: cp.seq, at: cp.at, file };
    } catch (e) {
      if (!(e instanceof CheckpointInvalid)) throw e;
      problems.push(`checkpoint ${file}: ${e.message}`);
    }
  }

  const stored = await ops.checkpoints.list();
  for (const row of stored) {
    const where = `stored checkpoint ${row.seq}`;
    try {
      const cp = verifyCheckpoint(row.document, trust);
      const signer = await checkpointSignerProblem(ops.checkpoints, cp);
      if (signer) throw new CheckpointInvalid(signer);
      if (cp.seq !== row.seq || cp.hash !== row.hash) problems.push(`${where}: its columns differ from its signed document`);
      else {
        const mismatch = await checkAgainstLog(ops, where, cp);
        if (mismatch) problems.push(mismatch);
      }
    } catch (e) {
      if (!(e instanceof CheckpointInvalid)) throw e;
      problems.push(`${where}: ${e.message}`);
    }
  }

  if (chain.ok) {
    const state = await replay.compare(ops.audit.state, fleet.clock.now());
    problems.push(...state.problems);
    notes.push(...state.notes);
    if (newestOutside && chain.rows > newestOutside.seq) {
      const rows = `rows ${newestOutside.seq + 1}-${chain.rows}`;
      notes.push(`${rows} are newer than the newest checkpoint kept outside: only the chain and the tables vouch for them`);
    }
  } else notes.push("the state tables were not compared with the log (its chain is broken)");
  if (files.length === 0) notes.push("no checkpoints kept outside were given (--checkpoints DIR): a database rewritten as a whole passes");

  return {
    ok: problems.length === 0,
    rows: chain.rows,
    headHash: chain.ok ? chain.headHash : undefined,
    chain,
    problems,
    notes,
    checkpoints: { outside: files.length, stored: stored.length, newestOutside },
  };
}

/** `audit checkpoint --out`: FILE, or DIR/checkpoint-<seq>-<hash>.json when `out` is a directory. */
export async function exportCheckpoint(fleet: FleetServices, out: string, actor: string): Promise<WrittenCheckpoint & { file: string }> {
  const cp = await writeCheckpoint(fleet, { actor });
  const file = existsSync(out) && statSync(out).isDirectory() ? join(out, checkpointFileName(cp)) : out;
  try {
    writeFileAtomic(file, cp.document);
  } catch (e) {
    throw new InvalidArgument(`--out ${out}: cannot write ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return { ...cp, file };
}

export interface AuditListRequest {
  /** An RFC 3339 time (with Z or an offset), a date (00:00 UTC) or a duration ago (1h). */
  since?: string;
  /** At most this many events (a positive integer, as text from a command line or a number). */
  limit?: string | number;
}

/** `audit list`'s --since and --limit, checked (also for the CLI acting through the admin API). */
export function auditListFilter(req: AuditListRequest, now: Date): { since?: Date; limit?: number } {
  let since: Date | undefined;
  if (req.since !== undefined && req.since !== "") {
    // Absolute times through the one strict parser: `new Date()` took "2026-02-30" as March 1 and "1" as 2001.
    try {
      since = /^\d+[smhdwy]$/.test(req.since) ? new Date(now.getTime() - parseDuration(req.since)) : parseRfc3339(req.since);
    } catch (e) {
      throw new InvalidArgument(`--since ${(e as Error).message}; use a time like 2026-05-01T12:00:00Z, a date, or a duration like 1h`);
    }
  }
  const limit = req.limit === undefined || req.limit === "" ? undefined : Number(req.limit);
  if (limit !== undefined && (!Number.isInteger(limit) || limit <= 0)) throw new InvalidArgument("--limit must be a positive integer");
  return { since, limit };
}

/** `audit list`: the log's events, filtered as the operator asked. */
export async function listAuditEvents(fleet: FleetServices, req: AuditListRequest = {}): Promise<AuditRecord[]> {
  return listAudit(fleet.store.ops.audit, auditListFilter(req, fleet.clock.now()));
}
