// The registration server's own certificate: does it still say what fleetpki.yaml says
// (server.names, the CRL/OCSP URLs of server.public_url), and reissuing it when not.
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { OID } from "../../der/oids.js";
import { publicSpki, readPrivateKey } from "../../keys/keys.js";
import { parseCertificate, type ParsedCertificate } from "../../x509/certificate.js";
import { authorityInfoAccess, crlDistributionPoints, extension, subjectAltName } from "../../x509/extensions.js";
import { fromPem } from "../../x509/pem.js";
import { InvalidArgument } from "../errors.js";
import type { FleetServices } from "../services.js";
import { issueOwnLeaf, serverGeneralName, serverLeaf } from "./init.js";
import { layout } from "../layout.js";

export interface ServerCertificateCheck {
  /** Why the certificate on disk does not fit the configuration; empty when it does. */
  reasons: string[];
  /** Serial of the certificate on disk (lower-case hex), when there is a readable one. */
  serial?: string;
}

export interface ServerReissue {
  serial: string;
  previousSerial?: string;
  names: string[];
  crlUrl: string;
  ocspUrl: string;
  notAfter: Date;
  reasons: string[];
}

const describeSans = (der: Buffer): string => new X509Certificate(der).subjectAltName ?? "none";

/** The DER a certificate extension of ours would have, for comparison with what we build. */
function asBuilt(cert: ParsedCertificate, oid: string): Buffer | undefined {
  const ext = cert.extensions.get(oid);
  return ext && extension(oid, ext.critical, ext.value);
}

function configuredSans(fleet: FleetServices): Buffer {
  const names = fleet.config.server.names;
  try {
    return subjectAltName(names.map(serverGeneralName));
  } catch (e) {
    throw new InvalidArgument(`fleetpki.yaml server.names: ${(e as Error).message}`);
  }
}

/** Compares server/cert.pem (and its key) with server.names and the status URLs in force. */
export function checkServerCertificate(fleet: FleetServices): ServerCertificateCheck {
  const certFile = fleet.path(join(layout.serverDir, "cert.pem"));
  const keyFile = fleet.path(join(layout.serverDir, "key.pem"));
  let cert: ParsedCertificate;
  try {
    cert = parseCertificate(fromPem(readFileSync(certFile, "utf8"), ["CERTIFICATE"]));
  } catch (e) {
    return { reasons: [`${layout.serverDir}/cert.pem is missing or unreadable (${(e as Error).message})`] };
  }
  const reasons: string[] = [];
  const wantedSans = configuredSans(fleet);
  if (!asBuilt(cert, OID.subjectAltName)?.equals(wantedSans))
    reasons.push(`its names (${describeSans(cert.der)}) are not server.names (${fleet.config.server.names.join(", ")})`);
  const urls = fleet.statusUrlsFor("services");
  const cdp = asBuilt(cert, OID.crlDistributionPoints);
  const aia = asBuilt(cert, OID.authorityInfoAccess);
  if (!cdp?.equals(crlDistributionPoints([urls.crl])) || !aia?.equals(authorityInfoAccess({ ocsp: [urls.ocsp] })))
    reasons.push(`its CRL/OCSP URLs are not those of server.public_url (${urls.crl}, ${urls.ocsp})`);
  if (!existsSync(keyFile)) reasons.push(`${layout.serverDir}/key.pem is missing`);
  else if (!publicSpki(readPrivateKey(keyFile, fleet.passphrase())).equals(cert.spki))
    // Left by a reissue interrupted between writing the key and the certificate.
    reasons.push(`${layout.serverDir}/key.pem does not match its certificate`);
  return { reasons, serial: cert.serialHex };
}

/** A new key and certificate from the services CA for server.names, recorded and audited before the files change. */
export async function reissueServerCertificate(
  fleet: FleetServices,
  req: { actor: string; reasons: string[]; previousSerial?: string },
): Promise<ServerReissue> {
  const names = fleet.config.server.names;
  configuredSans(fleet); // a bad name fails here, before anything is issued
  const now = fleet.clock.now();
  const record = await issueOwnLeaf(fleet, serverLeaf(fleet), req.actor, now, {
    reissue: { replaces: req.previousSerial ?? null, reasons: req.reasons },
  });
  const urls = fleet.statusUrlsFor("services");
  return {
    serial: record.issued.serialHex,
    previousSerial: req.previousSerial,
    names: [...names],
    crlUrl: urls.crl,
    ocspUrl: urls.ocsp,
    notAfter: record.issued.notAfter,
    reasons: req.reasons,
  };
}

/** At server start: reissues when the certificate no longer fits the configuration, else does nothing. */
export async function ensureServerCertificate(fleet: FleetServices, req: { actor: string }): Promise<ServerReissue | undefined> {
  const check = checkServerCertificate(fleet);
  if (check.reasons.length === 0) return undefined;
  return reissueServerCertificate(fleet, { ...req, reasons: check.reasons, previousSerial: check.serial });
}
