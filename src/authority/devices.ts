// Device registry: add, list, show. Groups and labels live here, not in certificates.
import { isUniqueViolation } from "../store/store.js";
import type { DeviceTable } from "../store/schema.js";
import { DEVICE_ID_PATTERN } from "../x509/profiles.js";
import { DeviceExists, InvalidArgument, UnknownDevice } from "./errors.js";
import type { FleetServices } from "./services.js";
import { assertDeviceId } from "./issue/issuance.js";
import { prepareToken, storeToken, type CreatedToken } from "./enroll/tokens.js";

const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,62})$/;
const MAX_LABEL_VALUE = 256;

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
    if (!LABEL_KEY.test(k)) throw new InvalidArgument(`invalid label key "${k}": 1-63 characters a-z 0-9 . _ / -`);
    if (typeof v !== "string" || v.length > MAX_LABEL_VALUE)
      throw new InvalidArgument(`label "${k}" value must be at most ${MAX_LABEL_VALUE} characters`);
  }
  return labels;
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
  if (req.group !== undefined && !DEVICE_ID_PATTERN.test(req.group))
    throw new InvalidArgument(`invalid group "${req.group}": 1-63 characters a-z 0-9 . _ - starting with a letter or digit`);
  const labels = validateLabels(req.labels ?? {});
  const token = req.token ? prepareToken(fleet, { deviceId: req.id, ttl: req.token.ttl }) : undefined;
  const now = new Date().toISOString();
  const row: DeviceTable = {
    id: req.id,
    group_name: req.group ?? null,
    labels: JSON.stringify(labels),
    status: "active",
    created_at: now,
    updated_at: now,
  };
  let created: CreatedToken | undefined;
  try {
    await fleet.store.transaction(async (tx) => {
      await tx.insertInto("devices").values(row).execute();
      await tx.audit.append([
        { actor: req.actor, action: "device.add", subject: `device:${req.id}`, details: { group: row.group_name, labels } },
      ]);
      if (token) created = await storeToken(tx, token, req.actor);
    });
  } catch (e) {
    if (isUniqueViolation(e)) throw new DeviceExists(req.id);
    throw e;
  }
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
  return fleet.store.transaction(async (tx) => {
    const device = await tx.selectFrom("devices").select("id").where("id", "=", req.deviceId).executeTakeFirst();
    if (!device) throw new UnknownDevice(req.deviceId);
    const enrolled = await tx.selectFrom("factory_enrollments").selectAll().where("device_id", "=", req.deviceId).executeTakeFirst();
    if (!enrolled)
      throw new InvalidArgument(
        `device "${req.deviceId}" has not enrolled with a factory certificate since it was last reprovisioned; nothing to do`,
      );
    await tx.deleteFrom("factory_enrollments").where("device_id", "=", req.deviceId).execute();
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
      },
    ]);
    return { factorySerial: enrolled.factory_serial, certificateSerial: enrolled.certificate_serial };
  });
}

export async function listDevices(fleet: FleetServices, filter: { group?: string } = {}): Promise<Device[]> {
  let q = fleet.store.db.selectFrom("devices").selectAll().orderBy("id");
  if (filter.group) q = q.where("group_name", "=", filter.group);
  return (await q.execute()).map(toDevice);
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

export async function showDevice(fleet: FleetServices, id: string, now = new Date()): Promise<DeviceDetails> {
  assertDeviceId(id);
  const row = await fleet.store.db.selectFrom("devices").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row) throw new UnknownDevice(id);
  const certs = await fleet.store.db
    .selectFrom("certificates")
    .select(["serial", "issuer_ca", "kind", "not_before", "not_after", "status", "fingerprint_sha256"])
    .where("device_id", "=", id)
    .orderBy("not_before", "desc")
    .execute();
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
