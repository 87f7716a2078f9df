// Identities as the policy sees them, from the device registry (groups and labels live there, not in
// certificates). For tools that ask once (`fleetpki policy test`); the gateway keeps its own live view.
import { UnknownDevice } from "../authority/errors.js";
import { assertDeviceId } from "../authority/issue/issuance.js";
import type { FleetServices } from "../authority/services.js";
import type { DeviceTable } from "../store/schema.js";
import type { AccessIdentity } from "./identity.js";

export function deviceIdentityOf(row: Pick<DeviceTable, "id" | "group_name" | "labels">): AccessIdentity & { kind: "device" } {
  const labels: unknown = JSON.parse(row.labels);
  return {
    kind: "device",
    id: row.id,
    group: row.group_name,
    labels: labels && typeof labels === "object" && !Array.isArray(labels) ? (labels as Record<string, string>) : {},
  };
}

/** A registered device's identity and registry status; UnknownDevice when there is none. */
export async function deviceAccessIdentity(
  fleet: FleetServices,
  id: string,
): Promise<{ identity: AccessIdentity & { kind: "device" }; status: DeviceTable["status"] }> {
  assertDeviceId(id);
  const row = await fleet.store.ops.devices.get(id);
  if (!row) throw new UnknownDevice(id);
  return { identity: deviceIdentityOf(row), status: row.status };
}

/**
 * The ids of every registered device but removed ones (a disabled or revoked device can come back):
 * those whose ids `${device}` in ROS 2 names must keep apart (src/access/ros2-policy.ts).
 */
export async function registeredDeviceIds(fleet: FleetServices): Promise<string[]> {
  return (await fleet.store.ops.devices.list({})).map((row) => row.id);
}

/** The identities of the active devices, and the ids of every registered one, from one listing of the registry. */
export async function activeDeviceIdentities(
  fleet: FleetServices,
): Promise<{ identities: (AccessIdentity & { kind: "device" })[]; registered: string[] }> {
  const rows = await fleet.store.ops.devices.list({});
  return { identities: rows.filter((row) => row.status === "active").map(deviceIdentityOf), registered: rows.map((row) => row.id) };
}
