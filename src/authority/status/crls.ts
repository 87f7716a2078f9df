// CRLs, one per CA: signed from the certificates table, numbered from the crls table (the number
// only grows, across restarts and processes), re-signed at half of their validity and at once
// after any status change of a certificate the CA issued (markChanged, fed by change-feed.ts).
import type { FleetConfig } from "../../config/config.js";
import { parseDuration } from "../../config/duration.js";
import type { CrlTable } from "../../store/schema.js";
import { buildCrl, type RevokedEntry } from "../../x509/crl.js";
import { toPem } from "../../x509/pem.js";
import { writeRootCrlRequest } from "../ca/root-crl.js";
import { AuthorityError, CaKeyOffline, InvalidArgument, UnknownCa } from "../errors.js";
import { ROS2_CAS } from "../layout.js";
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

/**
 * nextUpdate - thisUpdate for a CA's CRL. The ros2-identity CA's has its own: DDS reads an enclave's
 * crl.pem only when a node starts, so that copy must outlive the node (revocation.ros2_crl_validity).
 */
export function crlValidityMs(config: FleetConfig, caId: string): number {
  const r = config.revocation;
  return parseDuration(caId === ROS2_CAS.identity ? r.ros2_crl_validity : r.crl_validity);
}

/**
 * Why `serve` should warn about revocation.ros2_crl_validity, if it should. Load refuses anything below
 * validity.ros2_enclave; below 4/3 of it a node may still outlive its copy: the copy can be half a
 * validity old when the node starts (re-signed at half-life), and the node runs until its enclave
 * renews (2/3 of the lifetime).
 */
export function ros2CrlValidityWarning(config: FleetConfig): string | undefined {
  const crl = crlValidityMs(config, ROS2_CAS.identity);
  const enclave = parseDuration(config.validity.ros2_enclave);
  if (3 * crl >= 4 * enclave) return undefined;
  return (
    `revocation.ros2_crl_validity (${config.revocation.ros2_crl_validity}) is less than 4/3 of validity.ros2_enclave ` +
    `(${config.validity.ros2_enclave}): a SROS2 node started with a CRL re-signed at half-life may see it expire before its ` +
    `enclave renews, and then refuses every peer`
  );
}

/** The freshness rule: a CRL is re-signed once half of its validity has passed. */
export function crlIsDue(crl: PublishedCrl, now: Date): boolean {
  const half = crl.thisUpdate.getTime() + (crl.nextUpdate.getTime() - crl.thisUpdate.getTime()) / 2;
  return now.getTime() >= half;
}

/** The newest CRL stored for a CA, whoever signed (or imported) it. */
export async function storedCrl(fleet: FleetServices, caId: string): Promise<PublishedCrl | undefined> {
  const row = await fleet.store.ops.status.storedCrl(caId);
  return row ? published(row) : undefined;
}

/** Every CA's id, in order (each has a CRL). */
export async function crlCaIds(fleet: FleetServices): Promise<string[]> {
  return (await fleet.store.ops.cas.list()).map((c) => c.id).sort();
}

/**
 * Signs a new CRL for the CA and stores it, in one write transaction: the number is the stored
 * one plus one, and the entries are what is revoked or held at that moment. Times are whole
 * seconds. About 0.3-0.5 s of blocked event loop at 100,000 entries (the query and signing).
 */
export async function signCrl(fleet: FleetServices, caId: string, now: Date = fleet.clock.now()): Promise<PublishedCrl> {
  const issuer = await fleet.issuingCa(caId, { forCrl: true });
  const validityMs = crlValidityMs(fleet.config, caId);
  const thisUpdate = new Date(Math.floor(now.getTime() / 1000) * 1000);
  const nextUpdate = new Date(thisUpdate.getTime() + validityMs);
  // A CRL number must never be reused, so the new one is durable (transaction) before the CRL is served.
  const row = await fleet.store.transaction(async (tx): Promise<CrlTable> => {
    const crlNumber = ((await tx.status.crlNumber(caId)) ?? 0) + 1;
    // Entries stay until the certificate itself expires (RFC 5280 5.2.6 allows dropping them then).
    // The stored reasons are the ones revocation wrote (RevocationReason names); no second pass over 100,000 entries.
    const entries = (await tx.status.listCrlEntries(caId, thisUpdate.toISOString())) as RevokedEntry[];
    const der = buildCrl(issuer, { crlNumber: BigInt(crlNumber), thisUpdate, nextUpdate, entries });
    const stored: CrlTable = {
      ca_id: caId,
      crl_number: crlNumber,
      this_update: thisUpdate.toISOString(),
      next_update: nextUpdate.toISOString(),
      entries: entries.length,
      der,
    };
    await tx.status.storeCrl(stored);
    return stored;
  });
  return published(row);
}

