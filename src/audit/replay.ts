// The state tables replayed from the audit log. Every change to a certificate's status, a CA, a
// device or an enrollment token is appended to the log in the transaction that makes it, so the
// tables must be exactly what the events say; a row changed, planted or deleted behind the log's
// back shows up as a disagreement. Covered: certificates (issued, revoked, held, released), CAs
// (created, revoked), devices (added, revoked, held, released, removed, updated; group and labels),
// tokens (created, used, cancelled by a device revocation or removal), approval requests (made, approved, denied,
// issued; denied by a device revocation), factory enrollments (a device's one, until
// reprovisioned) and renewals (which certificate renewed which: a certificate renews once).
//
// Older fleets: token.create events written before this check existed carry no token hash, and
// certificate.issue events no token id. Such tokens are checked for everything but their hash (a note
// while still usable), and a used token is matched to one token enrollment of its device. Requests
// made before migration 0005 and renewals before 0004 (when those tables began to be kept as
// now) are noted, not failed, when the log cannot account for them.
import { createHash } from "node:crypto";
import type { AuditStateSource } from "../store/operations/audit.js";
import type { AuditRecord } from "./log.js";

interface CertState {
  status: "valid" | "revoked" | "hold";
  reason: string | null;
  seq: number;
  fingerprint?: string;
  notAfter?: string;
}

interface CaState {
  status: "active" | "revoked";
  serial: string;
  seq: number;
}

interface DeviceState {
  status: "active" | "held" | "revoked" | "removed";
  group: string | null;
  labels: string;
  seq: number;
}

interface TokenState {
  deviceId: string;
  expiresAt?: string;
  hash?: string;
  /** Sequence number of the event that used or cancelled it. */
  usedSeq?: number;
  seq: number;
}

interface RequestState {
  deviceId: string;
  status: "pending" | "approved" | "denied" | "issued";
  serial?: string;
  seq: number;
}

interface FactoryState {
  factorySerial: string;
  serial: string;
  seq: number;
}

interface RenewalState {
  serial: string;
  deviceId: string;
  seq: number;
  at: string;
}

type Details = Record<string, unknown>;

const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((s): s is string => typeof s === "string") : []);
const idOf = (subject: string, prefix: string): string | undefined =>
  subject.startsWith(prefix) ? subject.slice(prefix.length) : undefined;

/** Labels as the devices table stores them, with keys sorted so the two can be compared. */
function labelsKey(labels: unknown): string {
  const obj = labels && typeof labels === "object" && !Array.isArray(labels) ? (labels as Record<string, unknown>) : {};
  return JSON.stringify(
    Object.fromEntries(
      Object.keys(obj)
        .sort()
        .map((k) => [k, obj[k]]),
    ),
  );
}

export interface ReplayReport {
  /** Each disagreement between the tables and the log, specific enough to find the row. */
  problems: string[];
  /** Things the log cannot vouch for (older events without the data), not failures. */
  notes: string[];
}

export class StateReplay {
  private readonly certs = new Map<string, CertState>();
  private readonly cas = new Map<string, CaState>();
  private readonly devices = new Map<string, DeviceState>();
  private readonly tokens = new Map<string, TokenState>();
  private readonly requests = new Map<string, RequestState>();
  /** Per device: its factory enrollment since it was last reprovisioned. */
  private readonly factory = new Map<string, FactoryState>();
  /** Per renewed certificate: its renewal. */
  private readonly renewals = new Map<string, RenewalState>();
  /** Token enrollments logged without the token's id (older fleets), per device. */
  private readonly anonymousTokenUses = new Map<string, number>();
  private readonly problems: string[] = [];

