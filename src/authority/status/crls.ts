// CRLs, one per CA: signed from the certificates table, numbered from the crls table (the number
// only grows, across restarts and processes), re-signed at half of their validity and at once
// after any status change of a certificate the CA issued (markChanged, fed by change-feed.ts).
import { parseDuration } from "../../config/duration.js";
import type { CrlTable } from "../../store/schema.js";
import { preparedStatement } from "../../store/store.js";
import { buildCrl, type RevocationReason, type RevokedEntry } from "../../x509/crl.js";
import { toPem } from "../../x509/pem.js";
import { AuthorityError, UnknownCa } from "../errors.js";
import type { FleetServices } from "../services.js";

export interface PublishedCrl {
  caId: string;
  der: Buffer;
  crlNumber: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
  entries: number;
}

/** The PEM form served at /crl/<ca>.pem and written by `crl export` (label "X509 CRL", as OpenSSL expects). */
export function crlPem(crl: PublishedCrl): string {
  return toPem("X509 CRL", crl.der);
}

const twoDigits = (s: string, i: number): number => (s.charCodeAt(i) - 48) * 10 + s.charCodeAt(i + 1) - 48;

/**
 * A stored timestamp ("2026-11-22T00:36:07.123Z", as toISOString writes them) to epoch
 * milliseconds, truncated to the second. Date.parse took ~100 ms of a 100,000-entry re-sign.
 */
function storedTimeSecondMs(iso: string): number {
  const year = twoDigits(iso, 0) * 100 + twoDigits(iso, 2);
  // Anything unusual (and years below 100, which Date.UTC maps to 19xx) takes the slow path.
  if (iso.length !== 24 || iso.charCodeAt(4) !== 45 || iso.charCodeAt(10) !== 84 || iso.charCodeAt(23) !== 90 || !(year >= 100))
    return Math.floor(Date.parse(iso) / 1000) * 1000;
  return Date.UTC(year, twoDigits(iso, 5) - 1, twoDigits(iso, 8), twoDigits(iso, 11), twoDigits(iso, 14), twoDigits(iso, 17));
}

function published(row: CrlTable): PublishedCrl {
  return {
    caId: row.ca_id,
    der: Buffer.from(row.der),
    crlNumber: BigInt(row.crl_number),
    thisUpdate: new Date(row.this_update),
    nextUpdate: new Date(row.next_update),
    entries: row.entries,
  };
}

/** The newest CRL stored for a CA, whoever signed (or imported) it. */
export async function storedCrl(fleet: FleetServices, caId: string): Promise<PublishedCrl | undefined> {
  const row = await fleet.store.db.selectFrom("crls").selectAll().where("ca_id", "=", caId).executeTakeFirst();
  return row ? published(row) : undefined;
}

/**
 * Signs a new CRL for the CA and stores it, in one write transaction: the number is the stored
 * one plus one, and the entries are what is revoked or held at that moment. Times are whole
 * seconds. Synchronous SQLite work and signing: about 0.3-0.5 s of blocked event loop at 100,000 entries.
 */
export async function signCrl(fleet: FleetServices, caId: string, now = new Date()): Promise<PublishedCrl> {
  const issuer = await fleet.issuingCa(caId, { forCrl: true });
  const validityMs = parseDuration(fleet.config.revocation.crl_validity);
  const thisUpdate = new Date(Math.floor(now.getTime() / 1000) * 1000);
  const nextUpdate = new Date(thisUpdate.getTime() + validityMs);
  const row = await fleet.store.withNative((native) =>
    native
      .transaction((): CrlTable => {
        const previous = preparedStatement<[string], { crl_number: number }>(native, "select crl_number from crls where ca_id = ?").get(
          caId,
        );
        const crlNumber = (previous?.crl_number ?? 0) + 1;
        // Entries stay until the certificate itself expires (RFC 5280 5.2.6 allows dropping them then).
        // One string for all rows, split here: better-sqlite3 turning 100,000 rows of three
        // columns into JS values cost more than encoding and signing the CRL. The statement is
        // shared (preparedStatement's cache), so it goes back to row mode afterwards.
        const select = preparedStatement<[string, string], string | null>(
          native,
          // (A NULL would drop its row from group_concat; revoked rows always carry a time.)
          "select group_concat(serial || ' ' || coalesce(revoked_at, '1970-01-01T00:00:00.000Z') || ' ' || " +
            "coalesce(revocation_reason, ''), char(10)) from certificates " +
            "where issuer_ca = ? and status in ('revoked', 'hold') and not_after > ?",
        );
        let listed: string | null;
        try {
          listed = select.pluck(true).get(caId, thisUpdate.toISOString()) ?? null;
        } finally {
          select.pluck(false);
        }
        const entries: RevokedEntry[] = [];
        if (listed)
          for (const line of listed.split("\n")) {
            const a = line.indexOf(" ");
            const b = line.indexOf(" ", a + 1);
            entries.push({
              serialHex: line.slice(0, a),
              revokedAt: new Date(storedTimeSecondMs(line.slice(a + 1, b))),
              reason: (line.slice(b + 1) || "unspecified") as RevocationReason,
            });
          }
        const der = buildCrl(issuer, { crlNumber: BigInt(crlNumber), thisUpdate, nextUpdate, entries });
        const stored: CrlTable = {
          ca_id: caId,
          crl_number: crlNumber,
          this_update: thisUpdate.toISOString(),
          next_update: nextUpdate.toISOString(),
          entries: entries.length,
          der,
        };
        preparedStatement<[CrlTable]>(
          native,
          "insert into crls (ca_id, crl_number, this_update, next_update, entries, der) " +
            "values (@ca_id, @crl_number, @this_update, @next_update, @entries, @der) " +
            "on conflict (ca_id) do update set crl_number = excluded.crl_number, this_update = excluded.this_update, " +
            "next_update = excluded.next_update, entries = excluded.entries, der = excluded.der",
        ).run(stored);
        return stored;
      })
      .immediate(),
  );
  // A CRL number must never be reused, so the new one is on disk before the CRL is served.
  await fleet.store.durable();
  return published(row);
}

