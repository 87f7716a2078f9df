// The operator plane's lists (admin API, dashboard): devices, certificates and the audit log, one
// page at a time. Pages are keyset pages (the last key of a page is where the next starts), so a
// deep page costs what the first does and a device added or removed meanwhile never shifts others
// into or out of view. The cursor is opaque to clients: the key, bound to the list and the filters
// it was issued for, authenticated with a key of this process, so an altered or foreign cursor is
// refused instead of quietly paging something else.
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { AuditRecord } from "../audit/log.js";
import type { CertificateTable, DeviceTable } from "../store/schema.js";
import { assertGroup, type Device } from "./devices.js";
import { InvalidArgument, InvalidCursor } from "./errors.js";
import type { FleetServices } from "./services.js";

export const MAX_PAGE = 500;
export const DEFAULT_PAGE = 50;

export interface Page<T> {
  items: T[];
  /** Pass back as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
}

// Per process: cursors do not survive a restart (a client then starts again from the first page).
const CURSOR_KEY = randomBytes(32);
const MAC_BYTES = 16;

type ListName = "devices" | "certificates" | "audit";

function filterDigest(list: ListName, filters: object): string {
  const canonical = JSON.stringify([
    list,
    Object.entries(filters)
      .filter(([, v]) => v !== undefined)
      .sort(),
  ]);
  return createHash("sha256").update(canonical).digest("base64url").slice(0, 16);
}

function mac(body: string): Buffer {
  return createHmac("sha256", CURSOR_KEY).update(body).digest().subarray(0, MAC_BYTES);
}

/** The cursor for the page after `key`, for this list and these filters. */
export function encodeCursor(list: ListName, filters: object, key: string | number): string {
  const body = Buffer.from(JSON.stringify({ f: filterDigest(list, filters), k: key })).toString("base64url");
  return `${body}.${mac(body).toString("base64url")}`;
}

/** The key a cursor carries; InvalidCursor unless this process issued it for this list and these filters. */
export function decodeCursor(list: ListName, filters: object, cursor: string): string | number {
  const refuse = (why: string) =>
    new InvalidCursor(`invalid cursor: ${why}; use the nextCursor of the previous page with the same filters, or start without a cursor`);
  const dot = cursor.indexOf(".");
  if (dot <= 0 || cursor.length > 1024) throw refuse("malformed");
  const body = cursor.slice(0, dot);
  const sent = Buffer.from(cursor.slice(dot + 1), "base64url");
  if (sent.length !== MAC_BYTES || !timingSafeEqual(sent, mac(body)))
    throw refuse("not issued by this server (altered, or from before a restart)");
  let parsed: { f?: unknown; k?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(body, "base64url").toString("utf8"));
  } catch {
    throw refuse("malformed");
  }
  if (parsed.f !== filterDigest(list, filters)) throw refuse("it was issued for another list or other filters");
  if (typeof parsed.k !== "string" && typeof parsed.k !== "number") throw refuse("malformed");
  return parsed.k;
}

function pageLimit(limit: number | undefined): number {
  const n = limit ?? DEFAULT_PAGE;
  if (!Number.isInteger(n) || n < 1 || n > MAX_PAGE) throw new InvalidArgument(`limit must be an integer from 1 to ${MAX_PAGE}`);
  return n;
}

/** One more row than asked tells whether there is a next page without a count. */
function paged<R, T>(rows: R[], limit: number, map: (r: R) => T, key: (r: R) => string | number, next: (k: string | number) => string) {
  const more = rows.length > limit;
  const kept = more ? rows.slice(0, limit) : rows;
  return { items: kept.map(map), nextCursor: more ? next(key(kept[kept.length - 1]!)) : null };
}

// ---- devices ----

export const DEVICE_STATES = ["active", "disabled", "held", "revoked", "removed"] as const satisfies readonly DeviceTable["status"][];

