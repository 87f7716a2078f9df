// Domain events: each audit row decoded once, here, into a typed event. Listeners (the status
// server, the CertificateStatus service, the coming gateway) switch on `type` and read typed
// fields; none of them parses an audit row's JSON details again.
import type { OperatorRole } from "../../access/identity.js";
import type { AuditLogTable, CertificateTable } from "../../store/schema.js";

interface Base {
  /** The audit row's sequence number: events arrive in this order. */
  seq: number;
  at: Date;
  actor: string;
}

/** A certificate status change: the serials it touched and the CAs whose CRLs list them. */
interface StatusChangeFields {
  serials: string[];
  cas: string[];
}

export interface DeviceAdded extends Base {
  type: "DeviceAdded";
  deviceId: string;
  group: string | null;
  labels: Record<string, string>;
}
/** A device's group or labels changed (`device set`): the new values, complete. */
export interface DeviceUpdated extends Base {
  type: "DeviceUpdated";
  deviceId: string;
  group: string | null;
  labels: Record<string, string>;
}
/** A device decommissioned (`device remove`): its certificates revoked, it never enrolls again. */
export interface DeviceRemoved extends Base, StatusChangeFields {
  type: "DeviceRemoved";
  deviceId: string;
  reason: string;
}
export interface DeviceRevoked extends Base, StatusChangeFields {
  type: "DeviceRevoked";
  deviceId: string;
  reason: string;
}
export interface DeviceHeld extends Base, StatusChangeFields {
  type: "DeviceHeld";
  deviceId: string;
}
export interface DeviceUnheld extends Base, StatusChangeFields {
  type: "DeviceUnheld";
  deviceId: string;
}
export interface CertificateIssued extends Base {
  type: "CertificateIssued";
  serial: string;
  issuerCa: string;
  kind: CertificateTable["kind"];
  /** Set for device (and factory) certificates. */
  deviceId: string | null;
  /**
   * Whom it identifies: details.subject_id where the row has it, else the audit subject after its
   * "<kind>:" (the device id, operator, service or server name; what the table's subject_id holds
   * for those kinds).
   */
  subjectId: string;
  notAfter: Date;
  /** SHA-256 of the DER (hex), where the event recorded it. */
  fingerprint: string | null;
  /** Set for a renewal: the serial of the certificate it renews (details.renews). */
  renews?: string;
}
export interface CertificateRevoked extends Base, StatusChangeFields {
  type: "CertificateRevoked";
  serial: string;
  reason: string;
}
export interface CaCreated extends Base {
  type: "CaCreated";
  caId: string;
  /** The CA certificate's serial (itself a certificate of kind "ca"). */
  serial: string;
  /** The CA that signed it ("root" for the root itself). */
  issuerCa: string;
  notAfter: Date;
  /** SHA-256 of the CA certificate's DER (hex); null for events written before it was recorded. */
  fingerprint: string | null;
}
export interface CaRevoked extends Base, StatusChangeFields {
  type: "CaRevoked";
  caId: string;
  reason: string;
}
export interface CrlImported extends Base {
  type: "CrlImported";
  caId: string;
  crlNumber: bigint;
  entries: number;
  nextUpdate: Date;
  cas: string[];
}
/** Declared for the gateway, which will emit `policy.change` when a device's access policy changes. */
export interface PolicyChanged extends Base {
  type: "PolicyChanged";
  /** What the policy applies to, e.g. `device:<id>` or `group:<name>`. */
  subject: string;
}
/** An operator added (or added again after removal, or renewed) with this role (`operator add`). */
export interface OperatorAdded extends Base {
  type: "OperatorAdded";
  name: string;
  role: OperatorRole;
}
/** An operator removed: its certificates revoked (their own CertificateRevoked events), its sessions ended. */
export interface OperatorRemoved extends Base {
  type: "OperatorRemoved";
  name: string;
}
export interface OperatorRoleChanged extends Base {
  type: "OperatorRoleChanged";
  name: string;
  role: OperatorRole;
}
/** An operator closed a gateway session (`gateway.kick`): every gateway closes that client id's sessions opened before `at`. */
export interface GatewaySessionKicked extends Base {
  type: "GatewaySessionKicked";
  clientId: string;
}
/** An audit row with no domain event (enrollment steps, tokens, checkpoints, ...) or one that could not be decoded. */
export interface Unrecognised extends Base {
  type: "Unrecognised";
  action: string;
  subject: string;
  /** Set when the action is known but its row lacks what every such event carries. */
  problem?: string;
}

