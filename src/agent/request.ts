// Device-side key and CSR generation, and the proof-of-possession signature for renewing an
// expired certificate (docs/enrollment.md, "Renewing after expiry").
import { createHash, sign, type KeyObject } from "node:crypto";
import { OID } from "../der/oids.js";
import { generateKey, privateKeyPem, publicSpki } from "../keys/keys.js";
import { describeKey, signatureSchemeFor } from "../x509/algorithms.js";
import { buildCsr } from "../x509/csr.js";
import { encodeName } from "../x509/name.js";
import { toPem } from "../x509/pem.js";
import { AgentError } from "./errors.js";

export const AGENT_KEY_TYPES = ["p256", "p384", "ed25519"] as const;
export type AgentKeyType = (typeof AGENT_KEY_TYPES)[number];

export function parseKeyType(text: string): AgentKeyType {
  if ((AGENT_KEY_TYPES as readonly string[]).includes(text)) return text as AgentKeyType;
  throw new AgentError(`invalid key type "${text}" (choose ${AGENT_KEY_TYPES.join(", ")})`);
}

export interface KeyAndCsr {
  key: KeyObject;
  /** PKCS#8 PEM of the new key; only ever written to key.pem. */
  keyPem: string;
  csrDer: Buffer;
  csrPem: string;
}

/** A fresh key of the given type (or of the same type as `like`) and a CSR with CN=<id>. */
export function newKeyAndCsr(deviceId: string, type: AgentKeyType | KeyObject): KeyAndCsr {
  return csrForKey(deviceId, generateKey(typeof type === "string" ? type : sameTypeAs(type)));
}

/** A CSR with CN=<id> for a key the device already holds. */
export function csrForKey(deviceId: string, key: KeyObject): KeyAndCsr {
  const csrDer = buildCsr(encodeName([{ type: OID.commonName, value: deviceId }]), publicSpki(key), {
    key,
    scheme: signatureSchemeFor(key),
  });
  return { key, keyPem: privateKeyPem(key), csrDer, csrPem: toPem("CERTIFICATE REQUEST", csrDer) };
}

function sameTypeAs(key: KeyObject): AgentKeyType | "rsa3072" {
  const type = describeKey(key);
  if (type === "p256" || type === "p384" || type === "ed25519") return type;
  if (type.startsWith("rsa")) return "rsa3072";
  throw new AgentError(`the current key is of an unsupported type (${type})`);
}

export const EXPIRED_RENEWAL_CONTEXT = "fleetpki-renew-expired/v1";

/** The exact bytes signed for POST /api/v1/renew/expired. */
export function expiredRenewalMessage(deviceId: string, nonce: string, csrDer: Buffer): Buffer {
  const csrHash = createHash("sha256").update(csrDer).digest("hex");
  return Buffer.from(`${EXPIRED_RENEWAL_CONTEXT}\n${deviceId}\n${nonce}\n${csrHash}`, "utf8");
}

/** Digest per key type: P-256 SHA-256, P-384 SHA-384, Ed25519 none, RSA SHA-256 (PKCS#1 v1.5). */
export function expiredRenewalDigest(key: KeyObject): string | null {
  const type = describeKey(key);
  if (type === "p256") return "sha256";
  if (type === "p384") return "sha384";
  if (type === "ed25519") return null;
  if (type.startsWith("rsa")) return "sha256";
  throw new AgentError(`cannot sign an expired-renewal request with a ${type} key`);
}

/** Base64 signature (ECDSA as DER) of the message with the expired certificate's key. */
export function signExpiredRenewal(key: KeyObject, deviceId: string, nonce: string, csrDer: Buffer): string {
  return sign(expiredRenewalDigest(key), expiredRenewalMessage(deviceId, nonce, csrDer), key).toString("base64");
}
