// The OCSP responder's cache against status changes (issue 9, item 1.5): an answer looked up
// before a revocation reached the responder is neither served nor cached after it, identical
// requests in flight share one signed answer, and a cached answer is re-signed only once it
// expires (an injected clock, no waiting).
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ChangeFeed } from "../src/authority/events/change-feed.js";
import { addDevice } from "../src/authority/devices.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { OcspService, type StoredStatus } from "../src/authority/status/ocsp-responder.js";
import { revokeCertificate } from "../src/authority/status/revocation.js";
import { parseDuration } from "../src/config/duration.js";
import { assertOk, openssl, opensslCsr, tempDir, tempFleet } from "./helpers.js";
import { parseOcspResponse, type ParsedSingleResponse } from "./support/ocsp-response.js";
import { devicesCaPemPath } from "./server-helpers.js";

/** An OcspService that runs `afterRead` (and waits for it) once each status lookup has read the database. */
class HookedOcspService extends OcspService {
  afterRead: (() => Promise<void> | void) | undefined;

  protected override async readStatuses(caId: string, serials: readonly string[]): Promise<(StoredStatus | undefined)[]> {
    const rows = await super.readStatuses(caId, serials);
    await this.afterRead?.();
    return rows;
  }
}

/** Resolves after `count` calls of the returned function; rejects (test failure, not a hang) after 10 s. */
function counter(count: number, what: string): { tick: () => void; done: Promise<void> } {
  let n = 0;
  let resolve!: () => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    setTimeout(() => rej(new Error(`${what}: ${n} of ${count} after 10 s`)), 10_000).unref();
  });
  return { tick: () => void (++n === count && resolve()), done };
}

function single(der: Buffer): ParsedSingleResponse {
  const parsed = parseOcspResponse(der);
  assert.ok("responses" in parsed, `a successful response, not ${"responseStatus" in parsed ? parsed.responseStatus : "?"}`);
  return parsed.responses[0]!;
}

function responseStatus(der: Buffer): string {
  const parsed = parseOcspResponse(der);
  return "responseStatus" in parsed ? parsed.responseStatus : "successful";
}

