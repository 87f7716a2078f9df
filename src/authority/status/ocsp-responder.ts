// The OCSP responder (RFC 6960): answers from the certificates table, signed by a delegated
// responder certificate per CA (made here, recorded like every certificate, renewed at half-life).
// Signed `good` answers to requests without a nonce are reused for a short window; any status
// change (change-feed.ts -> invalidate) drops every cached answer at once, and an answer whose
// lookup began before that change is looked up again rather than served or cached.
import { generateKeyPairSync } from "node:crypto";
import { parseDuration } from "../../config/duration.js";
import type { StoredStatus } from "../../store/operations/status.js";
import type { CaTable } from "../../store/schema.js";
import { parseCertificate, type ParsedCertificate } from "../../x509/certificate.js";
import { signatureSchemeFor } from "../../x509/algorithms.js";
import { OcspRequestError, issuerHashes, parseOcspRequest, type OcspHash, type ParsedOcspRequest } from "../../x509/ocsp-request.js";
import {
  OcspResponseSigner,
  ocspErrorResponse,
  ocspResponder,
  type CertStatus,
  type RevocationReasonName,
  type SingleResponseInput,
} from "../../x509/ocsp-response.js";
import { fromPem } from "../../x509/pem.js";
import { buildOcspResponderCertificate } from "../../x509/profiles.js";
import { AuthorityError } from "../errors.js";
import { certificateRow, issueAuditDetails, issuedRecord } from "../issue/records.js";
import type { FleetServices } from "../services.js";

const HASHES: readonly OcspHash[] = ["sha1", "sha256", "sha384", "sha512"];
const CACHE_ENTRIES = 10_000;
/** Lookups started over after a status change before answering tryLater (changes come at most a few per second). */
const MAX_ATTEMPTS = 3;

interface ServedCa {
  id: string;
  status: CaTable["status"];
  revokedAt?: Date;
}

interface Responder {
  signer: OcspResponseSigner;
  notAfter: Date;
  renewAt: Date;
}

export type { StoredStatus };

export interface OcspOutcome {
  der: Buffer;
  /** For logs and metrics: successful, malformedRequest, unauthorized, tryLater, internalError. */
  status: string;
  /** Not signed for this request: from the cache, or shared with an identical request in flight. */
  cached: boolean;
}

export interface OcspServiceOptions {
  /** Milliseconds since the epoch; the fleet's clock by default. */
  now?: () => number;
}

export class OcspService {
  /** `${hash}:${nameHash hex}:${keyHash hex}` -> CA. */
  private issuers = new Map<string, ServedCa>();
  private issuersLoadedAt = 0;
  private issuersGeneration = -1;
  private readonly responders = new Map<string, Promise<Responder>>();
  private readonly cache = new Map<string, { der: Buffer; until: number }>();
  /**
   * Requests being answered, by their bytes: an identical request arriving meanwhile shares the
   * answer instead of signing another one (two answers to one no-nonce request would differ).
   */
  private readonly answering = new Map<string, Promise<OcspOutcome>>();
  /** Bumped by every invalidate(): what was read under an older generation may be stale. */
  private generation = 0;
  private readonly cacheMs: number;
  private readonly responderLifetimeMs: number;
  private readonly now: () => number;

  constructor(
    private readonly fleet: FleetServices,
    private readonly onError: (e: unknown) => void = () => {},
    options: OcspServiceOptions = {},
  ) {
    this.cacheMs = parseDuration(fleet.config.revocation.ocsp_cache);
    this.responderLifetimeMs = parseDuration(fleet.config.revocation.ocsp_responder_validity);
    this.now = options.now ?? (() => fleet.clock.now().getTime());
  }

  /** A certificate's (or a CA's) status changed somewhere: no answer read before may be served again. */
  invalidate(): void {
    this.generation++;
    this.cache.clear();
  }

  /** Always an OCSPResponse (RFC 6960 2.3): errors are answered with their status, never thrown. */
  async respond(request: Buffer): Promise<OcspOutcome> {
    const key = request.toString("latin1");
    const hit = this.cache.get(key);
    if (hit && hit.until > this.now()) return { der: hit.der, status: "successful", cached: true };
    const running = this.answering.get(key);
    if (running) return { ...(await running), cached: true };
    const answer = this.answer(request, key).catch((e: unknown): OcspOutcome => {
      this.onError(e);
      return { der: ocspErrorResponse("internalError"), status: "internalError", cached: false };
    });
    this.answering.set(key, answer);
    try {
      return await answer;
    } finally {
      this.answering.delete(key);
    }
  }

