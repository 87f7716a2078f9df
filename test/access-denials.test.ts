// The denial log (src/access/denials.ts): aggregated per identity, action, topic and minute; a
// denial of a new kind reaches the audit log promptly, repeats are only counted.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DenialLog, type DenialRow } from "../src/access/denials.js";

const denial = (topic: string) => ({
  subject: "device:robot-1",
  action: "publish" as const,
  topic,
  outcome: "deny" as const,
  rule: undefined,
});

describe("DenialLog", () => {
  it("appends a denial of a new kind without waiting for the periodic flush; repeats are counted, not appended", async () => {
    const batches: DenialRow[][] = [];
    let delivered!: () => void;
    let arrived = new Promise<void>((r) => (delivered = r));
    const log = new DenialLog(
      async (rows) => {
        batches.push([...rows]);
        delivered();
      },
      () => new Date("2026-12-04T21:30:15Z"),
    );
    // The periodic flush is an hour away: only the new-kind flush (10 ms) can deliver in time.
    log.start(3_600_000, 10);
    const guard = setTimeout(() => delivered(), 10_000);
    try {
      log.record(denial("fleet/robot-2/cmd/cmd_vel"));
      await arrived;
      assert.equal(batches.length, 1, "the first denial of its kind is appended promptly");
      assert.deepEqual(
        batches[0]!.map((r) => [r.topic, r.count, r.minute]),
        [["fleet/robot-2/cmd/cmd_vel", 1, "2026-12-04T21:30:00.000Z"]],
      );
      arrived = new Promise<void>((r) => (delivered = r));
      // Repeats of a kind already appended this minute wait for the periodic flush (here: close).
      for (let i = 0; i < 50; i++) log.record(denial("fleet/robot-2/cmd/cmd_vel"));
      // Ten times the prompt-flush delay: had the repeats asked for one, it would have run.
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(batches.length, 1, "repeats of a kind written this minute do not ask for a prompt flush");
    } finally {
      clearTimeout(guard);
      await log.close();
    }
    assert.equal(batches.length, 2);
    assert.deepEqual(
      batches[1]!.map((r) => [r.topic, r.count]),
      [["fleet/robot-2/cmd/cmd_vel", 50]],
    );
  });
});