  /** Feeds one verified row, in sequence order. */
  apply(row: AuditRecord): void {
    let d: Details;
    try {
      d = JSON.parse(row.details) as Details;
    } catch {
      this.problems.push(`event ${row.seq} (${row.action}) has details that are not JSON`);
      return;
    }
    switch (row.action) {
      case "ca.create": {
        const id = idOf(row.subject, "ca:");
        const serial = str(d.serial);
        if (!id || !serial) return this.malformed(row);
        this.cas.set(id, { status: "active", serial, seq: row.seq });
        this.certs.set(serial, { status: "valid", reason: null, seq: row.seq, notAfter: str(d.not_after) });
        return;
      }
      case "certificate.issue": {
        const serial = str(d.serial);
        if (!serial) return this.malformed(row);
        const fingerprint = str(d.fingerprint_sha256);
        this.certs.set(serial, { status: "valid", reason: null, seq: row.seq, fingerprint, notAfter: str(d.not_after) });
        if (d.provisioner === "token") {
          const deviceId = idOf(row.subject, "device:") ?? "";
          const tokenId = str(d.token_id);
          const token = tokenId ? this.tokens.get(tokenId) : undefined;
          if (tokenId && !token) this.problems.push(`event ${row.seq} enrolls ${deviceId} with token ${tokenId}, which no event created`);
          else if (token) token.usedSeq ??= row.seq;
          else this.anonymousTokenUses.set(deviceId, (this.anonymousTokenUses.get(deviceId) ?? 0) + 1);
        }
        this.applyIssueClaims(row, d, serial);
        return;
      }
      case "enrollment.request": {
        const deviceId = idOf(row.subject, "device:");
        const id = str(d.request);
        if (!deviceId) return this.malformed(row);
        if (id) this.requests.set(id, { deviceId, status: "pending", seq: row.seq });
        return;
      }
      case "enrollment.approve":
      case "enrollment.deny": {
        const id = str(d.request);
        if (!id) return;
        const request = this.requests.get(id);
        if (!request) return void this.problems.push(`event ${row.seq} (${row.action}) decides request ${id}, which no event made`);
        Object.assign(request, { status: row.action === "enrollment.approve" ? "approved" : "denied", seq: row.seq });
        return;
      }
      case "enrollment.expire":
      case "enrollment.evict": {
        // An undecided request that expired or was displaced by another source's: its row is deleted.
        const id = str(d.request);
        if (!id) return this.malformed(row);
        const request = this.requests.get(id);
        if (!request) return void this.problems.push(`event ${row.seq} (${row.action}) removes request ${id}, which no event made`);
        if (request.status !== "pending")
          return void this.problems.push(`event ${row.seq} (${row.action}) removes request ${id}, which was already ${request.status}`);
        this.requests.delete(id);
        return;
      }
      case "device.reprovision": {
        const id = idOf(row.subject, "device:");
        if (!id) return this.malformed(row);
        if (!this.factory.delete(id))
          this.problems.push(`event ${row.seq} reprovisions ${id}, which no event enrolled with a factory certificate`);
        return;
      }
      case "device.add": {
        const id = idOf(row.subject, "device:");
        if (!id) return this.malformed(row);
        this.devices.set(id, { status: "active", group: str(d.group) ?? null, labels: labelsKey(d.labels), seq: row.seq });
        return;
      }
      case "device.update": {
        const id = idOf(row.subject, "device:");
        if (!id || (d.group !== null && typeof d.group !== "string")) return this.malformed(row);
        const device = this.devices.get(id);
        if (!device) return void this.problems.push(`event ${row.seq} (${row.action}) names device ${id}, which no event added`);
        Object.assign(device, { group: str(d.group) ?? null, labels: labelsKey(d.labels), seq: row.seq });
        return;
      }
      case "device.revoke":
      case "device.remove":
      case "device.hold":
      case "device.unhold": {
        const id = idOf(row.subject, "device:");
        if (!id) return this.malformed(row);
        const ends = row.action === "device.revoke" || row.action === "device.remove";
        const status = ends ? "revoked" : row.action === "device.hold" ? "hold" : "valid";
        const reason = ends
          ? (str(d.reason) ?? (row.action === "device.remove" ? "cessationOfOperation" : "unspecified"))
          : row.action === "device.hold"
            ? "certificateHold"
            : null;
        this.setStatus(row, strings(d.serials), status, reason);
        const device = this.devices.get(id);
        if (!device) this.problems.push(`event ${row.seq} (${row.action}) names device ${id}, which no event added`);
        else {
          device.status =
            row.action === "device.revoke"
              ? "revoked"
              : row.action === "device.remove"
                ? "removed"
                : row.action === "device.hold"
                  ? "held"
                  : "active";
          device.seq = row.seq;
        }
        // A revoked or removed device's unused tokens are spent, and its waiting or approved requests
        // denied, in the same transaction.
        if (ends) {
          for (const t of this.tokens.values()) if (t.deviceId === id) t.usedSeq ??= row.seq;
          for (const r of this.requests.values())
            if (r.deviceId === id && (r.status === "pending" || r.status === "approved"))
              Object.assign(r, { status: "denied", seq: row.seq });
        }
        return;
      }
      case "certificate.revoke":
        return this.setStatus(row, strings(d.serials), "revoked", str(d.reason) ?? "unspecified");
      case "ca.revoke": {
        const id = idOf(row.subject, "ca:");
        if (!id) return this.malformed(row);
        this.setStatus(row, strings(d.serials), "revoked", "cACompromise");
        const ca = this.cas.get(id);
        if (!ca) this.problems.push(`event ${row.seq} revokes CA ${id}, which no event created`);
        else Object.assign(ca, { status: "revoked", seq: row.seq });
        return;
      }
      case "token.create": {
        const deviceId = idOf(row.subject, "device:");
        const tokenId = str(d.token_id);
        if (!deviceId || !tokenId) return this.malformed(row);
        this.tokens.set(tokenId, { deviceId, expiresAt: str(d.expires_at), hash: str(d.token_hash), seq: row.seq });
        return;
      }
    }
  }