  private async answer(request: Buffer, key: string): Promise<OcspOutcome> {
    let parsed;
    try {
      parsed = parseOcspRequest(request, { maxCertIds: this.fleet.config.revocation.ocsp_max_certificates });
    } catch (e) {
      if (e instanceof OcspRequestError) return { der: ocspErrorResponse("malformedRequest"), status: "malformedRequest", cached: false };
      throw e;
    }
    for (let attempt = 1; ; attempt++) {
      const generation = this.generation;
      const outcome = await this.lookUpAndSign(parsed, this.now());
      // A status changed while we looked (a revocation reached us meanwhile): what we read may say
      // `good` for a certificate that no longer is, so it is neither cached nor served.
      if (generation !== this.generation) {
        if (attempt < MAX_ATTEMPTS) continue;
        return { der: ocspErrorResponse("tryLater"), status: "tryLater", cached: false };
      }
      if (outcome.cacheUntil !== undefined) {
        if (this.cache.size >= CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
        this.cache.set(key, { der: outcome.der, until: outcome.cacheUntil });
      }
      return { der: outcome.der, status: outcome.status, cached: false };
    }
  }

  /** The answer from the database as it is now; cacheUntil is set for answers worth keeping. */
  private async lookUpAndSign(parsed: ParsedOcspRequest, now: number): Promise<{ der: Buffer; status: string; cacheUntil?: number }> {
    // One signer per response: every CertID must name the same CA, one we serve (RFC 6960 2.3 "unauthorized").
    await this.loadIssuers(now);
    const cas = parsed.certIds.map((id) =>
      id.hashAlgorithm === "unsupported"
        ? undefined
        : this.issuers.get(`${id.hashAlgorithm}:${id.issuerNameHash.toString("hex")}:${id.issuerKeyHash.toString("hex")}`),
    );
    const ca = cas[0];
    const unauthorized = { der: ocspErrorResponse("unauthorized"), status: "unauthorized" };
    if (!ca || cas.some((c) => c !== ca) || ca.status !== "active") return unauthorized;

    let responder: Responder;
    try {
      responder = await this.responder(ca.id, new Date(now));
    } catch (e) {
      if (e instanceof AuthorityError) return unauthorized; // e.g. an offline root
      throw e;
    }

    const thisUpdate = new Date(Math.floor(now / 1000) * 1000);
    const nextUpdate = new Date(thisUpdate.getTime() + Math.max(this.cacheMs, 1000));
    const rows = await this.readStatuses(
      ca.id,
      parsed.certIds.map((id) => id.serialHex),
    );
    let allGood = true;
    const responses: SingleResponseInput[] = parsed.certIds.map((certId, i) => {
      const row = rows[i];
      let status: CertStatus;
      if (!row || row.kind === "ocsp-responder") status = { status: "unknown" };
      else if (row.status === "valid") status = { status: "good" };
      else
        status = {
          status: "revoked",
          revokedAt: new Date(row.revoked_at ?? thisUpdate),
          reason: (row.revocation_reason ?? "unspecified") as RevocationReasonName,
        };
      if (status.status !== "good") allGood = false;
      return { certId, status, thisUpdate, nextUpdate };
    });
    // On the thread pool: the event loop keeps parsing and answering meanwhile.
    const der = await responder.signer.signAsync({ producedAt: thisUpdate, responses, nonce: parsed.nonce });
    // A nonce makes every answer unique; only plain `good` answers are worth keeping,
    // never past the answer's own nextUpdate (thisUpdate is rounded down to the second).
    if (!allGood || parsed.nonce || this.cacheMs <= 0) return { der, status: "successful" };
    return { der, status: "successful", cacheUntil: Math.min(nextUpdate.getTime(), responder.notAfter.getTime()) };
  }

  /** What the database says of each serial issued by the CA (undefined: not issued by it). A seam for tests. */
  protected readStatuses(caId: string, serials: readonly string[]): Promise<(StoredStatus | undefined)[]> {
    return this.fleet.store.ops.status.lookupStatuses(caId, serials);
  }

  /** The CAs we answer for, by every CertID hash they can be named with; reloaded at most once a second and after any change. */
  private async loadIssuers(now: number): Promise<void> {
    if (this.issuersGeneration === this.generation && now - this.issuersLoadedAt < 1000) return;
    const generation = this.generation; // a CA revoked while we read is read again next time
    const rows = await this.fleet.store.ops.cas.list();
    const next = new Map<string, ServedCa>();
    for (const row of rows) {
      const certificate = parseCertificate(fromPem(row.certificate_pem, ["CERTIFICATE"]));
      const served: ServedCa = { id: row.id, status: row.status };
      for (const hash of HASHES) {
        const { nameHash, keyHash } = issuerHashes(certificate, hash);
        next.set(`${hash}:${nameHash.toString("hex")}:${keyHash.toString("hex")}`, served);
      }
    }
    this.issuers = next;
    this.issuersLoadedAt = now;
    this.issuersGeneration = generation;
  }

  /** The CA's delegated responder, made on first use and replaced at half of its lifetime. */
  private async responder(caId: string, now: Date): Promise<Responder> {
    const existing = this.responders.get(caId);
    if (existing) {
      const r = await existing.catch(() => undefined);
      if (r && r.renewAt > now) return r;
    }
    const made = this.makeResponder(caId, now);
    this.responders.set(caId, made);
    made.catch(() => this.responders.delete(caId));
    return made;
  }

  private async makeResponder(caId: string, now: Date): Promise<Responder> {
    const ca = await this.fleet.issuingCa(caId);
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const spki = publicKey.export({ format: "der", type: "spki" });
    const subjectPublicKey = spki.subarray(spki.length - 65);
    const issued = buildOcspResponderCertificate(ca, { spki, subjectPublicKey, now, lifetimeMs: this.responderLifetimeMs });
    // Every certificate a fleet CA signs is recorded and audited; the responder key itself never leaves memory.
    const record = issuedRecord(issued, { issuerCa: caId, kind: "ocsp-responder", subjectId: `${caId}-ocsp`, deviceId: null });
    await this.fleet.recorder.record(certificateRow(record, now), {
      actor: "status-server",
      action: "certificate.issue",
      subject: `ocsp-responder:${caId}`,
      details: issueAuditDetails(record),
      at: now,
    });
    const certificate: ParsedCertificate = parseCertificate(issued.der);
    const signer = new OcspResponseSigner(ocspResponder(certificate, { key: privateKey, scheme: signatureSchemeFor(privateKey) }));
    // Half-way from now (notBefore is backdated for clock skew, so it would make short lifetimes renew at once).
    const half = now.getTime() + (issued.notAfter.getTime() - now.getTime()) / 2;
    return { signer, notAfter: issued.notAfter, renewAt: new Date(half) };
  }
}
