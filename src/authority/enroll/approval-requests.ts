// Enrollment requests waiting for an operator: filing them within bounds, listing, deciding, denying.
//
// A request without credentials waits for an operator, who decides that request, for that key
// (compared out of band by its fingerprint), never a device id as such: approving always names
// the request or the key. A request is never replaced by another: a second request for an id is
// its own pending request. Waiting requests expire (enrollment.approval_request_ttl) and are
// purged. Rows stay bounded per device id and source, per device id, per source and in total:
//   - per device id and source group (an IPv4 address or an IPv6 /64): 2, then 429 (a robot keeps
//     its key while it waits, so more from one place are not the robot);
//   - per device id: 5; a request from a source with nothing waiting for the id then evicts the
//     oldest request of the source group holding the most (2), so junk from a few addresses cannot
//     shut out the robot; a group's only request is never evicted (5 groups of 1 get 429);
//   - per source group: 20, whatever the ids; a device the operator registered (`device add`)
//     may still file ONE request from a full source, so a robot behind a NAT full of junk can
//     reach the operator; that adds at most one row per registered device and source (and 5 per
//     device), a bound the operator sets, not the requester. Unregistered ids get 429 there until
//     the junk expires or `device deny --all-from` clears it;
//   - in total: 10,000; a request then evicts the oldest of the biggest source group (never its
//     own group's), so one flood cannot fill the table for everyone else.
// Only waiting requests are ever evicted or purged, never an operator's decision.
import { createHash, randomUUID } from "node:crypto";
import type { AuditEvent } from "../../audit/log.js";
import { parseDuration } from "../../config/duration.js";
import type { RequestSummary } from "../../store/operations/enrollment.js";
import type { Operations } from "../../store/operations.js";
import type { EnrollmentRequestTable } from "../../store/schema.js";
import { DeviceNotActive, InvalidArgument, TooManyRequests } from "../errors.js";
import type { FleetServices } from "../services.js";
import { assertDeviceId, type SubjectKey } from "../issue/issuance.js";
import { addressMatcher, sourceOf, type RequestSource } from "./request-source.js";

/** Seconds a waiting robot is told to wait before it asks again. */
export const POLL_SECONDS = 10;
/** Waiting requests in total: the last bound on the table, far above what one source can fill. */
const MAX_PENDING = 10_000;
/** Waiting requests from one source (an IPv4 address or an IPv6 /64), whatever the device ids. */
const MAX_PENDING_PER_SOURCE = 20;
/** Waiting requests for one device id (each with its own key), from any source. */
const MAX_PENDING_PER_DEVICE = 5;
/** Waiting requests for one device id from one source: a robot keeps its key while it waits. */
const MAX_PENDING_PER_DEVICE_AND_SOURCE = 2;

/** "sha256:<hex>" of a SubjectPublicKeyInfo, the form `device requests` shows and the agent prints. */
export function keyFingerprint(spki: Buffer): string {
  return `sha256:${createHash("sha256").update(spki).digest("hex")}`;
}

/** Accepts "sha256:HEX" or bare hex, any case, with colons; returns the canonical form. */
export function parseKeyFingerprint(text: string): string {
  const m = /^(?:sha-?256\s*[:=]\s*)?([0-9a-f:\s]+)$/i.exec(text.trim());
  const hex = m ? m[1]!.replace(/[:\s]/g, "").toLowerCase() : "";
  if (!/^[0-9a-f]{64}$/.test(hex))
    throw new InvalidArgument(`invalid key fingerprint "${text}": expected sha256:<64 hex digits>, as \`fleetpki device requests\` shows`);
  return `sha256:${hex}`;
}

/** Requests filed before this instant have expired: they count for nothing and are purged. */
export function expiryCutoff(fleet: FleetServices, now: Date): string {
  return new Date(now.getTime() - parseDuration(fleet.config.enrollment.approval_request_ttl)).toISOString();
}

