// The device registry as the authority reads and writes it.
import type { DeviceTable, FactoryEnrollmentTable } from "../schema.js";

/** One page of the device list (keyset by id; every filter optional). */
export interface DevicePageQuery {
  /** A substring of the id. */
  search?: string;
  group?: string;
  /** Undefined: every status but removed. */
  status?: DeviceTable["status"];
  /** A label that must be present with this value. */
  label?: { key: string; value: string };
  /** Ids above this one. */
  afterId?: string;
  limit: number;
}

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
  /** Up to `limit` devices matching the query, by id. */
  page(query: DevicePageQuery): Promise<DeviceTable[]>;
  /** Sets last_seen_at where it is older (or unset), for devices that exist; one statement per row, no audit. */
  recordLastSeen(seen: readonly { id: string; at: string }[]): Promise<void>;
  /** Removes and returns the device's factory enrollment (undefined: none), so its factory certificate may enroll again. */
  takeFactoryEnrollment(deviceId: string): Promise<FactoryEnrollmentTable | undefined>;
}