export interface DeviceListQuery {
  /** A substring of the device id. */
  q?: string;
  group?: string;
  /** Undefined: every device but removed ones. */
  state?: DeviceTable["status"];
  /** "key=value" */
  label?: string;
  cursor?: string;
  limit?: number;
}

export interface DeviceListItem extends Device {
  /** The newest device certificate (by notAfter); null before the device's first enrollment. */
  certificate: { serial: string; notAfter: string; status: "valid" | "revoked" | "hold" | "expired" } | null;
  /** When it last enrolled, renewed or was admitted by a gateway (ISO 8601); null: never. */
  lastSeen: string | null;
  /** A gateway session of this process is open for it now. */
  connected: boolean;
}

/**
 * A page of devices by id. `connected` says which device ids have a live gateway session in this
 * process (the caller's gateway; none without one).
 */
export async function listDevicePage(
  fleet: FleetServices,
  query: DeviceListQuery,
  connected: (deviceId: string) => boolean = () => false,
): Promise<Page<DeviceListItem>> {
  const limit = pageLimit(query.limit);
  if (query.group !== undefined) assertGroup(query.group);
  if (query.state !== undefined && !(DEVICE_STATES as readonly string[]).includes(query.state))
    throw new InvalidArgument(`state must be one of ${DEVICE_STATES.join(", ")}`);
  let label: { key: string; value: string } | undefined;
  if (query.label !== undefined) {
    const eq = query.label.indexOf("=");
    if (eq <= 0 || eq === query.label.length - 1) throw new InvalidArgument(`label filter "${query.label}" must be key=value`);
    label = { key: query.label.slice(0, eq), value: query.label.slice(eq + 1) };
  }
  const filters = { q: query.q, group: query.group, state: query.state, label: query.label };
  let afterId: string | undefined;
  if (query.cursor !== undefined) {
    const k = decodeCursor("devices", filters, query.cursor);
    if (typeof k !== "string") throw new InvalidCursor("invalid cursor: malformed");
    afterId = k;
  }
  const rows = await fleet.store.ops.devices.page({
    search: query.q || undefined,
    group: query.group,
    status: query.state,
    label,
    afterId,
    limit: limit + 1,
  });
  const page = rows.slice(0, limit);
  const facts = await fleet.store.ops.certificates.deviceFacts(page.map((r) => r.id));
  const now = fleet.clock.now().toISOString();
  return paged(
    rows,
    limit,
    (r): DeviceListItem => {
      const f = facts.get(r.id);
      const seen = [r.last_seen_at ?? null, f?.lastIssuedAt ?? null].filter((x): x is string => x !== null).sort();
      return {
        id: r.id,
        group: r.group_name,
        labels: JSON.parse(r.labels) as Record<string, string>,
        status: r.status,
        createdAt: r.created_at,
        updatedAt: r.updated_at,
        certificate: f
          ? {
              serial: f.newest.serial,
              notAfter: f.newest.not_after,
              status: f.newest.status === "valid" && f.newest.not_after < now ? "expired" : f.newest.status,
            }
          : null,
        lastSeen: seen.length > 0 ? seen[seen.length - 1]! : null,
        connected: connected(r.id),
      };
    },
    (r) => r.id,
    (k) => encodeCursor("devices", filters, k),
  );
}

// ---- certificates ----

export const CERTIFICATE_KINDS = [
  "device",
  "factory",
  "server",
  "operator",
  "ca",
  "ocsp-responder",
  "audit",
  "service",
  "ros2-enclave",
] as const satisfies readonly CertificateTable["kind"][];
export const CERTIFICATE_STATES = ["valid", "revoked", "hold", "expired"] as const;

export interface CertificateListQuery {
  kind?: CertificateTable["kind"];
  status?: (typeof CERTIFICATE_STATES)[number];
  /** Whom it identifies (device id, operator, service or server name, CA id). */
  subject?: string;
  /** Issuing CA id. */
  issuer?: string;
  cursor?: string;
  limit?: number;
}

