// Schema migrations. Only types and SQL that PostgreSQL accepts as well (binary type chosen per dialect).
import { createHash } from "node:crypto";
import { sql, type Kysely, type Migration } from "kysely";
import { children, raw, readRoot } from "../der/reader.js";

export function migrations(binaryType: "blob" | "bytea"): Record<string, Migration> {
  return {
    "0001_initial": {
      async up(db: Kysely<any>): Promise<void> {
        await db.schema
          .createTable("cas")
          .addColumn("id", "text", (c) => c.primaryKey())
          .addColumn("role", "text", (c) => c.notNull())
          .addColumn("subject", "text", (c) => c.notNull())
          .addColumn("issuer", "text", (c) => c.notNull())
          .addColumn("serial", "text", (c) => c.notNull())
          .addColumn("fingerprint_sha256", "text", (c) => c.notNull())
          .addColumn("not_before", "text", (c) => c.notNull())
          .addColumn("not_after", "text", (c) => c.notNull())
          .addColumn("key_type", "text", (c) => c.notNull())
          .addColumn("certificate_pem", "text", (c) => c.notNull())
          .addColumn("key_file", "text")
          .addColumn("status", "text", (c) => c.notNull().defaultTo("active"))
          .addColumn("created_at", "text", (c) => c.notNull())
          .execute();

        await db.schema
          .createTable("devices")
          .addColumn("id", "text", (c) => c.primaryKey())
          .addColumn("group_name", "text")
          .addColumn("labels", "text", (c) => c.notNull().defaultTo("{}"))
          .addColumn("status", "text", (c) => c.notNull().defaultTo("active"))
          .addColumn("created_at", "text", (c) => c.notNull())
          .addColumn("updated_at", "text", (c) => c.notNull())
          .execute();
        await db.schema.createIndex("devices_group").on("devices").column("group_name").execute();

        await db.schema
          .createTable("certificates")
          .addColumn("serial", "text", (c) => c.primaryKey())
          .addColumn("issuer_ca", "text", (c) => c.notNull().references("cas.id"))
          .addColumn("kind", "text", (c) => c.notNull())
          .addColumn("subject_id", "text", (c) => c.notNull())
          .addColumn("device_id", "text", (c) => c.references("devices.id"))
          .addColumn("not_before", "text", (c) => c.notNull())
          .addColumn("not_after", "text", (c) => c.notNull())
          .addColumn("fingerprint_sha256", "text", (c) => c.notNull())
          .addColumn("der", binaryType, (c) => c.notNull())
          .addColumn("status", "text", (c) => c.notNull().defaultTo("valid"))
          .addColumn("revoked_at", "text")
          .addColumn("revocation_reason", "text")
          .addColumn("created_at", "text", (c) => c.notNull())
          .execute();
        await db.schema.createIndex("certificates_device").on("certificates").columns(["device_id", "not_after"]).execute();
        await db.schema.createIndex("certificates_issuer_status").on("certificates").columns(["issuer_ca", "status"]).execute();

        await db.schema
          .createTable("audit_log")
          .addColumn("seq", "integer", (c) => c.primaryKey())
          .addColumn("at", "text", (c) => c.notNull())
          .addColumn("actor", "text", (c) => c.notNull())
          .addColumn("action", "text", (c) => c.notNull())
          .addColumn("subject", "text", (c) => c.notNull())
          .addColumn("details", "text", (c) => c.notNull())
          .addColumn("prev_hash", "text", (c) => c.notNull())
          .addColumn("hash", "text", (c) => c.notNull())
          .execute();
        await db.schema.createIndex("audit_log_at").on("audit_log").column("at").execute();

        await db.schema
          .createTable("audit_head")
          .addColumn("id", "integer", (c) => c.primaryKey())
          .addColumn("seq", "integer", (c) => c.notNull())
          .addColumn("hash", "text", (c) => c.notNull())
          .execute();
      },
    },
    "0002_enrollment": {
      async up(db: Kysely<any>): Promise<void> {
        await db.schema
          .createTable("enrollment_tokens")
          .addColumn("id", "text", (c) => c.primaryKey())
          .addColumn("device_id", "text", (c) => c.notNull().references("devices.id"))
          .addColumn("token_hash", "text", (c) => c.notNull())
          .addColumn("created_at", "text", (c) => c.notNull())
          .addColumn("expires_at", "text", (c) => c.notNull())
          .addColumn("used_at", "text")
          .addColumn("created_by", "text", (c) => c.notNull())
          .execute();
        await db.schema.createIndex("enrollment_tokens_device").on("enrollment_tokens").columns(["device_id", "used_at"]).execute();

        await db.schema
          .createTable("enrollment_requests")
          .addColumn("id", "text", (c) => c.primaryKey())
          .addColumn("device_id", "text", (c) => c.notNull())
          .addColumn("csr", binaryType, (c) => c.notNull())
          .addColumn("status", "text", (c) => c.notNull())
          .addColumn("source", "text", (c) => c.notNull())
          .addColumn("created_at", "text", (c) => c.notNull())
          .addColumn("decided_at", "text")
          .addColumn("decided_by", "text")
          .addColumn("certificate_serial", "text")
          .execute();
        await db.schema.createIndex("enrollment_requests_device").on("enrollment_requests").columns(["device_id", "status"]).execute();

        await db.schema
          .createTable("renewal_nonces")
          .addColumn("nonce", "text", (c) => c.primaryKey())
          .addColumn("device_id", "text", (c) => c.notNull())
          .addColumn("expires_at", "text", (c) => c.notNull())
          .addColumn("used_at", "text")
          .execute();
      },
    },
    "0003_revocation": {
      async up(db: Kysely<any>): Promise<void> {
        // The newest CRL of each CA. crl_number only ever grows (RFC 5280 5.2.3), across
        // restarts and across every process that signs, because it is taken in a transaction.
        await db.schema
          .createTable("crls")
          .addColumn("ca_id", "text", (c) => c.primaryKey().references("cas.id"))
          .addColumn("crl_number", "integer", (c) => c.notNull())
          .addColumn("this_update", "text", (c) => c.notNull())
          .addColumn("next_update", "text", (c) => c.notNull())
          .addColumn("entries", "integer", (c) => c.notNull())
          .addColumn("der", binaryType, (c) => c.notNull())
          .execute();
        // Re-signing a CRL reads every revoked or held certificate of a CA: a partial covering
        // index holds just those rows (valid certificates cost it nothing).
        await sql
          .raw(
            "create index certificates_revoked on certificates (issuer_ca, not_after, serial, revoked_at, revocation_reason) " +
              "where status in ('revoked', 'hold')",
          )
          .execute(db);
      },
    },
    "0004_renewal_challenges_and_retries": {
      async up(db: Kysely<any>): Promise<void> {
        // Challenges are counted per device among the unexpired ones and purged by expiry.
        await db.schema.createIndex("renewal_nonces_device").on("renewal_nonces").columns(["device_id", "expires_at"]).execute();
        await db.schema.createIndex("renewal_nonces_expiry").on("renewal_nonces").column("expires_at").execute();
        // Earlier versions stored challenges for any id asked for: drop those of unknown devices.
        await sql`delete from renewal_nonces where device_id not in (select id from devices)`.execute(db);
        // A spent token names the certificate it paid for, so a retry can be answered with it.
        await db.schema.alterTable("enrollment_tokens").addColumn("certificate_serial", "text").execute();
        // One row per renewed certificate (the primary key makes "renews once" hold under races).
        // No foreign key on serial: the claim writes this row before its certificate row.
        await db.schema
          .createTable("renewals")
          .addColumn("renewed_serial", "text", (c) => c.primaryKey().references("certificates.serial"))
          .addColumn("serial", "text", (c) => c.notNull())
          .addColumn("device_id", "text", (c) => c.notNull())
          .addColumn("created_at", "text", (c) => c.notNull())
          .execute();
      },
    },
    "0005_approval_requests_and_factory_once": {
      async up(db: Kysely<any>): Promise<void> {
        // Approval requests are decided one by one (issue 9, 1.3): each carries its key's SHA-256
        // SPKI fingerprint (what the operator compares with the robot) and its peer address,
        // and is bounded per device id, per source and in total, which these indexes serve.
        await db.schema.alterTable("enrollment_requests").addColumn("key_fingerprint", "text").execute();
        await db.schema.alterTable("enrollment_requests").addColumn("source_address", "text").execute();
        // The bucket a source is counted in: an IPv4 address or an IPv6 /64.
        await db.schema.alterTable("enrollment_requests").addColumn("source_group", "text").execute();
        const rows = await db.selectFrom("enrollment_requests").select(["id", "csr", "source", "status", "decided_by"]).execute();
        for (const row of rows as { id: string; csr: Uint8Array; source: string; status: string; decided_by: string | null }[]) {
          // A request "superseded" by a later one was never an operator's decision: drop it, so
          // the device asking again with that key gets a new pending request.
          if (row.status === "denied" && row.decided_by === "superseded") {
            await db.deleteFrom("enrollment_requests").where("id", "=", row.id).execute();
            continue;
          }
          const address = row.source.split(" ")[1]?.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, "$1") ?? null;
          await db
            .updateTable("enrollment_requests")
            .set({ key_fingerprint: csrKeyFingerprint(row.csr), source_address: address, source_group: address })
            .where("id", "=", row.id)
            .execute();
        }
        await db.schema
          .createIndex("enrollment_requests_device_key")
          .on("enrollment_requests")
          .columns(["device_id", "key_fingerprint"])
          .execute();
        await db.schema
          .createIndex("enrollment_requests_status_group")
          .on("enrollment_requests")
          .columns(["status", "source_group"])
          .execute();
        await db.schema
          .createIndex("enrollment_requests_status_address")
          .on("enrollment_requests")
          .columns(["status", "source_address"])
          .execute();

        // A factory certificate enrolls its device once (issue 9, 1.8): one row per device that
        // did, deleted by `fleetpki device reprovision` to allow one more.
        await db.schema
          .createTable("factory_enrollments")
          .addColumn("device_id", "text", (c) => c.primaryKey().references("devices.id"))
          .addColumn("factory_serial", "text", (c) => c.notNull())
          .addColumn("certificate_serial", "text", (c) => c.notNull())
          .addColumn("enrolled_at", "text", (c) => c.notNull())
          .execute();
        // Devices that already enrolled with a factory certificate before this migration.
        const issued = await db
          .selectFrom("audit_log")
          .select(["subject", "details", "at"])
          .where("action", "=", "certificate.issue")
          .where("details", "like", '%"provisioner":"factory"%')
          .orderBy("seq")
          .execute();
        for (const row of issued as { subject: string; details: string; at: string }[]) {
          const details = JSON.parse(row.details) as { serial?: string; factory_serial?: string };
          const deviceId = row.subject.replace(/^device:/, "");
          if (!details.serial || !details.factory_serial) continue;
          const device = await db.selectFrom("devices").select("id").where("id", "=", deviceId).executeTakeFirst();
          if (!device) continue;
          await db
            .insertInto("factory_enrollments")
            .values({
              device_id: deviceId,
              factory_serial: details.factory_serial,
              certificate_serial: details.serial,
              enrolled_at: row.at,
            })
            .onConflict((oc) => oc.column("device_id").doNothing())
            .execute();
        }
      },
    },
    "0006_audit_checkpoints": {
      async up(db: Kysely<any>): Promise<void> {
        // Signed heads of the audit log (src/audit/checkpoints.ts), one per sequence number. The
        // document is the exported file, byte for byte.
        await db.schema
          .createTable("audit_checkpoints")
          .addColumn("seq", "integer", (c) => c.primaryKey())
          .addColumn("hash", "text", (c) => c.notNull())
          .addColumn("at", "text", (c) => c.notNull())
          .addColumn("document", "text", (c) => c.notNull())
          .execute();
      },
    },
    "0007_certificates_by_subject": {
      async up(db: Kysely<any>): Promise<void> {
        // Service identities have no table of their own: a service is the certificates of kind
        // "service" with its name as subject_id (`service list|remove`), found without a scan of
        // every device certificate. Device status "removed" and kind "service" need no schema
        // change: both columns are plain text.
        await db.schema.createIndex("certificates_kind_subject").on("certificates").columns(["kind", "subject_id"]).execute();
      },
    },
    "0008_operators": {
      async up(db: Kysely<any>): Promise<void> {
        // Operators and their roles (issue 11); an operator's certificates stay the certificates of kind "operator".
        await db.schema
          .createTable("operators")
          .addColumn("name", "text", (c) => c.primaryKey())
          .addColumn("role", "text", (c) => c.notNull())
          .addColumn("status", "text", (c) => c.notNull().defaultTo("active"))
          .addColumn("created_at", "text", (c) => c.notNull())
          .addColumn("updated_at", "text", (c) => c.notNull())
          .execute();
        // Login links and browser sessions: secrets only as SHA-256 (hex), so a copy of the database logs no one in.
        await db.schema
          .createTable("operator_logins")
          .addColumn("token_hash", "text", (c) => c.primaryKey())
          .addColumn("operator", "text", (c) => c.notNull())
          .addColumn("expires_at", "text", (c) => c.notNull())
          .addColumn("used_at", "text")
          .addColumn("created_at", "text", (c) => c.notNull())
          .execute();
        await db.schema.createIndex("operator_logins_expiry").on("operator_logins").column("expires_at").execute();
        await db.schema
          .createTable("operator_sessions")
          .addColumn("secret_hash", "text", (c) => c.primaryKey())
          .addColumn("operator", "text", (c) => c.notNull())
          .addColumn("created_at", "text", (c) => c.notNull())
          .addColumn("expires_at", "text", (c) => c.notNull())
          .addColumn("ended_at", "text")
          .execute();
        await db.schema.createIndex("operator_sessions_operator").on("operator_sessions").columns(["operator", "ended_at"]).execute();
        await db.schema.createIndex("operator_sessions_expiry").on("operator_sessions").column("expires_at").execute();
        // Fleets made before roles: every operator with a certificate (init made "admin") is an admin,
        // active while one of its certificates is not revoked.
        const rows = await db
          .selectFrom("certificates")
          .select(["subject_id", "status", "created_at"])
          .where("kind", "=", "operator")
          .orderBy("created_at")
          .execute();
        const found = new Map<string, { active: boolean; created: string }>();
        for (const r of rows as { subject_id: string; status: string; created_at: string }[]) {
          const o = found.get(r.subject_id) ?? { active: false, created: r.created_at };
          o.active ||= r.status !== "revoked";
          found.set(r.subject_id, o);
        }
        const now = new Date().toISOString();
        for (const [name, o] of found)
          await db
            .insertInto("operators")
            .values({ name, role: "admin", status: o.active ? "active" : "removed", created_at: o.created, updated_at: now })
            .execute();
      },
    },
    "0009_expiry_index": {
      async up(db: Kysely<any>): Promise<void> {
        // `cert expiring` and the expiry metrics read the certificates ending in a window (a range of
        // not_after) and keep those whose subject has no newer, later-ending one: both answered from
        // these two indexes, so only the certificates kept are read from the table.
        await db.schema
          .createIndex("certificates_not_after")
          .on("certificates")
          .columns(["not_after", "status", "kind", "subject_id"])
          .execute();
        await db.schema
          .createIndex("certificates_subject_not_after")
          .on("certificates")
          .columns(["kind", "subject_id", "not_after", "not_before", "status"])
          .execute();
      },
    },
    "0010_audit_by_subject": {
      async up(db: Kysely<any>): Promise<void> {
        // A device's recent events (GET /api/devices/:id) without a scan of the whole log.
        await db.schema.createIndex("audit_log_subject_seq").on("audit_log").columns(["subject", "seq"]).execute();
      },
    },
    "0011_admin_indexes": {
      async up(db: Kysely<any>): Promise<void> {
        // The admin API's lists page by key (never OFFSET): devices by id, certificates by serial,
        // audit rows by seq, newest first. Each filter the API offers has an index that yields its
        // rows already in key order, so a page reads about `limit` rows whatever the fleet's size
        // and however deep the cursor. (An index on X of a rowid table ends in the rowid, which for
        // audit_log is seq; devices and certificates have text keys, named explicitly.)
        await db.schema.alterTable("devices").addColumn("last_seen_at", "text").execute();
        // (group_name, id) replaces (group_name), whose entries end in the rowid, not the id.
        await db.schema.dropIndex("devices_group").execute();
        await db.schema.createIndex("devices_group_id").on("devices").columns(["group_name", "id"]).execute();
        await db.schema.createIndex("devices_status_id").on("devices").columns(["status", "id"]).execute();
        await db.schema.createIndex("devices_group_status_id").on("devices").columns(["group_name", "status", "id"]).execute();
        await db.schema.createIndex("certificates_kind_serial").on("certificates").columns(["kind", "serial"]).execute();
        await db.schema.createIndex("certificates_status_serial").on("certificates").columns(["status", "serial"]).execute();
        await db.schema.createIndex("certificates_issuer_serial").on("certificates").columns(["issuer_ca", "serial"]).execute();
        await db.schema.createIndex("certificates_subject_serial").on("certificates").columns(["subject_id", "serial"]).execute();
        await db.schema.createIndex("audit_log_actor").on("audit_log").columns(["actor", "seq"]).execute();
        await db.schema.createIndex("audit_log_action").on("audit_log").columns(["action", "seq"]).execute();
        // (subject, seq) is 0010_audit_by_subject's audit_log_subject_seq.
        if (binaryType === "blob") {
          // Searching ids by substring: a B-tree cannot, a trigram index can (SQLite's FTS5; pg_trgm
          // would be PostgreSQL's). It keeps its own copy of the ids, matched back by id, not rowid
          // (VACUUM may renumber the rowids of a table with a text primary key). Devices are never
          // deleted today (removal is a status); the delete trigger keeps the index right if they are.
          await sql`create virtual table devices_trigram using fts5(id, tokenize = 'trigram')`.execute(db);
          await sql`insert into devices_trigram (id) select id from devices`.execute(db);
          await sql`create trigger devices_trigram_insert after insert on devices begin
            insert into devices_trigram (id) values (new.id); end`.execute(db);
          await sql`create trigger devices_trigram_delete after delete on devices begin
            delete from devices_trigram where id = old.id; end`.execute(db);
        }
      },
    },
    "0012_ros2_enclaves": {
      async up(db: Kysely<any>): Promise<void> {
        // SROS2 keystores and enclaves (src/ros2/keystore/): the certificates are in `certificates` (kind ros2-enclave).
        await db.schema
          .createTable("ros2_keystores")
          .addColumn("id", "text", (c) => c.primaryKey())
          .addColumn("dir", "text", (c) => c.notNull())
          .addColumn("domain_id", "integer", (c) => c.notNull())
          .addColumn("governance_p7s", "text", (c) => c.notNull())
          .addColumn("created_at", "text", (c) => c.notNull())
          .execute();
        await db.schema
          .createTable("ros2_enclaves")
          .addColumn("keystore_id", "text", (c) => c.notNull().references("ros2_keystores.id"))
          .addColumn("path", "text", (c) => c.notNull())
          .addColumn("device_id", "text", (c) => c.references("devices.id"))
          .addColumn("serial", "text", (c) => c.notNull().references("certificates.serial"))
          .addColumn("permissions_source", "text", (c) => c.notNull())
          .addColumn("permissions_policy", "text")
          .addColumn("status", "text", (c) => c.notNull().defaultTo("active"))
          .addColumn("created_at", "text", (c) => c.notNull())
          .addColumn("renewed_at", "text")
          .addColumn("revoked_at", "text")
          .addPrimaryKeyConstraint("ros2_enclaves_pk", ["keystore_id", "path"])
          .execute();
        await db.schema.createIndex("ros2_enclaves_device").on("ros2_enclaves").columns(["device_id", "keystore_id"]).execute();
      },
    },
    "0013_ros2_anchors": {
      async up(db: Kysely<any>): Promise<void> {
        // The ROS 2 CAs' self-signed trust anchors (src/authority/ca/cas.ts ros2TrustAnchor).
        await db.schema.alterTable("cas").addColumn("anchor_pem", "text").execute();
        // Enclave subjects ("CN=<path>") are unique among live enclaves across keystores: looked up by path.
        await db.schema.createIndex("ros2_enclaves_path").on("ros2_enclaves").columns(["path", "keystore_id"]).execute();
      },
    },
    "0014_ros2_enclave_validity": {
      async up(db: Kysely<any>): Promise<void> {
        // An enclave's own `--validity` (create), kept for its renewals (CLI and agent); null: validity.ros2_enclave.
        await db.schema.alterTable("ros2_enclaves").addColumn("validity", "text").execute();
      },
    },
  };
}

/** "sha256:<hex>" of the SubjectPublicKeyInfo inside a stored CSR; null if it cannot be read. */
function csrKeyFingerprint(csr: Uint8Array): string | null {
  try {
    const info = children(readRoot(Buffer.from(csr)))[0]!;
    const spki = children(info)[2]!;
    return `sha256:${createHash("sha256").update(raw(spki)).digest("hex")}`;
  } catch {
    return null;
  }
}