describe("OCSP answers and the cache when a status changes", () => {
  let f: Awaited<ReturnType<typeof tempFleet>>;
  let work: { path: string; cleanup: () => void };
  const leaves: Record<string, { serial: string; path: string }> = {};
  const errors: unknown[] = [];
  const onError = (e: unknown) => void errors.push(e);

  /** An OCSP request made by openssl for the leaf, with or without a nonce. */
  const request = (id: string, nonce: boolean): Buffer => {
    const out = join(work.path, `${id}-${nonce ? "nonce" : "plain"}.req`);
    const args = ["ocsp", "-issuer", devicesCaPemPath(f.dir), "-cert", leaves[id]!.path, ...(nonce ? [] : ["-no_nonce"]), "-reqout", out];
    assertOk(openssl(args), "openssl ocsp -reqout");
    return readFileSync(out);
  };

  before(async () => {
    f = await tempFleet();
    work = tempDir("fleetpki-ocsp-cache-");
    for (const id of ["race-a", "race-b", "race-c", "race-d"]) {
      await addDevice(f.fleet, { id, actor: "test" });
      const { csr } = opensslCsr(work.path, id);
      const cert = await issueDeviceCertificate(f.fleet, { deviceId: id, csr: readFileSync(csr), actor: "test" });
      const path = join(work.path, `${id}.pem`);
      writeFileSync(path, cert.certificatePem);
      leaves[id] = { serial: cert.serial, path };
    }
  });
  after(async () => {
    await f?.close();
    work?.cleanup();
    assert.deepEqual(errors, [], "the responder reported no internal errors");
  });

  it("a revocation that reaches the responder while lookups are in flight: no `good` is served or cached after it", async () => {
    const ocsp = new HookedOcspService(f.fleet, onError);
    // As `serve` does: the audit log's change feed drops what the responder knows.
    const feed = new ChangeFeed(f.fleet.store);
    await feed.start();
    feed.subscribe(() => ocsp.invalidate());
    try {
      assert.equal(single((await ocsp.respond(request("race-c", false))).der).status.status, "good", "warm-up: responder made, CAs loaded");
      const plainA = request("race-a", false);
      const nonceA = request("race-a", true);
      const plainB = request("race-b", false);

      const read = counter(3, "lookups that read the database");
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      ocsp.afterRead = () => {
        read.tick();
        return gate;
      };
      const inFlight = [plainA, nonceA, plainB].map((r) => ocsp.respond(r));
      await read.done; // all three have read race-a as good and wait before signing
      await revokeCertificate(f.fleet, { serial: leaves["race-a"]!.serial, reason: "keyCompromise", actor: "test" });
      await feed.poll(); // the responder now knows: invalidate() ran
      ocsp.afterRead = undefined;
      release();
      const [a, an, b] = await Promise.all(inFlight);

      for (const [what, outcome] of [
        ["no nonce", a!],
        ["nonce", an!],
      ] as const) {
        const s = single(outcome.der);
        assert.equal(s.status.status, "revoked", `race-a (${what}) answered after the revocation reached the responder`);
        assert.equal(s.status.status === "revoked" && s.status.reason, "keyCompromise");
      }
      assert.equal(single(b!.der).status.status, "good", "race-b was not touched");
      // Nothing stale was kept either: race-a is answered anew, race-b from the cache.
      const again = await ocsp.respond(plainA);
      assert.equal(single(again.der).status.status, "revoked");
      assert.equal(again.cached, false);
      const bAgain = await ocsp.respond(plainB);
      assert.equal(bAgain.cached, true, "good answers read after the change are still cached");
      assert.ok(bAgain.der.equals(b!.der));
    } finally {
      await feed.stop();
    }
  });

  it("statuses that keep changing during every lookup: tryLater, never an answer read before the last change", async () => {
    const ocsp = new HookedOcspService(f.fleet, onError);
    const plainD = request("race-d", false);
    let lookups = 0;
    ocsp.afterRead = () => {
      lookups++;
      ocsp.invalidate(); // each lookup is overtaken by a status change before its answer is signed
    };
    const outcome = await ocsp.respond(plainD);
    assert.equal(responseStatus(outcome.der), "tryLater");
    assert.equal(lookups, 3, "looked up three times, then gave up");
    ocsp.afterRead = undefined;
    const calm = await ocsp.respond(plainD);
    assert.equal(single(calm.der).status.status, "good", "once the changes stop, answered again");
  });

  it("identical requests in flight share one signed answer; it is re-signed only once it expires (the benchmark's check)", async () => {
    const cacheMs = parseDuration(f.fleet.config.revocation.ocsp_cache);
    let clock = Date.now();
    const ocsp = new OcspService(f.fleet, onError, { now: () => clock });
    const plainC = request("race-c", false);
    const nextUpdate = (der: Buffer) => single(der).nextUpdate!.getTime();

    // Four clients asking at once, as bench/ocsp.ts does: one answer, byte for byte.
    const first = await Promise.all(Array.from({ length: 4 }, () => ocsp.respond(plainC)));
    for (const o of first) assert.ok(o.der.equals(first[0]!.der), "concurrent identical requests got differently signed answers");
    assert.equal(first.filter((o) => !o.cached).length, 1, "signed once");
    const hit = await ocsp.respond(plainC);
    assert.ok(hit.cached && hit.der.equals(first[0]!.der));

    // Just before it expires: still the same answer. Once expired: one new one, again shared.
    clock = nextUpdate(first[0]!.der) - 1;
    assert.ok((await ocsp.respond(plainC)).der.equals(first[0]!.der));
    clock = nextUpdate(first[0]!.der);
    const second = await Promise.all(Array.from({ length: 4 }, () => ocsp.respond(plainC)));
    for (const o of second) assert.ok(o.der.equals(second[0]!.der), "after expiry, concurrent requests got differently signed answers");
    assert.ok(!second[0]!.der.equals(first[0]!.der), "re-signed after expiry");
    const gap = nextUpdate(second[0]!.der) - nextUpdate(first[0]!.der);
    assert.ok(gap >= cacheMs - 1000, `a newly signed answer ${gap} ms after the previous one; cached answers are kept ${cacheMs} ms`);
  });
});