function expiresAt(fleet: FleetServices, createdAt: string): string {
  return new Date(Date.parse(createdAt) + parseDuration(fleet.config.enrollment.approval_request_ttl)).toISOString();
}

/** Files a new waiting request for `key`, within the bounds above; audited (with what it purged or evicted). */
export async function fileApprovalRequest(
  fleet: FleetServices,
  req: { deviceId: string; csr: Buffer; source: RequestSource },
  key: SubjectKey,
  fingerprint: string,
  nowDate: Date,
): Promise<{ requestId: string }> {
  const now = nowDate.toISOString();
  const cutoff = expiryCutoff(fleet, nowDate);
  const source = sourceOf(req.source.address);
  const row: EnrollmentRequestTable = {
    id: randomUUID(),
    device_id: req.deviceId,
    csr: req.csr,
    status: "pending",
    source: [req.source.via, source.address].filter(Boolean).join(" "),
    created_at: now,
    decided_at: null,
    decided_by: null,
    certificate_serial: null,
    key_fingerprint: fingerprint,
    source_address: source.address,
    source_group: source.group,
  };
  // Checked first without the write lock, so a flood of refused junk costs no write transaction;
  // checked again inside it, where the answer holds.
  await planRequest(fleet.store.ops, req.deviceId, source.group, cutoff);
  await fleet.store.transaction(async (tx) => {
    const events: AuditEvent[] = [];
    for (const r of await tx.enrollment.purgeExpiredRequests(cutoff))
      events.push(
        decisionEvent(r, "enrollment.expire", "fleetpki", nowDate, { reason: "nobody decided it within enrollment.approval_request_ttl" }),
      );
    const { evict } = await planRequest(tx, req.deviceId, source.group, cutoff);
    if (evict) {
      await tx.enrollment.deletePendingRequest(evict.row.id);
      events.push(
        decisionEvent(evict.row, "enrollment.evict", `approval:${req.deviceId}`, nowDate, { reason: evict.reason, by_request: row.id }),
      );
    }
    await tx.enrollment.insertRequest(row);
    events.push({
      actor: `approval:${req.deviceId}`,
      action: "enrollment.request",
      subject: `device:${req.deviceId}`,
      details: { request: row.id, source: row.source, key_type: key.keyType, key_fingerprint: fingerprint },
      at: nowDate,
    });
    await tx.audit.append(events);
  });
  return { requestId: row.id };
}

/** The oldest request of the group holding most of `rows` (ties: the group with the oldest request), if it holds at least 2. */
function oldestOfBiggestGroup(rows: readonly RequestSummary[]): RequestSummary | undefined {
  const groups = new Map<string, RequestSummary[]>();
  for (const r of [...rows].sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id))) {
    const key = r.source_group ?? "";
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  let best: RequestSummary[] = [];
  for (const g of groups.values())
    if (g.length > best.length || (g.length === best.length && g[0]!.created_at < best[0]!.created_at)) best = g;
  return best.length >= 2 ? best[0] : undefined;
}

/**
 * Refuses a new request for a revoked or removed device, or one over a bound (most specific bound named
 * first); or says which waiting request it displaces (see the bounds above).
 */
