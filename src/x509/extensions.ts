// Encoders for the certificate extensions fleetpki writes (RFC 5280 4.2).
import { createHash } from "node:crypto";
import { OID } from "../der/oids.js";
import {
  boolean,
  explicit,

  implicitConstructed,
  implicitPrimitive,
  namedBitString,
  octetString,
  oid,
  sequence,
  smallInteger,
} from "../der/writer.js";
import { isIP } from "node:net";

export function extension(extnId: string, critical: boolean, value: Buffer): Buffer {
  return critical ? sequence(oid(extnId), boolean(true), octetString(value)) : sequence(oid(extnId), octetString(value));
}

export const KEY_USAGE = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
} as const;
export type KeyUsageName = keyof typeof KEY_USAGE;

export function keyUsage(usages: readonly KeyUsageName[]): Buffer {
  return extension(OID.keyUsage, true, namedBitString(usages.map((u) => KEY_USAGE[u])));
}

export function basicConstraints(ca: boolean, pathLen?: number): Buffer {
  if (!ca) return extension(OID.basicConstraints, true, sequence());
  const parts = [boolean(true)];
  if (pathLen !== undefined) parts.push(smallInteger(pathLen));
  return extension(OID.basicConstraints, true, sequence(...parts));
}

export function extendedKeyUsage(purposes: readonly string[]): Buffer {
  return extension(OID.extKeyUsage, false, sequence(...purposes.map(oid)));
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING value. */
export function keyIdentifier(subjectPublicKey: Buffer): Buffer {
  return createHash("sha1").update(subjectPublicKey).digest();
}

export function subjectKeyIdentifier(keyId: Buffer): Buffer {
  return extension(OID.subjectKeyIdentifier, false, octetString(keyId));
}

export function authorityKeyIdentifier(keyId: Buffer): Buffer {
  return extension(OID.authorityKeyIdentifier, false, sequence(implicitPrimitive(0, keyId)));
}

export type GeneralName = { uri: string } | { dns: string } | { ip: string };

function ipBytes(ip: string): Buffer {
  const family = isIP(ip);
  if (family === 4) return Buffer.from(ip.split(".").map(Number));
  if (family === 6) {
    const [head, tail] = ip.includes("::") ? ip.split("::") : [ip, undefined];
    const h = head ? head.split(":") : [];
    const t = tail ? tail.split(":") : [];
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
    const out = Buffer.alloc(16);
    groups.forEach((g, i) => out.writeUInt16BE(parseInt(g || "0", 16), i * 2));
    return out;
  }
  throw new RangeError(`not an IP address: ${ip}`);
}

export function generalName(name: GeneralName): Buffer {
  if ("uri" in name) return implicitPrimitive(6, Buffer.from(name.uri, "latin1"));
  if ("dns" in name) return implicitPrimitive(2, Buffer.from(name.dns, "latin1"));
  return implicitPrimitive(7, ipBytes(name.ip));
}

export function subjectAltName(names: readonly GeneralName[]): Buffer {
  return extension(OID.subjectAltName, false, sequence(...names.map(generalName)));
}

export function crlDistributionPoints(urls: readonly string[]): Buffer {
  // DistributionPoint { distributionPoint [0] { fullName [0] GeneralNames } }
  return extension(
    OID.crlDistributionPoints,
    false,
    sequence(...urls.map((url) => sequence(explicit(0, implicitConstructed(0, generalName({ uri: url })))))),
  );
}

export function authorityInfoAccess(access: { ocsp?: readonly string[]; caIssuers?: readonly string[] }): Buffer {
  const descriptions = [
    ...(access.ocsp ?? []).map((u) => sequence(oid(OID.ocsp), generalName({ uri: u }))),
    ...(access.caIssuers ?? []).map((u) => sequence(oid(OID.caIssuers), generalName({ uri: u }))),
  ];
  return extension(OID.authorityInfoAccess, false, sequence(...descriptions));
}

/**
 * Name constraints with permitted subtrees only. For URIs RFC 5280 compares the host:
 * "fleet.example" matches that host exactly, ".fleet.example" any host below it.
 */
export function nameConstraints(permitted: readonly GeneralName[]): Buffer {
  const subtrees = permitted.map((n) => sequence(generalName(n)));
  return extension(OID.nameConstraints, true, sequence(implicitConstructed(0, subtrees)));
}

/** A "permitted subtree" set for everything under a fleet domain: URIs and DNS names. */
export function fleetDomainConstraints(domain: string): Buffer {
  return nameConstraints([{ uri: domain }, { uri: `.${domain}` }, { dns: domain }]);
}

