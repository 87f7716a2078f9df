// CertificateOperations on SQLite: recording through the synchronous batch transaction
// (recorder.ts, the issuance hot path), reads through Kysely.
import { sql } from "kysely";
import type { CertificateTable } from "../schema.js";
import {
  SerialInUse,
  type CertificateListRow,
  type CertificateOperations,
  type CertificatePageQuery,
  type CertificateSummary,
  type DeviceCertificateFacts,
  type RecordItem,
  type SubjectCertificateSummary,
} from "../operations/certificates.js";
import { isUniqueViolation, type NativeAccess, type Tx } from "./connection.js";
import { recordBatch } from "./recorder.js";

export class SqliteCertificateOperations implements CertificateOperations {
  constructor(
    private readonly db: Tx,
    private readonly native: NativeAccess,
  ) {}

  async record(batch: readonly RecordItem[]) {
    try {
      return await this.native((native) => recordBatch(native, batch));
    } catch (e) {
      // The only unique key a batch can hit: certificates.serial (conditions use "on conflict" or check first).
      if (isUniqueViolation(e)) throw new SerialInUse(e);
      throw e;
    }
  }

  bySerial(serial: string): Promise<CertificateTable | undefined> {
    return this.db.selectFrom("certificates").selectAll().where("serial", "=", serial).executeTakeFirst();
  }

  byFingerprint(fingerprintSha256: string): Promise<CertificateTable | undefined> {
    return this.db.selectFrom("certificates").selectAll().where("fingerprint_sha256", "=", fingerprintSha256).executeTakeFirst();
  }

  ofDevice(deviceId: string): Promise<CertificateSummary[]> {
    return this.db
      .selectFrom("certificates")
      .select(["serial", "issuer_ca", "kind", "not_before", "not_after", "status", "fingerprint_sha256"])
      .where("device_id", "=", deviceId)
      .orderBy("not_before", "desc")
      .execute();
  }

  ofKind(kind: CertificateTable["kind"], subjectId?: string): Promise<SubjectCertificateSummary[]> {
    let q = this.db
      .selectFrom("certificates")
      .select([
        "serial",
        "issuer_ca",
        "kind",
        "subject_id",
        "not_before",
        "not_after",
        "status",
        "fingerprint_sha256",
        "revoked_at",
        "revocation_reason",
      ])
      .where("kind", "=", kind);
    if (subjectId !== undefined) q = q.where("subject_id", "=", subjectId);
    return q.orderBy("subject_id").orderBy("not_before", "desc").orderBy("serial").execute();
  }

  page(query: CertificatePageQuery): Promise<CertificateListRow[]> {
    return certificatePageQuery(this.db, query).execute();
  }

  async deviceFacts(deviceIds: readonly string[]): Promise<Map<string, DeviceCertificateFacts>> {
    const facts = new Map<string, DeviceCertificateFacts>();
    if (deviceIds.length === 0) return facts;
    // A page's worth of ids (at most 500) through the (device_id, not_after) index: a few rows each.
    const rows = await this.db
      .selectFrom("certificates")
      .select(["device_id", "serial", "not_after", "status", "created_at"])
      .where("device_id", "in", deviceIds)
      .where("kind", "=", "device")
      .execute();
    for (const r of rows) {
      const f = facts.get(r.device_id!);
      if (!f) facts.set(r.device_id!, { newest: r, lastIssuedAt: r.created_at });
      else {
        // Issued in the same second, two certificates end together: the later issued is newer.
        if (r.not_after > f.newest.not_after || (r.not_after === f.newest.not_after && r.created_at > f.newest.created_at)) f.newest = r;
        if (r.created_at > f.lastIssuedAt) f.lastIssuedAt = r.created_at;
      }
    }
    return facts;
  }

  endingBetween(after: string, until: string): Promise<SubjectCertificateSummary[]> {
    return this.db
      .selectFrom("certificates as c")
      .select([
        "c.serial",
        "c.issuer_ca",
        "c.kind",
        "c.subject_id",
        "c.not_before",
        "c.not_after",
        "c.status",
        "c.fingerprint_sha256",
        "c.revoked_at",
        "c.revocation_reason",
      ])
      .where("c.not_after", ">", after)
      .where("c.not_after", "<=", until)
      .where("c.status", "!=", "revoked")
      .where(({ not, exists, selectFrom }) =>
        not(
          exists(
            selectFrom("certificates as s")
              .select(sql<number>`1`.as("one"))
              .whereRef("s.kind", "=", "c.kind")
              .whereRef("s.subject_id", "=", "c.subject_id")
              .whereRef("s.not_after", ">", "c.not_after")
              .where("s.status", "!=", "revoked"),
          ),
        ),
      )
      .orderBy("c.not_after")
      .orderBy("c.serial")
      .execute();
  }
}

/** The page query, unexecuted: tests and the admin bench check its plan (EXPLAIN QUERY PLAN). */
export function certificatePageQuery(db: Tx, query: CertificatePageQuery) {
  let q = db
    .selectFrom("certificates")
    .select([
      "serial",
      "issuer_ca",
      "kind",
      "subject_id",
      "device_id",
      "not_before",
      "not_after",
      "fingerprint_sha256",
      "status",
      "revoked_at",
      "revocation_reason",
      "created_at",
    ]);
  if (query.afterSerial !== undefined) q = q.where("serial", ">", query.afterSerial);
  if (query.kind !== undefined) q = q.where("kind", "=", query.kind);
  if (query.subject !== undefined) q = q.where("subject_id", "=", query.subject);
  if (query.issuer !== undefined) q = q.where("issuer_ca", "=", query.issuer);
  if (query.status === "expired") q = q.where("status", "=", "valid").where("not_after", "<", query.now);
  else if (query.status === "valid") q = q.where("status", "=", "valid").where("not_after", ">=", query.now);
  else if (query.status !== undefined) q = q.where("status", "=", query.status);
  return q.orderBy("serial").limit(query.limit);
}
