// Schema migrations. Only types and SQL that PostgreSQL accepts as well (binary type chosen per dialect).
import { sql, type Kysely, type Migration } from "kysely";

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
        await sql`create index certificates_revoked on certificates (issuer_ca, not_after, serial, revoked_at, revocation_reason) where status in ('revoked', 'hold')`.execute(db);
      },
    },
    "0004_audit_checkpoints": {
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
  };
}
