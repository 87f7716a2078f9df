// Encoders for the certificate extensions fleetpki writes (RFC 5280 4.2).
import { createHash } from "node:crypto";
import { OID, oidName } from "../der/oids.js";
import { DerError, childAt, content, expectEnd, expectTag, readOid, readRoot, type Element } from "../der/reader.js";
import {
  TAG,
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
import type { ParsedCertificate } from "./certificate.js";

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

/**
 * The key identifier an issuer's children name in their AKI (certificates and CRLs): the
 * issuer's subjectKeyIdentifier as written (its OCTET STRING may be longer than one length octet
 * allows, e.g. in a CA certificate made elsewhere), or method 1 when it has none.
 */
export function certificateKeyId(cert: ParsedCertificate): Buffer {
  const ski = cert.extensions.get(OID.subjectKeyIdentifier);
  if (!ski) return keyIdentifier(cert.subjectPublicKey);
  return content(expectTag(readRoot(ski.value), TAG.OCTET_STRING, "SubjectKeyIdentifier"));
}

export function subjectKeyIdentifier(keyId: Buffer): Buffer {
  return extension(OID.subjectKeyIdentifier, false, octetString(keyId));
}

export function authorityKeyIdentifier(keyId: Buffer): Buffer {
  return extension(OID.authorityKeyIdentifier, false, sequence(implicitPrimitive(0, keyId)));
}

export type GeneralName = { uri: string } | { dns: string } | { ip: string };

function ipv4Bytes(ip: string): Buffer {
  return Buffer.from(ip.split(".").map(Number));
}

/**
 * The 16 octets of an IPv6 address (RFC 4291 2.2): eight hex groups, one "::" standing for one
 * or more zero groups, and an optional trailing dotted quad (::ffff:10.0.0.1, ::1.2.3.4) that
 * fills the last two groups. isIP has checked the syntax already; the counts are checked again.
 */
function ipv6Bytes(ip: string): Buffer {
  let text = ip;
  let v4: Buffer | undefined;
  const lastColon = ip.lastIndexOf(":");
  if (ip.includes(".", lastColon)) {
    v4 = ipv4Bytes(ip.slice(lastColon + 1));
    text = `${ip.slice(0, lastColon + 1)}0:0`; // two placeholder groups, overwritten by v4
  }
  const halves = text.split("::");
  if (halves.length > 2) throw new RangeError(`not an IPv6 address: ${ip}`);
  const groupsOf = (part: string): string[] => (part === "" ? [] : part.split(":"));
  const head = groupsOf(halves[0]!);
  const tail = halves.length === 2 ? groupsOf(halves[1]!) : [];
  const zeros = halves.length === 2 ? 8 - head.length - tail.length : 0;
  const groups = [...head, ...Array<string>(Math.max(zeros, 0)).fill("0"), ...tail];
  if (groups.length !== 8 || (halves.length === 2 && zeros < 1) || !groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g)))
    throw new RangeError(`not an IPv6 address: ${ip}`);
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  v4?.copy(out, 12);
  return out;
}

/**
 * The iPAddress GeneralName octets (RFC 5280 4.2.1.6): 4 for IPv4, 16 for IPv6, including the
 * IPv4-mapped form. A zone id ("fe80::1%eth0") names an interface of one host, not an address a
 * certificate can vouch for, so it is refused.
 */
export function ipAddressBytes(ip: string): Buffer {
  if (ip.includes("%")) throw new RangeError(`IP address ${ip} has a zone id ("%..."), which a certificate cannot name`);
  const family = isIP(ip);
  if (family === 4) return ipv4Bytes(ip);
  if (family === 6) return ipv6Bytes(ip);
  throw new RangeError(`not an IP address: ${ip}`);
}

export function generalName(name: GeneralName): Buffer {
  if ("uri" in name) return implicitPrimitive(6, Buffer.from(name.uri, "latin1"));
  if ("dns" in name) return implicitPrimitive(2, Buffer.from(name.dns, "latin1"));
  return implicitPrimitive(7, ipAddressBytes(name.ip));
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

// ---------------------------------------------------------------------------------------------
// Reading

/** One Extension as read: extnID (element and dotted text), critical flag, extnValue OCTET STRING element. */
export interface ExtensionElement {
  oid: Element;
  id: string;
  critical: boolean;
  value: Element;
}

/** An extension that appears twice in one list (RFC 5280 4.2 forbids it); each parser maps it to its own error. */
export class DuplicateExtension extends Error {
  constructor(readonly id: string) {
    super(`extension ${oidName(id)} appears more than once`);
    this.name = "DuplicateExtension";
  }
}

/**
 * Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension { extnID, critical BOOLEAN DEFAULT FALSE,
 * extnValue OCTET STRING }, read strictly for CRLs and OCSP: a DerError for anything malformed
 * (an empty list included), DuplicateExtension for a repeated extnID. Values are views into the input.
 */
export function readExtensionList(list: Element): ExtensionElement[] {
  expectTag(list, TAG.SEQUENCE, "Extensions");
  if (list.end === list.contentStart) throw new DerError("empty Extensions (SIZE 1..MAX)", list.start);
  const out: ExtensionElement[] = [];
  for (let off = list.contentStart; off < list.end;) {
    const ext = expectTag(childAt(list, off, "Extension"), TAG.SEQUENCE, "Extension");
    off = ext.end;
    const extOid = expectTag(childAt(ext, ext.contentStart, "extnID"), TAG.OID, "extnID");
    const id = readOid(extOid);
    let next = childAt(ext, extOid.end, "extnValue");
    let critical = false;
    if (next.tag === TAG.BOOLEAN) {
      // DER omits a FALSE default; explicit FALSE is a common BER habit and harmless, so accepted.
      const b = content(next);
      if (b.length !== 1 || (b[0] !== 0 && b[0] !== 0xff)) throw new DerError(`${oidName(id)} has an invalid critical flag`, next.start);
      critical = b[0] === 0xff;
      next = childAt(ext, next.end, "extnValue");
    }
    const value = expectTag(next, TAG.OCTET_STRING, "extnValue");
    expectEnd(ext, value.end, `${oidName(id)} extension`);
    if (out.some((e) => e.id === id)) throw new DuplicateExtension(id);
    out.push({ oid: extOid, id, critical, value });
  }
  return out;
}