/** The stored CRL if it is before its half-life, else a freshly signed one (or the stored one for an offline root). */
export async function currentCrl(fleet: FleetServices, caId: string): Promise<PublishedCrl> {
  const ca = await fleet.store.ops.cas.get(caId);
  if (!ca) throw new UnknownCa(caId);
  const stored = await storedCrl(fleet, caId);
  const now = fleet.clock.now();
  if (stored && !crlIsDue(stored, now)) return stored;
  if (ca.key_file) return signCrl(fleet, caId, now);
  if (stored) return stored;
  throw new InvalidArgument(`no CRL for ${caId}: its key is not in this fleet directory and none was imported`);
}

/** What re-signing one CA's CRL after a change came to. */
export type ResignOutcome =
  | { caId: string; outcome: "signed"; crl: PublishedCrl }
  /** The root key is offline: a signing request for the ceremony was written (path relative to the fleet directory). */
  | { caId: string; outcome: "root-request"; request: string }
  /** Not re-signed here; a running server re-signs it when it sees the change. */
  | { caId: string; outcome: "failed"; reason: string };

/**
 * After a status change made outside a server (the CLI): the affected CRLs are re-signed at once,
 * so they are current even when no server runs. A root held offline gets a signing request for
 * the ceremony instead.
 */
export async function resignCrls(fleet: FleetServices, cas: readonly string[]): Promise<ResignOutcome[]> {
  const outcomes: ResignOutcome[] = [];
  for (const caId of cas) {
    try {
      outcomes.push({ caId, outcome: "signed", crl: await signCrl(fleet, caId) });
    } catch (e) {
      if (e instanceof CaKeyOffline && caId === "root")
        outcomes.push({ caId, outcome: "root-request", request: await writeRootCrlRequest(fleet) });
      else outcomes.push({ caId, outcome: "failed", reason: (e as Error).message });
    }
  }
  return outcomes;
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
    // A tick whose CA listing fails is reported, never left to reject (that would end the process).
    const tick = () => this.refreshDue().catch((e: unknown) => this.onError("(every CA)", e));
    this.timer = setInterval(() => void tick(), Math.max(250, Math.min(10_000, validityMs / 16)));
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
    if (crl && !this.changed.has(caId) && !crlIsDue(crl, this.fleet.clock.now())) return crl;
    return this.refresh(caId);
  }

  /** The CRL served now for each CA that has one (for metrics: no signing, no database read). */
  published(): ReadonlyMap<string, PublishedCrl> {
    return this.current;
  }

  /** Certificates of these CAs changed status: re-sign their CRLs now. */
  markChanged(caIds: readonly string[]): Promise<unknown> {
    for (const id of caIds) this.changed.add(id);
    return Promise.allSettled(caIds.map((id) => this.refresh(id)));
  }

  /** Something changed that cannot be attributed to a CA (an audit row that cannot be read): re-sign every CRL now. */
  markAllChanged(): Promise<unknown> {
    // The CRLs served so far are marked at once: no request after this call gets the old one.
    for (const id of this.current.keys()) this.changed.add(id);
    // Never rejects (the feed voids it; an unhandled rejection ends the process): a failed listing is
    // reported, and the marks above make the next request or tick re-sign.
    return crlCaIds(this.fleet).then(
      (ids) => this.markChanged(ids),
      (e: unknown) => this.onError("(every CA)", e),
    );
  }

  private async refreshDue(): Promise<void> {
    const now = this.fleet.clock.now();
    const cas = await crlCaIds(this.fleet);
    await Promise.allSettled(
      cas
        .filter((id) => this.changed.has(id) || !this.current.has(id) || crlIsDue(this.current.get(id)!, now))
        .map((id) => this.refresh(id)),
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
    const now = this.fleet.clock.now();
    try {
      const ca = await this.fleet.store.ops.cas.get(caId);
      if (!ca) throw new UnknownCa(caId);
      let crl: PublishedCrl | undefined;
      const stored = await storedCrl(this.fleet, caId);
      // Another process may have signed after the same change; reuse a fresh one unless we saw a change since.
      if (stored && !wasChanged && !crlIsDue(stored, now)) crl = stored;
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
