// Printing for humans (aligned tables) and machines (--json).
import { realpathSync } from "node:fs";
import { delimiter, isAbsolute, join, relative } from "node:path";

/**
 * A reader that stops early (`fleetpki audit list | head -2`) closes our stdout: the command has
 * nothing left to do, so it ends quietly instead of dying on EPIPE with a stack trace.
 */
export function endQuietlyOnClosedOutput(): void {
  for (const stream of [process.stdout, process.stderr])
    stream.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "EPIPE") process.exit(process.exitCode ?? 0);
      throw e;
    });
}

/** Quotes a word for a POSIX shell when it needs it. */
export function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * How the user can run this CLI again from the same shell, for the commands we print: a bare
 * `fleetpki` only when the PATH leads to this very program (npm link, npm install -g), else
 * `npx fleetpki` under npx, else `node <script>` (e.g. `node bin/fleetpki.js` after `npm start`).
 */
export function selfCommand(): string {
  if (process.env.npm_command === "exec") return "npx fleetpki";
  const script = process.argv[1];
  if (!script) return "fleetpki";
  let self: string;
  try {
    self = realpathSync(script);
  } catch {
    return "fleetpki";
  }
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    // npm puts node_modules/.bin on the PATH of scripts only; the user's shell does not have it.
    if (!dir || dir.includes(join("node_modules", ".bin"))) continue;
    try {
      if (realpathSync(join(dir, "fleetpki")) === self) return "fleetpki";
    } catch {
      // not there
    }
  }
  const rel = relative(process.cwd(), script);
  return `node ${shellWord(rel && !rel.startsWith("..") && !isAbsolute(rel) ? rel : script)}`;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

export function printTable(rows: readonly Record<string, string>[], columns: readonly string[]): void {
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => (r[c] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  process.stdout.write(line(columns.map((c) => c.toUpperCase())) + "\n");
  for (const r of rows) process.stdout.write(line(columns.map((c) => r[c] ?? "")) + "\n");
}

export function say(text = ""): void {
  process.stdout.write(text + "\n");
}

/** A one-line progress bar, redrawn in place; only used when stderr is a terminal. */
export function progressBar(label: string): ((p: { done: number; total: number }) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  let last = -1;
  return ({ done, total }) => {
    const pct = total === 0 ? 100 : Math.floor((done * 100) / total);
    if (pct === last && done !== total) return;
    last = pct;
    const width = 30;
    const filled = Math.round((pct / 100) * width);
    process.stderr.write(`\r${label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${done}/${total} ${pct}%`);
    if (done === total) process.stderr.write("\n");
  };
}
