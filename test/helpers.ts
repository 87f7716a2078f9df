// Shared test plumbing: temporary fleets, running the real CLI, running openssl.
import assert from "node:assert/strict";
import { execFile, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { FleetServices } from "../src/authority/services.js";
import { initFleet, type InitOptions } from "../src/authority/ca/init.js";
import { devBuild } from "../scripts/dev-build.mjs";

export const ROOT = resolve(import.meta.dirname, "..");
/**
 * The CLI compiled from the current src/ (scripts/dev-build.mjs: a build addressed by the source's
 * content, so never a stale one; dist/ is not used). It starts ~3x faster than through tsx, which
 * stays the fallback (scripts/dev-cli.mjs) when no build can be made.
 */
export const CLI = cliEntry();

function cliEntry(): string {
  try {
    return devBuild();
  } catch (e) {
    process.stderr.write(`tests run the CLI through tsx (slower): no build of src/: ${(e as Error).message}\n`);
    return join(ROOT, "scripts", "dev-cli.mjs");
  }
}

/**
 * A third-party test vector (file or directory) kept in the repository under test/vectors/<source>/;
 * test/vectors/SOURCES.md names each source's upstream, commit and licence. Tests read vectors only
 * through here, so a fresh clone needs nothing beside it.
 */
export function vectorPath(source: string, ...parts: string[]): string {
  const path = join(ROOT, "test", "vectors", source, ...parts);
  if (!existsSync(path))
    throw new Error(`test vector ${path} is missing: copy it into test/vectors/ and list it in test/vectors/SOURCES.md`);
  return path;
}

export function tempDir(prefix = "fleetpki-test-"): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** A fresh fleet in a temp dir; call close() in a finally/after hook. */
export async function tempFleet(
  options: Partial<InitOptions> = {},
): Promise<{ dir: string; fleet: FleetServices; close: () => Promise<void> }> {
  const tmp = tempDir();
  const dir = join(tmp.path, "fleet");
  await initFleet({ dir, name: "Test Robots", domain: "fleet.example", ...options });
  const fleet = await FleetServices.open(dir);
  return {
    dir,
    fleet,
    close: async () => {
      await fleet.close();
      tmp.cleanup();
    },
  };
}

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the fleetpki CLI synchronously with no stdin, as CI would. */
export function cli(args: readonly string[], env: NodeJS.ProcessEnv = {}): RunResult {
  const r: SpawnSyncReturns<string> = spawnSync(process.execPath, [CLI, ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const execFileAsync = promisify(execFile);

/** Runs the fleetpki CLI asynchronously (for tests that must not block the event loop). */
export async function cliAsync(args: readonly string[]): Promise<RunResult> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000 });
    return { status: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof err.code === "number" ? err.code : -1, stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
  }
}

export function openssl(args: readonly string[], input?: string | Buffer): RunResult {
  const r = spawnSync("openssl", args, { input, encoding: "utf8", timeout: 60_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Makes a key + CSR with openssl itself (an independent implementation). */
export function opensslCsr(
  dir: string,
  name: string,
  keyArgs: string[] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
  extra: string[] = [],
): { key: string; csr: string } {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const r = openssl(["req", "-new", ...keyArgs, "-nodes", "-keyout", key, "-subj", `/CN=${name}`, ...extra, "-out", csr]);
  if (r.status !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
  return { key, csr };
}

export function writeTemp(dir: string, name: string, content: string | Buffer): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

export function assertOk(r: RunResult, what: string): void {
  assert.equal(r.status, 0, `${what} failed (${r.status}):\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
}

/** Non-zero exit and exactly one clean line on stderr: "fleetpki: ...", no stack trace. */
export function assertOneLineError(r: RunResult, pattern?: RegExp): string {
  assert.notEqual(r.status, 0, `expected a non-zero exit; stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `expected exactly one line on stderr, got:\n${r.stderr}`);
  const line = lines[0]!;
  assert.match(line, /^fleetpki: \S/);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  if (pattern) assert.match(line, pattern);
  return line;
}
