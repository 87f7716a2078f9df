// The OCSP responder (RFC 6960): answers from the certificates table, signed by a delegated
// responder certificate per CA (made here, recorded like every certificate, renewed at half-life).
// Signed `good` answers to requests without a nonce are reused for a short window; any status
// change (change-feed.ts -> invalidate) drops every cached answer at once.
import { generateKeyPairSync } from "node:crypto";
import { parseDuration } from "../config/duration.js";
import type { CaTable, CertificateTable } from "../store/schema.js";
import { preparedStatement } from "../store/store.js";
import { parseCertificate, sha256Fingerprint, type ParsedCertificate } from "../x509/certificate.js";
import { signatureSchemeFor } from "../x509/algorithms.js";
import {
  OcspRequestError,
  OcspResponseSigner,
  issuerHashes,
  ocspErrorResponse,
  ocspResponder,
  parseOcspRequest,
  type CertStatus,
  type OcspHash,
  type RevocationReasonName,
  type SingleResponseInput,
} from "../x509/ocsp.js";
import { fromPem } from "../x509/pem.js";
import { buildOcspResponderCertificate } from "../x509/profiles.js";
import { AuthorityError } from "./errors.js";
import type { Fleet } from "./fleet.js";

const HASHES: readonly OcspHash[] = ["sha1", "sha256", "sha384", "sha512"];
const CACHE_ENTRIES = 10_000;

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

export interface OcspOutcome {
  der: Buffer;
  /** For logs and metrics: successful, malformedRequest, unauthorized, internalError. */
  status: string;
  cached: boolean;
}

export class OcspService {
  /** `${hash}:${nameHash hex}:${keyHash hex}` -> CA. */
  private issuers = new Map<string, ServedCa>();
  private issuersLoadedAt = 0;
  private readonly responders = new Map<string, Promise<Responder>>();
  private readonly cache = new Map<string, { der: Buffer; until: number }>();
  private readonly cacheMs: number;
  private readonly responderLifetimeMs: number;

  constructor(
    private readonly fleet: Fleet,
    private readonly onError: (e: unknown) => void = () => {},
  ) {
    this.cacheMs = parseDuration(fleet.config.revocation.ocsp_cache);
    this.responderLifetimeMs = parseDuration(fleet.config.revocation.ocsp_responder_validity);
  }

  /** A certificate's status changed somewhere: no cached answer may be served again. */
  invalidate(): void {
    this.cache.clear();
    this.issuersLoadedAt = 0; // a CA may have been revoked
  }

  /** Always an OCSPResponse (RFC 6960 2.3): errors are answered with their status, never thrown. */
  async respond(request: Buffer): Promise<OcspOutcome> {
    try {
      return await this.answer(request);
    } catch (e) {
      this.onError(e);
      return { der: ocspErrorResponse("internalError"), status: "internalError", cached: false };
    }
  }

