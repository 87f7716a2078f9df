// database.url is read in one place (src/store/open.ts): a URL for a backend fleetpki does not have,
// or a sqlite: URL without a file, stops every command with one line naming the file and the
// value, and opens or creates nothing.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { FleetServices } from "../src/authority/services.js";
import { ConfigError } from "../src/config/config.js";
import { assertOneLineError, cli, tempFleet } from "./helpers.js";
import { editConfig } from "./server-helpers.js";

const errorOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

describe("database.url", { concurrency: false }, () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  before(async () => {
    f = await tempFleet();
    await f.fleet.close();
  });
  after(async () => {
    await f?.close().catch(() => {});
  });

  const hostile = [
    "postgres://fleet:secret@db.example/fleet",
    "mysql://root:secret@localhost",
    "sqlite:",
    "file:fleetpki.db",
    "SQLITE:fleetpki.db",
    "../fleetpki.db",
    "redis://localhost:6379",
  ];
  for (const url of hostile)
    it(`${JSON.stringify(url)} is refused with the file, the value and what is supported`, async () => {
      editConfig(f.dir, (doc) => {
        doc.database.url = url;
      });
      await assert.rejects(FleetServices.open(f.dir), (e: Error) => {
        assert.ok(e instanceof ConfigError, `a ConfigError, got ${e.name}`);
        assert.match(e.message, /fleetpki\.yaml: database\.url ".*": only sqlite:<file> is supported so far/);
        return true;
      });
      const line = assertOneLineError(cli(["device", "list", "--dir", f.dir]), /database\.url/);
      assert.match(line, /only sqlite:<file> is supported/);
      for (const text of [line, errorOf(await FleetServices.open(f.dir).catch((e: Error) => e))])
        assert.doesNotMatch(text, /secret/, "a password in the URL is never shown");
      assert.equal(existsSync(join(f.dir, "fleetpki.db")), true, "the fleet's own database is still there");
    });

  it("a sqlite: URL whose file does not exist is an error, not a new empty database", async () => {
    editConfig(f.dir, (doc) => {
      doc.database.url = "sqlite:elsewhere.db";
    });
    await assert.rejects(FleetServices.open(f.dir), /cannot open database/);
    assert.equal(existsSync(join(f.dir, "elsewhere.db")), false, "nothing was created");
  });
});
