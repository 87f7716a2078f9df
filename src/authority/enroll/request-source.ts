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
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (v4) return { address: v4[1]!, group: v4[1]! };
  if (isIP(address) !== 6) return { address, group: address };
  // One IPv6 host usually holds a whole /64: counting addresses would not bound it.
  return { address, group: `${expandIpv6(address).slice(0, 4).join(":")}::/64` };
}

function expandIpv6(address: string): string[] {
  const [head, tail] = address.split("%")[0]!.toLowerCase().split("::") as [string, string | undefined];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  return groups.map((g) => g.padStart(4, "0"));
}

/**
 * The key a source address is counted under by the failure limits. IPv4-mapped IPv6 addresses count
 * as their IPv4 address; other IPv6 addresses by their /64, since one host usually holds a whole /64
 * and could otherwise move to a fresh address for every request.
 */
export function sourceKey(address: string | undefined): string {
  if (!address) return "unknown";
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(":")) return address;
  const bare = address.split("%")[0]!.toLowerCase();
  const [head = "", tail] = bare.split("::");
  const groups = (part: string) => (part === "" ? [] : part.split(":").flatMap((g) => (g.includes(".") ? ["0", "0"] : [g])));
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const all = [...front, ...Array<string>(Math.max(0, 8 - front.length - back.length)).fill("0"), ...back];
  return `${all
    .slice(0, 4)
    .map((g) => (Number.parseInt(g, 16) || 0).toString(16))
    .join(":")}::/64`;
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
