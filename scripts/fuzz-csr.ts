// `npm run fuzz -- [--seconds N] [--seed S] [--est-share F] [--openssl]`: the CSR fuzz test of
// test/csr-fuzz.test.ts for as long as asked. Mutants go through the authority's issue-from-CSR
// path and, a share of them (default 5%), a real EST server on 127.0.0.1. Reports counts per
// outcome; exits 1 on any failure (an error other than a CSR rejection, a non-400 refusal, a
// certificate key that node:crypto cannot load or that is not canonical) and, with --openssl,
// on any accepted CSR that `openssl req -verify` refuses.
import { parseArgs } from "node:util";
import { addDevice } from "../src/authority/devices.js";
import { tempFleet } from "../test/helpers.js";
import { startTestServer } from "../test/server-helpers.js";
import { Rng } from "../test/support/csr-fuzz.js";
import { authoritySubmit, estSubmit, fuzzBatch, fuzzSeeds, newStats, opensslRefuses, summary } from "../test/support/fuzz-run.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "60" },
    seed: { type: "string" },
    "est-share": { type: "string", default: "0.05" },
    openssl: { type: "boolean", default: false },
  },
});
const seconds = Number(values.seconds);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const estShare = Number(values["est-share"]);
if (!(seconds > 0) || !Number.isInteger(seed) || !(estShare >= 0 && estShare <= 1)) {
  console.error("usage: npm run fuzz -- [--seconds N > 0] [--seed INTEGER] [--est-share 0..1] [--openssl]");
  process.exit(2);
}

console.log(`fuzzing CSRs for ${seconds} s, seed ${seed} (repeat with --seed ${seed})`);
const ctx = await tempFleet();
const server = estShare > 0 ? await startTestServer(ctx.dir) : undefined;
let exitCode = 0;
try {
  await addDevice(ctx.fleet, { id: "fuzz-1", actor: "fuzz" });
  const seeds = fuzzSeeds();
  const ca = (await ctx.fleet.caRecord("root")).certificate_pem;
  const bulk = { stats: newStats(seed), rng: new Rng(seed), submit: authoritySubmit(ctx.fleet, "fuzz-1") };
  const est = server ? { stats: newStats(seed + 1), rng: new Rng(seed + 1), submit: estSubmit(ctx.fleet, server.url, ca) } : undefined;
  const deadline = Date.now() + seconds * 1000;
  let lastReport = Date.now();
  while (Date.now() < deadline) {
    await fuzzBatch(bulk.stats, bulk.rng, seeds, bulk.submit, 64);
    if (est && est.stats.sent < (bulk.stats.sent * estShare) / (1 - estShare || 1))
      await fuzzBatch(est.stats, est.rng, seeds, est.submit, 4, 4);
    if (Date.now() - lastReport > 10_000) {
      console.log(
        `  ${bulk.stats.sent + (est?.stats.sent ?? 0)} sent, ${bulk.stats.failures.length + (est?.stats.failures.length ?? 0)} failures`,
      );
      lastReport = Date.now();
    }
  }
  const failures = [...bulk.stats.failures, ...(est?.stats.failures ?? [])];
  console.log(`authority: ${summary(bulk.stats)}`);
  if (est) console.log(`EST:       ${summary(est.stats)}`);
  if (values.openssl) {
    const accepted = [...bulk.stats.accepted, ...(est?.stats.accepted ?? [])];
    const refused = opensslRefuses(accepted);
    console.log(`openssl req -verify: ${accepted.length - refused.length} of ${accepted.length} accepted mutants verify`);
    for (const r of refused.slice(0, 20)) console.log(`  openssl refuses what fleetpki accepted: ${r}`);
    if (refused.length) exitCode = 1;
  }
  for (const f of failures.slice(0, 20)) console.log(`  FAILURE ${f}`);
  if (failures.length) exitCode = 1;
} finally {
  await server?.close();
  await ctx.close();
}
process.exit(exitCode);
