// Bounded, seeded CSR fuzzing (issue 9 acceptance): DER-aware mutants of valid P-256, P-384,
// Ed25519 and RSA-2048 CSRs through the authority's issue-from-CSR path and, a smaller share,
// a real EST server. No crash, no error but a CSR rejection, no 5xx; every certificate's key
// loads in node:crypto and is its canonical encoding; OpenSSL accepts every CSR we accepted.
// FUZZ_SEED and FUZZ_CSRS override the defaults; `npm run fuzz` runs the same for longer. The
// seed fixes the mutations; the keys are made afresh each run, so a failure prints the whole CSR.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { addDevice } from "../src/authority/devices.js";
import { tempFleet } from "./helpers.js";
import { startTestServer, type TestServer } from "./server-helpers.js";
import { Rng } from "./support/csr-fuzz.js";
import { authoritySubmit, estSubmit, fuzzBatch, fuzzSeeds, newStats, opensslRefuses, summary, type FuzzSeed } from "./support/fuzz-run.js";

const SEED = Number(process.env.FUZZ_SEED ?? 20260904);
const BULK = Number(process.env.FUZZ_CSRS ?? 2000);
const OVER_EST = Math.max(20, Math.round(BULK / 20));
/** Accepted mutants handed to `openssl req -verify` (one process each). */
const OPENSSL_SAMPLE = 25;

describe(`CSR fuzzing (seed ${SEED})`, () => {
  let ctx: Awaited<ReturnType<typeof tempFleet>>;
  let seeds: FuzzSeed[];

  before(async () => {
    ctx = await tempFleet();
    await addDevice(ctx.fleet, { id: "fuzz-1", actor: "test" });
    seeds = fuzzSeeds();
  });
  after(async () => {
    await ctx?.close();
  });

  it(`${BULK} mutants through issueDeviceCertificate: certificates with canonical, loadable keys or CSR rejections only`, async () => {
    const stats = newStats(SEED);
    const rng = new Rng(SEED);
    const submit = authoritySubmit(ctx.fleet, "fuzz-1");
    await fuzzBatch(stats, rng, seeds, submit, BULK);
    console.log(`# ${summary(stats)}`);
    assert.deepEqual(stats.failures.slice(0, 5), [], `${stats.failures.length} failures (reproduce with FUZZ_SEED=${SEED})`);
    assert.ok(stats.issued > BULK / 20, `the mutants reach issuance (${stats.issued} issued)`);
    assert.ok(stats.rejected.size >= 8, `many distinct rejections (${[...stats.rejected.keys()].join(", ")})`);
    const sample = stats.accepted
      .filter((_, i) => i % Math.max(1, Math.floor(stats.accepted.length / OPENSSL_SAMPLE)) === 0)
      .slice(0, OPENSSL_SAMPLE);
    assert.deepEqual(opensslRefuses(sample), [], "OpenSSL refuses a CSR fleetpki accepted");
  });

  it(`${OVER_EST} mutants over EST simpleenroll on a running server: 200 or 400, never anything else`, async () => {
    let server: TestServer | undefined;
    try {
      server = await startTestServer(ctx.dir);
      const ca = (await ctx.fleet.caRecord("root")).certificate_pem;
      const stats = newStats(SEED + 1);
      const rng = new Rng(SEED + 1);
      const submit = estSubmit(ctx.fleet, server.url, ca);
      await fuzzBatch(stats, rng, seeds, submit, OVER_EST, 4);
      console.log(`# EST ${summary(stats)}`);
      assert.deepEqual(stats.failures.slice(0, 5), [], `${stats.failures.length} failures`);
      assert.ok(stats.issued > 0 && stats.rejected.size > 0, summary(stats));
    } finally {
      await server?.close();
    }
  });
});
