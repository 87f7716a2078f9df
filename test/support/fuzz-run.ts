// The CSR fuzz loop shared by test/csr-fuzz.test.ts (bounded) and scripts/fuzz-csr.ts (as long
// as asked): mutants of valid CSRs of every accepted key type go through the authority's
// issue-from-CSR path or a real EST server; the only acceptable outcomes are a certificate whose
// key node:crypto loads and whose SPKI is byte-identical to its canonical encoding, or a CSR
// rejection (CsrInvalid / KeyTypeNotAllowed, EST 400).
import { spawnSync } from "node:child_process";
import { createPublicKey } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { addDevice } from "../../src/authority/devices.js";
import { CsrInvalid, KeyTypeNotAllowed } from "../../src/authority/errors.js";
import type { FleetServices } from "../../src/authority/services.js";
import { issueDeviceCertificate } from "../../src/authority/issue/issuance.js";
import { createToken } from "../../src/authority/enroll/tokens.js";
import { parseCertificate } from "../../src/x509/certificate.js";
import { https } from "../server-helpers.js";
import { FUZZ_KEY_KINDS, Rng, makeKey, mutateCsr, validCsr, type FuzzKey } from "./csr-fuzz.js";
import { sqliteStore } from "./sqlite.js";

export type Outcome = { certificate: Buffer } | { rejected: string };

export interface FuzzStats {
  seed: number;
  sent: number;
  issued: number;
  rejected: Map<string, number>;
  /** Accepted mutants (not the unmodified seeds), for an OpenSSL cross-check. */
  accepted: Buffer[];
  failures: string[];
}

export function newStats(seed: number): FuzzStats {
  return { seed, sent: 0, issued: 0, rejected: new Map(), accepted: [], failures: [] };
}

export interface FuzzSeed {
  key: FuzzKey;
  /** A valid CSR for the key, the starting point of its mutants. */
  csr: Buffer;
}

/** One key and CSR of every accepted type (RSA-2048 is slow to make, so callers make these once). */
export function fuzzSeeds(): FuzzSeed[] {
  return FUZZ_KEY_KINDS.map((kind) => {
    const key = makeKey(kind);
    return { key, csr: validCsr(key, "fuzz") };
  });
}

/** What is wrong with an issued certificate's key, or undefined. */
export function certificateKeyProblem(der: Buffer): string | undefined {
  let spki: Buffer;
  try {
    spki = parseCertificate(der).spki;
  } catch (e) {
    return `certificate does not parse: ${(e as Error).message}`;
  }
  try {
    const canonical = createPublicKey({ key: spki, format: "der", type: "spki" }).export({ type: "spki", format: "der" });
    if (!canonical.equals(spki)) return `SPKI is not canonical: ${spki.toString("hex")} vs ${canonical.toString("hex")}`;
  } catch (e) {
    return `node:crypto cannot load the certificate's key: ${(e as Error).message}`;
  }
  return undefined;
}

/**
 * Sends `count` mutants, `concurrency` at a time (so the recorder's group commits amortize the
 * fsyncs), and books their outcomes. The mutants depend only on the seed, not on timing.
 */
export async function fuzzBatch(
  stats: FuzzStats,
  rng: Rng,
  seeds: readonly FuzzSeed[],
  submit: (csr: Buffer) => Promise<Outcome>,
  count: number,
  concurrency = 8,
): Promise<void> {
  for (let done = 0; done < count;) {
    const chunk = Array.from({ length: Math.min(concurrency, count - done) }, () => {
      const { key, csr } = rng.pick(seeds);
      return { key, seed: csr, mutant: rng.chance(0.03) ? { der: csr, label: "unmodified" } : mutateCsr(rng, csr, key) };
    });
    done += chunk.length;
    await Promise.all(chunk.map(({ key, seed, mutant }) => book(stats, key, seed, mutant, submit)));
  }
}

