// Device registry: add, list, show, update (group and labels), remove. Groups and labels live here,
// not in certificates: the access policy substitutes them into MQTT topic filters (${group},
// ${label:KEY}), so they may not carry MQTT's separators or wildcards.
import type { DeviceTable } from "../store/schema.js";
import { DEVICE_ID_PATTERN } from "../x509/profiles.js";
import { DeviceExists, InvalidArgument, UnknownDevice } from "./errors.js";
import type { FleetServices } from "./services.js";
import { assertDeviceId } from "./issue/issuance.js";
import { prepareToken, storeToken, type CreatedToken } from "./enroll/tokens.js";

const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,62})$/;
const MAX_LABEL_VALUE = 256;
/** Topic level separator, wildcards, the $SYS prefix, and control characters (NUL included). */
const TOPIC_UNSAFE = /[/+#$\u0000-\u001f\u007f]/;
const GROUP_HELP = "1-63 characters a-z 0-9 . _ - starting with a letter or digit";

export interface Device {
  id: string;
  group: string | null;
  labels: Record<string, string>;
  status: DeviceTable["status"];
  createdAt: string;
  updatedAt: string;
}

export interface AddDeviceRequest {
  id: string;
  group?: string;
  labels?: Record<string, string>;
  actor: string;
  /** Also create a one-time enrollment token, in the same transaction (ttl: enrollment.token_ttl by default). */
  token?: { ttl?: string };
}

/** Parses "k=v" pairs from the command line into validated labels. */
export function parseLabels(pairs: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new InvalidArgument(`label "${pair}" must be key=value`);
    labels[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return validateLabels(labels);
}

export function validateLabels(labels: Record<string, string>): Record<string, string> {
  for (const [k, v] of Object.entries(labels)) {
    if (!LABEL_KEY.test(k)) throw new InvalidArgument(`invalid label key ${JSON.stringify(k)}: 1-63 characters a-z 0-9 . _ / -`);
    if (typeof v !== "string" || v.length === 0 || v.length > MAX_LABEL_VALUE)
      throw new InvalidArgument(`label "${k}" value must be 1-${MAX_LABEL_VALUE} characters`);
    // Substituted into topic filters: "a/#" would widen a rule to other topics.
    if (TOPIC_UNSAFE.test(v) || Buffer.from(v, "utf8").toString("utf8") !== v)
      throw new InvalidArgument(`invalid label "${k}" value ${JSON.stringify(v)}: no / + # $ or control characters (MQTT topic syntax)`);
  }
  return labels;
}

/** A group name: a device id's characters (no / + # $ or NUL, which would change a topic filter it is substituted into). */
export function assertGroup(group: string): void {
  if (!DEVICE_ID_PATTERN.test(group)) throw new InvalidArgument(`invalid group ${JSON.stringify(group)}: ${GROUP_HELP}`);
}

function toDevice(row: DeviceTable): Device {
  return {
    id: row.id,
    group: row.group_name,
    labels: JSON.parse(row.labels),
    status: row.status,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** Registers a device (and its first token): both or, on any error, neither. */
export async function addDevice(fleet: FleetServices, req: AddDeviceRequest): Promise<Device & { token?: CreatedToken }> {
  assertDeviceId(req.id);
  if (req.group !== undefined) assertGroup(req.group);
  const labels = validateLabels(req.labels ?? {});
  const token = req.token ? prepareToken(fleet, { deviceId: req.id, ttl: req.token.ttl }) : undefined;
  const at = fleet.clock.now();
  const now = at.toISOString();
  const row: DeviceTable = {
    id: req.id,
    group_name: req.group ?? null,
    labels: JSON.stringify(labels),
    status: "active",
    created_at: now,
    updated_at: now,
  };
  const created = await fleet.store.transaction(async (tx) => {
    if ((await tx.devices.add([row])).length > 0) throw new DeviceExists(req.id);
    await tx.audit.append([
      { actor: req.actor, action: "device.add", subject: `device:${req.id}`, details: { group: row.group_name, labels }, at },
    ]);
    return token ? await storeToken(tx, token, req.actor) : undefined;
  });
  return { ...toDevice(row), ...(created ? { token: created } : {}) };
}

/**
 * Allows one more enrollment with a factory certificate (a device that was repaired, reset or
 * re-imaged). A factory certificate otherwise enrolls its device once.
 */
export async function reprovisionDevice(
  fleet: FleetServices,
  req: { deviceId: string; actor: string },
): Promise<{ factorySerial: string; certificateSerial: string }> {
  assertDeviceId(req.deviceId);
  const at = fleet.clock.now();
  return fleet.store.transaction(async (tx) => {
    if (!(await tx.devices.get(req.deviceId))) throw new UnknownDevice(req.deviceId);
    const enrolled = await tx.devices.takeFactoryEnrollment(req.deviceId);
    if (!enrolled)
      throw new InvalidArgument(
        `device "${req.deviceId}" has not enrolled with a factory certificate since it was last reprovisioned; nothing to do`,
      );
    await tx.audit.append([
      {
        actor: req.actor,
        action: "device.reprovision",
        subject: `device:${req.deviceId}`,
        details: {
          factory_serial: enrolled.factory_serial,
          certificate_serial: enrolled.certificate_serial,
          enrolled_at: enrolled.enrolled_at,
        },
        at,
      },
    ]);
    return { factorySerial: enrolled.factory_serial, certificateSerial: enrolled.certificate_serial };
  });
}

/** Devices by id; removed ones only with `all`. */
export async function listDevices(fleet: FleetServices, filter: { group?: string; all?: boolean } = {}): Promise<Device[]> {
  return (await fleet.store.ops.devices.list({ group: filter.group, includeRemoved: filter.all === true })).map(toDevice);
}

export interface UpdateDeviceRequest {
  id: string;
  /** A new group; null: none. Undefined: unchanged. */
  group?: string | null;
  /** Labels to add or overwrite. */
  setLabels?: Record<string, string>;
  /** Label keys to remove (each must be present). */
  unsetLabels?: readonly string[];
  actor: string;
}

/**
 * Changes a device's group and labels in one audited transaction (`device.update`, carrying the new
 * group and every label, so the change feed gives listeners the complete new values).
 */
export async function updateDevice(fleet: FleetServices, req: UpdateDeviceRequest): Promise<Device> {
  assertDeviceId(req.id);
  if (req.group !== undefined && req.group !== null) assertGroup(req.group);
  const setLabels = validateLabels({ ...req.setLabels });
  const unset = [...new Set(req.unsetLabels ?? [])];
  for (const k of unset) {
    if (!LABEL_KEY.test(k)) throw new InvalidArgument(`invalid label key ${JSON.stringify(k)}: 1-63 characters a-z 0-9 . _ / -`);
    if (Object.hasOwn(setLabels, k)) throw new InvalidArgument(`label "${k}" is both set and removed; give one of --label and --unlabel`);
  }
  if (req.group === undefined && Object.keys(setLabels).length === 0 && unset.length === 0)
    throw new InvalidArgument("nothing to change: give --group, --no-group, --label or --unlabel");
  const at = fleet.clock.now();
  return fleet.store.transaction(async (tx) => {
    const row = await tx.devices.get(req.id);
    if (!row) throw new UnknownDevice(req.id);
    if (row.status === "removed") throw new InvalidArgument(`device "${req.id}" was removed; it cannot be changed`);
    const labels: Record<string, string> = { ...(JSON.parse(row.labels) as Record<string, string>), ...setLabels };
    for (const k of unset) {
      if (!Object.hasOwn(labels, k)) throw new InvalidArgument(`device "${req.id}" has no label "${k}"`);
      delete labels[k];
    }
    const sorted = Object.fromEntries(
      Object.keys(labels)
        .sort()
        .map((k) => [k, labels[k]!]),
    );
    const updated: DeviceTable = {
      ...row,
      group_name: req.group === undefined ? row.group_name : req.group,
      labels: JSON.stringify(sorted),
      updated_at: at.toISOString(),
    };
    await tx.devices.update(req.id, { group_name: updated.group_name, labels: updated.labels, updated_at: updated.updated_at });
    await tx.audit.append([
      {
        actor: req.actor,
        action: "device.update",
        subject: `device:${req.id}`,
        details: { group: updated.group_name, labels: sorted, previous: { group: row.group_name, labels: JSON.parse(row.labels) } },
        at,
      },
    ]);
    return toDevice(updated);
  });
}

export interface DeviceCertificateSummary {
  serial: string;
  issuer: string;
  kind: string;
  notBefore: string;
  notAfter: string;
  /** valid | revoked | hold | expired */
  status: string;
  fingerprintSha256: string;
}

export interface DeviceDetails extends Device {
  certificates: DeviceCertificateSummary[];
}

export async function showDevice(fleet: FleetServices, id: string): Promise<DeviceDetails> {
  assertDeviceId(id);
  const now = fleet.clock.now();
  const row = await fleet.store.ops.devices.get(id);
  if (!row) throw new UnknownDevice(id);
  const certs = await fleet.store.ops.certificates.ofDevice(id);
  return {
    ...toDevice(row),
    certificates: certs.map((c) => ({
      serial: c.serial,
      issuer: c.issuer_ca,
      kind: c.kind,
      notBefore: c.not_before,
      notAfter: c.not_after,
      status: c.status === "valid" && c.not_after < now.toISOString() ? "expired" : c.status,
      fingerprintSha256: c.fingerprint_sha256,
    })),
  };
}

export interface DeviceEvent {
  seq: number;
  at: string;
  actor: string;
  action: string;
  details: unknown;
}

/** The newest audit events about the device (subject `device:<id>`), newest first. */
export async function recentDeviceEvents(fleet: FleetServices, id: string, limit = 20): Promise<DeviceEvent[]> {
  assertDeviceId(id);
  const rows = await fleet.store.ops.audit.ofSubject(`device:${id}`, limit);
  return rows.map((r) => ({ seq: r.seq, at: r.at, actor: r.actor, action: r.action, details: JSON.parse(r.details) as unknown }));
}