/**
 * What a process serves: the current CRL of every CA, kept fresh (a revoked local CA's too: its
 * list stays meaningful for what it issued). A CA whose key is not here (an offline root) is
 * served from the stored, imported CRL as it is.
 */
export class CrlPublisher {
  private readonly current = new Map<string, PublishedCrl>();
  private readonly changed = new Set<string>();
  private readonly inFlight = new Map<string, Promise<PublishedCrl | undefined>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly fleet: FleetServices,
    private readonly onError: (caId: string, e: unknown) => void = () => {},
  ) {}

  /** Brings every CA's CRL up to date, then keeps checking for half-life a few times per validity. */
  async start(): Promise<void> {
    await this.refreshDue();
    const validityMs = parseDuration(this.fleet.config.revocation.crl_validity);
    this.timer = setInterval(() => void this.refreshDue(), Math.max(250, Math.min(10_000, validityMs / 16)));
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.allSettled([...this.inFlight.values()]);
  }

  /** The CA's current CRL; undefined if there is none (offline root, nothing imported yet). */
  async crl(caId: string): Promise<PublishedCrl | undefined> {
    // A re-sign may be under way after a change (the change mark is cleared when it starts): serve its result.
    const signing = this.inFlight.get(caId);
    if (signing) return signing;
    const crl = this.current.get(caId);
    if (crl && !this.changed.has(caId) && !this.due(crl, new Date())) return crl;
    return this.refresh(caId);
  }

  /** Certificates of these CAs changed status: re-sign their CRLs now. */
  markChanged(caIds: readonly string[]): Promise<unknown> {
    for (const id of caIds) this.changed.add(id);
    return Promise.allSettled(caIds.map((id) => this.refresh(id)));
  }

  private due(crl: PublishedCrl, now: Date): boolean {
    const half = crl.thisUpdate.getTime() + (crl.nextUpdate.getTime() - crl.thisUpdate.getTime()) / 2;
    return now.getTime() >= half;
  }

  private async refreshDue(): Promise<void> {
    const now = new Date();
    const cas = await this.fleet.store.db.selectFrom("cas").select("id").execute();
    await Promise.allSettled(
      cas
        .filter((ca) => this.changed.has(ca.id) || !this.current.has(ca.id) || this.due(this.current.get(ca.id)!, now))
        .map((ca) => this.refresh(ca.id)),
    );
  }

  private refresh(caId: string): Promise<PublishedCrl | undefined> {
    let p = this.inFlight.get(caId);
    if (!p) {
      p = this.load(caId).finally(() => this.inFlight.delete(caId));
      this.inFlight.set(caId, p);
    }
    return p;
  }

  private async load(caId: string): Promise<PublishedCrl | undefined> {
    const wasChanged = this.changed.delete(caId);
    const now = new Date();
    try {
      const ca = await this.fleet.store.db.selectFrom("cas").select(["key_file"]).where("id", "=", caId).executeTakeFirst();
      if (!ca) throw new UnknownCa(caId);
      let crl: PublishedCrl | undefined;
      const stored = await storedCrl(this.fleet, caId);
      // Another process may have signed after the same change; reuse a fresh one unless we saw a change since.
      if (stored && !wasChanged && !this.due(stored, now)) crl = stored;
      else if (ca.key_file) crl = await signCrl(this.fleet, caId, now);
      else crl = stored;
      if (crl) this.current.set(caId, crl);
      return crl;
    } catch (e) {
      if (wasChanged) this.changed.add(caId); // try again on the next tick
      this.onError(caId, e);
      if (e instanceof UnknownCa) return undefined;
      if (e instanceof AuthorityError) return this.current.get(caId);
      throw e;
    }
  }
}