async function book(
  stats: FuzzStats,
  key: FuzzKey,
  seed: Buffer,
  mutant: { der: Buffer; label: string },
  submit: (csr: Buffer) => Promise<Outcome>,
): Promise<void> {
  stats.sent++;
  let outcome: Outcome;
  try {
    outcome = await submit(mutant.der);
  } catch (e) {
    stats.failures.push(
      `${key.kind} [${mutant.label}] ${mutant.der.toString("base64")}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`,
    );
    return;
  }
  if ("rejected" in outcome) {
    stats.rejected.set(outcome.rejected, (stats.rejected.get(outcome.rejected) ?? 0) + 1);
    return;
  }
  stats.issued++;
  if (!mutant.der.equals(seed)) stats.accepted.push(mutant.der);
  const problem = certificateKeyProblem(outcome.certificate);
  if (problem) stats.failures.push(`${key.kind} [${mutant.label}] ${mutant.der.toString("base64")}: ${problem}`);
}

/** The authority's issue-from-CSR path; anything but a CSR rejection is thrown on. */
export function authoritySubmit(fleet: FleetServices, deviceId: string): (csr: Buffer) => Promise<Outcome> {
  return async (csr) => {
    try {
      return { certificate: (await issueDeviceCertificate(fleet, { deviceId, actor: "fuzz", csr })).der };
    } catch (e) {
      if (e instanceof CsrInvalid) return { rejected: e.reason };
      if (e instanceof KeyTypeNotAllowed) return { rejected: "key-type-not-allowed" };
      throw e;
    }
  };
}

/**
 * EST simpleenroll on a running server, each request with its own device and token (a token is
 * spent only by a certificate). 200 and 400 are the only acceptable statuses.
 */
export function estSubmit(fleet: FleetServices, serverUrl: string, ca: string): (csr: Buffer) => Promise<Outcome> {
  let n = 0;
  return async (csr) => {
    const id = `est-fuzz-${n++}`;
    await addDevice(fleet, { id, actor: "fuzz" });
    const token = (await createToken(fleet, { deviceId: id, actor: "fuzz" })).token;
    const r = await https(`${serverUrl}/.well-known/est/simpleenroll`, {
      ca,
      method: "POST",
      headers: { "content-type": "application/pkcs10", authorization: `Basic ${Buffer.from(`${id}:${token}`).toString("base64")}` },
      body: csr.toString("base64"),
    });
    if (r.status === 400) return { rejected: `est:${String(r.json().type).split("/").pop()}` };
    if (r.status !== 200) throw new Error(`EST answered ${r.status}: ${r.text}`);
    const row = await sqliteStore(fleet).db.selectFrom("certificates").select("der").where("device_id", "=", id).executeTakeFirstOrThrow();
    return { certificate: Buffer.from(row.der) };
  };
}

/** Accepted CSRs that `openssl req -verify` refuses (it should refuse nothing we accept). */
export function opensslRefuses(csrs: readonly Buffer[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), "fleetpki-fuzz-"));
  try {
    const out: string[] = [];
    csrs.forEach((der, i) => {
      const file = join(dir, `${i}.der`);
      writeFileSync(file, der);
      const r = spawnSync("openssl", ["req", "-inform", "DER", "-in", file, "-noout", "-verify"], { encoding: "utf8", timeout: 30_000 });
      if (r.status !== 0 || !/verify OK/i.test(r.stdout + r.stderr))
        out.push(`${der.toString("base64")}: ${(r.stderr || r.stdout).trim().split("\n")[0]}`);
    });
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function summary(stats: FuzzStats): string {
  const rejected = [...stats.rejected.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([r, n]) => `${r} ${n}`)
    .join(", ");
  return (
    `seed ${stats.seed}: ${stats.sent} CSRs sent, ${stats.issued} issued (${stats.accepted.length} of them mutants), ` +
    `${stats.failures.length} failures; rejected: ${rejected}`
  );
}
