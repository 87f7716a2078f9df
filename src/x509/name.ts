// X.501 Names: building RDN sequences and rendering them as text.
import { DerError, children, content, expectTag, readElement, readOid, type Element } from "../der/reader.js";
import { OID } from "../der/oids.js";
import { oid, printableString, sequence, set, utf8String } from "../der/writer.js";

export interface NameAttribute {
  type: string; // OID
  value: string;
}

export function encodeName(attributes: readonly NameAttribute[]): Buffer {
  return sequence(
    ...attributes.map((a) => set(sequence(oid(a.type), a.type === OID.countryName ? printableString(a.value) : utf8String(a.value)))),
  );
}

const SHORT: Record<string, string> = {
  [OID.commonName]: "CN",
  [OID.organizationName]: "O",
  [OID.organizationalUnitName]: "OU",
  [OID.countryName]: "C",
  [OID.serialNumberAttr]: "serialNumber",
};

const BMP_STRING = 0x1e;
const UNIVERSAL_STRING = 0x1c;
const T61_STRING = 0x14;

/**
 * The text of a DirectoryString value. BMPString is UCS-2 and UniversalString UCS-4, both
 * big-endian (X.690 8.23.7-8); Node has no big-endian decoder, so the bytes are swapped first.
 * TeletexString is read as Latin-1, as OpenSSL reads it. The other string types we meet
 * (UTF8String, PrintableString, IA5String) are UTF-8 compatible.
 */
export function directoryStringText(value: Element): string {
  const bytes = content(value);
  if (value.tag === BMP_STRING) {
    if (bytes.length % 2 !== 0) throw new DerError(`BMPString of odd length ${bytes.length}`, value.start);
    return Buffer.from(bytes).swap16().toString("utf16le");
  }
  if (value.tag === UNIVERSAL_STRING) {
    if (bytes.length % 4 !== 0) throw new DerError(`UniversalString of length ${bytes.length}, not a multiple of 4`, value.start);
    let text = "";
    for (let i = 0; i < bytes.length; i += 4) {
      const cp = bytes.readUInt32BE(i);
      if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        throw new DerError(`UniversalString holds no character 0x${cp.toString(16)}`, value.start);
      text += String.fromCodePoint(cp);
    }
    return text;
  }
  if (value.tag === T61_STRING) return bytes.toString("latin1");
  return bytes.toString("utf8");
}

/** "CN=x, O=y" rendering (RDNs in encoded order) for humans and logs. */
export function nameToString(nameDer: Buffer): string {
  const root = readElement(nameDer, 0);
  return children(expectTag(root, 0x30, "Name"))
    .flatMap((rdn) => children(rdn))
    .map((atv: Element) => {
      const [type, value] = children(atv);
      const t = readOid(type!);
      return `${SHORT[t] ?? t}=${directoryStringText(value!)}`;
    })
    .join(", ");
}

/** The (last) commonName in a Name, if any. */
export function commonNameOf(nameDer: Buffer): string | undefined {
  let cn: string | undefined;
  for (const rdn of children(expectTag(readElement(nameDer, 0), 0x30, "Name")))
    for (const atv of children(rdn)) {
      const [type, value] = children(atv);
      if (readOid(type!) === OID.commonName) cn = directoryStringText(value!);
    }
  return cn;
}
