// The hash-chained audit log: `audit verify` on an intact log, and on copies whose SQLite file was
// tampered with directly (edit, delete, swap, truncate); `audit list` output and filters.
import assert from "node:assert/strict";
import { X509Certificate, createHash } from "node:crypto";
import { cpSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import Database from "better-sqlite3";
import { canonicalJson } from "../src/audit/log.js";
import { listAuditEvents, verifyFleetAudit, type AuditReport } from "../src/authority/audit-checkpoints.js";
import { addDevice } from "../src/authority/devices.js";
import { FleetServices } from "../src/authority/services.js";
import { initFleet } from "../src/authority/ca/init.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { ManualClock } from "./support/clock.js";
import { cliAsync, opensslCsr, tempDir, type RunResult, assertOneLineError } from "./helpers.js";

interface Row {
  seq: number;
  at: string;
  actor: string;
  action: string;
  subject: string;
  details: string;
  prev_hash: string;
  hash: string;
}

const GENESIS = "0".repeat(64);
const HOURS = 3_600_000;

/** The documented chain: SHA-256(prev_hash || "\n" || JSON([seq, at, actor, action, subject, details])). */
function chainHash(prev: string, r: Omit<Row, "prev_hash" | "hash">): string {
  return createHash("sha256")
    .update(prev)
    .update("\n")
    .update(JSON.stringify([r.seq, r.at, r.actor, r.action, r.subject, r.details]))
    .digest("hex");
}

function sortedJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .map((k) => [k, v[k]]),
        )
      : v,
  );
}

