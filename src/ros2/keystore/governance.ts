// The DDS domains a governance document's rules apply to (<domain_access_rules>/<domain_rule>/<domains>:
// <id>N</id> and <id_range><min>A</min><max>B</max></id_range>, <max> absent meaning no upper bound).
// A participant on a domain no rule covers is refused by DDS Security: a keystore's governance must cover
// its domain id. Pure: no I/O.
import type { XElement } from "../policy-xml/tree.js";

export interface DomainRange {
  min: number;
  /** undefined: no upper bound. */
  max?: number;
}

const elements = (e: XElement, local: string): XElement[] =>
  e.children.filter((c): c is XElement => c.kind === "element" && c.local === local);

const textOf = (e: XElement): string =>
  e.children
    .filter((c) => c.kind === "text")
    .map((c) => (c as { text: string }).text)
    .join("")
    .trim();

function domainNumber(e: XElement): number {
  const t = textOf(e);
  if (!/^\d{1,9}$/.test(t)) throw new Error(`<${e.local}> "${t.slice(0, 40)}" is not a domain id`);
  return Number(t);
}

/** Every domain range of every <domain_rule> of the <dds> root; throws Error (with the reason) on a malformed one. */
export function governanceDomains(root: XElement): DomainRange[] {
  const ranges: DomainRange[] = [];
  for (const rules of elements(root, "domain_access_rules"))
    for (const rule of elements(rules, "domain_rule"))
      for (const domains of elements(rule, "domains"))
        for (const c of domains.children) {
          if (c.kind !== "element") continue;
          if (c.local === "id") {
            const id = domainNumber(c);
            ranges.push({ min: id, max: id });
          } else if (c.local === "id_range") {
            const [min] = elements(c, "min");
            const [max] = elements(c, "max");
            if (!min) throw new Error("an <id_range> has no <min>");
            const range: DomainRange = { min: domainNumber(min), ...(max ? { max: domainNumber(max) } : {}) };
            if (range.max !== undefined && range.max < range.min) throw new Error(`<id_range> ${range.min}..${range.max} is empty`);
            ranges.push(range);
          }
        }
  return ranges;
}

export const coversDomain = (ranges: readonly DomainRange[], id: number): boolean =>
  ranges.some((r) => id >= r.min && (r.max === undefined || id <= r.max));

/** "0, 5-9, 100 and above" (or "no domain"), for messages. */
export function describeDomains(ranges: readonly DomainRange[]): string {
  if (ranges.length === 0) return "no domain";
  return ranges.map((r) => (r.max === undefined ? `${r.min} and above` : r.min === r.max ? `${r.min}` : `${r.min}-${r.max}`)).join(", ");
}
