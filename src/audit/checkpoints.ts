// Signed checkpoints of the audit log's head (docs/audit.md). The chain alone only shows edits to
// someone who cannot rewrite the whole database; a checkpoint kept outside it pins (seq, hash) with
// the audit key's signature, so a rewritten, truncated or wiped log no longer extends it.
//
// The file is JSON: `payload` is the exact signed text (a few "key: value" lines), `signature` its
// base64 signature by the audit certificate's key, `certificate` that certificate and `chain` the
// services CA, both PEM. Nothing outside `payload` is trusted. openssl verifies it as shown in
// docs/audit.md (`openssl verify` for the chain, `openssl dgst -verify` / `pkeyutl -verify` for the
// signature).
import { X509Certificate, sign, verify, type KeyObject } from "node:crypto";
import { OID } from "../der/oids.js";
import type { CheckpointOperations } from "../store/operations/checkpoints.js";
import { signatureSchemeFor } from "../x509/algorithms.js";
import { parseCertificate, sha256Fingerprint } from "../x509/certificate.js";
import { parsePemBlocks, toPem } from "../x509/pem.js";

export const CHECKPOINT_FORMAT = "fleetpki-audit-checkpoint/v1";
const PAYLOAD_TITLE = "fleetpki audit checkpoint v1";
const PAYLOAD = new RegExp(
  "^fleetpki audit checkpoint v1\\nfleet: ([a-z0-9.-]{1,253})\\nroot: sha256:([0-9a-f]{64})\\nseq: ([1-9][0-9]{0,15})\\n" +
    "hash: ([0-9a-f]{64})\\nat: (\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z)\\n$",
);

/** The audit certificate's identity (SAN URI); with the document-signing EKU it marks the one key that signs checkpoints. */
export function auditIdentity(domain: string): string {
  return `spiffe://${domain}/service/audit`;
}

export interface CheckpointHead {
  seq: number;
  hash: string;
  /** ISO 8601, when it was signed. */
  at: string;
}

/** What a checkpoint is bound to: the fleet's domain and its root certificate. */
export interface CheckpointTrust {
  domain: string;
  rootDer: Buffer;
  /** The services CA (ca/services/cert.pem): the only CA whose audit certificates may sign checkpoints. */
  servicesCaDer: Buffer;
}

export interface AuditSigner {
  key: KeyObject;
  certificateDer: Buffer;
  /** The services CA, PEM. */
  chainPem: string;
}

interface CheckpointDocument {
  format: string;
  payload: string;
  signature: string;
  signature_algorithm: string;
  certificate: string;
  chain: string;
}

export function checkpointPayload(trust: CheckpointTrust, head: CheckpointHead): string {
  const root = sha256Fingerprint(trust.rootDer);
  const lines = [PAYLOAD_TITLE, `fleet: ${trust.domain}`, `root: sha256:${root}`, `seq: ${head.seq}`];
  lines.push(`hash: ${head.hash}`, `at: ${head.at}`);
  return lines.map((l) => `${l}\n`).join("");
}

/** The checkpoint file's text for `head`, signed by the audit key. */
export function signCheckpoint(trust: CheckpointTrust, head: CheckpointHead, signer: AuditSigner): string {
  const payload = checkpointPayload(trust, head);
  const scheme = signatureSchemeFor(signer.key);
  const doc: CheckpointDocument = {
    format: CHECKPOINT_FORMAT,
    payload,
    signature: sign(scheme.hash, Buffer.from(payload, "utf8"), signer.key).toString("base64"),
    signature_algorithm: scheme.name,
    certificate: toPem("CERTIFICATE", signer.certificateDer),
    chain: signer.chainPem,
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

export class CheckpointInvalid extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CheckpointInvalid";
  }
}

export interface VerifiedCheckpoint extends CheckpointHead {
  /** Serial of the audit certificate that signed it. */
  certificateSerial: string;
}

function field(doc: Record<string, unknown>, key: keyof CheckpointDocument): string {
  const v = doc[key];
  if (typeof v !== "string" || v === "") throw new CheckpointInvalid(`"${key}" is missing or not a string`);
  return v;
}

function certificates(pem: string, what: string): X509Certificate[] {
  let found: X509Certificate[];
  try {
    found = parsePemBlocks(pem)
      .filter((b) => b.label === "CERTIFICATE")
      .map((b) => new X509Certificate(b.der));
  } catch (e) {
    throw new CheckpointInvalid(`${what}: not a certificate (${(e as Error).message})`);
  }
  if (found.length === 0) throw new CheckpointInvalid(`${what}: no certificate`);
  return found;
}

function within(cert: X509Certificate, at: Date, what: string): void {
  const parsed = parseCertificate(Buffer.from(cert.raw));
  if (at < parsed.notBefore || at > parsed.notAfter)
    throw new CheckpointInvalid(
      `${what} was not valid at ${at.toISOString()} (valid ${parsed.notBefore.toISOString()} to ${parsed.notAfter.toISOString()})`,
    );
}

/**
 * Checks a checkpoint file on its own: its format, that it names this fleet and root, that the
 * signature verifies with an audit certificate issued by a CA that the fleet root signed, valid
 * when the checkpoint was made. Throws CheckpointInvalid saying what is wrong.
 */
