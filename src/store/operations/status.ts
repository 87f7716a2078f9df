// Certificate status, as the authority's status room needs it: revocation writes, CRL entries and
// numbers (every CA's, the offline root's included), OCSP lookups, and the snapshot the
// CertificateStatus service starts from. Single devices, certificates and CAs are read and CA
// statuses set through their own areas (devices, certificates, cas).
import type { CaTable, CertificateTable, CrlTable, DeviceTable } from "../schema.js";

/** A device as the CertificateStatus service keeps it: its status, and the group and labels access decisions read. */
export type DeviceStatusRow = Pick<DeviceTable, "id" | "status" | "group_name" | "labels">;
/** What a status change needs of a certificate. */
export type StatusCertificateRow = Pick<CertificateTable, "serial" | "issuer_ca" | "status">;
/** What an OCSP answer says of a serial. */
export type StoredStatus = Pick<CertificateTable, "status" | "revoked_at" | "revocation_reason" | "kind">;

/** One revoked or held certificate on a CRL; revokedAt is truncated to the second, reason "" when none was stored. */
export interface CrlEntryRow {
  serialHex: string;
  revokedAt: Date;
  /** The stored reason; "unspecified" where none was stored. */
  reason: string;
}

/** Every certificate's status without its DER (what the CertificateStatus service keeps in memory). */
export type SnapshotCertificateRow = Pick<
  CertificateTable,
  | "serial"
  | "issuer_ca"
  | "kind"
  | "subject_id"
  | "device_id"
  | "not_after"
  | "fingerprint_sha256"
  | "status"
  | "revoked_at"
  | "revocation_reason"
>;

export interface StatusSnapshot {
  /** The audit head read before the tables: events after it may already be in them (applying them again is harmless). */
  seq: number;
  cas: Pick<CaTable, "id" | "serial" | "status">[];
  devices: DeviceStatusRow[];
  certificates: SnapshotCertificateRow[];
}

export interface StatusOperations {
  /** The device's certificates in one of `statuses`; with `unexpiredAt`, only those whose not_after is later. */
  deviceCertificates(
    deviceId: string,
    filter: { statuses: readonly CertificateTable["status"][]; unexpiredAt?: string },
  ): Promise<StatusCertificateRow[]>;
  setCertificateStatus(
    serials: readonly string[],
    change: { status: CertificateTable["status"]; reason: string | null; at: string | null },
  ): Promise<void>;
  setDeviceStatus(deviceId: string, status: DeviceTable["status"], at: string): Promise<void>;
  /** A revoked device: its unused tokens are spent and its waiting or approved requests denied. */
  closeEnrollment(deviceId: string, at: string, actor: string): Promise<void>;

  /** The newest CRL stored for the CA, whoever signed (or imported) it. */
  storedCrl(caId: string): Promise<CrlTable | undefined>;
  /** The number of the CA's stored CRL (without reading its DER, megabytes for a big fleet). */
  crlNumber(caId: string): Promise<number | undefined>;
  /** Revoked and held certificates of the CA that expire after `unexpiredAt`. */
  listCrlEntries(caId: string, unexpiredAt: string): Promise<CrlEntryRow[]>;
  /** Replaces the CA's stored CRL; inside the write transaction that read its number. */
  storeCrl(row: CrlTable): Promise<void>;

  /** What is stored of each serial issued by the CA (undefined: not issued by it). */
  lookupStatuses(caId: string, serials: readonly string[]): Promise<(StoredStatus | undefined)[]>;

  statusSnapshot(): Promise<StatusSnapshot>;
}