function withDb<T>(dir: string, fn: (db: Database.Database) => T): T {
  const db = new Database(join(dir, "fleetpki.db"));
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

describe("audit log", () => {
  const tmp = tempDir("fleetpki-audit-");
  const base = join(tmp.path, "fleet");
  let rows: Row[] = [];
  const results = new Map<string, RunResult>();
  const verdicts = new Map<string, AuditReport>();
  let sinceIso = "";
  // The hierarchy is created two hours ago, the devices now, so time filters have something to split.
  const initTime = new Date(Math.floor((Date.now() - 2 * HOURS) / 1000) * 1000 + 123);

  before(async () => {
    await initFleet({ dir: base, name: "Audit Robots", domain: "fleet.example", clock: new ManualClock(initTime) });
    const fleet = await FleetServices.open(base);
    try {
      await addDevice(fleet, { id: "robot-0001", group: "lab", labels: { site: "berlin" }, actor: "cli" });
      await addDevice(fleet, { id: "robot-0002", actor: "cli" });
      const { csr } = opensslCsr(tmp.path, "robot-0001");
      await issueDeviceCertificate(fleet, { deviceId: "robot-0001", csr: readFileSync(csr), actor: "cli" });
    } finally {
      await fleet.close();
    }
    rows = withDb(base, (db) => db.prepare("SELECT * FROM audit_log ORDER BY seq").all() as Row[]);
    assert.ok(rows.length >= 9, `enough events to tamper in the middle (${rows.length})`);
    sinceIso = rows[rows.length - 2]!.at;

    const copy = (name: string, tamper: (db: Database.Database) => void): string => {
      const dir = join(tmp.path, name);
      cpSync(base, dir, { recursive: true });
      withDb(dir, tamper);
      return dir;
    };
    const one = (info: Database.RunResult) => assert.equal(info.changes, 1, "the tampering touched exactly one row");
    const last = rows[rows.length - 1]!.seq;
    const dirs: Record<string, string> = {
      editDetails: copy("edit-details", (db) => one(db.prepare("UPDATE audit_log SET details = ? WHERE seq = 5").run('{"forged":true}'))),
      editAction: copy("edit-action", (db) => one(db.prepare("UPDATE audit_log SET action = 'ca.revoke' WHERE seq = 6").run())),
      rehashed: copy("rehashed", (db) => {
        // A careful forger also recomputes the edited row's own hash; the next row no longer links.
        const r = db.prepare("SELECT * FROM audit_log WHERE seq = 5").get() as Row;
        const forged = { ...r, subject: "ca:forged" };
        one(db.prepare("UPDATE audit_log SET subject = ?, hash = ? WHERE seq = 5").run(forged.subject, chainHash(r.prev_hash, forged)));
      }),
      deleteMiddle: copy("delete-middle", (db) => one(db.prepare("DELETE FROM audit_log WHERE seq = 5").run())),
      swap: copy("swap", (db) => {
        const [a, b] = db.prepare("SELECT * FROM audit_log WHERE seq IN (5, 6) ORDER BY seq").all() as Row[];
        const set = db.prepare(
          "UPDATE audit_log SET at = ?, actor = ?, action = ?, subject = ?, details = ?, prev_hash = ?, hash = ? WHERE seq = ?",
        );
        db.transaction(() => {
          one(set.run(b!.at, b!.actor, b!.action, b!.subject, b!.details, b!.prev_hash, b!.hash, 5));
          one(set.run(a!.at, a!.actor, a!.action, a!.subject, a!.details, a!.prev_hash, a!.hash, 6));
        })();
      }),
      deleteLast: copy("delete-last", (db) => {
        one(db.prepare("DELETE FROM audit_log WHERE seq = ?").run(last));
        assert.equal((db.prepare("SELECT seq FROM audit_head WHERE id = 1").get() as { seq: number }).seq, last, "audit_head untouched");
      }),
    };

    // The tampered copies are verified in-process (what `audit verify` runs); the CLI's own
    // error line is covered by audit-tamper.test.ts. Fewer processes keep this fast under load.
    for (const [k, d] of Object.entries(dirs)) {
      const fleet = await FleetServices.open(d);
      try {
        verdicts.set(k, await verifyFleetAudit(fleet));
      } finally {
        await fleet.close();
      }
    }
    const runs: [string, string[]][] = [
      ["verify", ["audit", "verify", "--dir", base]],
      ["list", ["audit", "list", "--dir", base, "--json"]],
      ["since1h", ["audit", "list", "--dir", base, "--json", "--since", "1h"]],
      ["sinceIso", ["audit", "list", "--dir", base, "--json", "--since", sinceIso]],
      ["limit", ["audit", "list", "--dir", base, "--json", "--limit", "2"]],
      ["badSince", ["audit", "list", "--dir", base, "--since", "yesterday"]],
      ["badLimit", ["audit", "list", "--dir", base, "--limit", "0"]],
    ];
    const out = await Promise.all(runs.map(([, args]) => cliAsync(args)));
    runs.forEach(([k], i) => results.set(k, out[i]!));
  });
  after(() => tmp.cleanup());

  it("audit verify passes on the untouched log", () => {
    const r = results.get("verify")!;
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`intact: ${rows.length} rows`));
    assert.ok(r.stdout.includes(rows[rows.length - 1]!.hash), "prints the head hash");
  });

  const cases: [string, string, () => number][] = [
    ["an edited details column", "editDetails", () => 5],
    ["an edited action column", "editAction", () => 6],
    ["an edited row whose own hash was recomputed", "rehashed", () => 6],
    ["a deleted middle row", "deleteMiddle", () => 5],
    ["two adjacent rows with swapped content", "swap", () => 5],
    ["a deleted last row (audit_head left alone)", "deleteLast", () => rows[rows.length - 1]!.seq],
  ];
  for (const [what, key, seq] of cases) {
    it(`audit verify detects ${what} and names the first bad sequence number`, () => {
      const report = verdicts.get(key)!;
      assert.equal(report.ok, false);
      assert.match(report.problems[0]!, new RegExp(`^audit log broken at sequence number ${seq()}\\b`), report.problems[0]);
    });
  }

  it("audit list --json returns the chained rows with details as objects", () => {
    const r = results.get("list")!;
    assert.equal(r.status, 0, r.stderr);
    const list = JSON.parse(r.stdout) as (Omit<Row, "details"> & { details: Record<string, unknown> })[];
    assert.equal(list.length, rows.length);
    let prev = GENESIS;
    list.forEach((row, i) => {
      assert.deepEqual(Object.keys(row).sort(), ["action", "actor", "at", "details", "hash", "prev_hash", "seq", "subject"]);
      assert.equal(row.seq, i + 1);
      assert.ok(!Number.isNaN(Date.parse(row.at)), row.at);
      assert.equal(typeof row.details, "object");
      assert.ok(row.details !== null && !Array.isArray(row.details));
      assert.equal(row.prev_hash, prev, `row ${row.seq} links to the previous one`);
      assert.equal(
        row.hash,
        chainHash(prev, { ...row, details: sortedJson(row.details) }),
        `row ${row.seq} hash follows the documented formula`,
      );
      prev = row.hash;
    });
    const actions = list.map((x) => `${x.action} ${x.subject}`);
    for (const expected of [
      "ca.create ca:root",
      "ca.create ca:devices",
      "ca.create ca:services",
      "ca.create ca:operators",
      "fleet.init fleet:fleet.example",
      "device.add device:robot-0001",
      "device.add device:robot-0002",
      "certificate.issue device:robot-0001",
    ])
      assert.ok(actions.includes(expected), `missing event ${expected}: ${actions.join(" | ")}`);
    const add = list.find((x) => x.subject === "device:robot-0001" && x.action === "device.add")!;
    assert.deepEqual(add.details, { group: "lab", labels: { site: "berlin" } });
    assert.equal(add.actor, "cli");
    const issue = list.find((x) => x.action === "certificate.issue" && x.subject === "device:robot-0001")!;
    assert.equal(issue.details.issuer, "devices");
    assert.match(String(issue.details.serial), /^[0-9a-f]+$/);
  });

  it("--since filters by duration and by ISO time", () => {
    const recent = rows.filter((r) => Date.parse(r.at) > Date.now() - 1.5 * HOURS);
    assert.ok(recent.length >= 3 && recent.length < rows.length, "the fixture has old and recent events");
    const h = results.get("since1h")!;
    assert.equal(h.status, 0, h.stderr);
    assert.deepEqual(
      (JSON.parse(h.stdout) as Row[]).map((r) => r.seq),
      recent.map((r) => r.seq),
    );
    const iso = results.get("sinceIso")!;
    assert.equal(iso.status, 0, iso.stderr);
    const got = (JSON.parse(iso.stdout) as Row[]).map((r) => r.seq);
    assert.deepEqual(
      got,
      rows.filter((r) => r.at >= sinceIso).map((r) => r.seq),
    );
    assert.ok(got.length >= 2 && got.length < recent.length + 1);
  });

  it("--limit 2 returns the first two events", () => {
    const r = results.get("limit")!;
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(
      (JSON.parse(r.stdout) as Row[]).map((x) => x.seq),
      [1, 2],
    );
  });

  it("init dates the hierarchy and every event it writes by the clock it is given", () => {
    const initRows = rows.filter((r) => r.actor === "cli:init");
    assert.ok(initRows.length >= 7, `init's events: ${initRows.map((r) => r.action).join(", ")}`);
    for (const r of initRows) assert.equal(r.at, initTime.toISOString(), `${r.action} ${r.subject}`);
    // The root is backdated a minute from that time, to whole seconds (as x509 times are).
    const root = new X509Certificate(readFileSync(join(base, "ca/root/cert.pem")));
    assert.equal(new Date(root.validFrom).getTime(), Math.floor(initTime.getTime() / 1000) * 1000 - 60_000);
  });

  it("audit list --since counts a duration back from the fleet's clock, not the machine's", async () => {
    const initSeqs = rows.filter((r) => r.actor === "cli:init").map((r) => r.seq);
    const list = async (clock?: ManualClock) => {
      const fleet = await FleetServices.open(base, clock ? { clock } : {});
      try {
        return (await listAuditEvents(fleet, { since: "1h" })).map((r) => r.seq);
      } finally {
        await fleet.close();
      }
    };
    // Half an hour after init by the fleet's clock, init's events are within the last hour.
    const shortlyAfterInit = await list(new ManualClock(initTime.getTime() + HOURS / 2));
    for (const seq of initSeqs) assert.ok(shortlyAfterInit.includes(seq), `event ${seq} is within the hour`);
    // By the machine's clock they are two hours old.
    const byMachine = await list();
    assert.ok(!initSeqs.some((seq) => byMachine.includes(seq)), "init's events are older than an hour by the system clock");
  });

  it("a bad --since or --limit is a one-line error", () => {
    assertOneLineError(results.get("badSince")!, /--since/);
    assertOneLineError(results.get("badLimit")!, /--limit/);
  });
});

describe("canonical JSON of event details", () => {
  it("sorts keys at every level and drops undefined, flat or nested", () => {
    assert.equal(canonicalJson({ b: 1, a: "x", c: null, d: undefined, e: true }), '{"a":"x","b":1,"c":null,"e":true}');
    assert.equal(canonicalJson({ z: [2, { b: 2, a: 1 }], a: { y: 1, x: 2 } }), '{"a":{"x":2,"y":1},"z":[2,{"a":1,"b":2}]}');
    assert.equal(canonicalJson({}), "{}");
    // integer-like keys as an object orders them (numerically), as the chain has always written them
    assert.equal(canonicalJson({ "10": 1, "9": 2, a: 3 }), '{"9":2,"10":1,"a":3}');
    assert.equal(canonicalJson({ s: 'quote " and \u2028' }), JSON.stringify({ s: 'quote " and \u2028' }));
  });
});
