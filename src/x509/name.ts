// X.501 Names: building RDN sequences and rendering them as text.
import { children, content, expectTag, readElement, readOid, type Element } from "../der/reader.js";
import { OID } from "../der/oids.js";
import { oid, printableString, sequence, set, utf8String } from "../der/writer.js";

export interface NameAttribute {
  type: string; // OID
  value: string;
}

export function encodeName(attributes: readonly NameAttribute[]): Buffer {
  return sequence(
    ...attributes.map((a) =>
      set(sequence(oid(a.type), a.type === OID.countryName ? printableString(a.value) : utf8String(a.value))),
    ),
  );
}

const SHORT: Record<string, string> = {
  [OID.commonName]: "CN",
  [OID.organizationName]: "O",
  [OID.organizationalUnitName]: "OU",
  [OID.countryName]: "C",
  [OID.serialNumberAttr]: "serialNumber",
};

/** "CN=x, O=y" rendering (RDNs in encoded order) for humans and logs. */
export function nameToString(nameDer: Buffer): string {
  const root = readElement(nameDer, 0);
  return children(expectTag(root, 0x30, "Name"))
    .flatMap((rdn) => children(rdn))
    .map((atv: Element) => {
      const [type, value] = children(atv);
      const t = readOid(type!);
      return `${SHORT[t] ?? t}=${content(value!).toString(value!.tag === 0x1e ? "utf16le" : "utf8")}`;
    })
    .join(", ");
}

/** The (last) commonName in a Name, if any. */
export function commonNameOf(nameDer: Buffer): string | undefined {
  let cn: string | undefined;
  for (const rdn of children(expectTag(readElement(nameDer, 0), 0x30, "Name")))
    for (const atv of children(rdn)) {
      const [type, value] = children(atv);
      if (readOid(type!) === OID.commonName) cn = content(value!).toString(value!.tag === 0x1e ? "utf16le" : "utf8");
    }
  return cn;
}
