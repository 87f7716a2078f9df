// Pinned root fingerprints: "sha256:<64 hex>", case-insensitive, colons and spaces allowed.
import { createHash } from "node:crypto";
import { AgentError } from "./errors.js";

/** Canonical form of a pinned fingerprint: "sha256:" + 64 lower-case hex digits. */
export function parseFingerprint(text: string): string {
  const trimmed = text.trim();
  const m = /^sha-?256\s*[:=]\s*(.*)$/i.exec(trimmed);
  const hex = (m ? m[1]! : trimmed).replace(/[:\s]/g, "").toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex))
    throw new AgentError(
      `invalid root fingerprint "${text}": expected sha256:<64 hex digits> (colons allowed), as printed by \`fleetpki init\``,
    );
  return `sha256:${hex}`;
}

/** The canonical fingerprint of a DER certificate. */
export function fingerprintOf(der: Uint8Array): string {
  return `sha256:${createHash("sha256").update(der).digest("hex")}`;
}