  /** What an issuance consumed besides a token: an approved request, a factory enrollment, a renewal. */
  private applyIssueClaims(row: AuditRecord, d: Details, serial: string): void {
    const deviceId = idOf(row.subject, "device:") ?? "";
    if (d.provisioner === "approval") {
      const id = str(d.request);
      const request = id ? this.requests.get(id) : undefined;
      if (!id || !request || request.status !== "approved" || request.deviceId !== deviceId)
        this.problems.push(
          `event ${row.seq} issues ${serial} to ${deviceId} by approval of request ${id ?? "(none)"}, which no event approved`,
        );
      if (request) Object.assign(request, { status: "issued", serial, seq: row.seq });
    }
    if (d.provisioner === "factory") {
      const factorySerial = str(d.factory_serial);
      // The first one counts, as the table's primary key lets exactly one through.
      if (factorySerial && !this.factory.has(deviceId)) this.factory.set(deviceId, { factorySerial, serial, seq: row.seq });
    }
    const renews = str(d.renews);
    if (renews) {
      const earlier = this.renewals.get(renews);
      if (earlier)
        this.problems.push(`event ${row.seq} renews ${renews} again (event ${earlier.seq} renewed it): a certificate renews once`);
      else this.renewals.set(renews, { serial, deviceId, seq: row.seq, at: row.at });
    }
  }

  private malformed(row: AuditRecord): void {
    this.problems.push(`event ${row.seq} (${row.action} ${row.subject}) lacks the data every such event carries`);
  }

  private setStatus(row: AuditRecord, serials: readonly string[], status: CertState["status"], reason: string | null): void {
    for (const serial of serials) {
      const cert = this.certs.get(serial);
      if (!cert) {
        this.problems.push(`event ${row.seq} (${row.action}) changes certificate ${serial}, which no event issued`);
        continue;
      }
      Object.assign(cert, { status, reason, seq: row.seq });
    }
  }

