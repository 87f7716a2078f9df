// The SQLite store behind a fleet, for tests and benches that inspect or seed its tables directly.
// The authority itself only sees the backend-neutral FleetStore (src/store/operations.ts).
import type { FleetServices } from "../../src/authority/services.js";
import type { Store } from "../../src/store/store.js";

export function sqliteStore(fleet: Pick<FleetServices, "store">): Store {
  const store = fleet.store as Partial<Store>;
  if (!store.db || !store.withNative) throw new Error("this fleet's store is not the SQLite store");
  return store as Store;
}
