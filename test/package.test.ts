// The package as users get it (issue 9, sections 2 and 3):
// - `npm pack` builds dist/ (prepack) and ships it without src/ or tests; the tarball installs with
//   `npm install -g --prefix <scratch>`, and the installed `fleetpki` runs `init`, `serve` and
//   `agent enroll` from a directory with no source tree and no development dependency (no tsx).
// - `npm start` stops its server when the npm process itself gets SIGTERM or SIGINT.
//
// Installing honestly but fast: npm resolves and unpacks every runtime dependency of the tarball
// (`--prefer-offline`: from the cache `npm ci` filled, the registry only for metadata it lacks).
// Only better-sqlite3's own install script, a ~75 s compile of SQLite, is skipped
// (`--ignore-scripts`; fleetpki itself has no install scripts, asserted below), and the binding
// this checkout already compiled for the same version and Node ABI is put in its place.
// FLEETPKI_PACK_NATIVE_BUILD=1 runs that compile too.
//
// One file, run in order: `npm pack` rebuilds dist/, which `npm start` then runs.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fingerprintOfPemFile, killAll, run, spawnProc, waitFor, type Proc, type RunResult } from "./agent-e2e-helpers.js";
import { ROOT, openssl, tempDir } from "./helpers.js";

const NPM = process.platform === "win32" ? "npm.cmd" : "npm";
// The installed bin's `#!/usr/bin/env node` must find the node running these tests.
const PATH = `${dirname(process.execPath)}:${process.env.PATH ?? ""}`;

