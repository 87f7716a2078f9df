// The database: Kysely over better-sqlite3 (WAL). Write transactions take the write lock up
// front (BEGIN IMMEDIATE) so a CLI and a running server can share one file safely.
import { chmodSync } from "node:fs";
import SqliteDatabase from "better-sqlite3";
import { Kysely, Migrator, SqliteDialect, sql, type MigrationProvider } from "kysely";
import { StoreError } from "./errors.js";
import { migrations } from "./migrations.js";
import { WalSync, type SyncFunction } from "./wal-sync.js";
import type { Database } from "./schema.js";
import type { FleetStore, Operations } from "./operations.js";
import { sqliteOperations } from "./sqlite/operations.js";
import { withStatementCache, type Db, type NativeDb } from "./sqlite/connection.js";

/** The SQLite store: the backend-neutral FleetStore plus what only SQLite has (tests and benches inspect it). */
export interface Store extends FleetStore {
  /** Kysely over the connection; for src/store/ and for tests that inspect the tables. */
  db: Db;
  /**
   * Runs synchronous work on the underlying better-sqlite3 connection, never inside another
   * caller's open transaction (it waits for Kysely's connection then). For hot paths only
   * (issuance recording, token checks), where Kysely's per-statement cost dominates.
   */
  withNative<T>(fn: (native: NativeDb) => T): Promise<T>;
  /** Group sync with a replaceable sync (tests drive wal-sync.ts's failure paths through it). */
  useGroupSync(options?: { sync?: SyncFunction }): void;
}

export interface OpenStoreOptions {
  /** Create the file if missing (init); otherwise a missing database is an error. */
  create?: boolean;
}

/** A better-sqlite3 connection with the settings every connection to a fleet database uses. */
export function openNativeDb(path: string, options: OpenStoreOptions = {}): NativeDb {
  let native: NativeDb;
  try {
    native = new SqliteDatabase(path, { fileMustExist: !options.create });
  } catch (e) {
    throw new StoreError(`cannot open database ${path}: ${(e as Error).message}`);
  }
  try {
    if (options.create) chmodSync(path, 0o600); // WAL and shm files inherit this mode
    native.pragma("busy_timeout = 10000");
    native.pragma("journal_mode = WAL");
    // FULL: a commit is on disk when it returns; certificates must never be handed out unrecorded.
    // Servers switch to group sync (Store.useGroupSync), which keeps that guarantee.
    native.pragma("synchronous = FULL");
    native.pragma("foreign_keys = ON");
  } catch (e) {
    native.close();
    throw new StoreError(`cannot open database ${path}: ${(e as Error).message}`);
  }
  return native;
}

export async function openStore(path: string, options: OpenStoreOptions = {}): Promise<Store> {
  const native = openNativeDb(path, options);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(native) }) });

  const provider: MigrationProvider = { getMigrations: async () => migrations("blob") };
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  if (error) {
    await db.destroy();
    const failed = results?.find((r) => r.status === "Error")?.migrationName ?? "unknown";
    throw new StoreError(`database migration ${failed} failed: ${(error as Error).message ?? error}`);
  }

  let walSync: WalSync | undefined;
  const durable = (): Promise<void> => (walSync ? walSync.sync() : Promise.resolve());
  // Kysely's statements run synchronously, so only an open transaction can be in the way.
  const withNative = async <T>(fn: (native: NativeDb) => T): Promise<T> =>
    native.inTransaction ? db.connection().execute(async () => fn(native)) : fn(native);
  // Inside transaction(), the native handle is that transaction's own connection.
  const inTransaction = async <T>(fn: (native: NativeDb) => T): Promise<T> => fn(native);
  return {
    db,
    ops: sqliteOperations(db, withNative),
    async transaction<T>(fn: (tx: Operations) => Promise<T>): Promise<T> {
      const result = await db.connection().execute(async (conn) => {
        await sql`begin immediate`.execute(conn);
        try {
          const result = await fn(sqliteOperations(conn, inTransaction));
          await sql`commit`.execute(conn);
          return result;
        } catch (e) {
          await sql`rollback`.execute(conn);
          throw e;
        }
      });
      await durable();
      return result;
    },
    withNative,
    durable,
    useGroupSync(options = {}) {
      if (walSync) return;
      walSync = new WalSync(`${path}-wal`, options.sync);
      native.pragma("synchronous = NORMAL");
    },
    async close() {
      await walSync?.close();
      await db.destroy();
    },
  };
}
