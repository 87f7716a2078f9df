// `openssl ocsp -port` binds every interface, so the measurement runs in a network namespace of
// its own: the outer process (run.ts's) re-executes the bench's module under `unshare -n` (as
// root, else `unshare -r -n`), and fleetpki, openssl and the load generator talk over the
// namespace's loopback. The outer process makes and removes the temporary directory and kills
// the inner process's group (which both servers join) whatever happens.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BenchFailure, check, cleanUpOnInterrupt, type BenchOptions } from "../lib.js";

/** unshare's options for a network namespace of our own: `-n` as root, else `-r -n` (a user namespace), else a clear error. */
function unshareOptions(): string[] {
  const tried: string[] = [];
  for (const options of [["-n"], ["-r", "-n"]]) {
    const r = spawnSync("unshare", [...options, "--", "ip", "link", "set", "lo", "up"], { encoding: "utf8", timeout: 10_000 });
    if (r.status === 0) return options;
    tried.push(`unshare ${options.join(" ")} -- ip link set lo up: ${r.error ? r.error.message : r.stderr.trim() || `exit ${r.status}`}`);
  }
  throw new BenchFailure(
    "the ocsp benchmark needs a network namespace of its own (`openssl ocsp -port` binds every interface), and none could be made:\n  " +
      tried.join("\n  ") +
      "\nRun it as root (or where unprivileged user namespaces are allowed); it needs unshare (util-linux) and ip (iproute2).",
  );
}

/**
 * Runs `node --import tsx <entry> <flag> TMP SECONDS RUNS UNSHARE-OPTIONS` in a network namespace
 * of its own, from `cwd`; exit 1 inside means a check failed.
 */
export async function runInNamespace(entry: string, flag: string, cwd: string, options: BenchOptions): Promise<void> {
  const ns = unshareOptions();
  // Made (and removed) out here, so that it goes even if the process inside is killed outright.
  const tmp = mkdtempSync(join(tmpdir(), "fleetpki-bench-ocsp-"));
  let child: ChildProcess | undefined;
  // The child leads a process group of its own, which its servers join: one kill takes them all.
  const killGroup = () => {
    if (child?.pid === undefined) return;
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // gone already
    }
  };
  const emergencyCleanup = () => {
    killGroup();
    rmSync(tmp, { recursive: true, force: true });
  };
  const uninstall = cleanUpOnInterrupt(emergencyCleanup);
  try {
    child = spawn(
      "unshare",
      [...ns, "--", process.execPath, "--import", "tsx", entry, flag, tmp, String(options.seconds), String(options.runs), ns.join(" ")],
      {
        cwd,
        detached: true,
        stdio: ["ignore", "inherit", "inherit"],
      },
    );
    const started = child;
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolveExit, reject) => {
      started.once("error", reject);
      started.once("exit", (code, signal) => resolveExit({ code, signal }));
    });
    if (exit.code === 1) throw new BenchFailure("a check failed inside the network namespace; its message is above");
    if (exit.code !== 0)
      throw new Error(`the measurement inside the network namespace ended with ${exit.code ?? exit.signal}; its output is above`);
  } finally {
    killGroup(); // anything it left behind
    rmSync(tmp, { recursive: true, force: true });
    uninstall();
  }
}

/** The network namespace we are in: only a loopback interface, up. */
export function checkNamespace(): string {
  const up = spawnSync("ip", ["link", "set", "lo", "up"], { encoding: "utf8" });
  check(up.status === 0, `ip link set lo up failed: ${up.error?.message ?? up.stderr}`);
  const links = spawnSync("ip", ["-o", "link", "show"], { encoding: "utf8" });
  const names = links.stdout
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split(":")[1]?.trim());
  check(
    links.status === 0 && names.length === 1 && names[0] === "lo",
    `not in a network namespace of our own: interfaces ${names.join(", ")}`,
  );
  return "interfaces: lo only";
}
