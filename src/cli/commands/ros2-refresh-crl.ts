// `ros2 keystore refresh-crl DIR`: the identity CA's current CRL into a keystore's public/ and every
// enclave, e.g. after `device revoke` revoked a robot's enclaves (it does not know where keystores are).
import type { Command } from "commander";
import { refreshKeystoreCrl } from "../../ros2/keystore/index.js";
import { dirOption, withFleet } from "../context.js";
import { printJson, say } from "../output.js";

export function registerRos2RefreshCrlCommand(keystore: Command): void {
  dirOption(
    keystore
      .command("refresh-crl <keystore>")
      .description("write the ros2-identity CA's current CRL into public/ and every enclave's crl.pem of a keystore"),
  )
    .option("--json", "machine-readable output")
    .action(async (dir: string, opts) => {
      await withFleet(opts.dir, async (fleet) => {
        const r = await refreshKeystoreCrl(fleet, { dir });
        if (opts.json) return printJson({ ...r, crlNumber: r.crlNumber.toString() });
        say(
          `CRL ${r.crlNumber} of ros2-identity (${r.entries} entr${r.entries === 1 ? "y" : "ies"}) written to public/ and ` +
            `${r.updated.length} ` +
            `enclave${r.updated.length === 1 ? "" : "s"} of keystore ${r.keystoreId}; ROS nodes read crl.pem at start: restart them`,
        );
      });
    });
}