export function verifyCheckpoint(text: string, trust: CheckpointTrust): VerifiedCheckpoint {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new CheckpointInvalid("not JSON");
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new CheckpointInvalid("not a JSON object");
  if (doc.format !== CHECKPOINT_FORMAT) throw new CheckpointInvalid(`format is not ${CHECKPOINT_FORMAT}`);
  const payload = field(doc, "payload");
  const m = PAYLOAD.exec(payload);
  if (!m) throw new CheckpointInvalid("the payload is not a checkpoint payload");
  const [, domain, rootFingerprint, seqText, hash, at] = m as unknown as [string, string, string, string, string, string];
  if (domain !== trust.domain) throw new CheckpointInvalid(`it is for fleet ${domain}, not ${trust.domain}`);
  if (rootFingerprint !== sha256Fingerprint(trust.rootDer))
    throw new CheckpointInvalid(`it names root sha256:${rootFingerprint}, not this fleet's root`);
  const when = new Date(at);
  if (Number.isNaN(when.getTime()) || when.toISOString() !== at) throw new CheckpointInvalid(`invalid time ${at}`);

  const [cert, ...extra] = certificates(field(doc, "certificate"), "certificate");
  if (extra.length > 0) throw new CheckpointInvalid("certificate: more than one certificate");
  const chain = certificates(field(doc, "chain"), "chain");
  const root = new X509Certificate(trust.rootDer);
  // audit certificate <- services CA <- root: exactly one intermediate, as fleetpki issues it.
  const issuer = chain.find((c) => cert!.checkIssued(c) && cert!.verify(c.publicKey));
  if (!issuer) throw new CheckpointInvalid("the audit certificate is not signed by the CA in the chain");
  if (!issuer.ca || !issuer.checkIssued(root) || !issuer.verify(root.publicKey))
    throw new CheckpointInvalid("the audit certificate's CA is not signed by this fleet's root");
  // Other CAs under the root (devices, local factory CAs) must not vouch for the audit key.
  if (!Buffer.from(issuer.raw).equals(trust.servicesCaDer))
    throw new CheckpointInvalid("the audit certificate is not issued by this fleet's services CA");
  within(issuer, when, "the audit certificate's CA");
  within(cert!, when, "the audit certificate");
  if (cert!.ca) throw new CheckpointInvalid("the signing certificate is a CA certificate");
  // Node's X509Certificate.keyUsage lists the extended key usages.
  if (!(cert!.keyUsage ?? []).includes(OID.documentSigning))
    throw new CheckpointInvalid("the signing certificate is not an audit certificate (no document-signing purpose)");
  if (!(cert!.subjectAltName ?? "").split(", ").includes(`URI:${auditIdentity(trust.domain)}`))
    throw new CheckpointInvalid(`the signing certificate does not name ${auditIdentity(trust.domain)}`);

  const scheme = signatureSchemeFor(cert!.publicKey);
  if (doc.signature_algorithm !== scheme.name)
    throw new CheckpointInvalid(`signature_algorithm must be ${scheme.name} for this certificate's key`);
  const signature = Buffer.from(field(doc, "signature"), "base64");
  let good = false;
  try {
    good = verify(scheme.hash, Buffer.from(payload, "utf8"), cert!.publicKey, signature);
  } catch {
    good = false;
  }
  if (!good) throw new CheckpointInvalid("the signature does not verify with the audit certificate");
  return { seq: Number(seqText), hash, at, certificateSerial: parseCertificate(Buffer.from(cert!.raw)).serialHex };
}

/**
 * What the database says about a checkpoint's audit certificate, or undefined when it may sign:
 * it must be an audit certificate the fleet recorded, not revoked or held when the checkpoint was
 * made, and never revoked for a key or CA compromise (then nothing it signed can be trusted).
 */
export async function checkpointSignerProblem(
  checkpoints: Pick<CheckpointOperations, "signer">,
  cp: Pick<VerifiedCheckpoint, "certificateSerial" | "at">,
): Promise<string | undefined> {
  const row = await checkpoints.signer(cp.certificateSerial);
  if (!row || row.kind !== "audit")
    return `its audit certificate ${cp.certificateSerial} is not recorded as an audit certificate of this fleet`;
  if (row.status === "valid") return undefined;
  const compromised = row.revocation_reason === "keyCompromise" || row.revocation_reason === "cACompromise";
  if (compromised || row.revoked_at === null || row.revoked_at <= cp.at)
    return (
      `its audit certificate ${cp.certificateSerial} is ${row.status === "hold" ? "on hold" : "revoked"}` +
      `${row.revocation_reason ? ` (${row.revocation_reason})` : ""}${row.revoked_at ? ` since ${row.revoked_at}` : ""}`
    );
  return undefined;
}

/** A stable name for an exported checkpoint: checkpoint-<seq>-<first 12 hex of the hash>.json. */
export function checkpointFileName(head: Pick<CheckpointHead, "seq" | "hash">): string {
  return `checkpoint-${String(head.seq).padStart(8, "0")}-${head.hash.slice(0, 12)}.json`;
}
