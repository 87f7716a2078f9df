// Printing for humans (aligned tables) and machines (--json).

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

export function printTable(rows: readonly Record<string, string>[], columns: readonly string[]): void {
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => (r[c] ?? "").length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
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
