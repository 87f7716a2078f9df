// Final review of issue 10's flood protection and demo: each test sends the hostile or unlucky
// input that the code before the review mishandled.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ConfigError } from "../src/config/config.js";
import { AddressLimiter, parseGatewayLimits } from "../src/gateway/limits.js";
import { CLI } from "./helpers.js";

describe("review-final: flood limits", () => {
  it("a burst of refused attempts from one address (a shared NAT) locks it out for at most a minute after it stops", () => {
    let t = 0;
    const a = new AddressLimiter(100, 60, () => t);
    // One host behind the NAT hammers: 100,000 attempts in a few seconds, all but 60 refused.
    for (let i = 0; i < 100_000; i++) {
      if (a.opened("203.0.113.7") === undefined) a.closed("203.0.113.7");
      if (i % 20_000 === 0) t += 1000;
    }
    // Two minutes after the hammering stopped, an honest robot behind the same NAT gets in.
    t += 120_000;
    assert.equal(a.opened("203.0.113.7"), undefined);
  });

  it("refuses timer settings longer than a timer can wait (Node would fire them after 1 ms)", () => {
    for (const key of ["drain_timeout_seconds", "max_debt_seconds"])
      assert.throws(() => parseGatewayLimits({ [key]: 10_000_000 }), (e: unknown) => e instanceof ConfigError && e.message.includes(key));
    assert.equal(parseGatewayLimits({ drain_timeout_seconds: 2_147_483 }).drain_timeout_seconds, 2_147_483);
  });
});

describe("review-final: fleetpki demo", () => {
  it("removes its temporary directory when interrupted with SIGINT", async () => {
    const tmp = mkdtempSync(join(tmpdir(), "fleetpki-review-demo-"));
    try {
      const child = spawn(process.execPath, [CLI, "demo"], { env: { ...process.env, TMPDIR: tmp }, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      // Interrupted once the fleet exists (step 2 starts the server): keys are on disk by then.
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.includes("\n2. ")) resolve();
        });
        void exited.then(() => reject(new Error(`demo exited before step 2:\n${out}`)));
      });
      assert.ok(readdirSync(tmp).some((n) => n.startsWith("fleetpki-demo-")), "the demo made its directory");
      child.kill("SIGINT");
      const code = await exited;
      assert.notEqual(code, 0);
      assert.deepEqual(readdirSync(tmp), [], "nothing left in TMPDIR after Ctrl-C");
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
