// `fleetpki ros2 keystore verify DIR [--dir FLEET]`: the transport of verifyKeystore. Exit 0 when the keystore
// is sound, 1 with the list of problems, 2 when DIR is not a fleetpki keystore at all.
import type { Command } from "commander";
import { systemClock } from "../../authority/clock.js";
import { NotAKeystore } from "../../ros2/keystore/errors.js";
import { fleetRos2Trust, verifyKeystore, type KeystoreReport } from "../../ros2/keystore/verify.js";
import { withFleet } from "../context.js";
import { printJson, say } from "../output.js";

export function registerRos2VerifyCommand(keystore: Command): void {
  keystore
    .command("verify <DIR>")
    .description(
      "check every file of an SROS2 keystore (chains, signatures, expiry, CRLs, modes) and list every problem; " +
        "exit 0 when sound, 1 with problems, 2 when DIR is not a keystore",
    )
    .option("--dir <dir>", "fleet directory: also check that the keystore and its CAs are this fleet's (env FLEETPKI_DIR)")
    .option("--json", "machine-readable output")
    .action(async (dir: string, opts: { dir?: string; json?: boolean }) => {
      const fleetDir = opts.dir ?? process.env.FLEETPKI_DIR;
      let report: KeystoreReport;
      try {
        report =
          fleetDir === undefined
            ? verifyKeystore(dir, undefined, systemClock.now())
            : await withFleet(fleetDir, async (fleet) => verifyKeystore(dir, await fleetRos2Trust(fleet), fleet.clock.now()));
      } catch (e) {
        if (!(e instanceof NotAKeystore)) throw e;
        process.stderr.write(`fleetpki: ${e.message}\n`);
        process.exit(2);
      }
      if (opts.json) printJson(report);
      else {
        for (const p of report.problems) say(`${p.path}: ${p.problem}`);
        const enclaves = `${report.enclaves.length} enclave${report.enclaves.length === 1 ? "" : "s"}`;
        const checked = fleetDir === undefined ? "" : ", CAs checked against the fleet";
        if (report.problems.length === 0) say(`keystore ${dir} is sound (${enclaves}${checked})`);
        else process.stderr.write(`fleetpki: keystore ${dir}: ${report.problems.length} problem(s) in ${enclaves}\n`);
      }
      if (report.problems.length > 0) process.exitCode = 1;
    });
}
