// The root's CRL when the root key is held offline (docs/offline-root-ceremony.md):
//   online:   fleetpki crl request              (ceremony/root-crl.request.json: what to list)
//   offline:  fleetpki ca root sign-crl --dir ROOT REQUEST --out DIR
//   online:   fleetpki crl import DIR/root.crl   (verified against the root, then served)
// `ca revoke-local` writes the request itself when the root key is not here.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseDuration } from "../../config/duration.js";
import { ensurePrivateDir, writeFileAtomic } from "../../keys/files.js";
import { signatureSchemeFor } from "../../x509/algorithms.js";
import { buildCrl, CrlError, parseCrl, verifyCrlSignature, type RevocationReason } from "../../x509/crl.js";
import { fromPem, PemError, toPem } from "../../x509/pem.js";
import { checkpointAfter } from "../audit-checkpoints.js";
import { openOfflineRoot } from "./ceremony.js";
import { CeremonyError, InvalidArgument } from "../errors.js";
import type { FleetServices } from "../services.js";
import { layout } from "../layout.js";

const REQUEST_VERSION = 1;
/** An offline root signs rarely: its CRL must last until the next ceremony. */
export const OFFLINE_ROOT_CRL_VALIDITY = "30d";

export interface RootCrlRequest {
  fleetpki_crl_request: number;
  domain: string;
  /** At least this number (the root machine also never repeats one it signed). */
  crl_number: number;
  validity: string;
  entries: { serial: string; revoked_at: string; reason: string | null }[];
}

export const ROOT_CRL_REQUEST = join(layout.ceremonyDir, "root-crl.request.json");

/** Writes <fleet>/ceremony/root-crl.request.json listing what the root's CRL must revoke now. */
export async function writeRootCrlRequest(fleet: FleetServices, validity = OFFLINE_ROOT_CRL_VALIDITY): Promise<string> {
  parseDuration(validity);
  const now = fleet.clock.now().toISOString();
  const stored = await fleet.store.ops.status.crlNumber("root");
  const listed = await fleet.store.ops.status.listCrlEntries("root", now);
  const request: RootCrlRequest = {
    fleetpki_crl_request: REQUEST_VERSION,
    domain: fleet.domain,
    crl_number: (stored ?? 0) + 1,
    validity,
    entries: listed
      .map((e) => ({ serial: e.serialHex, revoked_at: e.revokedAt.toISOString(), reason: e.reason || null }))
      .sort((a, b) => (a.serial < b.serial ? -1 : a.serial > b.serial ? 1 : 0)),
  };
  ensurePrivateDir(fleet.path(layout.ceremonyDir));
  writeFileAtomic(fleet.path(ROOT_CRL_REQUEST), JSON.stringify(request, null, 2) + "\n");
  return ROOT_CRL_REQUEST;
}