  /** Compares the state tables with the replayed events. */
  async compare(tables: AuditStateSource, now: Date): Promise<ReplayReport> {
    const problems = [...this.problems];
    const notes: string[] = [];

    const seenCerts = new Set<string>();
    const PAGE = 5000;
    for (let after = ""; ;) {
      const page = await tables.certificates(after, PAGE);
      for (const row of page) {
        seenCerts.add(row.serial);
        const what = `certificate ${row.serial} (${row.kind} ${row.subject_id})`;
        const fingerprint = createHash("sha256").update(row.der).digest("hex");
        if (fingerprint !== row.fingerprint_sha256)
          problems.push(`${what}: its DER does not match its recorded fingerprint (the certificate was replaced)`);
        const expected = this.certs.get(row.serial);
        if (!expected) {
          problems.push(`${what} is in the certificates table, but no event issued it (planted)`);
          continue;
        }
        if (expected.fingerprint && expected.fingerprint !== fingerprint)
          problems.push(`${what} is not the certificate its issue event ${expected.seq} recorded (fingerprint differs)`);
        if (expected.notAfter && expected.notAfter !== row.not_after)
          problems.push(`${what} expires ${row.not_after}, but its issue event says ${expected.notAfter}`);
        if (expected.status !== row.status || (expected.status !== "valid" && expected.reason !== row.revocation_reason))
          problems.push(
            `${what} is ${describeStatus(row.status, row.revocation_reason)} in the table, ` +
              `but the log makes it ${describeStatus(expected.status, expected.reason)} (event ${expected.seq})`,
          );
      }
      if (page.length < PAGE) break;
      after = page[page.length - 1]!.serial;
    }
    for (const [serial, cert] of this.certs)
      if (!seenCerts.has(serial))
        problems.push(`certificate ${serial} issued by event ${cert.seq} is missing from the certificates table (deleted)`);

    const cas = await tables.cas();
    for (const row of cas) {
      const expected = this.cas.get(row.id);
      if (!expected) problems.push(`CA ${row.id} is in the cas table, but no event created it (planted)`);
      else {
        if (expected.serial !== row.serial)
          problems.push(`CA ${row.id} has serial ${row.serial}, but event ${expected.seq} created it with serial ${expected.serial}`);
        if (expected.status !== row.status)
          problems.push(`CA ${row.id} is ${row.status} in the table, but the log makes it ${expected.status} (event ${expected.seq})`);
      }
    }
    const caIds = new Set(cas.map((c) => c.id));
    for (const [id, ca] of this.cas)
      if (!caIds.has(id)) problems.push(`CA ${id} created by event ${ca.seq} is missing from the cas table (deleted)`);

    const seenDevices = new Set<string>();
    for (let after = ""; ;) {
      const page = await tables.devices(after, PAGE);
      for (const row of page) {
        seenDevices.add(row.id);
        const expected = this.devices.get(row.id);
        if (!expected) {
          problems.push(`device ${row.id} is in the devices table, but no event added it (planted)`);
          continue;
        }
        if (expected.status !== row.status)
          problems.push(`device ${row.id} is ${row.status} in the table, but the log makes it ${expected.status} (event ${expected.seq})`);
        let labels: string;
        try {
          labels = labelsKey(JSON.parse(row.labels));
        } catch {
          labels = row.labels;
        }
        if (expected.group !== row.group_name || expected.labels !== labels)
          problems.push(`device ${row.id}: group or labels differ from what event ${expected.seq} recorded`);
      }
      if (page.length < PAGE) break;
      after = page[page.length - 1]!.id;
    }
    for (const [id, device] of this.devices)
      if (!seenDevices.has(id)) problems.push(`device ${id} added by event ${device.seq} is missing from the devices table (deleted)`);

    const seenTokens = new Set<string>();
    const anonymous = new Map(this.anonymousTokenUses);
    let unverifiableHashes = 0;
    const tokens = await tables.tokens();
    for (const row of tokens) {
      seenTokens.add(row.id);
      const what = `token ${row.id} of device ${row.device_id}`;
      const expected = this.tokens.get(row.id);
      if (!expected) {
        problems.push(`${what} is in the enrollment_tokens table, but no event created it (planted)`);
        continue;
      }
      if (expected.deviceId !== row.device_id)
        problems.push(
          `token ${row.id} belongs to ${row.device_id} in the table, but event ${expected.seq} made it for ${expected.deviceId}`,
        );
      if (expected.expiresAt && expected.expiresAt !== row.expires_at)
        problems.push(`${what} expires ${row.expires_at}, but event ${expected.seq} says ${expected.expiresAt}`);
      if (expected.hash !== undefined) {
        if (expected.hash !== row.token_hash)
          problems.push(`${what}: its hash is not the one event ${expected.seq} recorded (a token was planted)`);
      } else if (row.used_at === null && row.expires_at > now.toISOString()) unverifiableHashes++;
      if (expected.usedSeq !== undefined && row.used_at === null)
        problems.push(`${what} is unused in the table, but event ${expected.usedSeq} used or cancelled it`);
      if (expected.usedSeq === undefined && row.used_at !== null) {
        // Older fleets logged token enrollments without the token id: one per such event.
        const left = anonymous.get(row.device_id) ?? 0;
        if (left > 0) anonymous.set(row.device_id, left - 1);
        else problems.push(`${what} is marked used in the table, but no event used it`);
      }
    }
    for (const [id, token] of this.tokens)
      if (!seenTokens.has(id))
        problems.push(`token ${id} created by event ${token.seq} is missing from the enrollment_tokens table (deleted)`);
    await this.compareEnrollment(tables, problems, notes);
    if (unverifiableHashes > 0)
      notes.push(
        `${unverifiableHashes} usable token(s) were created before token hashes were logged: ` +
          "their hashes cannot be checked (replace them with `fleetpki token create`)",
      );
    return { problems, notes };
  }

