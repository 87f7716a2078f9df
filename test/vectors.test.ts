// The repository stands alone: tests read third-party vectors from test/vectors/ (through
// vectorPath in helpers.ts), never from a directory beside the checkout, and every source kept
// there is documented with its licence.
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ROOT } from "./helpers.js";

const VECTORS = join(ROOT, "test", "vectors");

describe("third-party test vectors live in the repository", () => {
  it("no test or benchmark reads the shared test data beside the checkout", () => {
    const outside = new RegExp(["shared", "testdata"].join(String.raw`["'/\\, ]+`));
    const offenders: string[] = [];
    for (const dir of ["test", "bench", "src", "scripts"]) {
      for (const entry of readdirSync(join(ROOT, dir), { recursive: true, withFileTypes: true })) {
        const path = join(entry.parentPath, entry.name);
        if (!entry.isFile() || !/\.(ts|js|mjs)$/.test(entry.name) || path === import.meta.filename) continue;
        if (outside.test(readFileSync(path, "utf8"))) offenders.push(path);
      }
    }
    assert.deepEqual(offenders, [], "read vectors through vectorPath() from test/vectors/ instead");
  });

  it("every source folder is listed in SOURCES.md and carries its licence file", () => {
    const sources = readFileSync(join(VECTORS, "SOURCES.md"), "utf8");
    const folders = readdirSync(VECTORS, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
    assert.ok(folders.length > 0);
    for (const folder of folders) {
      assert.match(sources, new RegExp("`" + folder + "/"), `${folder}/ is not described in SOURCES.md`);
      const licence = readdirSync(join(VECTORS, folder)).filter((f) => /^LICEN[CS]E|copyright/i.test(f));
      assert.ok(licence.length > 0, `${folder}/ has no licence file`);
    }
  });
});
