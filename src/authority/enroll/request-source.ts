// Where an enrollment request came from: for audit details, per-source bounds of approval requests,
// failure limits, and `device deny --all-from`.
import { BlockList, isIP } from "node:net";
import { InvalidArgument } from "../errors.js";

/** Where a request came from, for audit events (e.g. "est 10.0.0.7"). */
export interface RequestSource {
  via: string;
  address?: string;
}

/** Audit details naming the source, plus `extra`. */
export function sourceContext(source: RequestSource, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { via: source.via, ...(source.address ? { address: source.address } : {}), ...extra };
}

/** The peer address as shown and matched (IPv4-mapped IPv6 as IPv4), and the bucket it is counted in. */
export function sourceOf(address: string | undefined): { address: string | null; group: string | null } {
  if (!address) return { address: null, group: null };
  const v4 = ipv4Mapped(address);
  if (v4) return { address: v4, group: v4 };
  if (isIP(address) !== 6) return { address, group: address };
  // One IPv6 host usually holds a whole /64: counting addresses would not bound it.
  return { address, group: `${ipv6Groups(address).slice(0, 4).join(":")}::/64` };
}

/**
 * The key a source address is counted under by the failure limits: as sourceOf's group, with the
 * IPv6 /64 written compactly ("2001:db8:1:2::/64"), the form the limits widen to a /48.
 */
export function sourceKey(address: string | undefined): string {
  if (!address) return "unknown";
  const v4 = ipv4Mapped(address);
  if (v4) return v4;
  if (!address.includes(":")) return address;
  const groups = ipv6Groups(address).slice(0, 4);
  return `${groups.map((g) => (Number.parseInt(g, 16) || 0).toString(16)).join(":")}::/64`;
}

function ipv4Mapped(address: string): string | undefined {
  return /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address)?.[1];
}

/** The eight groups of an IPv6 address, four hex digits each (a zone is dropped; an IPv4 tail counts as two groups). */
function ipv6Groups(address: string): string[] {
  const [head = "", tail] = address.split("%")[0]!.toLowerCase().split("::");
  const groups = (part: string) => (part === "" ? [] : part.split(":").flatMap((g) => (g.includes(".") ? ["0", "0"] : [g])));
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const all = [...front, ...Array<string>(Math.max(0, 8 - front.length - back.length)).fill("0"), ...back];
  return all.map((g) => g.padStart(4, "0"));
}

/** "ADDRESS" or "ADDRESS/LENGTH" (IPv4 or IPv6; an IPv4-mapped address as IPv4) as a matcher of source addresses. */
export function addressMatcher(text: string): (address: string) => boolean {
  const [rawAddress, length, extra] = text.trim().split("/");
  const address = sourceOf(rawAddress).address ?? "";
  const family = isIP(address);
  const bits = family === 6 ? 128 : 32;
  if (family === 0 || extra !== undefined || (length !== undefined && (!/^\d{1,3}$/.test(length) || Number(length) > bits)))
    throw new InvalidArgument(
      `--all-from "${text}" is not an IP address or prefix (e.g. 198.51.100.7, 198.51.100.0/24, 2001:db8:1:2::/64)`,
    );
  const type = family === 6 ? "ipv6" : "ipv4";
  const list = new BlockList();
  if (length === undefined) list.addAddress(address, type);
  else list.addSubnet(address, Number(length), type);
  return (a) => {
    const f = isIP(a);
    return f !== 0 && (f === 6 ? "ipv6" : "ipv4") === type && list.check(a, type);
  };
}
