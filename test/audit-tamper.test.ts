// `audit verify` against someone who can write the database: each case tampers with a copy of one
// real fleet (real SQLite file, real CLI-made checkpoints) the way the review of issue 9 did, and
// must be reported specifically. Cases that rewrite the chain itself are caught by a checkpoint kept
// outside the fleet; changes outside the log by replaying the state tables from it.
import assert from "node:assert/strict";
import { createHash, randomUUID, sign } from "node:crypto";
import { cpSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import Database from "better-sqlite3";
import { GENESIS_HASH, listAudit, rowHash } from "../src/audit/log.js";
import { CheckpointSchedule, exportCheckpoint, verifyFleetAudit, writeCheckpoint } from "../src/authority/audit-checkpoints.js";
import type { AuditReport } from "../src/authority/audit-checkpoints.js";
import { createLocalCa } from "../src/authority/ca/cas.js";
import { addDevice } from "../src/authority/devices.js";
import {
  decideRequest,
  enrollByApproval,
  enrollWithFactoryCertificate,
  enrollWithToken,
  renewWithCertificate,
} from "../src/authority/enroll/enrollment.js";
import { issueBatch } from "../src/authority/issue/batch.js";
import { FleetServices } from "../src/authority/services.js";
import { initFleet } from "../src/authority/ca/init.js";
import { issueDeviceCertificate } from "../src/authority/issue/issuance.js";
import { holdDevice, revokeCertificate, revokeDevice } from "../src/authority/status/revocation.js";
import { createToken } from "../src/authority/enroll/tokens.js";
import { parseConfig, renderConfig, defaultConfig } from "../src/config/config.js";
import { readPassphraseFile, readPrivateKey } from "../src/keys/keys.js";
import { fromPem } from "../src/x509/pem.js";
import { assertOneLineError, cliAsync, openssl, opensslCsr, tempDir } from "./helpers.js";
import { editConfig } from "./server-helpers.js";
import { sqliteStore } from "./support/sqlite.js";

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

function withDb<T>(dir: string, fn: (db: Database.Database) => T): T {
  const db = new Database(join(dir, "fleetpki.db"));
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

/** What an attacker with write access does after changing row `from`: rehash every row from there on and move the head. */
function rechain(db: Database.Database, from: number): void {
  const rows = db.prepare("SELECT * FROM audit_log WHERE seq >= ? ORDER BY seq").all(from) as Row[];
  let prev = from === 1 ? GENESIS_HASH : (db.prepare("SELECT hash FROM audit_log WHERE seq = ?").get(from - 1) as { hash: string }).hash;
  const update = db.prepare("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?");
  for (const r of rows) {
    const hash = rowHash(prev, r);
    update.run(prev, hash, r.seq);
    prev = hash;
  }
  const last = rows[rows.length - 1] ?? (db.prepare("SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1").get() as Row);
  db.prepare("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1").run(last.seq, prev);
}

function insertRow(db: Database.Database, row: Row): void {
  db.prepare("INSERT INTO audit_log VALUES (@seq, @at, @actor, @action, @subject, @details, @prev_hash, @hash)").run(row);
}

/** Inserts a row with these columns (a copy of another row, changed). */
function insertLike(db: Database.Database, table: string, row: Record<string, unknown>): void {
  const columns = Object.keys(row);
  db.prepare(`INSERT INTO ${table} (${columns.join(", ")}) VALUES (${columns.map((c) => `@${c}`).join(", ")})`).run(row);
}

const attackerHash = createHash("sha256").update("fpt_attacker").digest("hex");
const revertStatus = "UPDATE certificates SET status = 'valid', revoked_at = NULL, revocation_reason = NULL WHERE serial = ?";

/** Appends a correctly chained event and moves the head, as fleetpki itself would (`seq`: a row outside the chain, head left alone). */
function forgeAppend(db: Database.Database, event: Pick<Row, "actor" | "action" | "subject" | "details">, seq?: number): void {
  const head = db.prepare("SELECT seq, hash FROM audit_head WHERE id = 1").get() as { seq: number; hash: string };
  const row = { seq: seq ?? head.seq + 1, at: new Date().toISOString(), ...event };
  const hash = rowHash(head.hash, row);
  insertRow(db, { ...row, prev_hash: head.hash, hash });
  if (seq === undefined) db.prepare("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1").run(row.seq, hash);
}

describe("audit verify against a database rewritten by an attacker", () => {
  const tmp = tempDir("fleetpki-tamper-");
  const base = join(tmp.path, "fleet");
  const outside = join(tmp.path, "outside");
  const f = {
    cert1: "",
    cert2: "",
    cert3: "",
    cert4a: "",
    usedToken: "",
    unusedToken: "",
    checkpointSeq: 0,
    rows: [] as Row[],
    pendingRequest: "",
    renewal: "",
  };
  const reports = new Map<string, AuditReport>();

  async function verifyCopy(dir: string, checkpoints: boolean): Promise<AuditReport> {
    const fleet = await FleetServices.open(dir);
    try {
      return await verifyFleetAudit(fleet, { checkpointsDir: checkpoints ? outside : undefined });
    } finally {
      await fleet.close();
    }
  }

  const cases: { name: string; checkpoints: boolean; tamper: (db: Database.Database) => void; expect: RegExp[] }[] = [
    {
      name: "truncation with a head update (and the stored checkpoints after it deleted)",
      checkpoints: true,
      tamper: (db) => {
        const keep = f.checkpointSeq - 2;
        db.prepare("DELETE FROM audit_log WHERE seq > ?").run(keep);
        db.prepare("DELETE FROM audit_checkpoints WHERE seq > ?").run(keep);
        const last = db.prepare("SELECT hash FROM audit_log WHERE seq = ?").get(keep) as { hash: string };
        db.prepare("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1").run(keep, last.hash);
      },
      expect: [/checkpoint .*outside.*: the log has no row \d+ any more \(truncated or wiped\)/],
    },
    {
      name: "a correctly chained forged append recording a revocation the tables do not have",
      checkpoints: false,
      tamper: (db) =>
        forgeAppend(db, {
          actor: "cli",
          action: "certificate.revoke",
          subject: `certificate:${f.cert1}`,
          details: JSON.stringify({ cas: ["devices"], reason: "keyCompromise", serials: [f.cert1], subject: "robot-0001" }),
        }),
      expect: [/certificate [0-9a-f]+ \(device robot-0001\) is valid in the table, but the log makes it revoked \(keyCompromise\)/],
    },
    {
      name: "a forged tail: rolled back before the checkpoint and re-appended, correctly chained",
      checkpoints: true,
      tamper: (db) => {
        const keep = f.checkpointSeq - 1;
        const tail = db.prepare("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq").all(keep) as Row[];
        db.prepare("DELETE FROM audit_log WHERE seq > ?").run(keep);
        db.prepare("DELETE FROM audit_checkpoints").run();
        const last = db.prepare("SELECT hash FROM audit_log WHERE seq = ?").get(keep) as { hash: string };
        db.prepare("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1").run(keep, last.hash);
        for (const r of tail) forgeAppend(db, { ...r, actor: "someone-else" });
      },
      expect: [/checkpoint .*outside.*: row \d+ now has another hash \(the log was rewritten\)/],
    },
    {
      name: "an edited row followed by rehashing every later row and the head",
      checkpoints: true,
      tamper: (db) => {
        const revoke = f.rows.find((r) => r.action === "device.revoke")!;
        db.prepare("UPDATE audit_log SET actor = 'framed-operator' WHERE seq = ?").run(revoke.seq);
        rechain(db, revoke.seq);
      },
      // The lazy forger leaves the stored checkpoints: they no longer match either.
      expect: [/checkpoint .*outside.*: row \d+ now has another hash/, /stored checkpoint \d+ .*now has another hash/],
    },
    {
      name: "a full wipe of the log, its head and the stored checkpoints",
      checkpoints: true,
      tamper: (db) => {
        db.prepare("DELETE FROM audit_log").run();
        db.prepare("DELETE FROM audit_head").run();
        db.prepare("DELETE FROM audit_checkpoints").run();
      },
      expect: [/audit log broken at sequence number 1: the log is empty.*wiped/, /has no row \d+ any more/],
    },
    {
      name: "a row with sequence number 0",
      checkpoints: false,
      tamper: (db) => forgeAppend(db, { actor: "cli", action: "device.unhold", subject: "device:robot-0003", details: "{}" }, 0),
      expect: [/sequence number 0: 1 row\(s\) with a sequence number <= 0/],
    },
    {
      name: "a negative sequence number chained from the genesis hash",
      checkpoints: false,
      tamper: (db) => {
        const row = { seq: -3, at: new Date(0).toISOString(), actor: "cli", action: "ca.revoke", subject: "ca:devices", details: "{}" };
        insertRow(db, { ...row, prev_hash: GENESIS_HASH, hash: rowHash(GENESIS_HASH, row) });
      },
      expect: [/sequence number -3: 1 row\(s\) with a sequence number <= 0/],
    },
    {
      name: "un-revoking a certificate",
      checkpoints: false,
      tamper: (db) => db.prepare(revertStatus).run(f.cert2),
      expect: [/certificate [0-9a-f]+ \(device robot-0002\) is valid in the table, but the log makes it revoked \(keyCompromise\)/],
    },
    {
      name: "releasing a held device and its certificate behind the log",
      checkpoints: false,
      tamper: (db) => {
        db.prepare("UPDATE devices SET status = 'active' WHERE id = 'robot-0003'").run();
        db.prepare(revertStatus).run(f.cert3);
      },
      expect: [
        /device robot-0003 is active in the table, but the log makes it held/,
        /certificate [0-9a-f]+ \(device robot-0003\) is valid in the table, but the log makes it on hold/,
      ],
    },
    {
      name: "planting a token hash (a token row no event created)",
      checkpoints: false,
      tamper: (db) =>
        db
          .prepare("INSERT INTO enrollment_tokens VALUES (?, 'robot-0001', ?, ?, ?, NULL, 'cli', NULL)")
          .run(randomUUID(), attackerHash, new Date().toISOString(), new Date(Date.now() + 86_400_000).toISOString()),
      expect: [/token [0-9a-f-]+ of device robot-0001 is in the enrollment_tokens table, but no event created it \(planted\)/],
    },
    {
      name: "replacing the hash of an unused token",
      checkpoints: false,
      tamper: (db) => db.prepare("UPDATE enrollment_tokens SET token_hash = ? WHERE id = ?").run(attackerHash, f.unusedToken),
      expect: [/token [0-9a-f-]+ of device robot-0004: its hash is not the one event \d+ recorded/],
    },
    {
      name: "marking a used token unused again",
      checkpoints: false,
      tamper: (db) => db.prepare("UPDATE enrollment_tokens SET used_at = NULL WHERE id = ?").run(f.usedToken),
      expect: [/token [0-9a-f-]+ of device robot-0001 is unused in the table, but event \d+ used or cancelled it/],
    },
    {
      name: "deleting a certificate row",
      checkpoints: false,
      tamper: (db) => db.prepare("DELETE FROM certificates WHERE serial = ?").run(f.cert3),
      expect: [/certificate [0-9a-f]+ issued by event \d+ is missing from the certificates table \(deleted\)/],
    },
    {
      name: "planting a certificate row",
      checkpoints: false,
      tamper: (db) => {
        const row = db.prepare("SELECT * FROM certificates WHERE serial = ?").get(f.cert1) as Record<string, unknown>;
        insertLike(db, "certificates", { ...row, serial: "0badc0de" });
      },
      expect: [/certificate 0badc0de \(device robot-0001\) is in the certificates table, but no event issued it \(planted\)/],
    },
    {
      name: "replacing a certificate's DER",
      checkpoints: false,
      tamper: (db) =>
        db.prepare("UPDATE certificates SET der = (SELECT der FROM certificates WHERE serial = ?) WHERE serial = ?").run(f.cert3, f.cert1),
      expect: [/certificate [0-9a-f]+ \(device robot-0001\): its DER does not match its recorded fingerprint/],
    },
    {
      name: "planting a rogue local CA",
      checkpoints: false,
      tamper: (db) => {
        const ca = db.prepare("SELECT * FROM cas WHERE id = 'local-line1'").get() as Record<string, unknown>;
        insertLike(db, "cas", { ...ca, id: "local-rogue", serial: "0dd" });
      },
      expect: [/CA local-rogue is in the cas table, but no event created it \(planted\)/],
    },
    {
      name: "deleting a device",
      checkpoints: false,
      tamper: (db) => db.prepare("DELETE FROM devices WHERE id = 'robot-0005'").run(),
      expect: [/device robot-0005 added by event \d+ is missing from the devices table \(deleted\)/],
    },
    {
      name: "approving an enrollment request behind the log",
      checkpoints: false,
      tamper: (db) =>
        db
          .prepare("UPDATE enrollment_requests SET status = 'approved', decided_by = 'cli', decided_at = ? WHERE id = ?")
          .run(new Date().toISOString(), f.pendingRequest),
      expect: [/enrollment request [0-9a-f-]+ of device robot-0008 is approved in the table, but the log makes it pending/],
    },
    {
      name: "planting an approved enrollment request",
      checkpoints: false,
      tamper: (db) => {
        const row = db.prepare("SELECT * FROM enrollment_requests WHERE id = ?").get(f.pendingRequest) as Record<string, unknown>;
        insertLike(db, "enrollment_requests", { ...row, id: randomUUID(), status: "approved", key_fingerprint: `sha256:${attackerHash}` });
      },
      expect: [/enrollment request [0-9a-f-]+ of device robot-0008 is in the enrollment_requests table, but no event made it \(planted\)/],
    },
    {
      name: "a correctly chained forged append issuing by approval of a request no event approved",
      checkpoints: false,
      tamper: (db) => {
        const row = db.prepare("SELECT * FROM certificates WHERE serial = ?").get(f.cert1) as Record<string, unknown>;
        insertLike(db, "certificates", { ...row, serial: "0a11ce" });
        db.prepare("UPDATE enrollment_requests SET status = 'issued', certificate_serial = '0a11ce' WHERE id = ?").run(f.pendingRequest);
        const details = {
          serial: "0a11ce",
          fingerprint_sha256: row.fingerprint_sha256,
          not_after: row.not_after,
          provisioner: "approval",
          request: f.pendingRequest,
        };
        forgeAppend(db, {
          actor: "approval:cli",
          action: "certificate.issue",
          subject: "device:robot-0008",
          details: JSON.stringify(details),
        });
      },
      expect: [/event \d+ issues 0a11ce to robot-0008 by approval of request [0-9a-f-]+, which no event approved/],
    },
    {
      name: "deleting a factory enrollment (an unlogged reprovision)",
      checkpoints: false,
      tamper: (db) => db.prepare("DELETE FROM factory_enrollments WHERE device_id = 'robot-0006'").run(),
      expect: [
        /the factory enrollment of robot-0006 by event \d+ is missing from factory_enrollments, and no device.reprovision event removed it/,
      ],
    },
    {
      name: "planting a factory enrollment for a device that never enrolled with one",
      checkpoints: false,
      tamper: (db) => {
        const row = db.prepare("SELECT * FROM factory_enrollments WHERE device_id = 'robot-0006'").get() as Record<string, unknown>;
        insertLike(db, "factory_enrollments", { ...row, device_id: "robot-0005" });
      },
      expect: [/device robot-0005 has a factory enrollment in the table, but the log has none since its last reprovision \(planted\)/],
    },
    {
      name: "deleting a renewal (so the certificate renews twice)",
      checkpoints: false,
      tamper: (db) => db.prepare("DELETE FROM renewals WHERE serial = ?").run(f.renewal),
      expect: [/the renewal of [0-9a-f]+ by event \d+ is missing from the renewals table \(deleted: it could renew again\)/],
    },
    {
      name: "pointing a renewal at another certificate",
      checkpoints: false,
      tamper: (db) => db.prepare("UPDATE renewals SET serial = ? WHERE serial = ?").run(f.cert3, f.renewal),
      expect: [/the renewal of [0-9a-f]+ is [0-9a-f]+ in the table, but event \d+ renewed it with [0-9a-f]+/],
    },
    {
      name: "a stored checkpoint whose document was edited",
      checkpoints: false,
      tamper: (db) => {
        const cp = db.prepare("SELECT * FROM audit_checkpoints ORDER BY seq DESC LIMIT 1").get() as { seq: number; document: string };
        const edited = cp.document.replace(/hash: ([0-9a-f])/, (_m, c: string) => `hash: ${c === "0" ? "1" : "0"}`);
        db.prepare("UPDATE audit_checkpoints SET document = ? WHERE seq = ?").run(edited, cp.seq);
      },
      expect: [/stored checkpoint \d+: the signature does not verify with the audit certificate/],
    },
  ];

  before(async () => {
    await initFleet({ dir: base, name: "Tamper Robots", domain: "fleet.example" });
    editConfig(base, (d) => {
      d.enrollment.approval = true;
    });
    const fleet = await FleetServices.open(base);
    try {
      for (const id of ["robot-0001", "robot-0002", "robot-0003", "robot-0004", "robot-0005"])
        await addDevice(fleet, { id, group: "lab", labels: { site: "berlin" }, actor: "cli" });
      const csr = (name: string) => readFileSync(opensslCsr(tmp.path, name).csr);
      const t1 = await createToken(fleet, { deviceId: "robot-0001", actor: "cli" });
      const source = { via: "test" };
      f.cert1 = (await enrollWithToken(fleet, { deviceId: "robot-0001", token: t1.token, csr: csr("robot-0001"), source })).serial;
      const t2 = await createToken(fleet, { deviceId: "robot-0002", actor: "cli" });
      f.cert2 = (await enrollWithToken(fleet, { deviceId: "robot-0002", token: t2.token, csr: csr("robot-0002"), source })).serial;
      await createToken(fleet, { deviceId: "robot-0002", actor: "cli" }); // cancelled by the revocation
      await revokeDevice(fleet, { deviceId: "robot-0002", reason: "keyCompromise", actor: "cli" });
      f.cert3 = (await issueDeviceCertificate(fleet, { deviceId: "robot-0003", csr: csr("robot-0003"), actor: "cli" })).serial;
      await holdDevice(fleet, { deviceId: "robot-0003", actor: "cli" });
      f.cert4a = (await issueDeviceCertificate(fleet, { deviceId: "robot-0004", csr: csr("robot-0004"), actor: "cli" })).serial;
      await issueDeviceCertificate(fleet, { deviceId: "robot-0004", csr: csr("robot-0004b"), actor: "cli" });
      await revokeCertificate(fleet, { serial: f.cert4a, reason: "superseded", actor: "cli" });
      await createToken(fleet, { deviceId: "robot-0004", actor: "cli" });
      await createLocalCa(fleet, { name: "line1", actor: "cli" });
      // Enrollment state outside the certificates: a factory enrollment, a renewal, approval requests.
      const bundles = join(tmp.path, "bundles");
      await issueBatch(fleet, { localName: "line1", ids: ["robot-0006"], outDir: bundles, actor: "cli" });
      const factoryDer = fromPem(readFileSync(join(bundles, "robot-0006", "cert.pem"), "utf8"), ["CERTIFICATE"]);
      await enrollWithFactoryCertificate(fleet, { clientCertificate: { der: factoryDer }, csr: csr("robot-0006"), source });
      const cert1Der = (
        await sqliteStore(fleet).db.selectFrom("certificates").select("der").where("serial", "=", f.cert1).executeTakeFirstOrThrow()
      ).der;
      f.renewal = (
        await renewWithCertificate(fleet, { clientCertificate: { der: Buffer.from(cert1Der) }, csr: csr("robot-0001b"), source })
      ).serial;
      const csr7 = csr("robot-0007");
      const asked = await enrollByApproval(fleet, { deviceId: "robot-0007", csr: csr7, source });
      assert.equal(asked.status, "pending");
      const requestId = asked.status === "pending" ? asked.requestId : "";
      await decideRequest(fleet, { deviceId: "robot-0007", requestId, approve: true, actor: "cli" });
      assert.equal((await enrollByApproval(fleet, { deviceId: "robot-0007", csr: csr7, source })).status, "issued");
      const pending = await enrollByApproval(fleet, { deviceId: "robot-0008", csr: csr("robot-0008"), source });
      assert.equal(pending.status, "pending");
      f.pendingRequest = pending.status === "pending" ? pending.requestId : "";
      const denied = await enrollByApproval(fleet, { deviceId: "robot-0009", csr: csr("robot-0009"), source });
      assert.equal(denied.status, "pending");
      await decideRequest(fleet, { deviceId: "robot-0009", approve: false, actor: "cli" });
    } finally {
      await fleet.close();
    }
    // The checkpoint kept outside, exported by the real CLI.
    mkdirSync(outside);
    const exported = await cliAsync(["audit", "checkpoint", "--dir", base, "--out", outside]);
    assert.equal(exported.status, 0, exported.stderr);
    withDb(base, (db) => {
      f.rows = db.prepare("SELECT * FROM audit_log ORDER BY seq").all() as Row[];
      f.checkpointSeq = (db.prepare("SELECT seq FROM audit_head").get() as { seq: number }).seq;
      f.usedToken = (db.prepare("SELECT id FROM enrollment_tokens WHERE device_id = 'robot-0001'").get() as { id: string }).id;
      f.unusedToken = (db.prepare("SELECT id FROM enrollment_tokens WHERE device_id = 'robot-0004'").get() as { id: string }).id;
    });
    assert.ok(f.rows.length > 20, `a fleet with history (${f.rows.length} rows)`);

    reports.set("intact", await verifyCopy(base, true));
    for (const [i, c] of cases.entries()) {
      const dir = join(tmp.path, `case-${i}`);
      cpSync(base, dir, { recursive: true });
      withDb(dir, c.tamper);
      reports.set(c.name, await verifyCopy(dir, c.checkpoints));
    }
  });
  after(() => tmp.cleanup());

  it("passes the untouched fleet, with its checkpoint kept outside and every stored one", () => {
    const r = reports.get("intact")!;
    assert.deepEqual(r.problems, []);
    assert.equal(r.ok, true);
    assert.equal(r.checkpoints.outside, 1);
    assert.ok(r.checkpoints.stored >= 5, `a checkpoint after each CA operation (${r.checkpoints.stored})`);
    assert.equal(r.checkpoints.newestOutside?.seq, f.checkpointSeq);
  });

  for (const c of cases) {
    it(`detects ${c.name}${c.checkpoints ? " (checkpoint kept outside)" : ""}`, () => {
      const r = reports.get(c.name)!;
      assert.equal(r.ok, false, `went unnoticed: ${JSON.stringify(r.notes)}`);
      for (const pattern of c.expect)
        assert.ok(
          r.problems.some((p) => pattern.test(p)),
          `no problem matches ${pattern}:\n${r.problems.join("\n")}`,
        );
    });
  }

  it("audit list does not show rows with sequence numbers <= 0 first", async () => {
    const dir = join(tmp.path, `case-${cases.findIndex((c) => c.name.startsWith("a row with sequence number 0"))}`);
    const fleet = await FleetServices.open(dir);
    try {
      const rows = await listAudit(fleet.store.ops.audit, { limit: 3 });
      assert.deepEqual(
        rows.map((r) => r.seq),
        [1, 2, 3],
      );
    } finally {
      await fleet.close();
    }
  });

  it("the CLI exits non-zero with one line naming the problem, and lists every problem on stdout", async () => {
    const dir = join(tmp.path, `case-${cases.findIndex((c) => c.name.startsWith("an edited row followed"))}`);
    const [broken, intact] = await Promise.all([
      cliAsync(["audit", "verify", "--dir", dir, "--checkpoints", outside]),
      cliAsync(["audit", "verify", "--dir", base, "--checkpoints", outside]),
    ]);
    assertOneLineError(broken, /checkpoint .*: row \d+ now has another hash \(the log was rewritten\) \(and \d+ more problem/);
    assert.match(broken.stdout, /^problem: stored checkpoint/m);
    assert.equal(intact.status, 0, intact.stderr);
    assert.match(intact.stdout, new RegExp(`intact: ${f.rows.length} rows.*1 kept outside verified, the newest at row ${f.checkpointSeq}`));
  });

  it("refuses to sign a checkpoint of a log that no longer extends the newest stored checkpoint", async () => {
    const dir = join(tmp.path, "refuse");
    cpSync(base, dir, { recursive: true });
    withDb(dir, (db) => {
      db.prepare("UPDATE audit_log SET actor = 'framed' WHERE seq = 3").run();
      rechain(db, 3);
      forgeAppend(db, { actor: "cli", action: "fleet.note", subject: "fleet:fleet.example", details: "{}" });
    });
    const fleet = await FleetServices.open(dir);
    try {
      await assert.rejects(writeCheckpoint(fleet), /refusing to sign a checkpoint: the log does not extend checkpoint \d+/);
    } finally {
      await fleet.close();
    }
  });

  it("rejects checkpoint files that are altered, from another fleet, or signed by a key that is not the audit key", async () => {
    const file = join(outside, readdirSync(outside)[0]!);
    const doc = JSON.parse(readFileSync(file, "utf8")) as Record<string, string>;
    const dirs = { altered: join(tmp.path, "cp-altered"), foreign: join(tmp.path, "cp-foreign"), server: join(tmp.path, "cp-server") };
    for (const d of Object.values(dirs)) mkdirSync(d);
    writeFileSync(join(dirs.altered, "cp.json"), JSON.stringify({ ...doc, payload: doc.payload!.replace(/seq: \d+/, "seq: 3") }));
    const foreign = doc.payload!.replace("fleet: fleet.example", "fleet: other.example");
    writeFileSync(join(dirs.foreign, "cp.json"), JSON.stringify({ ...doc, payload: foreign }));
    // Signed correctly, but by the TLS server key: only the audit certificate may sign checkpoints.
    const serverKey = readPrivateKey(join(base, "server", "key.pem"), readPassphraseFile(join(base, "secrets", "passphrase")));
    writeFileSync(
      join(dirs.server, "cp.json"),
      JSON.stringify({
        ...doc,
        signature: sign("sha256", Buffer.from(doc.payload!), serverKey).toString("base64"),
        certificate: readFileSync(join(base, "server", "cert.pem"), "utf8"),
      }),
    );
    const fleet = await FleetServices.open(base);
    try {
      const problems = async (dir: string) => (await verifyFleetAudit(fleet, { checkpointsDir: dir })).problems.join("\n");
      assert.match(await problems(dirs.altered), /cp\.json: the signature does not verify with the audit certificate/);
      assert.match(await problems(dirs.foreign), /cp\.json: it is for fleet other\.example, not fleet\.example/);
      assert.match(await problems(dirs.server), /cp\.json: the signing certificate is not an audit certificate/);
      await assert.rejects(verifyFleetAudit(fleet, { checkpointsDir: join(tmp.path, "cp-none") }), /not a readable directory/);
    } finally {
      await fleet.close();
    }
  });

  it("openssl verifies an exported checkpoint as docs/audit.md shows (chain to the root, then the signature)", () => {
    const doc = JSON.parse(readFileSync(join(outside, readdirSync(outside)[0]!), "utf8")) as Record<string, string>;
    const dir = join(tmp.path, "openssl");
    mkdirSync(dir);
    const p = (n: string) => join(dir, n);
    writeFileSync(p("payload.txt"), doc.payload!);
    writeFileSync(p("sig.bin"), Buffer.from(doc.signature!, "base64"));
    writeFileSync(p("audit.pem"), doc.certificate!);
    writeFileSync(p("chain.pem"), doc.chain!);
    const root = join(base, "ca", "root", "cert.pem");
    const chain = openssl(["verify", "-purpose", "any", "-CAfile", root, "-untrusted", p("chain.pem"), p("audit.pem")]);
    assert.equal(chain.status, 0, chain.stderr);
    const pub = openssl(["x509", "-in", p("audit.pem"), "-pubkey", "-noout", "-out", p("pub.pem")]);
    assert.equal(pub.status, 0, pub.stderr);
    const good = openssl(["dgst", "-sha256", "-verify", p("pub.pem"), "-signature", p("sig.bin"), p("payload.txt")]);
    assert.equal(good.status, 0, good.stderr);
    assert.match(good.stdout, /Verified OK/);
    writeFileSync(p("payload.txt"), doc.payload!.replace(/seq: \d+/, "seq: 1"));
    assert.notEqual(openssl(["dgst", "-sha256", "-verify", p("pub.pem"), "-signature", p("sig.bin"), p("payload.txt")]).status, 0);
  });
});

describe("the audit key", () => {
  const tmp = tempDir("fleetpki-auditkey-");
  after(() => tmp.cleanup());

  it("is made at init under the services CA, encrypted at rest, and replaced (audited) on first need once no longer valid", async () => {
    const dir = join(tmp.path, "fleet");
    await initFleet({ dir, name: "Key Robots", domain: "fleet.example" });
    assert.match(readFileSync(join(dir, "audit", "key.pem"), "utf8"), /BEGIN ENCRYPTED PRIVATE KEY/);
    const fleet = await FleetServices.open(dir);
    try {
      const first = await sqliteStore(fleet)
        .db.selectFrom("certificates")
        .select(["serial", "issuer_ca"])
        .where("kind", "=", "audit")
        .execute();
      assert.deepEqual(
        first.map((c) => c.issuer_ca),
        ["services"],
      );
      // What an older fleet (no audit key) or a revoked one goes through: the next checkpoint makes a new key.
      await revokeCertificate(fleet, { serial: first[0]!.serial, reason: "superseded", actor: "cli" });
      const now = await sqliteStore(fleet).db.selectFrom("certificates").select(["serial", "status"]).where("kind", "=", "audit").execute();
      assert.equal(now.length, 2);
      assert.equal(now.find((c) => c.serial !== first[0]!.serial)?.status, "valid");
      const events = await sqliteStore(fleet)
        .db.selectFrom("audit_log")
        .select("action")
        .where("subject", "=", "audit:fleet.example")
        .execute();
      assert.equal(events.length, 2, "both audit keys were issued with an audit event");
      const report = await verifyFleetAudit(fleet);
      assert.deepEqual(report.problems, []);
      const head = await sqliteStore(fleet).db.selectFrom("audit_head").select("seq").executeTakeFirstOrThrow();
      const latest = await sqliteStore(fleet)
        .db.selectFrom("audit_checkpoints")
        .select("seq")
        .orderBy("seq", "desc")
        .executeTakeFirstOrThrow();
      assert.equal(latest.seq, head.seq, "the revocation and the new key are covered by a checkpoint");
    } finally {
      await fleet.close();
    }
  });

  it(
    "refuses checkpoints signed by an audit-like certificate from the devices CA, and by an audit key " + "revoked for compromise",
    async () => {
      const dir = join(tmp.path, "pin");
      await initFleet({ dir, name: "Pin Robots", domain: "fleet.example" });
      const fleet = await FleetServices.open(dir);
      try {
        await addDevice(fleet, { id: "robot-0001", actor: "cli" });
        const exportDir = join(tmp.path, "pin-out");
        mkdirSync(exportDir);
        const good = await exportCheckpoint(fleet, exportDir, "cli");
        const doc = JSON.parse(good.document) as Record<string, string>;
        // Whoever holds the devices CA key (or a factory line's local CA) mints a document-signing
        // certificate naming the audit identity, and signs a checkpoint of a rewritten log with it.
        const p = (n: string) => join(tmp.path, `pin-${n}`);
        writeFileSync(
          p("ext.cnf"),
          `[x]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n` +
            `extendedKeyUsage=1.3.6.1.5.5.7.3.36\nsubjectAltName=URI:spiffe://fleet.example/service/audit\n`,
        );
        const req = opensslCsr(tmp.path, "pin-audit");
        const ca = (n: string) => join(dir, "ca", "devices", n);
        const x509 = openssl([
          "x509",
          "-req",
          "-in",
          req.csr,
          "-CA",
          ca("cert.pem"),
          "-CAkey",
          ca("key.pem"),
          "-passin",
          `file:${join(dir, "secrets", "passphrase")}`,
          "-CAcreateserial",
          "-days",
          "30",
          "-extfile",
          p("ext.cnf"),
          "-extensions",
          "x",
          "-out",
          p("cert.pem"),
        ]);
        assert.equal(x509.status, 0, x509.stderr);
        const forgedDir = join(tmp.path, "pin-forged");
        mkdirSync(forgedDir);
        const key = readFileSync(req.key, "utf8");
        writeFileSync(
          join(forgedDir, "cp.json"),
          JSON.stringify({
            ...doc,
            signature: sign("sha256", Buffer.from(doc.payload!), key).toString("base64"),
            certificate: readFileSync(p("cert.pem"), "utf8"),
            chain: readFileSync(ca("cert.pem"), "utf8"),
          }),
        );
        const forged = await verifyFleetAudit(fleet, { checkpointsDir: forgedDir });
        assert.match(forged.problems.join("\n"), /cp\.json: the audit certificate is not issued by this fleet's services CA/);
        assert.deepEqual((await verifyFleetAudit(fleet, { checkpointsDir: exportDir })).problems, [], "the real one passes");

        // The audit key revoked as compromised: nothing it signed is trusted any more.
        const auditCert = await sqliteStore(fleet)
          .db.selectFrom("certificates")
          .select("serial")
          .where("kind", "=", "audit")
          .executeTakeFirstOrThrow();
        await revokeCertificate(fleet, { serial: auditCert.serial, reason: "keyCompromise", actor: "cli" });
        const revoked = await verifyFleetAudit(fleet, { checkpointsDir: exportDir });
        const text = revoked.problems.join("\n");
        assert.match(text, new RegExp(`checkpoint-[^:]*: its audit certificate ${auditCert.serial} is revoked \\(keyCompromise\\)`));
        assert.match(text, new RegExp(`stored checkpoint \\d+: its audit certificate ${auditCert.serial} is revoked`));
      } finally {
        await fleet.close();
      }
    },
  );

  it("serve's schedule writes a checkpoint only when the head moved; export goes to a file or a directory", async () => {
    const dir = join(tmp.path, "sched");
    await initFleet({ dir, name: "Sched Robots", domain: "fleet.example" });
    const fleet = await FleetServices.open(dir);
    try {
      const count = async () => (await sqliteStore(fleet).db.selectFrom("audit_checkpoints").select("seq").execute()).length;
      const errors: unknown[] = [];
      const schedule = new CheckpointSchedule(fleet, 3_600_000, (e) => errors.push(e));
      await schedule.start();
      const before = await count();
      await schedule.tick();
      assert.equal(await count(), before, "no new checkpoint for an unchanged head");
      await addDevice(fleet, { id: "robot-0001", actor: "cli" });
      await schedule.tick();
      assert.equal(await count(), before + 1);
      await schedule.stop();
      assert.deepEqual(errors, []);
      const outDir = join(tmp.path, "out");
      mkdirSync(outDir);
      const a = await exportCheckpoint(fleet, outDir, "cli");
      assert.equal(a.created, false, "the head has not moved since the schedule's checkpoint");
      assert.match(a.file, /checkpoint-\d{8}-[0-9a-f]{12}\.json$/);
      const b = await exportCheckpoint(fleet, join(tmp.path, "one.json"), "cli");
      assert.equal(readFileSync(b.file, "utf8"), readFileSync(a.file, "utf8"));
    } finally {
      await fleet.close();
    }
  });

  it("audit.checkpoint_interval is read from fleetpki.yaml, defaults to 5m, and bad values are refused", () => {
    const config = defaultConfig({ name: "x", domain: "fleet.example", keyType: "p256", passphraseFile: "p", serverNames: ["a"] });
    const text = renderConfig(config);
    assert.equal(parseConfig(text).audit.checkpoint_interval, "5m");
    assert.equal(parseConfig(text.replace(/checkpoint_interval: \S+/, "checkpoint_interval: 1h")).audit.checkpoint_interval, "1h");
    assert.equal(parseConfig(text.replace(/\naudit:\n.*\n/, "\n")).audit.checkpoint_interval, "5m", "older files without the section");
    const tooShort = text.replace(/checkpoint_interval: \S+/, "checkpoint_interval: 1s");
    assert.throws(() => parseConfig(tooShort), /audit\.checkpoint_interval: must be at least 10s/);
    assert.throws(() => parseConfig(text.replace(/checkpoint_interval: \S+/, "checkpoint_interval: soon")), /audit\.checkpoint_interval/);
  });
});