export type FleetEvent =
  | DeviceAdded
  | DeviceUpdated
  | DeviceRemoved
  | DeviceRevoked
  | DeviceHeld
  | DeviceUnheld
  | CertificateIssued
  | CertificateRevoked
  | CaCreated
  | CaRevoked
  | CrlImported
  | PolicyChanged
  | OperatorAdded
  | OperatorRemoved
  | OperatorRoleChanged
  | GatewaySessionKicked
  | Unrecognised;

export type FleetEventType = FleetEvent["type"];

/** Events that change some certificate's status, each naming the CAs whose CRLs must be re-signed. */
export type StatusChangeEvent = DeviceRevoked | DeviceRemoved | DeviceHeld | DeviceUnheld | CertificateRevoked | CaRevoked | CrlImported;

const STATUS_CHANGES = new Set<FleetEventType>([
  "DeviceRevoked",
  "DeviceRemoved",
  "DeviceHeld",
  "DeviceUnheld",
  "CertificateRevoked",
  "CaRevoked",
  "CrlImported",
]);

export function isStatusChange(event: FleetEvent): event is StatusChangeEvent {
  return STATUS_CHANGES.has(event.type);
}

/** The audit actions that record a StatusChangeEvent. */
const STATUS_ACTIONS = new Set([
  "device.revoke",
  "device.remove",
  "device.hold",
  "device.unhold",
  "certificate.revoke",
  "ca.revoke",
  "crl.import",
]);

/**
 * A status change whose row could not be decoded: some certificates' status changed, but which
 * ones and on which CAs' CRLs is unknown.
 */
export function isUnreadableStatusChange(event: FleetEvent): event is Unrecognised & { problem: string } {
  return event.type === "Unrecognised" && event.problem !== undefined && STATUS_ACTIONS.has(event.action);
}

/**
 * A change to what a device may do whose row could not be decoded: a status change, or a group or
 * label change (which access decisions read). Whoever keeps devices in memory must read them again.
 */
export function isUnreadableDeviceChange(event: FleetEvent): event is Unrecognised & { problem: string } {
  if (isUnreadableStatusChange(event)) return true;
  return event.type === "Unrecognised" && event.problem !== undefined && event.action === "device.update";
}

const ROLES = new Set<string>(["viewer", "operator", "admin"]);

/**
 * An operator change whose audit row could not be decoded: whoever keeps operators' roles in memory
 * must read them again.
 */
export function isUnreadableOperatorChange(event: FleetEvent): event is Unrecognised & { problem: string } {
  return event.type === "Unrecognised" && event.problem !== undefined && OPERATOR_ACTIONS.has(event.action);
}
const OPERATOR_ACTIONS = new Set(["operator.add", "operator.remove", "operator.role"]);

const KINDS = new Set<string>(["device", "factory", "server", "operator", "ca", "ocsp-responder", "audit", "service", "ros2-enclave"]);

class Malformed extends Error {}

type Details = Record<string, unknown>;

