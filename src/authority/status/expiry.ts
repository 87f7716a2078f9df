// Which certificates end soon: for `fleetpki cert expiring` (cron, alerting), the admin API and the
// expiry metrics. A certificate counts while it is in force (not revoked, not yet expired, on hold
// included with its status) and nothing replaces it: a subject whose newer certificate ends later
// (a renewed device, a reissued server certificate, an OCSP signer renewed at half-life) is fine.
import { InvalidArgument } from "../errors.js";
import type { FleetServices } from "../services.js";
import type { CertificateTable } from "../../store/schema.js";
import { parseDuration } from "../../config/duration.js";

export interface ExpiringCertificate {
  /** device, factory, service, operator, server, ocsp-responder, audit or ca (root, intermediates, local CAs). */
  kind: CertificateTable["kind"];
  /** Whom it identifies: device id, operator or service name, server name, CA id ("root", "local-<name>"), "<ca>-ocsp". */
  subject: string;
  serial: string;
  /** Id of the issuing CA (the root's own certificate names "root"). */
  issuer: string;
  /** ISO 8601. */
  notAfter: string;
  secondsLeft: number;
  /** valid, or hold (on hold: it ends all the same, and may be released). */
  status: "valid" | "hold";
}

export interface ExpiringQuery {
  /** Window length in milliseconds from now. */
  within: number;
  /** Defaults to the fleet's clock. */
  now?: Date;
}

/** The largest window asked for: beyond it a date is no longer a date (and nothing of ours lives that long). */
const MAX_WINDOW_MS = 1000 * 365 * 86_400_000;

/** "14d", "12h", "2w" (config/duration.ts) as a window; a clear InvalidArgument otherwise. */
export function parseExpiryWindow(text: string): number {
  let ms: number;
  try {
    ms = parseDuration(text);
  } catch (e) {
    throw new InvalidArgument(`--within: ${(e as Error).message}`);
  }
  if (ms > MAX_WINDOW_MS) throw new InvalidArgument(`--within: "${text}" is longer than 1000 years`);
  return ms;
}

/**
 * Every certificate in force whose notAfter is within `within` of now, soonest first. Left out:
 * revoked ones, expired ones, those issued by a revoked CA (no longer trusted anyway), and those of
 * a subject with a later-ending certificate in force. The server certificate is one identity
 * whatever its name (server.names may change between reissues).
 */
export async function expiringCertificates(fleet: FleetServices, query: ExpiringQuery): Promise<ExpiringCertificate[]> {
  if (!Number.isFinite(query.within) || query.within < 0 || query.within > MAX_WINDOW_MS)
    throw new InvalidArgument(`expiry window ${query.within} ms must be between 0 and 1000 years`);
  const now = query.now ?? fleet.clock.now();
  const until = new Date(now.getTime() + query.within);
  const [rows, cas] = await Promise.all([
    fleet.store.ops.certificates.endingBetween(now.toISOString(), until.toISOString()),
    fleet.store.ops.cas.list(),
  ]);
  const revokedCas = new Set(cas.filter((c) => c.status !== "active").map((c) => c.id));
  let latestServer: string | undefined;
  if (rows.some((r) => r.kind === "server"))
    for (const s of await fleet.store.ops.certificates.ofKind("server"))
      if (s.status !== "revoked" && (latestServer === undefined || s.not_after > latestServer)) latestServer = s.not_after;
  // The store left out those outlasted by their own subject's; a server certificate also by one under another name.
  const superseded = (r: { kind: string; not_after: string }): boolean =>
    r.kind === "server" && latestServer !== undefined && latestServer > r.not_after;
  return rows
    .filter((r) => !revokedCas.has(r.issuer_ca) && !superseded(r))
    .map((r) => ({
      kind: r.kind,
      subject: r.subject_id,
      serial: r.serial,
      issuer: r.issuer_ca,
      notAfter: r.not_after,
      secondsLeft: Math.floor((Date.parse(r.not_after) - now.getTime()) / 1000),
      status: r.status === "hold" ? "hold" : "valid",
    }));
}