export interface CertificateListItem {
  serial: string;
  kind: CertificateTable["kind"];
  subject: string;
  deviceId: string | null;
  issuer: string;
  notBefore: string;
  notAfter: string;
  /** valid | revoked | hold | expired (valid but past notAfter) */
  status: string;
  revokedAt: string | null;
  revocationReason: string | null;
  fingerprintSha256: string;
}

export async function listCertificatePage(fleet: FleetServices, query: CertificateListQuery): Promise<Page<CertificateListItem>> {
  const limit = pageLimit(query.limit);
  if (query.kind !== undefined && !(CERTIFICATE_KINDS as readonly string[]).includes(query.kind))
    throw new InvalidArgument(`kind must be one of ${CERTIFICATE_KINDS.join(", ")}`);
  if (query.status !== undefined && !(CERTIFICATE_STATES as readonly string[]).includes(query.status))
    throw new InvalidArgument(`status must be one of ${CERTIFICATE_STATES.join(", ")}`);
  const filters = { kind: query.kind, status: query.status, subject: query.subject, issuer: query.issuer };
  let afterSerial: string | undefined;
  if (query.cursor !== undefined) {
    const k = decodeCursor("certificates", filters, query.cursor);
    if (typeof k !== "string") throw new InvalidCursor("invalid cursor: malformed");
    afterSerial = k;
  }
  const now = fleet.clock.now().toISOString();
  const rows = await fleet.store.ops.certificates.page({ ...filters, now, afterSerial, limit: limit + 1 });
  return paged(
    rows,
    limit,
    (r) => ({
      serial: r.serial,
      kind: r.kind,
      subject: r.subject_id,
      deviceId: r.device_id,
      issuer: r.issuer_ca,
      notBefore: r.not_before,
      notAfter: r.not_after,
      status: r.status === "valid" && r.not_after < now ? "expired" : r.status,
      revokedAt: r.revoked_at,
      revocationReason: r.revocation_reason,
      fingerprintSha256: r.fingerprint_sha256,
    }),
    (r) => r.serial,
    (k) => encodeCursor("certificates", filters, k),
  );
}

// ---- audit log ----

export interface AuditListQuery {
  /** ISO 8601, inclusive. */
  from?: string;
  /** ISO 8601, exclusive. */
  to?: string;
  actor?: string;
  action?: string;
  subject?: string;
  cursor?: string;
  limit?: number;
}

export interface AuditListItem {
  seq: number;
  at: string;
  actor: string;
  action: string;
  subject: string;
  details: Record<string, unknown>;
  hash: string;
}

function instant(name: string, text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const t = Date.parse(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(t))
    throw new InvalidArgument(`${name} must be an ISO 8601 date or time, not "${text}"`);
  return new Date(t).toISOString();
}

/** Audit rows newest first. */
export async function listAuditPage(fleet: FleetServices, query: AuditListQuery): Promise<Page<AuditListItem>> {
  const limit = pageLimit(query.limit);
  const from = instant("from", query.from);
  const to = instant("to", query.to);
  const filters = { from, to, actor: query.actor, action: query.action, subject: query.subject };
  let beforeSeq: number | undefined;
  if (query.cursor !== undefined) {
    const k = decodeCursor("audit", filters, query.cursor);
    if (typeof k !== "number" || !Number.isSafeInteger(k) || k < 1) throw new InvalidCursor("invalid cursor: malformed");
    beforeSeq = k;
  }
  const rows = await fleet.store.ops.audit.page({ ...filters, beforeSeq, limit: limit + 1 });
  return paged(
    rows,
    limit,
    (r: AuditRecord) => ({
      seq: r.seq,
      at: r.at,
      actor: r.actor,
      action: r.action,
      subject: r.subject,
      details: JSON.parse(r.details) as Record<string, unknown>,
      hash: r.hash,
    }),
    (r) => r.seq,
    (k) => encodeCursor("audit", filters, k),
  );
}
