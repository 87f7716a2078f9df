// Checks on every certificate the server returns, before anything is written: it parses, it
// carries the key we generated, it chains to the pinned root through the returned chain, and
// its SAN URI names this device.
import { X509Certificate, createPublicKey, type KeyObject } from "node:crypto";
import { OID } from "../der/oids.js";
import { DerError, children, content, expectTag, readRoot } from "../der/reader.js";
import { parseCertificate, type ParsedCertificate } from "../x509/certificate.js";
import { PemError, parsePemBlocks, toPem } from "../x509/pem.js";
import { AgentError } from "./errors.js";
import type { PinnedRoot } from "./client.js";

export interface IssuedBundle {
  /** The device certificate, PEM. */
  certPem: string;
  /** The CA certificates between it and the root (normally the devices CA), PEM. */
  chainPem: string;
  certificate: X509Certificate;
  parsed: ParsedCertificate;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** spiffe://<domain>/device/<id> */
  spiffeId: string;
}

function certificatesOf(pem: string, what: string): X509Certificate[] {
  let blocks;
  try {
    blocks = parsePemBlocks(pem);
  } catch (e) {
    if (e instanceof PemError) throw new AgentError(`${what}: ${e.message}`);
    throw e;
  }
  return blocks
    .filter((b) => b.label === "CERTIFICATE")
    .map((b) => {
      try {
        return new X509Certificate(b.der);
      } catch {
        throw new AgentError(`${what}: a certificate cannot be parsed`);
      }
    });
}

/** The URI SANs of a certificate. */
export function uriSans(parsed: ParsedCertificate): string[] {
  const ext = parsed.extensions.get(OID.subjectAltName);
  if (!ext) return [];
  try {
    return children(expectTag(readRoot(ext.value), 0x30, "GeneralNames"))
      .filter((n) => n.tag === 0x86)
      .map((n) => content(n).toString("latin1"));
  } catch (e) {
    if (e instanceof DerError) throw new AgentError(`certificate has a malformed subjectAltName: ${e.message}`);
    throw e;
  }
}

/** The device SPIFFE ID (spiffe://<domain>/device/<id>) in a certificate, or undefined. */
export function deviceIdentityOf(parsed: ParsedCertificate): { spiffeId: string; deviceId: string } | undefined {
  for (const uri of uriSans(parsed)) {
    const m = /^spiffe:\/\/[^/]+\/device\/([^/]+)$/.exec(uri);
    if (m) return { spiffeId: uri, deviceId: m[1]! };
  }
  return undefined;
}

export function sameKey(a: KeyObject, b: KeyObject): boolean {
  const spki = (k: KeyObject) => (k.type === "public" ? k : createPublicKey(k)).export({ type: "spki", format: "der" });
  return spki(a).equals(spki(b));
}

const MAX_CHAIN = 4;

/**
 * Builds the path leaf -> ... -> pinned root from the candidates. Every link is checked with
 * OpenSSL's issuer check (names, key identifiers, key usage) and a signature verification, and
 * every issuer must be a CA. Returns the intermediates in order (leaf's issuer first).
 */
export function chainToRoot(leaf: X509Certificate, candidates: readonly X509Certificate[], root: X509Certificate): X509Certificate[] {
  const path: X509Certificate[] = [];
  let current = leaf;
  for (let depth = 0; depth <= MAX_CHAIN; depth++) {
    if (current.checkIssued(root) && current.verify(root.publicKey)) return path;
    const issuer = candidates.find(
      (c) => c.ca && !path.includes(c) && c !== current && current.checkIssued(c) && current.verify(c.publicKey),
    );
    if (!issuer) break;
    path.push(issuer);
    current = issuer;
  }
  throw new AgentError(
    `the issued certificate does not chain to the pinned root ${root.subject.replace(/\n/g, ", ")} through the returned chain`,
  );
}

export interface ExpectedIssue {
  /** The public (or private) key the CSR carried. */
  key: KeyObject;
  deviceId: string;
  root: PinnedRoot;
}

/** Validates a JSON API success body {certificate, chain, ...}; throws AgentError on anything wrong. */
export function validateIssued(body: Record<string, unknown>, expected: ExpectedIssue): IssuedBundle {
  if (typeof body.certificate !== "string") throw new AgentError("server answer has no certificate");
  const leafBlocks = certificatesOf(body.certificate, "certificate");
  if (leafBlocks.length === 0) throw new AgentError("server answer: certificate holds no PEM certificate");
  const leaf = leafBlocks[0]!;
  const chainCandidates = [...leafBlocks.slice(1), ...(typeof body.chain === "string" ? certificatesOf(body.chain, "chain") : [])];

  if (!sameKey(leaf.publicKey, expected.key)) throw new AgentError("the issued certificate does not carry the key this device generated");
  if (leaf.ca) throw new AgentError("the issued certificate is a CA certificate, not a device certificate");
  const path = chainToRoot(leaf, chainCandidates, expected.root.certificate);

  const parsed = parseCertificate(Buffer.from(leaf.raw));
  const identity = deviceIdentityOf(parsed);
  if (!identity)
    throw new AgentError(
      `the issued certificate has no spiffe://<domain>/device/<id> URI (found: ${uriSans(parsed).join(", ") || "none"})`,
    );
  if (identity.deviceId !== expected.deviceId)
    throw new AgentError(`the issued certificate names ${identity.spiffeId}, expected a URI ending in /device/${expected.deviceId}`);
  if (parsed.notAfter.getTime() <= parsed.notBefore.getTime()) throw new AgentError("the issued certificate has an empty validity period");

  return {
    certPem: toPem("CERTIFICATE", Buffer.from(leaf.raw)),
    chainPem: path.map((c) => toPem("CERTIFICATE", Buffer.from(c.raw))).join(""),
    certificate: leaf,
    parsed,
    serial: parsed.serialHex,
    notBefore: parsed.notBefore,
    notAfter: parsed.notAfter,
    spiffeId: identity.spiffeId,
  };
}
