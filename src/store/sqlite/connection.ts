// What every file of the SQLite backend shares: the Kysely and better-sqlite3 handle types, the
// prepared-statement cache and the unique-violation test. It imports nothing of the store itself.
import type SqliteDatabase from "better-sqlite3";
import type { Kysely, SqliteDatabase as KyselySqliteDatabase, Transaction } from "kysely";
import type { Database } from "../schema.js";

export type Db = Kysely<Database>;
export type Tx = Kysely<Database> | Transaction<Database>;

export type NativeDb = SqliteDatabase.Database;

/** Synchronous access to the connection an operation runs on, for hot paths (prepared statements). */
export type NativeAccess = <T>(fn: (native: NativeDb) => T) => Promise<T>;

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

export function withStatementCache(native: NativeDb): KyselySqliteDatabase {
  return { close: () => native.close(), prepare: (sql: string) => preparedStatement(native, sql) };
}

export function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "SQLITE_CONSTRAINT_UNIQUE" || code === "23505";
}
