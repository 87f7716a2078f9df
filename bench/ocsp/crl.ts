// The CRL part: signCrl over CRL_ENTRIES revoked rows, timed as a whole and by its parts (the
// store operations it calls, and buildCrl), checked entry by entry and by openssl, next to
// `openssl ca -gencrl` over the same entries and `openssl crl` re-encoding fleetpki's CRL.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { layout } from "../../src/authority/layout.js";
import { signCrl, type PublishedCrl } from "../../src/authority/status/crls.js";
import { buildCrl, parseCrl, verifyCrlSignature, type RevokedEntry } from "../../src/x509/crl.js";
import { check, fmtRate } from "../lib.js";
import { crlReason, makeCrlFleet } from "./fleet.js";
import { indexLine, openssl, opensslGencrl } from "./openssl.js";
import { CRL_ENTRIES, CRL_SIGN_RUNS } from "./settings.js";

export interface CrlFigures {
  insertSeconds: number;
  signMs: number[];
  queryMs: number[];
  buildMs: number[];
  storeMs: number[];
  derBytes: number;
  reasons: [string, number][];
  opensslGencrlMs: number[];
  opensslDerBytes: number;
  opensslReencodeMs: number[];
  checks: string[];
}

export async function crlBench(tmp: string, sampleDer: Buffer, runs: number): Promise<CrlFigures> {
  const dir = join(tmp, "crl-fleet");
  const { fleet, serials, revokedAt, notAfter, insertSeconds } = await makeCrlFleet(dir, sampleDer, CRL_ENTRIES);
  const checks: string[] = [];
  try {
    const day = 86_400_000;
    // The first call decrypts the CA key (once per process) and prepares the statements.
    let last: PublishedCrl = await signCrl(fleet, "devices");
    // Rounds of: signCrl as a whole, then its parts on their own (the store's listCrlEntries with
    // the mapping of rows to entries; buildCrl, i.e. encoding and signature; storeCrl and the
    // commit), so that drift in the host's speed hits all of them alike.
    const issuer = await fleet.issuingCa("devices");
    const signMs: number[] = [];
    const queryMs: number[] = [];
    const buildMs: number[] = [];
    const storeMs: number[] = [];
    for (let i = 0; i < CRL_SIGN_RUNS; i++) {
      const t1 = performance.now();
      const crl = await signCrl(fleet, "devices");
      signMs.push(performance.now() - t1);
      check(crl.crlNumber === last.crlNumber + 1n, `signCrl numbered ${crl.crlNumber} after ${last.crlNumber}`);
      check(crl.entries === CRL_ENTRIES, `signCrl reports ${crl.entries} entries, expected ${fmtRate(CRL_ENTRIES)}`);
      last = crl;

      const t2 = performance.now();
      const thisUpdate = new Date(Math.floor(Date.now() / 1000) * 1000);
      // The entries as signCrl reads them.
      const entries = (await fleet.store.ops.status.listCrlEntries("devices", thisUpdate.toISOString())) as RevokedEntry[];
      const t3 = performance.now();
      buildCrl(issuer, { crlNumber: 1n, thisUpdate, nextUpdate: new Date(thisUpdate.getTime() + day), entries });
      const t4 = performance.now();
      // The same row again (same number, same bytes): the upsert and the durable commit of ~4.3 MB.
      await fleet.store.transaction((tx) =>
        tx.status.storeCrl({
          ca_id: "devices",
          crl_number: Number(crl.crlNumber),
          this_update: crl.thisUpdate.toISOString(),
          next_update: crl.nextUpdate.toISOString(),
          entries: crl.entries,
          der: crl.der,
        }),
      );
      const t5 = performance.now();
      queryMs.push(t3 - t2);
      buildMs.push(t4 - t3);
      storeMs.push(t5 - t4);
    }

    // What was signed: every row, once, with its reason; a signature the CA's key verifies; openssl agrees.
    const parsed = parseCrl(last.der);
    check(parsed.entries.length === CRL_ENTRIES, `the CRL lists ${parsed.entries.length} entries, expected ${fmtRate(CRL_ENTRIES)}`);
    const expected = new Map(serials.map((serial, i) => [serial, i]));
    for (const e of parsed.entries) {
      const i = expected.get(e.serialHex);
      check(i !== undefined, `the CRL lists ${e.serialHex}, which is not a revoked row (or lists it twice)`);
      check((e.reason ?? "unspecified") === crlReason(i), `CRL entry ${e.serialHex}: reason ${e.reason}, the row says ${crlReason(i)}`);
      check(
        e.revokedAt.getTime() === Math.floor(Date.parse(revokedAt[i]!) / 1000) * 1000,
        `CRL entry ${e.serialHex}: revoked at ${e.revokedAt.toISOString()}, the row says ${revokedAt[i]}`,
      );
      expected.delete(e.serialHex);
    }
    check(expected.size === 0, `${expected.size} revoked rows are missing from the CRL`);
    check(verifyCrlSignature(parsed, issuer.certificate.spki), "the CRL's signature does not verify with the devices CA key");
    const crlFile = join(tmp, "fleetpki-100k.crl");
    writeFileSync(crlFile, last.der);
    const text = openssl(["crl", "-inform", "DER", "-in", crlFile, "-noout", "-text"]);
    const listed = (text.stdout.match(/Serial Number:/g) ?? []).length;
    check(
      text.status === 0 && listed === CRL_ENTRIES,
      `openssl crl -text lists ${listed} serial numbers (status ${text.status}), expected ${fmtRate(CRL_ENTRIES)}`,
    );
    const chain = join(dir, layout.caChain("devices"));
    const verified = openssl(["crl", "-inform", "DER", "-in", crlFile, "-CAfile", chain, "-noout"]);
    check(
      verified.status === 0 && /verify OK/.test(verified.stderr + verified.stdout),
      `openssl crl -CAfile does not verify the CRL:\n${verified.stdout}${verified.stderr}`,
    );
    checks.push(
      `CRL: parseCrl reads ${fmtRate(CRL_ENTRIES)} entries, exactly the revoked rows with their times and reasons; ` +
        `its signature verifies (devices CA key); ` +
        `\`openssl crl -text\` lists ${fmtRate(listed)} serial numbers and \`openssl crl -CAfile <devices chain>\` says verify OK; ` +
        `CRL numbers rose by one per signCrl`,
    );

    // Baselines: openssl's own CRL generator over the same entries, and openssl re-encoding ours.
    const index = serials.map((serialHex, i) =>
      indexLine({
        serialHex,
        notAfter,
        revokedAtMs: Math.floor(Date.parse(revokedAt[i]!) / 1000) * 1000,
        reason: crlReason(i),
        subject: `crl-robot-${i}`,
      }),
    );
    const gencrl = opensslGencrl(join(tmp, "openssl-ca"), dir, index, runs);
    checks.push(...gencrl.checks);
    const reencodeMs: number[] = [];
    const reencoded = join(tmp, "reencoded.crl");
    for (let i = 0; i < runs; i++) {
      const t1 = performance.now();
      const r = openssl(["crl", "-inform", "DER", "-in", crlFile, "-outform", "DER", "-out", reencoded]);
      reencodeMs.push(performance.now() - t1);
      check(r.status === 0, `openssl crl -outform DER failed: ${r.stderr}`);
    }
    check(readFileSync(reencoded).equals(last.der), "openssl crl re-encodes fleetpki's CRL to different bytes");
    checks.push("openssl crl -inform DER -outform DER re-encodes fleetpki's CRL to the same bytes");

    const reasons = new Map<string, number>();
    for (let i = 0; i < CRL_ENTRIES; i++) reasons.set(crlReason(i), (reasons.get(crlReason(i)) ?? 0) + 1);
    return {
      insertSeconds,
      signMs,
      queryMs,
      buildMs,
      storeMs,
      derBytes: last.der.length,
      reasons: [...reasons.entries()],
      opensslGencrlMs: gencrl.ms,
      opensslDerBytes: gencrl.derBytes,
      opensslReencodeMs: reencodeMs,
      checks,
    };
  } finally {
    await fleet.close();
  }
}