  private async answer(request: Buffer): Promise<OcspOutcome> {
    const now = Date.now();
    const key = request.toString("latin1");
    const hit = this.cache.get(key);
    if (hit && hit.until > now) return { der: hit.der, status: "successful", cached: true };

    let parsed;
    try {
      parsed = parseOcspRequest(request, { maxCertIds: this.fleet.config.revocation.ocsp_max_certificates });
    } catch (e) {
      if (e instanceof OcspRequestError) return { der: ocspErrorResponse("malformedRequest"), status: "malformedRequest", cached: false };
      throw e;
    }

    // One signer per response: every CertID must name the same CA, one we serve (RFC 6960 2.3 "unauthorized").
    await this.loadIssuers(now);
    const cas = parsed.certIds.map((id) => (id.hashAlgorithm === "unsupported" ? undefined : this.issuers.get(`${id.hashAlgorithm}:${id.issuerNameHash.toString("hex")}:${id.issuerKeyHash.toString("hex")}`)));
    const ca = cas[0];
    if (!ca || cas.some((c) => c !== ca) || ca.status !== "active") return { der: ocspErrorResponse("unauthorized"), status: "unauthorized", cached: false };

    let responder: Responder;
    try {
      responder = await this.responder(ca.id, new Date(now));
    } catch (e) {
      if (e instanceof AuthorityError) return { der: ocspErrorResponse("unauthorized"), status: "unauthorized", cached: false }; // e.g. an offline root
      throw e;
    }

    const thisUpdate = new Date(Math.floor(now / 1000) * 1000);
    const nextUpdate = new Date(thisUpdate.getTime() + Math.max(this.cacheMs, 1000));
    const rows = await this.fleet.store.withNative((native) => {
      const lookup = preparedStatement<[string, string], Pick<CertificateTable, "status" | "revoked_at" | "revocation_reason" | "kind">>(
        native,
        "select status, revoked_at, revocation_reason, kind from certificates where serial = ? and issuer_ca = ?",
      );
      return parsed.certIds.map((id) => lookup.get(id.serialHex, ca.id));
    });
    let allGood = true;
    const responses: SingleResponseInput[] = parsed.certIds.map((certId, i) => {
      const row = rows[i];
      let status: CertStatus;
      if (!row || row.kind === "ocsp-responder") status = { status: "unknown" };
      else if (row.status === "valid") status = { status: "good" };
      else status = { status: "revoked", revokedAt: new Date(row.revoked_at ?? thisUpdate), reason: (row.revocation_reason ?? "unspecified") as RevocationReasonName };
      if (status.status !== "good") allGood = false;
      return { certId, status, thisUpdate, nextUpdate };
    });
    // On the thread pool: the event loop keeps parsing and answering meanwhile.
    const der = await responder.signer.signAsync({ producedAt: thisUpdate, responses, nonce: parsed.nonce });
    // A nonce makes every answer unique; only plain `good` answers are worth keeping.
    if (allGood && !parsed.nonce && this.cacheMs > 0) {
      if (this.cache.size >= CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
      // Never past the answer's own nextUpdate (thisUpdate is rounded down to the second).
      this.cache.set(key, { der, until: Math.min(nextUpdate.getTime(), responder.notAfter.getTime()) });
    }
    return { der, status: "successful", cached: false };
  }

  /** The CAs we answer for, by every CertID hash they can be named with; reloaded at most once a second. */
  private async loadIssuers(now: number): Promise<void> {
    if (now - this.issuersLoadedAt < 1000) return;
    const rows = await this.fleet.store.db.selectFrom("cas").select(["id", "status", "certificate_pem"]).execute();
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
    await this.fleet.recorder.record(
      {
        serial: issued.serialHex,
        issuer_ca: caId,
        kind: "ocsp-responder",
        subject_id: `${caId}-ocsp`,
        device_id: null,
        not_before: issued.notBefore.toISOString(),
        not_after: issued.notAfter.toISOString(),
        fingerprint_sha256: sha256Fingerprint(issued.der),
        der: issued.der,
        status: "valid",
        revoked_at: null,
        revocation_reason: null,
        created_at: now.toISOString(),
      },
      { actor: "status-server", action: "certificate.issue", subject: `ocsp-responder:${caId}`, details: { serial: issued.serialHex, issuer: caId, kind: "ocsp-responder", not_after: issued.notAfter.toISOString() }, at: now },
    );
    const certificate: ParsedCertificate = parseCertificate(issued.der);
    const signer = new OcspResponseSigner(ocspResponder(certificate, { key: privateKey, scheme: signatureSchemeFor(privateKey) }));
    // Half-way from now (notBefore is backdated for clock skew, so it would make short lifetimes renew at once).
    const half = now.getTime() + (issued.notAfter.getTime() - now.getTime()) / 2;
    return { signer, notAfter: issued.notAfter, renewAt: new Date(half) };
  }
}