async function planRequest(
  ops: Operations,
  deviceId: string,
  group: string | null,
  since: string,
): Promise<{ evict?: { row: RequestSummary; reason: string } }> {
  const device = (await ops.devices.get(deviceId))?.status;
  if (device === "revoked" || device === "removed") throw new DeviceNotActive(deviceId, device);
  const from = group ?? "an unknown source";
  const waiting = "already wait for an operator's decision";
  const mine = await ops.enrollment.pendingRequests({ since, deviceId });
  const fromHere = mine.filter((r) => r.source_group === group).length;
  if (fromHere >= MAX_PENDING_PER_DEVICE_AND_SOURCE)
    throw new TooManyRequests(`${MAX_PENDING_PER_DEVICE_AND_SOURCE} enrollment requests for "${deviceId}" from ${from} ${waiting}`, 60);
  let evict: { row: RequestSummary; reason: string } | undefined;
  if (mine.length >= MAX_PENDING_PER_DEVICE) {
    const oldest = fromHere === 0 ? oldestOfBiggestGroup(mine) : undefined;
    if (!oldest) throw new TooManyRequests(`${MAX_PENDING_PER_DEVICE} enrollment requests for "${deviceId}" ${waiting}`, 60);
    evict = {
      row: oldest,
      reason:
        `${MAX_PENDING_PER_DEVICE} requests for the device waited; a request from a new source ` +
        `displaced the oldest of the source with the most`,
    };
  }
  // A registered device's first request from a full source still reaches the operator (see above).
  const exempt = fromHere === 0 && device === "active";
  if (!exempt && (await ops.enrollment.countPending({ since, sourceGroup: group })) >= MAX_PENDING_PER_SOURCE)
    throw new TooManyRequests(`${MAX_PENDING_PER_SOURCE} enrollment requests from ${from} ${waiting}`, 60);
  if (!evict && (await ops.enrollment.countPending({ since })) >= MAX_PENDING) {
    const biggest = await ops.enrollment.biggestPendingGroup(since);
    if (!biggest || biggest.sourceGroup === group || biggest.count < 2)
      throw new TooManyRequests("too many enrollment requests are waiting for approval", 60);
    const [oldest] = await ops.enrollment.pendingRequests({ since, sourceGroup: biggest.sourceGroup });
    evict = {
      row: oldest!,
      reason: `${MAX_PENDING} requests waited; a request from another source displaced the oldest of the source with the most`,
    };
  }
  return evict ? { evict } : {};
}

export interface PendingRequest {
  id: string;
  deviceId: string;
  /** "sha256:<hex>" of the requested key's SubjectPublicKeyInfo. */
  keyFingerprint: string | null;
  /** Transport and peer address, e.g. "api 10.0.0.7". */
  source: string;
  address: string | null;
  createdAt: string;
  /** When it stops counting and is purged unless decided (enrollment.approval_request_ttl). */
  expiresAt: string;
}

function toPending(fleet: FleetServices, r: RequestSummary): PendingRequest {
  const { id, device_id, key_fingerprint, source, source_address, created_at } = r;
  return {
    id,
    deviceId: device_id,
    keyFingerprint: key_fingerprint,
    source,
    address: source_address,
    createdAt: created_at,
    expiresAt: expiresAt(fleet, created_at),
  };
}

export async function listPendingRequests(fleet: FleetServices, filter: { deviceId?: string; now?: Date } = {}): Promise<PendingRequest[]> {
  const since = expiryCutoff(fleet, filter.now ?? fleet.clock.now());
  const rows = await fleet.store.ops.enrollment.pendingRequests({ since, deviceId: filter.deviceId });
  return rows.map((r) => toPending(fleet, r));
}

function describePending(rows: readonly RequestSummary[]): string {
  return rows.map((r) => `${r.id} (${r.key_fingerprint ?? "key unknown"} from ${r.source_address ?? "?"} at ${r.created_at})`).join("; ");
}

export interface DecideRequest {
  deviceId: string;
  /** The request to decide; or `fingerprint`. A denial may name neither when exactly one request waits. */
  requestId?: string;
  /** The key's "sha256:<hex>" fingerprint, as the robot prints it. */
  fingerprint?: string;
  approve: boolean;
  actor: string;
  now?: Date;
}

export interface Decision {
  request: PendingRequest;
  /** Other requests for the device denied with an approval (they cannot also be the device). */
  alsoDenied: PendingRequest[];
}

