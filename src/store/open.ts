// Opening a fleet's database from `database.url`: the one place that knows which backends exist.
// A PostgreSQL backend adds its scheme here; nothing in src/authority/ changes.
import { isAbsolute, join } from "node:path";
import type { FleetStore } from "./operations.js";
import { StoreError } from "./errors.js";
import { openStore } from "./store.js";

/** The SQLite file a `sqlite:<file>` URL names (relative to the fleet directory), or undefined for another scheme. */
export function sqlitePath(url: string, baseDir: string): string | undefined {
  if (!url.startsWith("sqlite:") || url.length === "sqlite:".length) return undefined;
  const file = url.slice("sqlite:".length);
  return isAbsolute(file) ? file : join(baseDir, file);
}

/** Opens (with `create`, makes) the database `url` names; relative file names are in `baseDir`. */
export async function openFleetStore(url: string, baseDir: string, options: { create?: boolean } = {}): Promise<FleetStore> {
  const path = sqlitePath(url, baseDir);
  if (path === undefined) throw new StoreError(`database.url "${urlForDisplay(url)}": only sqlite:<file> is supported so far`);
  return openStore(path, options);
}

/** A URL as it may be shown: a password in its user part (postgres://user:password@host) is masked. */
export function urlForDisplay(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*):[^@/]*@/i, "$1:***@");
}
