// EST CSR attributes (RFC 7030 4.5.2): what a server tells clients to put into their CSRs.
//   CsrAttrs  ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID
//   AttrOrOID ::= CHOICE { oid OBJECT IDENTIFIER, attribute Attribute }
//   Attribute ::= SEQUENCE { type OBJECT IDENTIFIER, values SET SIZE (1..MAX) OF ANY }
// Pure encoders/decoders: no I/O, no clock.
import { DerError, children, expectTag, raw, readOid, readRoot, type Element } from "../der/reader.js";
import { oid, sequence, set, smallInteger } from "../der/writer.js";
import { OID } from "../der/oids.js";
import { MIN_RSA_BITS } from "./algorithms.js";

/** A bare OID, or an Attribute whose values are the raw DER of each value. */
export type CsrAttr = { oid: string } | { type: string; values: Buffer[] };

export class CsrAttrsError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CsrAttrsError";
  }
}

function checkValue(value: Buffer, where: string): void {
  try {
    readRoot(value);
  } catch (e) {
    if (e instanceof DerError) throw new CsrAttrsError(`${where}: value is not exactly one DER element: ${e.message}`, { cause: e });
    throw e;
  }
}

function encodeOid(dotted: string, where: string): Buffer {
  try {
    return oid(dotted);
  } catch (e) {
    if (e instanceof RangeError) throw new CsrAttrsError(`${where}: ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * DER CsrAttrs. Items keep their order (it is a SEQUENCE); each Attribute's values are a DER
 * SET OF, so they are written sorted by encoding. An Attribute needs at least one value.
 */
export function encodeCsrAttrs(items: readonly CsrAttr[]): Buffer {
  return sequence(
    ...items.map((item, i) => {
      const where = `CSR attribute ${i}`;
      if ("oid" in item) return encodeOid(item.oid, where);
      if (item.values.length === 0) throw new CsrAttrsError(`${where} (${item.type}): an Attribute needs at least one value`);
      item.values.forEach((v) => checkValue(v, `${where} (${item.type})`));
      const values = [...item.values].sort(Buffer.compare);
      return sequence(encodeOid(item.type, where), set(...values));
    }),
  );
}

function readItem(e: Element, index: number): CsrAttr {
  if (e.tag === 0x06) return { oid: readOid(e) };
  if (e.tag !== 0x30)
    throw new CsrAttrsError(
      `CSR attributes: item ${index} has tag 0x${e.tag.toString(16)}, expected an OBJECT IDENTIFIER or an Attribute SEQUENCE`,
    );
  const parts = children(e);
  if (parts.length !== 2)
    throw new CsrAttrsError(`CSR attributes: item ${index} is an Attribute with ${parts.length} fields, expected 2 (type, values)`);
  const type = readOid(expectTag(parts[0], 0x06, "Attribute type"));
  const values = children(expectTag(parts[1], 0x31, "Attribute values SET")).map((v) => Buffer.from(raw(v)));
  if (values.length === 0) throw new CsrAttrsError(`CSR attributes: item ${index} (Attribute ${type}) has no values`);
  return { type, values };
}

/**
 * The items of a DER CsrAttrs, in order. The values of an Attribute are returned as found
 * (their SET order is not checked). Anything else is refused with a CsrAttrsError.
 */
export function parseCsrAttrs(der: Buffer): CsrAttr[] {
  try {
    const root = readRoot(der);
    return children(expectTag(root, 0x30, "CsrAttrs SEQUENCE")).map(readItem);
  } catch (e) {
    if (e instanceof DerError) throw new CsrAttrsError(`CSR attributes: malformed DER: ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * What fleetpki's EST server announces at /csrattrs: the key types parseCsr accepts (P-256,
 * P-384, Ed25519, RSA of at least MIN_RSA_BITS), in the RFC 7030 4.5.2 example style:
 *   ecdsa-with-SHA256                          (signature algorithm hint for EC keys)
 *   { id-ecPublicKey, { secp256r1, secp384r1 } }  (EC keys on these curves)
 *   id-Ed25519
 *   { rsaEncryption, { INTEGER 2048 } }         (RSA keys, minimum modulus size in bits)
 * RFC 9908 (which clarifies RFC 7030's CSR attributes) prefers a template form, an attribute
 * carrying a CertificationRequestInfo template whose subjectPublicKeyInfo states the key;
 * the RFC 7030 form above is what deployed clients (libest and others) actually parse, so
 * that is what we send. Clients treat CSR attributes as hints; parseCsr remains the policy.
 */
const FLEET_CSR_ATTRS = encodeCsrAttrs([
  { oid: OID.ecdsaWithSHA256 },
  { type: OID.ecPublicKey, values: [oid(OID.prime256v1), oid(OID.secp384r1)] },
  { oid: OID.ed25519 },
  { type: OID.rsaEncryption, values: [smallInteger(MIN_RSA_BITS)] },
]);

export function fleetCsrAttrs(): Buffer {
  return Buffer.from(FLEET_CSR_ATTRS);
}
