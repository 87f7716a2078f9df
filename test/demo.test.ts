// `fleetpki demo` as a user runs it: the real CLI process, its narrative on stdout, exit 0, and
// nothing left behind in the temporary directory (or, with --keep, a fleet the CLI verifies).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { CLI, cli } from "./helpers.js";

interface DemoRun {
  status: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `fleetpki demo ARGS` with TMPDIR pointing at `tmp` (where the demo makes its directory). */
function runDemo(tmp: string, args: string[] = []): Promise<DemoRun> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, "demo", ...args],
      { encoding: "utf8", timeout: 120_000, env: { ...process.env, TMPDIR: tmp } },
      (error, stdout, stderr) => {
        const code = (error as { code?: unknown } | null)?.code;
        resolve({ status: error ? (typeof code === "number" ? code : -1) : 0, stdout, stderr, ms: Date.now() - t0 });
      },
    );
  });
}

describe("fleetpki demo", () => {
  const tmps: string[] = [];
  const newTmp = () => {
    const t = mkdtempSync(join(tmpdir(), "fleetpki-demo-test-"));
    tmps.push(t);
    return t;
  };
  after(() => {
    for (const t of tmps) rmSync(t, { recursive: true, force: true });
  });

  it("tells the whole story, each step checked, exits 0 in under a minute and removes its directory", async () => {
    const tmp = newTmp();
    const r = await runDemo(tmp);
    assert.equal(r.status, 0, `exit ${r.status}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    const out = r.stdout;
    // Numbered steps, in order.
    let at = -1;
    for (let n = 1; n <= 8; n++) {
      const i = out.indexOf(`\n${n}. `);
      assert.ok(i > at, `step ${n} is narrated after step ${n - 1}:\n${out}`);
      at = i;
    }
    assert.match(out, /DEMO fleet \(trust domain demo\.fleet\.invalid\)/);
    for (let n = 1; n <= 5; n++) {
      assert.match(out, new RegExp(`robot-${n}: spiffe://demo\\.fleet\\.invalid/device/robot-${n}, serial`));
      assert.match(out, new RegExp(`telemetry <- robot-${n}: \\{"battery"`));
    }
    assert.match(out, /spiffe:\/\/demo\.fleet\.invalid\/service\/telemetry/);
    assert.match(out, /robot-2 received its own ping but not robot-1's cmd_vel\./);
    assert.match(out, /Audit row #\d+: \S+ gateway access\.deny device:robot-1 .*fleet\/robot-2\/cmd\/cmd_vel/);
    assert.match(out, /robot-3's live MQTT session was closed by the gateway \d+ ms after the revocation/);
    assert.match(out, /robot-3 reconnects and is refused: .+/);
    assert.match(out, /intact: \d+ hash-chained rows/);
    assert.match(out, /Demo complete in [\d.]+ s: every step behaved as narrated\./);
    assert.equal(r.stderr, "", "nothing on stderr");
    assert.ok(r.ms < 60_000, `ran in ${r.ms} ms`);
    assert.deepEqual(readdirSync(tmp), [], "the temporary directory is gone");
  });

  it("--keep leaves a fleet that `fleetpki audit verify` (another process) finds intact, with robot-3 revoked", async () => {
    const tmp = newTmp();
    const r = await runDemo(tmp, ["--keep"]);
    assert.equal(r.status, 0, `exit ${r.status}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    const kept = /Kept: (\S+) /.exec(r.stdout)?.[1];
    assert.ok(kept && kept.startsWith(tmp) && existsSync(join(kept, "fleet", "fleetpki.yaml")), `kept directory named: ${r.stdout}`);
    const verify = cli(["audit", "verify", "--dir", join(kept, "fleet")]);
    assert.equal(verify.status, 0, verify.stderr);
    assert.match(verify.stdout, /audit log intact/);
    const show = cli(["device", "show", "robot-3", "--dir", join(kept, "fleet")]);
    assert.equal(show.status, 0, show.stderr);
    assert.match(show.stdout, /revoked/);
  });
});
