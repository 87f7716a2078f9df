// `ca issue-batch`: 1,000 factory bundles from a local CA, killed part way (SIGKILL) and resumed.
// The result must be exactly one complete, verifiable, recorded bundle per id.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { X509Certificate, createPrivateKey, createPublicKey } from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import Database from "better-sqlite3";
import { createLocalCa } from "../src/authority/ca/cas.js";
import { FleetServices } from "../src/authority/services.js";
import { initFleet } from "../src/authority/ca/init.js";
import { ConfigError, DEFAULT_FACTORY_VALIDITY, defaultConfig, parseConfig, renderConfig } from "../src/config/config.js";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { CLI, cli, cliAsync, openssl, tempDir, writeTemp, type RunResult, assertOk, assertOneLineError } from "./helpers.js";

const COUNT = 1000;
const KILL_AFTER = 150;
const ids = Array.from({ length: COUNT }, (_, i) => `robot-${String(i + 1).padStart(4, "0")}`);

function completeBundles(out: string): string[] {
  try {
    return readdirSync(out).filter((e) => !e.startsWith("."));
  } catch {
    return [];
  }
}

// The two suites are independent; side by side they use both cores.
describe("issue-batch", { concurrency: true }, () => {
  describe("ca issue-batch", { concurrency: false }, () => {
    const tmp = tempDir("fleetpki-batch-");
    const fleet = join(tmp.path, "fleet");
    const out = join(tmp.path, "bundles");
    let seenAtKill = 0;
    let killed: { code: number | null; signal: NodeJS.Signals | null } = { code: null, signal: null };
    let resumed: RunResult;

    before(async () => {
      await initFleet({ dir: fleet, name: "Factory Robots", domain: "fleet.example" });
      assertOk(cli(["ca", "create-local", "--dir", fleet, "--name", "factory-a"]), "ca create-local");

      // First run: killed without warning once some bundles exist.
      const child = spawn(
        process.execPath,
        [CLI, "ca", "issue-batch", "--dir", fleet, "--local", "factory-a", "--ids", `robot-0001..robot-${COUNT}`, "--out", out],
        {
          stdio: ["ignore", "ignore", "pipe"],
        },
      );
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += d));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.on("exit", (code, signal) => resolve({ code, signal })),
      );
      let done = false;
      void exited.then(() => (done = true));
      const deadline = Date.now() + 45_000;
      while (!done && Date.now() < deadline) {
        seenAtKill = completeBundles(out).length;
        if (seenAtKill >= KILL_AFTER) break;
        await sleep(5);
      }
      child.kill("SIGKILL");
      killed = await exited;
      assert.equal(
        killed.signal,
        "SIGKILL",
        `the first run must still be running when killed (exit ${killed.code}, ${seenAtKill} bundles): ${stderr}`,
      );
      assert.ok(seenAtKill >= KILL_AFTER, `saw only ${seenAtKill} bundles before the deadline`);

      // Second run: to completion.
      resumed = await cliAsync([
        "ca",
        "issue-batch",
        "--dir",
        fleet,
        "--local",
        "factory-a",
        "--ids",
        `robot-0001..robot-${COUNT}`,
        "--out",
        out,
      ]);
    });
    after(() => tmp.cleanup());

    it("the interrupted run left an incomplete set behind", () => {
      assert.ok(seenAtKill >= KILL_AFTER && seenAtKill < COUNT, `${seenAtKill} bundles at kill time`);
    });

    it("the resumed run completes and reports what it issued and what was already there", () => {
      assertOk(resumed, "resumed issue-batch");
      const m = /(\d+) bundles issued, (\d+) already present, (\d+) in all/.exec(resumed.stdout);
      assert.ok(m, resumed.stdout);
      const [issued, present, total] = [Number(m[1]), Number(m[2]), Number(m[3])];
      assert.equal(total, COUNT);
      assert.equal(issued + present, COUNT);
      assert.ok(present >= seenAtKill, `${present} present, but ${seenAtKill} were complete at kill time`);
      assert.ok(issued >= 1, "the kill left work to do");
    });

    it("exactly one complete bundle per id, nothing partial left", () => {
      const entries = readdirSync(out).sort();
      assert.deepEqual(
        entries.filter((e) => e.startsWith(".")),
        [],
        "no .partial-* leftovers",
      );
      assert.deepEqual(entries, ids);
      for (const id of ids) {
        const d = join(out, id);
        assert.deepEqual(readdirSync(d).sort(), ["ca.pem", "cert.pem", "chain.pem", "key.pem"], id);
        assert.equal(statSync(join(d, "key.pem")).mode & 0o777, 0o600, `${id}/key.pem mode`);
      }
    });

    it("each certificate names its directory, matches its key and has a distinct serial", () => {
      const root = readFileSync(join(fleet, "ca/root/cert.pem"), "utf8");
      const local = readFileSync(join(fleet, "ca/local-factory-a/cert.pem"), "utf8");
      const serials = new Set<string>();
      for (const id of ids) {
        const d = join(out, id);
        const cert = new X509Certificate(readFileSync(join(d, "cert.pem")));
        assert.equal(cert.subject, `CN=${id}`);
        assert.equal(cert.subjectAltName, `URI:spiffe://fleet.example/device/${id}`, "a factory certificate only enrolls: no host name");
        assert.deepEqual(cert.keyUsage, ["1.3.6.1.5.5.7.3.2"], "and only as a TLS client");
        const key = createPrivateKey(readFileSync(join(d, "key.pem"), "utf8"));
        assert.ok(
          createPublicKey(key)
            .export({ type: "spki", format: "der" })
            .equals(cert.publicKey.export({ type: "spki", format: "der" })),
          `${id}: key.pem does not match cert.pem`,
        );
        serials.add(cert.serialNumber);
        assert.equal(readFileSync(join(d, "ca.pem"), "utf8"), root, `${id}/ca.pem is the root`);
        assert.equal(readFileSync(join(d, "chain.pem"), "utf8"), local, `${id}/chain.pem is the local CA`);
      }
      assert.equal(serials.size, COUNT);
    });

    it("all 1,000 certificates verify with openssl in one call", () => {
      const r = openssl([
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        join(fleet, "ca/root/cert.pem"),
        "-untrusted",
        join(out, "robot-0001/chain.pem"),
        ...ids.map((id) => join(out, id, "cert.pem")),
      ]);
      assert.equal(
        r.status,
        0,
        r.stderr +
          r.stdout
            .split("\n")
            .filter((l) => !l.endsWith(": OK"))
            .join("\n"),
      );
      const ok = r.stdout.split("\n").filter((l) => l.endsWith(": OK"));
      assert.equal(ok.length, COUNT);
    });

    it("the database records every bundle (lost ones from the kill may be extra) and the audit log is intact", async () => {
      const audit = cliAsync(["audit", "verify", "--dir", fleet]);
      const db = new Database(join(fleet, "fleetpki.db"), { readonly: true });
      try {
        const rows = db.prepare("SELECT serial, device_id, kind FROM certificates WHERE issuer_ca = 'local-factory-a'").all() as {
          serial: string;
          device_id: string;
          kind: string;
        }[];
        assert.ok(rows.length >= COUNT, `${rows.length} certificate rows`);
        assert.equal(new Set(rows.map((r) => r.serial)).size, rows.length, "no duplicate serials");
        assert.ok(rows.every((r) => r.kind === "factory"));
        const bySerial = new Map(rows.map((r) => [r.serial, r.device_id]));
        for (const id of ids) {
          const cert = new X509Certificate(readFileSync(join(out, id, "cert.pem")));
          assert.equal(bySerial.get(cert.serialNumber.toLowerCase()), id, `${id}'s certificate is recorded for it`);
        }
        // At most the bundle in flight at the kill was lost.
        assert.ok(rows.length <= COUNT + 1, `${rows.length - COUNT} extra certificate rows`);
        const devices = db.prepare("SELECT id, labels, status FROM devices WHERE id LIKE 'robot-%' ORDER BY id").all() as {
          id: string;
          labels: string;
          status: string;
        }[];
        assert.deepEqual(
          devices.map((d) => d.id),
          ids,
        );
        assert.ok(devices.every((d) => d.status === "active" && JSON.parse(d.labels).factory === "factory-a"));
      } finally {
        db.close();
      }
      const r = await audit;
      assertOk(r, "audit verify");
      assert.match(r.stdout, /intact/);
    });
  });

  describe("ca issue-batch input", { concurrency: false }, () => {
    const tmp = tempDir("fleetpki-batch-input-");
    const fleet = join(tmp.path, "fleet");
    const results = new Map<string, RunResult>();

    before(async () => {
      await initFleet({ dir: fleet, name: "Factory Robots", domain: "fleet.example" });
      const f = await FleetServices.open(fleet);
      try {
        assert.equal((await createLocalCa(f, { name: "factory-b", actor: "test" })).status, "created");
      } finally {
        await f.close();
      }
      const idsFile = writeTemp(tmp.path, "ids.txt", "# line 3, first shift\nbot-a\n\nbot-b   # spare\r\nbot-c\n");
      const base = ["ca", "issue-batch", "--dir", fleet];
      const runs: [string, string[]][] = [
        ["idsFile", [...base, "--local", "factory-b", "--ids-file", idsFile, "--out", join(tmp.path, "from-file"), "--group", "line3"]],
        ["noDigits", [...base, "--local", "factory-b", "--ids", "a..b", "--out", join(tmp.path, "x1")]],
        ["backwards", [...base, "--local", "factory-b", "--ids", "robot-5..robot-1", "--out", join(tmp.path, "x2")]],
        ["unknownLocal", [...base, "--local", "nowhere", "--ids", "robot-1..robot-2", "--out", join(tmp.path, "x3")]],
        ["both", [...base, "--local", "factory-b", "--ids", "robot-1..robot-2", "--ids-file", idsFile, "--out", join(tmp.path, "x4")]],
        ["neither", [...base, "--local", "factory-b", "--out", join(tmp.path, "x5")]],
        [
          "validity",
          [...base, "--local", "factory-b", "--ids", "shelf-1..shelf-1", "--validity", "90d", "--out", join(tmp.path, "ninety-days")],
        ],
        [
          "badValidity",
          [...base, "--local", "factory-b", "--ids", "shelf-2..shelf-2", "--validity", "soon", "--out", join(tmp.path, "x6")],
        ],
      ];
      const res = await Promise.all(runs.map(([, a]) => cliAsync(a)));
      runs.forEach(([k], i) => results.set(k, res[i]!));
    });
    after(() => tmp.cleanup());

    it("--ids-file issues one bundle per listed id (comments and blank lines ignored)", () => {
      const r = results.get("idsFile")!;
      assertOk(r, "issue-batch --ids-file");
      assert.match(r.stdout, /3 bundles issued, 0 already present, 3 in all/);
      const dir = join(tmp.path, "from-file");
      assert.deepEqual(readdirSync(dir).sort(), ["bot-a", "bot-b", "bot-c"]);
      for (const id of ["bot-a", "bot-b", "bot-c"])
        assert.equal(new X509Certificate(readFileSync(join(dir, id, "cert.pem"))).subject, `CN=${id}`);
      // validity.factory (1 year by default), not the 30-day device validity: bundles wait in stock.
      const lifetimeDays = (pem: string) => {
        const c = new X509Certificate(pem);
        return (Date.parse(c.validTo) - Date.parse(c.validFrom)) / 86_400_000;
      };
      assert.ok(Math.abs(lifetimeDays(readFileSync(join(dir, "bot-a", "cert.pem"), "utf8")) - 365) < 0.01);
      const v = openssl([
        "verify",
        "-CAfile",
        join(fleet, "ca/root/cert.pem"),
        "-untrusted",
        join(fleet, "ca/local-factory-b/cert.pem"),
        ...["bot-a", "bot-b", "bot-c"].map((id) => join(dir, id, "cert.pem")),
      ]);
      assert.equal(v.status, 0, v.stdout + v.stderr);
      const db = new Database(join(fleet, "fleetpki.db"), { readonly: true });
      try {
        const groups = db.prepare("SELECT id, group_name FROM devices WHERE id LIKE 'bot-%' ORDER BY id").all();
        assert.deepEqual(groups, [
          { id: "bot-a", group_name: "line3" },
          { id: "bot-b", group_name: "line3" },
          { id: "bot-c", group_name: "line3" },
        ]);
      } finally {
        db.close();
      }
    });

    it("bad ranges, an unknown local CA and conflicting id options are one-line errors that issue nothing", () => {
      assertOneLineError(results.get("noDigits")!, /--ids "a\.\.b"/);
      assertOneLineError(results.get("backwards")!, /robot-5\.\.robot-1/);
      assertOneLineError(results.get("unknownLocal")!, /nowhere/);
      assertOneLineError(results.get("both")!, /--ids-file/);
      assertOneLineError(results.get("neither")!, /--ids/);
      for (const x of ["x1", "x2", "x3", "x4", "x5"]) assert.equal(existsSync(join(tmp.path, x)), false, `${x} must not be created`);
    });

    it("--validity sets the factory certificates' lifetime; a bad duration is a one-line error that issues nothing", () => {
      assertOk(results.get("validity")!, "issue-batch --validity 90d");
      const c = new X509Certificate(readFileSync(join(tmp.path, "ninety-days", "shelf-1", "cert.pem")));
      assert.ok(Math.abs((Date.parse(c.validTo) - Date.parse(c.validFrom)) / 86_400_000 - 90) < 0.01);
      assertOneLineError(results.get("badValidity")!, /--validity/);
      assert.equal(existsSync(join(tmp.path, "x6")), false);
    });
  });
});

describe("validity.factory", () => {
  const base = renderConfig(
    defaultConfig({
      name: "t",
      domain: "fleet.example",
      keyType: "p256",
      passphraseFile: "secrets/passphrase",
      serverNames: ["localhost"],
    }),
  );
  const withFactory = (value: unknown) => {
    const doc = parseYaml(base) as { validity: Record<string, unknown> };
    if (value === undefined) delete doc.validity.factory;
    else doc.validity.factory = value;
    return stringifyYaml(doc);
  };
  it("is written with its default, and a file from before it existed gets the default", () => {
    assert.equal(parseConfig(base).validity.factory, DEFAULT_FACTORY_VALIDITY);
    assert.equal(parseConfig(withFactory(undefined)).validity.factory, DEFAULT_FACTORY_VALIDITY);
    assert.equal(parseConfig(withFactory("90d")).validity.factory, "90d");
  });
  it("refuses a bad duration", () => {
    assert.throws(
      () => parseConfig(withFactory("soon")),
      (e: Error) => e instanceof ConfigError && /validity\.factory/.test(e.message),
    );
  });
});