function ok(r: RunResult, what: string): RunResult {
  assert.equal(r.code, 0, `${what} exited ${r.code ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** Resolves with the listening port printed by `serve`/`start`, or rejects when the process exits first. */
function listeningPort(proc: Proc): Promise<number> {
  return Promise.race([
    waitFor(
      `"listening on" from ${proc.name}`,
      () => /registration.*\(listening on 127\.0\.0\.1:(\d+)\)/.exec(proc.stderr())?.[1],
      120_000,
      50,
    ).then(Number),
    proc.exited.then((e) => {
      throw new Error(`${proc.name} exited ${e.code ?? e.signal} before listening:\n${proc.stdout()}\n${proc.stderr()}`);
    }),
  ]);
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

describe("the package: npm pack, a global install, npm start", { concurrency: false }, () => {
  const tmp = tempDir("fleetpki-pack-");
  after(async () => {
    await killAll();
    tmp.cleanup();
  });

  let tarball = "";
  before(async () => {
    const r = ok(await run(NPM, ["pack", "--json", "--pack-destination", tmp.path], { cwd: ROOT, timeoutMs: 300_000 }), "npm pack");
    const [info] = JSON.parse(r.stdout) as { filename: string; files: { path: string }[] }[];
    tarball = join(tmp.path, info!.filename);
  });

  it("the tarball holds bin/ and dist/, no sources, tests or benchmarks, and no install script", async () => {
    const r = ok(await run("tar", ["tzf", tarball]), "tar tzf");
    const files = r.stdout
      .trim()
      .split("\n")
      .map((f) => f.replace(/^package\//, ""));
    assert.ok(files.includes("bin/fleetpki.js"), "bin/fleetpki.js");
    assert.ok(files.includes("dist/cli/main.js"), "dist/cli/main.js");
    assert.ok(files.includes("dist/agent/index.js"), "dist/agent/index.js");
    assert.deepEqual(
      files.filter((f) => /^(src|test|bench|scripts)\/|\.ts$/.test(f)),
      [],
      "no sources, tests, benchmarks or scripts",
    );
    const manifest = JSON.parse(ok(await run("tar", ["xzfO", tarball, "package/package.json"]), "tar x").stdout) as {
      scripts?: Record<string, string>;
      dependencies: Record<string, string>;
    };
    for (const hook of ["preinstall", "install", "postinstall", "prepare"]) assert.equal(manifest.scripts?.[hook], undefined, hook);
    assert.equal(manifest.dependencies.tsx, undefined, "tsx is a development dependency");
  });

  it("installed globally in a scratch prefix, fleetpki init, serve and agent enroll work without the source tree", async () => {
    const prefix = join(tmp.path, "prefix");
    const native = process.env.FLEETPKI_PACK_NATIVE_BUILD === "1";
    const args = [
      "install",
      "-g",
      "--prefix",
      prefix,
      "--prefer-offline",
      "--no-audit",
      "--no-fund",
      ...(native ? [] : ["--ignore-scripts"]),
      tarball,
    ];
    ok(await run(NPM, args, { cwd: tmp.path, timeoutMs: 600_000 }), "npm install -g");
    const installed = join(prefix, "lib", "node_modules", "fleetpki");
    const modules = join(installed, "node_modules");
    assert.throws(() => readFileSync(join(modules, "tsx", "package.json")), /ENOENT/, "tsx is not installed with the package");
    if (!native) {
      const version = (dir: string) =>
        (JSON.parse(readFileSync(join(dir, "better-sqlite3", "package.json"), "utf8")) as { version: string }).version;
      assert.equal(version(modules), version(join(ROOT, "node_modules")), "the same better-sqlite3 as this checkout");
      const binding = join("better-sqlite3", "build", "Release", "better_sqlite3.node");
      mkdirSync(dirname(join(modules, binding)), { recursive: true });
      copyFileSync(join(ROOT, "node_modules", binding), join(modules, binding));
    }

    // Everything below runs the installed bin (its shebang, its dist/) from a directory outside the checkout.
    const fleetpki = join(prefix, "bin", "fleetpki");
    const env = { PATH };
    const cwd = tmp.path;
    const fleet = join(tmp.path, "fleet");
    const passphrase = join(tmp.path, "passphrase");
    writeFileSync(passphrase, "a passphrase for the packed install test\n", { mode: 0o600 });
    ok(
      await run(fleetpki, ["init", "--dir", fleet, "--name", "Packed", "--domain", "fleet.example", "--passphrase-file", passphrase], {
        cwd,
        env,
      }),
      "init",
    );

    const serve = [
      "serve",
      "--dir",
      fleet,
      "--listen",
      "127.0.0.1:0",
      "--status-listen",
      "127.0.0.1:0",
      "--gateway-listen",
      "127.0.0.1:0",
      "--admin-listen",
      "127.0.0.1:0",
    ];
    const server = spawnProc("installed fleetpki serve", fleetpki, serve, { cwd, env });
    const port = await listeningPort(server);
    const added = ok(await run(fleetpki, ["device", "add", "robot-0001", "--dir", fleet, "--json"], { cwd, env }), "device add");
    const token = (JSON.parse(added.stdout) as { token: string }).token;
    const robot = join(tmp.path, "robot");
    const root = join(fleet, "ca", "root", "cert.pem");
    const enroll = [
      "agent",
      "enroll",
      "--server",
      `https://127.0.0.1:${port}`,
      "--root-fingerprint",
      fingerprintOfPemFile(root),
      "--id",
      "robot-0001",
      "--dir",
      robot,
    ];
    ok(await run(fleetpki, enroll, { cwd, env: { ...env, FLEETPKI_TOKEN: token } }), "agent enroll");
    const verify = openssl(["verify", "-CAfile", root, "-untrusted", join(fleet, "ca", "devices", "cert.pem"), join(robot, "cert.pem")]);
    assert.equal(verify.status, 0, verify.stderr);

    const exit = await server.stop("SIGTERM", 15_000);
    assert.deepEqual(exit, { code: 0, signal: null }, server.stderr());
  });

  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(`${signal} to the \`npm start\` process stops the server it started`, async () => {
      // Its own process group, so that whatever outlives npm can still be found and killed.
      const child = spawn(NPM, ["start", "--", "--listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0"], {
        cwd: ROOT,
        env: { ...process.env, FLEETPKI_DIR: join(tmp.path, `start-${signal}`) },
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
      });
      const proc = wrap(`npm start (${signal})`, child);
      try {
        const port = await listeningPort(proc);
        assert.equal(await accepts(port), true);
        child.kill(signal); // npm's own pid, as `kill -TERM <pid of npm>` would
        await waitFor("the server to stop listening", async () => !(await accepts(port)), 20_000, 100);
        await waitFor("npm to exit", () => !proc.running(), 20_000, 100);
        assert.match(proc.stderr(), new RegExp(`${signal} received, shutting down`));
      } finally {
        try {
          process.kill(-child.pid!, "SIGKILL"); // the group this test started, should anything be left
        } catch {
          // nothing left: the expected case
        }
      }
    });
  }
});

/** A Proc view of a child spawned here (the helper's spawnProc cannot detach). */
function wrap(name: string, child: ReturnType<typeof spawn>): Proc {
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (c: string) => (out += c));
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (err += c));
  let done = false;
  // "exit", not "close": a server that outlives npm would hold the pipes open.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => {
      done = true;
      resolve({ code, signal });
    }),
  );
  return {
    name,
    child,
    pid: child.pid ?? -1,
    stdout: () => out,
    stderr: () => err,
    exited,
    running: () => !done,
    stop: async (signal = "SIGTERM") => {
      if (!done) child.kill(signal);
      return exited;
    },
  };
}
