// EnrollmentOperations on SQLite: Kysely, and prepared statements on the native connection for the
// token check (every token enrollment) and the renewal challenge (an unauthenticated endpoint).
import type { Transaction as SqliteTransaction } from "better-sqlite3";
import type {
  EnrollmentOperations,
  PendingFilter,
  RenewalChallenge,
  RequestDecision,
  RequestSummary,
  TokenCheckRow,
} from "../operations/enrollment.js";
import type { EnrollmentRequestTable, EnrollmentTokenTable } from "../schema.js";
import { preparedStatement, type NativeAccess, type NativeDb, type Tx } from "./connection.js";

const SUMMARY = ["id", "device_id", "source", "source_group", "source_address", "key_fingerprint", "created_at"] as const;

export class SqliteEnrollmentOperations implements EnrollmentOperations {
  constructor(
    private readonly db: Tx,
    private readonly withNative: NativeAccess,
  ) {}

  async insertToken(row: EnrollmentTokenTable): Promise<void> {
    await this.db.insertInto("enrollment_tokens").values(row).execute();
  }

  tokensOf(deviceId: string): Promise<TokenCheckRow[]> {
    // On the hot path of every token enrollment: one prepared statement rather than a Kysely query.
    return this.withNative((native) =>
      preparedStatement<[string], TokenCheckRow>(
        native,
        "select id, token_hash, used_at, expires_at from enrollment_tokens where device_id = ?",
      ).all(deviceId),
    );
  }

  spentTokensOf(deviceId: string) {
    return this.db
      .selectFrom("enrollment_tokens")
      .select(["token_hash", "certificate_serial"])
      .where("device_id", "=", deviceId)
      .where("used_at", "is not", null)
      .execute();
  }

  async renewalOf(renewedSerial: string): Promise<string | undefined> {
    return (await this.db.selectFrom("renewals").select("serial").where("renewed_serial", "=", renewedSerial).executeTakeFirst())?.serial;
  }

  factoryEnrollment(deviceId: string) {
    return this.db.selectFrom("factory_enrollments").selectAll().where("device_id", "=", deviceId).executeTakeFirst();
  }

  renewalNonce(nonce: string) {
    return this.db.selectFrom("renewal_nonces").select(["device_id", "expires_at"]).where("nonce", "=", nonce).executeTakeFirst();
  }

  storeRenewalChallenge(challenge: RenewalChallenge): Promise<boolean> {
    const c: ChallengeRow = {
      nonce: challenge.nonce,
      device: challenge.deviceId,
      at: challenge.at,
      expires: challenge.expiresAt,
      expiredSince: challenge.expiredSince,
      expiredBy: challenge.expiredBy,
      keep: challenge.keep,
    };
    // Not waiting for the disk (see the interface). So both answers cost about the same (a short
    // write transaction, no sync), whether stored or not.
    return this.withNative((native) => {
      let store = challengeTransactions.get(native);
      if (!store) challengeTransactions.set(native, (store = native.transaction((row: ChallengeRow) => storeChallenge(native, row))));
      return store.immediate(c);
    });
  }

  latestRequest(deviceId: string, keyFingerprint: string) {
    return this.db
      .selectFrom("enrollment_requests")
      .selectAll()
      .where("device_id", "=", deviceId)
      .where("key_fingerprint", "=", keyFingerprint)
      .orderBy("created_at", "desc")
      .limit(1)
      .executeTakeFirst();
  }

  pendingRequests(filter: PendingFilter): Promise<RequestSummary[]> {
    return this.pending(filter).select(SUMMARY).orderBy("created_at").orderBy("id").execute();
  }

  async countPending(filter: PendingFilter): Promise<number> {
    return Number(
      (
        await this.pending(filter)
          .select((eb) => eb.fn.countAll().as("n"))
          .executeTakeFirstOrThrow()
      ).n,
    );
  }

  async biggestPendingGroup(since: string): Promise<{ sourceGroup: string | null; count: number } | undefined> {
    const row = await this.pending({ since })
      .select(["source_group", (eb) => eb.fn.countAll().as("n")])
      .groupBy("source_group")
      .orderBy("n", "desc")
      .limit(1)
      .executeTakeFirst();
    return row && { sourceGroup: row.source_group, count: Number(row.n) };
  }

  async insertRequest(row: EnrollmentRequestTable): Promise<void> {
    await this.db.insertInto("enrollment_requests").values(row).execute();
  }

  async purgeExpiredRequests(before: string): Promise<RequestSummary[]> {
    const expired = await this.db
      .selectFrom("enrollment_requests")
      .select(SUMMARY)
      .where("status", "=", "pending")
      .where("created_at", "<", before)
      .execute();
    if (expired.length > 0)
      await this.db.deleteFrom("enrollment_requests").where("status", "=", "pending").where("created_at", "<", before).execute();
    return expired;
  }

  async deletePendingRequest(id: string): Promise<void> {
    await this.db.deleteFrom("enrollment_requests").where("id", "=", id).where("status", "=", "pending").execute();
  }

  async decideRequests(ids: readonly string[], decision: RequestDecision): Promise<void> {
    // Bounded lists: SQLite allows a limited number of parameters per statement.
    for (let i = 0; i < ids.length; i += 500)
      await this.db
        .updateTable("enrollment_requests")
        .set({ status: decision.status, decided_at: decision.at, decided_by: decision.by })
        .where("id", "in", ids.slice(i, i + 500))
        .execute();
  }

  private pending(filter: PendingFilter) {
    let q = this.db.selectFrom("enrollment_requests").where("status", "=", "pending").where("created_at", ">=", filter.since);
    if (filter.deviceId !== undefined) q = q.where("device_id", "=", filter.deviceId);
    if (filter.sourceGroup !== undefined) q = q.where("source_group", "is", filter.sourceGroup);
    if (filter.withAddress) q = q.where("source_address", "is not", null);
    return q;
  }
}

type ChallengeRow = { nonce: string; device: string; at: string; expires: string; expiredSince: string; expiredBy: string; keep: number };
const challengeTransactions = new WeakMap<NativeDb, SqliteTransaction<(c: ChallengeRow) => boolean>>();

function storeChallenge(native: NativeDb, c: ChallengeRow): boolean {
  const eligible = preparedStatement<ChallengeRow>(
    native,
    "select 1 from certificates c join devices d on d.id = c.device_id " +
      "where c.device_id = @device and c.kind = 'device' and c.status = 'valid' and d.status = 'active' " +
      "and c.not_after <= @expiredBy and (c.not_after >= @expiredSince " +
      // Past the grace, only to collect a renewal already recorded and still valid (its answer was lost).
      "or exists (select 1 from renewals r join certificates n on n.serial = r.serial " +
      "where r.renewed_serial = c.serial and n.status = 'valid' and n.not_after > @at)) limit 1",
  );
  if (eligible.get(c) === undefined) return false;
  // Expired challenges are useless (a spent one is refused as unknown just as well): the table
  // holds at most keep + 1 unexpired rows per eligible device.
  preparedStatement<ChallengeRow>(native, "delete from renewal_nonces where expires_at <= @at").run(c);
  preparedStatement<ChallengeRow>(
    native,
    "delete from renewal_nonces where device_id = @device " +
      "and nonce not in (select nonce from renewal_nonces where device_id = @device order by expires_at desc limit @keep)",
  ).run(c);
  const insert = "insert into renewal_nonces (nonce, device_id, expires_at, used_at) values (@nonce, @device, @expires, null)";
  preparedStatement<ChallengeRow>(native, insert).run(c);
  return true;
}