function text(d: Details, key: string): string {
  const v = d[key];
  if (typeof v !== "string" || v === "") throw new Malformed(`details.${key} is not a non-empty string`);
  return v;
}
function optionalText(d: Details, key: string): string | null {
  const v = d[key];
  return typeof v === "string" && v !== "" ? v : null;
}
function texts(d: Details, key: string): string[] {
  const v = d[key];
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw new Malformed(`details.${key} is not a list of strings`);
  return v as string[];
}
/** A JSON object of string values (device labels); absent is none. */
function labels(d: Details, key: string, required = false): Record<string, string> {
  const v = d[key];
  if (v === undefined && !required) return {};
  if (!v || typeof v !== "object" || Array.isArray(v) || !Object.values(v).every((x) => typeof x === "string"))
    throw new Malformed(`details.${key} is not an object of strings`);
  return { ...(v as Record<string, string>) };
}
/** A group: a non-empty string or null, and present (an update names the new group, null for none). */
function group(d: Details, key: string): string | null {
  const v = d[key];
  if (v === null) return null;
  if (typeof v !== "string" || v === "") throw new Malformed(`details.${key} is neither a group name nor null`);
  return v;
}
function role(d: Details, key: string): OperatorRole {
  const v = text(d, key);
  if (!ROLES.has(v)) throw new Malformed(`details.${key} "${v}" is not an operator role`);
  return v as OperatorRole;
}
function time(d: Details, key: string): Date {
  const at = new Date(text(d, key));
  if (Number.isNaN(at.getTime())) throw new Malformed(`details.${key} is not a time`);
  return at;
}
function subjectId(subject: string, prefix: string): string {
  if (!subject.startsWith(prefix) || subject.length === prefix.length) throw new Malformed(`subject is not ${prefix}<id>`);
  return subject.slice(prefix.length);
}

/**
 * The certificates table's subject_id for a certificate.issue row that does not carry it, from the
 * subject's id: the same for devices, services, operators and servers; the audit key's row names
 * the fleet domain and an OCSP responder's its CA (audit-checkpoints.ts, ocsp-responder.ts).
 */
function issuedSubjectId(kind: string, id: string): string {
  if (kind === "audit") return "audit";
  if (kind === "ocsp-responder") return `${id}-ocsp`;
  return id;
}

