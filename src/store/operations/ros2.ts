// SROS2 enclaves (src/ros2/keystore/) as the authority reads and writes them.
import type { Ros2EnclaveTable, Ros2KeystoreTable } from "../schema.js";

export interface Ros2Operations {
  getKeystore(id: string): Promise<Ros2KeystoreTable | undefined>;
  /** Records a new keystore; inside a write transaction. */
  createKeystore(row: Ros2KeystoreTable): Promise<void>;
  /** One enclave of one keystore, or undefined. */
  getEnclave(keystoreId: string, path: string): Promise<Ros2EnclaveTable | undefined>;
  /** Every enclave of a keystore, by path. */
  listEnclaves(keystoreId: string): Promise<Ros2EnclaveTable[]>;
  /** Every enclave of a device (ros2_enclaves.device_id), of any keystore, by keystore and path. */
  deviceEnclaves(deviceId: string): Promise<Ros2EnclaveTable[]>;
  /**
   * Enclaves of every keystore with this path that are live at `nowIso`: not revoked and their current
   * certificate not expired, each with its keystore's directory.
   */
  liveEnclavesWithPath(path: string, nowIso: string): Promise<Array<Ros2EnclaveTable & { keystore_dir: string }>>;
  /** Records a new enclave; inside a write transaction (after its certificate). */
  createEnclave(row: Ros2EnclaveTable): Promise<void>;
  /** Changes an enclave's current certificate, status, times or (re-created after revocation) source; false when there is none. */
  updateEnclave(keystoreId: string, path: string, change: Partial<Omit<Ros2EnclaveTable, "keystore_id" | "path">>): Promise<boolean>;
}
