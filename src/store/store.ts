// The database: Kysely over better-sqlite3 (WAL). Write transactions take the write lock up
// front (BEGIN IMMEDIATE) so a CLI and a running server can share one file safely.
import { chmodSync } from "node:fs";
import SqliteDatabase from "better-sqlite3";
import {
  Kysely,
  Migrator,
  SqliteDialect,
  sql,
  type MigrationProvider,
  type SqliteDatabase as KyselySqliteDatabase,
  type Transaction,
} from "kysely";
import { StoreError } from "./errors.js";
import { migrations } from "./migrations.js";
import { WalSync, type SyncFunction } from "./wal-sync.js";
import type { Database } from "./schema.js";
import type { FleetStore, Operations } from "./operations.js";
import { sqliteOperations } from "./sqlite/operations.js";

export type Db = Kysely<Database>;
export type Tx = Kysely<Database> | Transaction<Database>;

export { StoreError };

export type NativeDb = SqliteDatabase.Database;

/** Synchronous access to the connection an operation runs on, for hot paths (prepared statements). */
export type NativeAccess = <T>(fn: (native: NativeDb) => T) => Promise<T>;

/** A write transaction: the named operations bound to it. */
export type TxOperations = Operations;

export type { FleetStore };

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
    async transaction<T>(fn: (tx: TxOperations) => Promise<T>): Promise<T> {
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

const STATEMENT_CACHE_CAPACITY = 256;
const statementCaches = new WeakMap<NativeDb, Map<string, SqliteDatabase.Statement>>();

/**
 * The prepared statement for `sql` on this connection, prepared once. Kysely's SQLite driver
 * prepares every statement anew, which cost ~13% of the registration server's event loop; the
 * same few SQL texts repeat. Least recently used statements are dropped beyond the capacity
 * (Kysely's `in (?, ?, ...)` lists make many texts). Statements are only ever run to completion
 * (no streaming), so sharing them is safe.
 */
export function preparedStatement<P extends unknown[] | {} = unknown[], R = unknown>(
  native: NativeDb,
  sql: string,
): SqliteDatabase.Statement<P, R> {
  let cache = statementCaches.get(native);
  if (!cache) statementCaches.set(native, (cache = new Map()));
  let statement = cache.get(sql);
  if (statement) {
    cache.delete(sql); // re-insert: most recently used last
  } else {
    statement = native.prepare(sql);
    if (cache.size >= STATEMENT_CACHE_CAPACITY) cache.delete(cache.keys().next().value!);
  }
  cache.set(sql, statement);
  return statement as SqliteDatabase.Statement<P, R>;
}

function withStatementCache(native: NativeDb): KyselySqliteDatabase {
  return { close: () => native.close(), prepare: (sql: string) => preparedStatement(native, sql) };
}

export function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "SQLITE_CONSTRAINT_UNIQUE" || code === "23505";
}