  private async compareEnrollment(tables: AuditStateSource, problems: string[], notes: string[]): Promise<void> {
    const migrations = new Map((await tables.migrationTimes()).map((m) => [m.name, m.timestamp]));
    const requestsSince = migrations.get("0005_approval_requests_and_factory_once") ?? "";
    const renewalsSince = migrations.get("0004_renewal_challenges_and_retries") ?? "";

    let legacyRequests = 0;
    const seenRequests = new Set<string>();
    const requests = await tables.requests();
    for (const row of requests) {
      seenRequests.add(row.id);
      const what = `enrollment request ${row.id} of device ${row.device_id}`;
      const expected = this.requests.get(row.id);
      if (!expected) {
        if (row.created_at < requestsSince) legacyRequests++;
        else problems.push(`${what} is in the enrollment_requests table, but no event made it (planted)`);
        continue;
      }
      if (expected.deviceId !== row.device_id)
        problems.push(`request ${row.id} is for ${row.device_id} in the table, but event ${expected.seq} made it for ${expected.deviceId}`);
      if (expected.status !== row.status)
        problems.push(`${what} is ${row.status} in the table, but the log makes it ${expected.status} (event ${expected.seq})`);
      else if (expected.status === "issued" && expected.serial !== row.certificate_serial)
        problems.push(`${what} names certificate ${row.certificate_serial}, but event ${expected.seq} issued ${expected.serial} for it`);
    }
    for (const [id, r] of this.requests)
      if (!seenRequests.has(id))
        problems.push(`enrollment request ${id} made by event ${r.seq} is missing from the enrollment_requests table (deleted)`);
    if (legacyRequests > 0)
      notes.push(`${legacyRequests} enrollment request(s) predate request ids in the log: their decisions cannot be checked`);

    const seenFactory = new Set<string>();
    for (const row of await tables.factoryEnrollments()) {
      seenFactory.add(row.device_id);
      const expected = this.factory.get(row.device_id);
      if (!expected)
        problems.push(
          `device ${row.device_id} has a factory enrollment in the table, but the log has none since its last reprovision (planted)`,
        );
      else if (expected.factorySerial !== row.factory_serial || expected.serial !== row.certificate_serial)
        problems.push(
          `the factory enrollment of ${row.device_id} differs from event ${expected.seq} (factory certificate or certificate changed)`,
        );
    }
    for (const [id, e] of this.factory)
      if (!seenFactory.has(id))
        problems.push(
          `the factory enrollment of ${id} by event ${e.seq} is missing from factory_enrollments, ` +
            "and no device.reprovision event removed it (deleted)",
        );

    let legacyRenewals = 0;
    const seenRenewals = new Set<string>();
    for (const row of await tables.renewals()) {
      seenRenewals.add(row.renewed_serial);
      const expected = this.renewals.get(row.renewed_serial);
      if (!expected)
        problems.push(`the renewal of ${row.renewed_serial} by ${row.serial} is in the renewals table, but no event issued it (planted)`);
      else if (expected.serial !== row.serial || expected.deviceId !== row.device_id)
        problems.push(
          `the renewal of ${row.renewed_serial} is ${row.serial} in the table, ` +
            `but event ${expected.seq} renewed it with ${expected.serial}`,
        );
    }
    for (const [renewed, e] of this.renewals)
      if (!seenRenewals.has(renewed)) {
        if (e.at < renewalsSince) legacyRenewals++;
        else
          problems.push(`the renewal of ${renewed} by event ${e.seq} is missing from the renewals table (deleted: it could renew again)`);
      }
    if (legacyRenewals > 0) notes.push(`${legacyRenewals} renewal(s) predate the renewals table: not checked`);
  }
}

function describeStatus(status: string, reason: string | null): string {
  if (status === "valid") return "valid";
  return `${status === "hold" ? "on hold" : "revoked"}${reason ? ` (${reason})` : ""}`;
}