/** The domain event an audit row records; never throws (a row it cannot read is Unrecognised with a problem). */
export function decodeAuditRow(row: AuditLogTable): FleetEvent {
  const base: Base = { seq: row.seq, at: new Date(row.at), actor: row.actor };
  const unrecognised = (problem?: string): Unrecognised => ({
    ...base,
    type: "Unrecognised",
    action: String(row.action),
    subject: String(row.subject),
    ...(problem ? { problem } : {}),
  });
  let d: Details;
  try {
    const parsed: unknown = JSON.parse(row.details);
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) return unrecognised("details are not a JSON object");
    d = parsed as Details;
  } catch {
    return unrecognised("details are not JSON");
  }
  try {
    switch (row.action) {
      case "device.add":
        return {
          ...base,
          type: "DeviceAdded",
          deviceId: subjectId(row.subject, "device:"),
          group: optionalText(d, "group"),
          labels: labels(d, "labels"),
        };
      case "device.update":
        return {
          ...base,
          type: "DeviceUpdated",
          deviceId: subjectId(row.subject, "device:"),
          group: group(d, "group"),
          labels: labels(d, "labels", true),
        };
      case "device.remove":
        return {
          ...base,
          type: "DeviceRemoved",
          deviceId: subjectId(row.subject, "device:"),
          reason: optionalText(d, "reason") ?? "cessationOfOperation",
          serials: texts(d, "serials"),
          cas: texts(d, "cas"),
        };
      case "device.revoke":
        return {
          ...base,
          type: "DeviceRevoked",
          deviceId: subjectId(row.subject, "device:"),
          reason: optionalText(d, "reason") ?? "unspecified",
          serials: texts(d, "serials"),
          cas: texts(d, "cas"),
        };
      case "device.hold":
      case "device.unhold":
        return {
          ...base,
          type: row.action === "device.hold" ? "DeviceHeld" : "DeviceUnheld",
          deviceId: subjectId(row.subject, "device:"),
          serials: texts(d, "serials"),
          cas: texts(d, "cas"),
        };
      case "certificate.issue": {
        const kind = text(d, "kind");
        if (!KINDS.has(kind)) throw new Malformed(`details.kind "${kind}" is not a certificate kind`);
        const deviceId =
          (kind === "device" || kind === "factory") && row.subject.startsWith("device:") ? subjectId(row.subject, "device:") : null;
        const colon = row.subject.indexOf(":");
        const subjectPrefix = colon > 0 ? row.subject.slice(0, colon + 1) : "<kind>:";
        return {
          ...base,
          type: "CertificateIssued",
          serial: text(d, "serial"),
          issuerCa: text(d, "issuer"),
          kind: kind as CertificateTable["kind"],
          deviceId,
          subjectId: optionalText(d, "subject_id") ?? issuedSubjectId(kind, subjectId(row.subject, subjectPrefix)),
          notAfter: time(d, "not_after"),
          fingerprint: optionalText(d, "fingerprint_sha256"),
          ...(typeof d.renews === "string" && d.renews !== "" ? { renews: d.renews } : {}),
        };
      }
      case "certificate.revoke": {
        const serials = texts(d, "serials");
        return {
          ...base,
          type: "CertificateRevoked",
          serial: subjectId(row.subject, "certificate:"),
          reason: optionalText(d, "reason") ?? "unspecified",
          serials,
          cas: texts(d, "cas"),
        };
      }
      case "ca.create":
        return {
          ...base,
          type: "CaCreated",
          caId: subjectId(row.subject, "ca:"),
          serial: text(d, "serial"),
          // The root names no issuer CA of its own.
          issuerCa: optionalText(d, "issuer") ?? subjectId(row.subject, "ca:"),
          notAfter: time(d, "not_after"),
          fingerprint: optionalText(d, "fingerprint_sha256"),
        };
      case "ca.revoke":
        return {
          ...base,
          type: "CaRevoked",
          caId: subjectId(row.subject, "ca:"),
          reason: optionalText(d, "reason") ?? "cACompromise",
          serials: texts(d, "serials"),
          cas: texts(d, "cas"),
        };
      case "crl.import": {
        const number = text(d, "crl_number");
        if (!/^\d+$/.test(number)) throw new Malformed("details.crl_number is not a number");
        const entries = d.entries;
        if (typeof entries !== "number" || !Number.isSafeInteger(entries) || entries < 0)
          throw new Malformed("details.entries is not a count");
        return {
          ...base,
          type: "CrlImported",
          caId: subjectId(row.subject, "ca:"),
          crlNumber: BigInt(number),
          entries,
          nextUpdate: time(d, "next_update"),
          cas: texts(d, "cas"),
        };
      }
      case "policy.change":
        return { ...base, type: "PolicyChanged", subject: row.subject };
      case "operator.add":
        return { ...base, type: "OperatorAdded", name: subjectId(row.subject, "operator:"), role: role(d, "role") };
      case "operator.role":
        return { ...base, type: "OperatorRoleChanged", name: subjectId(row.subject, "operator:"), role: role(d, "role") };
      case "operator.remove":
        return { ...base, type: "OperatorRemoved", name: subjectId(row.subject, "operator:") };
      case "gateway.kick":
        return { ...base, type: "GatewaySessionKicked", clientId: text(d, "client_id") };
      default:
        return unrecognised();
    }
  } catch (e) {
    if (e instanceof Malformed) return unrecognised(`${row.action} ${row.subject}: ${e.message}`);
    // Any other failure (a column that is not text, say) is this row's problem too: thrown, it
    // would cost the feed every other row of its page, revocations included.
    return unrecognised(`${String(row.action)}: unreadable row (${(e as Error)?.message ?? String(e)})`);
  }
}
