// The audit log: append-only, each row chained to the one before by
//   hash = SHA-256(prev_hash || "\n" || JSON.stringify([seq, at, actor, action, subject, details]))
// so editing, deleting or reordering rows is detectable by recomputing the chain.
import { createHash } from "node:crypto";
import type { AuditLogTable } from "../store/schema.js";
import type { AuditOperations } from "../store/operations/audit.js";

export const GENESIS_HASH = "0".repeat(64);

export interface AuditEvent {
  actor: string;
  action: string;
  subject: string;
  details?: Record<string, unknown>;
  /** When it happened: the fleet clock's time (FleetServices.clock), never read here. */
  at: Date;
}

export type AuditRecord = AuditLogTable;

const INTEGER_KEY = /^(0|[1-9]\d*)$/;

/** JSON with object keys sorted at every level, so the same event always hashes the same. */
export function canonicalJson(value: unknown): string {
  // Fast path for the usual event details, one level of primitives: a key list as replacer
  // makes JSON.stringify write the properties in that order. The output is the same, except for
  // integer-like keys, which objects order numerically: those take the general path.
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (Object.values(value).every((v) => v === null || typeof v !== "object") && !keys.some((k) => INTEGER_KEY.test(k)))
      return JSON.stringify(value, keys.sort());
  }
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .map((k) => [k, (v as Record<string, unknown>)[k]]),
        )
      : v,
  );
}

export function rowHash(prevHash: string, row: Omit<AuditRecord, "prev_hash" | "hash">): string {
  return createHash("sha256")
    .update(prevHash)
    .update("\n")
    .update(JSON.stringify([row.seq, row.at, row.actor, row.action, row.subject, row.details]))
    .digest("hex");
}

export interface AuditHead {
  seq: number;
  hash: string;
}

/** The rows that append `events` after `head` (undefined: an empty log), and the new head. */
export function chainAudit(head: AuditHead | undefined, events: readonly AuditEvent[]): { rows: AuditRecord[]; head: AuditHead } {
  let seq = head?.seq ?? 0;
  let prev = head?.hash ?? GENESIS_HASH;
  const rows: AuditRecord[] = [];
  for (const e of events) {
    seq += 1;
    const base = {
      seq,
      at: e.at.toISOString(),
      actor: e.actor,
      action: e.action,
      subject: e.subject,
      details: canonicalJson(e.details ?? {}),
    };
    const hash = rowHash(prev, base);
    rows.push({ ...base, prev_hash: prev, hash });
    prev = hash;
  }
  return { rows, head: { seq, hash: prev } };
}

/** The log is not what fleetpki wrote (a broken chain, or tables that disagree with it). */
export class AuditBroken extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AuditBroken";
  }
}

/** What verifying the chain reads: the log's rows, in pages, and its recorded head. */
export type AuditRows = Pick<AuditOperations, "rows" | "row" | "head" | "lowestSeq" | "countBefore">;

/**
 * Checks that the rows after `from` (undefined: from the start) up to `to` chain on from it and end
 * in `to`; returns what is wrong, or undefined. Cheap when `from` is recent (a checkpoint).
 */
export async function verifyAuditRange(
  log: AuditRows,
  from: AuditHead | undefined,
  to: AuditHead,
  pageSize = 5000,
): Promise<string | undefined> {
  let prev = from?.hash ?? GENESIS_HASH;
  let expected = (from?.seq ?? 0) + 1;
  if (from) {
    const anchor = await log.row(from.seq);
    if (!anchor) return `row ${from.seq} is gone`;
    if (anchor.hash !== from.hash) return `row ${from.seq} no longer has hash ${from.hash}`;
  }
  if (to.seq < expected - 1) return `the head (row ${to.seq}) is behind row ${expected - 1}`;
  while (expected <= to.seq) {
    const page = await log.rows(expected - 1, pageSize, to.seq);
    if (page.length === 0) return `row ${expected} is missing`;
    for (const row of page) {
      if (row.seq !== expected) return `row ${expected} is missing`;
      if (row.prev_hash !== prev || rowHash(prev, row) !== row.hash) return `row ${row.seq} does not chain on from row ${row.seq - 1}`;
      prev = row.hash;
      expected += 1;
    }
  }
  if (prev !== to.hash) return `row ${to.seq} does not have the head's hash`;
  return undefined;
}

export type AuditVerdict = { ok: true; rows: number; headHash: string } | { ok: false; rows: number; firstBadSeq: number; problem: string };

export interface VerifyAuditOptions {
  pageSize?: number;
  /** Called with every row, in order, once its link and hash have been checked (state replay). */
  onRow?: (row: AuditRecord) => void;
}

/**
 * Recomputes the whole chain; reports the first sequence number at which it breaks. A log must
 * start at 1 and count up by one: a fleet always has its init events, so an empty log is a wiped
 * one, and rows at 0 or below (which sort first) are not part of any chain.
 */
export async function verifyAudit(log: AuditRows, options: VerifyAuditOptions = {}): Promise<AuditVerdict> {
  const pageSize = options.pageSize ?? 5000;
  const lowest = await log.lowestSeq();
  if (lowest !== undefined && lowest <= 0) {
    const count = await log.countBefore(1);
    const problem = `${count} row(s) with a sequence number <= 0 (the log starts at 1): inserted outside the chain`;
    return { ok: false, rows: 0, firstBadSeq: lowest, problem };
  }
  let prev = GENESIS_HASH;
  let expected = 1;
  let checked = 0;
  for (;;) {
    const page = await log.rows(expected - 1, pageSize);
    for (const row of page) {
      if (row.seq !== expected)
        return { ok: false, rows: checked, firstBadSeq: expected, problem: `row ${expected} is missing (next row is ${row.seq})` };
      if (row.prev_hash !== prev)
        return {
          ok: false,
          rows: checked,
          firstBadSeq: row.seq,
          problem: `row ${row.seq} does not link to row ${row.seq - 1} (rows deleted, replaced or reordered)`,
        };
      if (rowHash(prev, row) !== row.hash)
        return {
          ok: false,
          rows: checked,
          firstBadSeq: row.seq,
          problem: `row ${row.seq} was modified (its content does not match its hash)`,
        };
      options.onRow?.(row);
      prev = row.hash;
      expected += 1;
      checked += 1;
    }
    if (page.length < pageSize) break;
  }
  const head = await log.head();
  if (checked === 0)
    return { ok: false, rows: 0, firstBadSeq: 1, problem: "the log is empty, but every fleet records its init events: the log was wiped" };
  const headSeq = head?.seq ?? 0;
  if (headSeq !== checked || (head && head.hash !== prev))
    return {
      ok: false,
      rows: checked,
      firstBadSeq: Math.min(headSeq, checked) + 1,
      problem:
        headSeq > checked
          ? `the log ends at row ${checked} but its recorded head is row ${headSeq} (rows removed from the end)`
          : `the log ends at row ${checked} but its recorded head is row ${headSeq}${headSeq === checked ? " with another hash" : ""}` +
            " (rows written outside fleetpki)",
    };
  return { ok: true, rows: checked, headHash: prev };
}

export interface AuditQuery {
  since?: Date;
  limit?: number;
}

/** The log's rows from 1 (rows at 0 or below are no part of the chain: `audit verify` rejects them, and they are never listed first). */
export async function listAudit(log: Pick<AuditOperations, "list">, query: AuditQuery = {}): Promise<AuditRecord[]> {
  return log.list({ since: query.since?.toISOString(), limit: query.limit });
}
