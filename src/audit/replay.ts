// The state tables replayed from the audit log. Every change to a certificate's status, a CA, a
// device or an enrollment token is appended to the log in the transaction that makes it, so the
// tables must be exactly what the events say; a row changed, planted or deleted behind the log's
// back shows up as a disagreement. Covered: certificates (issued, revoked, held, released), CAs
// (created, revoked), devices (added, revoked, held, released; group and labels) and tokens
// (created, used, cancelled by a device revocation).
//
// Older fleets: token.create events written before this check existed carry no token hash, and
// certificate.issue events no token id. Such tokens are checked for everything but their hash (a note
// while still usable), and a used token is matched to one token enrollment of its device.
import { createHash } from "node:crypto";
import type { Db } from "../store/store.js";
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
  status: "active" | "held" | "revoked";
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
        return;
      }
      case "device.add": {
        const id = idOf(row.subject, "device:");
        if (!id) return this.malformed(row);
        this.devices.set(id, { status: "active", group: str(d.group) ?? null, labels: labelsKey(d.labels), seq: row.seq });
        return;
      }
      case "device.revoke":
      case "device.hold":
      case "device.unhold": {
        const id = idOf(row.subject, "device:");
        if (!id) return this.malformed(row);
        const status = row.action === "device.revoke" ? "revoked" : row.action === "device.hold" ? "hold" : "valid";
        const reason =
          row.action === "device.revoke" ? (str(d.reason) ?? "unspecified") : row.action === "device.hold" ? "certificateHold" : null;
        this.setStatus(row, strings(d.serials), status, reason);
        const device = this.devices.get(id);
        if (!device) this.problems.push(`event ${row.seq} (${row.action}) names device ${id}, which no event added`);
        else {
          device.status = row.action === "device.revoke" ? "revoked" : row.action === "device.hold" ? "held" : "active";
          device.seq = row.seq;
        }
        // A revoked device's unused tokens are spent in the same transaction.
        if (row.action === "device.revoke") for (const t of this.tokens.values()) if (t.deviceId === id) t.usedSeq ??= row.seq;
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
  async compare(db: Db, now = new Date()): Promise<ReplayReport> {
    const problems = [...this.problems];
    const notes: string[] = [];

    const seenCerts = new Set<string>();
    const PAGE = 5000;
    for (let after = ""; ;) {
      const page = await db
        .selectFrom("certificates")
        .select(["serial", "kind", "subject_id", "status", "revocation_reason", "fingerprint_sha256", "not_after", "der"])
        .where("serial", ">", after)
        .orderBy("serial")
        .limit(PAGE)
        .execute();
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

    const cas = await db.selectFrom("cas").select(["id", "status", "serial"]).execute();
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
      const page = await db
        .selectFrom("devices")
        .select(["id", "status", "group_name", "labels"])
        .where("id", ">", after)
        .orderBy("id")
        .limit(PAGE)
        .execute();
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
    const tokens = await db
      .selectFrom("enrollment_tokens")
      .select(["id", "device_id", "token_hash", "expires_at", "used_at"])
      .orderBy("created_at")
      .execute();
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
    if (unverifiableHashes > 0)
      notes.push(
        `${unverifiableHashes} usable token(s) were created before token hashes were logged: ` +
          "their hashes cannot be checked (replace them with `fleetpki token create`)",
      );
    return { problems, notes };
  }
}

function describeStatus(status: string, reason: string | null): string {
  if (status === "valid") return "valid";
  return `${status === "hold" ? "on hold" : "revoked"}${reason ? ` (${reason})` : ""}`;
}
