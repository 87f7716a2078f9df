// The device registry as the authority reads and writes it.
import type { DeviceTable, FactoryEnrollmentTable } from "../schema.js";

export interface DeviceOperations {
  /** Adds the devices whose id is free; returns the ids already registered (nothing written for those). */
  add(rows: readonly DeviceTable[]): Promise<string[]>;
  get(id: string): Promise<DeviceTable | undefined>;
  /** Ordered by id; optionally one group's. Removed devices only with `includeRemoved`. */
  list(filter?: { group?: string; includeRemoved?: boolean }): Promise<DeviceTable[]>;
  /** Sets the device's group and labels (JSON); false when no such device. */
  update(id: string, change: Pick<DeviceTable, "group_name" | "labels" | "updated_at">): Promise<boolean>;
  /** Those of `ids` that are registered. */
  existing(ids: readonly string[]): Promise<string[]>;
  /** Removes and returns the device's factory enrollment (undefined: none), so its factory certificate may enroll again. */
  takeFactoryEnrollment(deviceId: string): Promise<FactoryEnrollmentTable | undefined>;
}
