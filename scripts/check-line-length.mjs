// Part of `npm run lint`: no line of code over 140 characters. prettier wraps code at that width
// but leaves long strings and comments alone, so they are checked here.
import { readFileSync, readdirSync } from "node:fs";
import { join, relative } from "node:path";

const MAX = 140;
const root = join(import.meta.dirname, "..");
const long = [];
for (const dir of ["src", "test", "bench", "scripts"]) {
  for (const e of readdirSync(join(root, dir), { recursive: true, withFileTypes: true })) {
    const path = join(e.parentPath, e.name);
    if (!e.isFile() || !/\.(ts|mts|cts|js|mjs|cjs)$/.test(e.name) || relative(root, path).startsWith(join("test", "vectors"))) continue;
    readFileSync(path, "utf8")
      .split("\n")
      .forEach((line, i) => {
        if ([...line].length > MAX) long.push(`${relative(root, path)}:${i + 1}: ${[...line].length} characters`);
      });
  }
}
if (long.length > 0) {
  console.error(long.join("\n"));
  console.error(`${long.length} line(s) over ${MAX} characters`);
  process.exit(1);
}