/** Offline: signs a root CRL request; writes <out>/root.crl (DER) and root.crl.pem. */
export function signRootCrlRequest(
  rootDir: string,
  file: string,
  outDir: string,
  now: Date,
): { file: string; crlNumber: bigint; entries: number; nextUpdate: Date } {
  let request: RootCrlRequest;
  try {
    request = JSON.parse(readFileSync(file, "utf8"));
  } catch {
    throw new CeremonyError(`${file}: not a fleetpki CRL request (unreadable or not JSON)`);
  }
  if (request?.fleetpki_crl_request !== REQUEST_VERSION || !Array.isArray(request.entries) || !Number.isInteger(request.crl_number))
    throw new CeremonyError(`${file}: not a fleetpki CRL request`);
  const root = openOfflineRoot(rootDir);
  if (request.domain !== root.config.domain)
    throw new CeremonyError(`${file}: request is for domain ${request.domain}, this root serves ${root.config.domain}`);
  // The root machine remembers the last number it signed, so a stale request cannot reuse one.
  const counter = join(rootDir, "crl-number");
  const last = existsSync(counter) ? Number(readFileSync(counter, "utf8").trim()) : 0;
  const crlNumber = BigInt(Math.max(request.crl_number, last + 1));
  const thisUpdate = new Date(Math.floor(now.getTime() / 1000) * 1000);
  let nextUpdate: Date;
  try {
    nextUpdate = new Date(thisUpdate.getTime() + parseDuration(request.validity));
  } catch (e) {
    throw new CeremonyError(`${file}: validity: ${(e as Error).message}`);
  }
  let der: Buffer;
  try {
    der = buildCrl(
      { certificate: root.certificate, signer: { key: root.key, scheme: signatureSchemeFor(root.key) } },
      {
        crlNumber,
        thisUpdate,
        nextUpdate,
        entries: request.entries.map((e) => ({
          serialHex: e.serial,
          revokedAt: new Date(e.revoked_at),
          reason: (e.reason ?? "unspecified") as RevocationReason,
        })),
      },
    );
  } catch (e) {
    throw new CeremonyError(`${file}: ${(e as Error).message}`);
  }
  ensurePrivateDir(outDir);
  const out = join(outDir, "root.crl");
  writeFileAtomic(out, der);
  writeFileAtomic(join(outDir, "root.crl.pem"), toPem("X509 CRL", der));
  writeFileAtomic(counter, `${crlNumber}\n`);
  return { file: out, crlNumber, entries: request.entries.length, nextUpdate };
}

/** Online: stores a root CRL signed offline, after checking it is the root's, newer, and current. */
export async function importCrl(
  fleet: FleetServices,
  file: string,
  actor: string,
): Promise<{ caId: string; crlNumber: bigint; entries: number; nextUpdate: Date }> {
  let der: Buffer;
  try {
    const bytes = readFileSync(file);
    der = bytes.subarray(0, 10).toString("latin1").startsWith("-----") ? fromPem(bytes.toString("utf8"), ["X509 CRL", "CRL"]) : bytes;
  } catch (e) {
    if (e instanceof PemError) throw new InvalidArgument(`${file}: ${e.message}`);
    throw new InvalidArgument(`cannot read ${file}`);
  }
  let crl;
  try {
    crl = parseCrl(der);
  } catch (e) {
    if (e instanceof CrlError) throw new InvalidArgument(`${file}: ${e.message}`);
    throw e;
  }
  const root = await fleet.caCertificate("root");
  if (!crl.issuer.equals(root.subject) || !verifyCrlSignature(crl, root.spki))
    throw new InvalidArgument(`${file}: not a CRL signed by this fleet's root`);
  if (crl.crlNumber === undefined || !crl.nextUpdate) throw new InvalidArgument(`${file}: a CRL needs a CRL number and a nextUpdate`);
  const now = fleet.clock.now();
  if (crl.nextUpdate.getTime() <= now.getTime()) throw new InvalidArgument(`${file}: this CRL expired at ${crl.nextUpdate.toISOString()}`);
  const crlNumber = crl.crlNumber;
  const nextUpdate = crl.nextUpdate;
  await fleet.store.transaction(async (tx) => {
    const stored = await tx.status.crlNumber("root");
    if (stored !== undefined && BigInt(stored) >= crlNumber)
      throw new InvalidArgument(`${file}: CRL number ${crlNumber} is not newer than the stored ${stored}`);
    await tx.status.storeCrl({
      ca_id: "root",
      crl_number: Number(crlNumber),
      this_update: crl.thisUpdate.toISOString(),
      next_update: nextUpdate.toISOString(),
      entries: crl.entries.length,
      der,
    });
    // "cas" makes every running process serve it at once (change-feed.ts).
    await tx.audit.append([
      {
        actor,
        action: "crl.import",
        subject: "ca:root",
        details: { crl_number: crlNumber.toString(), entries: crl.entries.length, next_update: nextUpdate.toISOString(), cas: ["root"] },
        at: now,
      },
    ]);
  });
  await checkpointAfter(fleet, actor);
  return { caId: "root", crlNumber, entries: crl.entries.length, nextUpdate };
}