/** The waiting request a decision names (see decideRequest). */
function chooseRequest(req: DecideRequest, fingerprint: string | undefined, pending: readonly RequestSummary[]): RequestSummary {
  if (pending.length === 0) throw new InvalidArgument(`no pending enrollment request for "${req.deviceId}"`);
  if (req.requestId !== undefined) {
    const chosen = pending.find((r) => r.id === req.requestId);
    if (!chosen)
      throw new InvalidArgument(
        `request ${req.requestId} is not a pending request of "${req.deviceId}"; pending: ${describePending(pending)}`,
      );
    return chosen;
  }
  if (fingerprint !== undefined) {
    const chosen = pending.find((r) => r.key_fingerprint === fingerprint);
    if (!chosen)
      throw new InvalidArgument(`no pending request of "${req.deviceId}" is for key ${fingerprint}; pending: ${describePending(pending)}`);
    return chosen;
  }
  if (!req.approve && pending.length === 1) return pending[0]!;
  const n = pending.length === 1 ? "1 enrollment request" : `${pending.length} enrollment requests`;
  throw new InvalidArgument(
    `${n} for "${req.deviceId}" ${pending.length === 1 ? "is" : "are"} waiting; ` +
      `${req.approve ? "approve" : "choose"} one with --request ID or ` +
      `--fingerprint sha256:… after comparing its key fingerprint with the one the robot prints (anyone can ask for a device id)` +
      `${req.approve ? "" : ", or deny them all with --all"}: ${describePending(pending)}`,
  );
}

/**
 * Approves or denies one waiting request; approval registers an unknown device and denies the
 * device's other waiting requests. Approval always names the request or the key: anyone can ask
 * for a device id, so "the only waiting request" may be an attacker's. A denial without either
 * applies when exactly one request waits (it certifies nothing; the robot can ask with a new key).
 */
export async function decideRequest(fleet: FleetServices, req: DecideRequest): Promise<Decision> {
  assertDeviceId(req.deviceId);
  const fingerprint = req.fingerprint === undefined ? undefined : parseKeyFingerprint(req.fingerprint);
  if (req.requestId !== undefined && fingerprint !== undefined)
    throw new InvalidArgument("give a request id or a key fingerprint, not both");
  const nowDate = req.now ?? fleet.clock.now();
  const now = nowDate.toISOString();
  return fleet.store.transaction(async (tx) => {
    const pending = await tx.enrollment.pendingRequests({ since: expiryCutoff(fleet, nowDate), deviceId: req.deviceId });
    const chosen = chooseRequest(req, fingerprint, pending);
    const events: AuditEvent[] = [];
    let others: RequestSummary[] = [];
    if (req.approve) {
      const device = (await tx.devices.get(req.deviceId))?.status;
      if (device && device !== "active") throw new DeviceNotActive(req.deviceId, device);
      if (!device) {
        await tx.devices.add([
          {
            id: req.deviceId,
            group_name: null,
            labels: "{}",
            status: "active",
            created_at: now,
            updated_at: now,
          },
        ]);
        events.push({
          actor: req.actor,
          action: "device.add",
          subject: `device:${req.deviceId}`,
          details: { via: "approval" },
          at: nowDate,
        });
      }
      others = pending.filter((r) => r.id !== chosen.id);
    }
    await tx.enrollment.decideRequests([chosen.id], { status: req.approve ? "approved" : "denied", at: now, by: req.actor });
    events.push(decisionEvent(chosen, req.approve ? "enrollment.approve" : "enrollment.deny", req.actor, nowDate));
    if (others.length > 0) {
      await tx.enrollment.decideRequests(
        others.map((r) => r.id),
        { status: "denied", at: now, by: req.actor },
      );
      for (const other of others)
        events.push(
          decisionEvent(other, "enrollment.deny", req.actor, nowDate, {
            reason: "another request for the device was approved",
            approved_request: chosen.id,
          }),
        );
    }
    await tx.audit.append(events);
    return { request: toPending(fleet, chosen), alsoDenied: others.map((r) => toPending(fleet, r)) };
  });
}

function decisionEvent(r: RequestSummary, action: string, actor: string, at: Date, extra: Record<string, unknown> = {}): AuditEvent {
  return {
    actor,
    action,
    subject: `device:${r.device_id}`,
    details: { request: r.id, key_fingerprint: r.key_fingerprint, source: r.source, ...extra },
    at,
  };
}

