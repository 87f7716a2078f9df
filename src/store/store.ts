// The database: Kysely over better-sqlite3 (WAL). Write transactions take the write lock up
// front (BEGIN IMMEDIATE) so a CLI and a running server can share one file safely.
import { chmodSync } from "node:fs";
import SqliteDatabase from "better-sqlite3";
import { Kysely, Migrator, SqliteDialect, sql, type MigrationProvider, type SqliteDatabase as KyselySqliteDatabase, type Transaction } from "kysely";
import { migrations } from "./migrations.js";
import type { Database } from "./schema.js";

export type Db = Kysely<Database>;
export type Tx = Kysely<Database> | Transaction<Database>;

export class StoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StoreError";
  }
}

export interface Store {
  db: Db;
  /** Runs fn inside one write transaction; commits when it resolves, rolls back when it throws. */
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface OpenStoreOptions {
  /** Create the file if missing (init); otherwise a missing database is an error. */
  create?: boolean;
}

export async function openStore(path: string, options: OpenStoreOptions = {}): Promise<Store> {
  let native: SqliteDatabase.Database;
  try {
    native = new SqliteDatabase(path, { fileMustExist: !options.create });
  } catch (e) {
    throw new StoreError(`cannot open database ${path}: ${(e as Error).message}`);
  }
  try {
    if (options.create) chmodSync(path, 0o600); // WAL and shm files inherit this mode
    native.pragma("busy_timeout = 10000");
    native.pragma("journal_mode = WAL");
    // FULL: a commit is on disk before we answer; certificates must never be handed out unrecorded.
    native.pragma("synchronous = FULL");
    native.pragma("foreign_keys = ON");
  } catch (e) {
    native.close();
    throw new StoreError(`cannot open database ${path}: ${(e as Error).message}`);
  }
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(native) }) });

  const provider: MigrationProvider = { getMigrations: async () => migrations("blob") };
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  if (error) {
    await db.destroy();
    const failed = results?.find((r) => r.status === "Error")?.migrationName ?? "unknown";
    throw new StoreError(`database migration ${failed} failed: ${(error as Error).message ?? error}`);
  }

  return {
    db,
    async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
      return db.connection().execute(async (conn) => {
        await sql`begin immediate`.execute(conn);
        try {
          const result = await fn(conn);
          await sql`commit`.execute(conn);
          return result;
        } catch (e) {
          await sql`rollback`.execute(conn);
          throw e;
        }
      });
    },
    close: () => db.destroy(),
  };
}

/**
 * Kysely's SQLite driver prepares every statement anew, which cost ~13% of the registration
 * server's event loop; the same few SQL texts repeat, so keep their prepared statements.
 * Statements are only ever run to completion (no streaming), so sharing them is safe.
 */
function withStatementCache(native: SqliteDatabase.Database, capacity = 256): KyselySqliteDatabase {
  const cache = new Map<string, SqliteDatabase.Statement>();
  return {
    close: () => native.close(),
    prepare(sql: string) {
      let statement = cache.get(sql);
      if (statement) {
        cache.delete(sql); // re-insert: most recently used last
      } else {
        statement = native.prepare(sql);
        if (cache.size >= capacity) cache.delete(cache.keys().next().value!);
      }
      cache.set(sql, statement);
      return statement;
    },
  };
}

export function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "SQLITE_CONSTRAINT_UNIQUE" || code === "23505";
}