/**
 * Denies every waiting request of a device, or from an address or prefix (junk from one source
 * is cleared with one command). Each denial is audited; returns what was denied.
 */
export async function denyRequests(
  fleet: FleetServices,
  req: { deviceId?: string; fromAddress?: string; actor: string; now?: Date; reason?: string },
): Promise<PendingRequest[]> {
  if (req.deviceId === undefined && req.fromAddress === undefined)
    throw new InvalidArgument("say whose requests to deny: a device id, or --all-from ADDRESS[/PREFIX]");
  if (req.deviceId !== undefined) assertDeviceId(req.deviceId);
  const matches = req.fromAddress === undefined ? undefined : addressMatcher(req.fromAddress);
  const nowDate = req.now ?? fleet.clock.now();
  const now = nowDate.toISOString();
  return fleet.store.transaction(async (tx) => {
    // Prefixes are matched here, not in SQL; waiting rows are bounded (MAX_PENDING and a few).
    const filter = { since: expiryCutoff(fleet, nowDate), deviceId: req.deviceId, withAddress: matches !== undefined };
    const rows = (await tx.enrollment.pendingRequests(filter)).filter((r) => matches === undefined || matches(r.source_address!));
    if (rows.length === 0) return [];
    await tx.enrollment.decideRequests(
      rows.map((r) => r.id),
      { status: "denied", at: now, by: req.actor },
    );
    const bulk = req.fromAddress !== undefined ? `all from ${req.fromAddress.trim()}` : "all of the device";
    const reason = req.reason === undefined ? {} : { reason: req.reason };
    await tx.audit.append(rows.map((r) => decisionEvent(r, "enrollment.deny", req.actor, nowDate, { bulk, ...reason })));
    return rows.map((r) => toPending(fleet, r));
  });
}

export interface DenyEnrollment {
  /** The device whose requests are denied; optional only with `fromAddress`. */
  deviceId?: string;
  /** One request, named by id or by its key's fingerprint (or neither: the only one waiting). */
  requestId?: string;
  fingerprint?: string;
  /** Every waiting request of the device (and/or from `fromAddress`). */
  all?: boolean;
  /** Every waiting request from this address or prefix (with `deviceId`: of that device only). */
  fromAddress?: string;
  reason?: string;
  actor: string;
  now?: Date;
}

/** Refuses a denial that names both one request and all of them, or no device (before anything is sent or written). */
export function checkDenial(req: Omit<DenyEnrollment, "actor" | "now">): void {
  if (req.all || req.fromAddress !== undefined) {
    if (req.requestId !== undefined || req.fingerprint !== undefined)
      throw new InvalidArgument("--all and --all-from deny every matching request; leave out --request and --fingerprint");
    if (req.all && req.deviceId === undefined) throw new InvalidArgument("--all needs the device id: fleetpki device deny ID --all");
  } else if (req.deviceId === undefined) throw new InvalidArgument("give the device id (or --all-from ADDRESS[/PREFIX])");
}

/**
 * A denial as `fleetpki device deny` and POST /api/approvals/:id/deny name it: one request (by id,
 * by key fingerprint, or the only one waiting), or all of them (`all`, `fromAddress`). `bulk` says
 * which, so the caller can report it.
 */
export async function denyEnrollment(fleet: FleetServices, req: DenyEnrollment): Promise<{ bulk: boolean; denied: PendingRequest[] }> {
  const { deviceId, requestId, fingerprint, actor, now, reason } = req;
  checkDenial(req);
  if (req.all || req.fromAddress !== undefined)
    return { bulk: true, denied: await denyRequests(fleet, { deviceId, fromAddress: req.fromAddress, actor, now, reason }) };
  // checkDenial: a single denial names its device.
  const d = await decideRequest(fleet, { deviceId: deviceId!, requestId, fingerprint, approve: false, actor, now });
  return { bulk: false, denied: [d.request] };
}
