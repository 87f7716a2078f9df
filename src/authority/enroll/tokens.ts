// One-time enrollment tokens. The token is shown once; only its SHA-256 is stored. A token is
// bound to one device, expires, and is consumed inside the transaction that records the
// certificate it paid for, so racing requests cannot both use it.
import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { parseDuration } from "../../config/duration.js";
import type { EnrollmentTokenTable } from "../../store/schema.js";
import type { Operations } from "../../store/operations.js";
import { DeviceNotActive, InvalidArgument, UnknownDevice } from "../errors.js";
import type { FleetServices } from "../services.js";
import { assertDeviceId } from "../issue/issuance.js";
import { assertUsableToken, type IssueCondition } from "../issue/conditions.js";

const TOKEN_PREFIX = "fpt_";
type TokenCondition = Extract<IssueCondition, { kind: "token" }>;

function hashToken(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

export interface CreatedToken {
  token: string;
  deviceId: string;
  expiresAt: Date;
}

/** A token ready to be stored: checked and made, nothing written yet. */
export interface PreparedToken {
  created: CreatedToken;
  row: EnrollmentTokenTable;
  at: Date;
}

/** Validates the lifetime and makes the token; throws before anything is written. */
export function prepareToken(fleet: FleetServices, req: { deviceId: string; ttl?: string }): PreparedToken {
  assertDeviceId(req.deviceId);
  const ttl = req.ttl ?? fleet.config.enrollment.token_ttl;
  let ttlMs: number;
  try {
    ttlMs = parseDuration(ttl);
  } catch (e) {
    throw new InvalidArgument(`--ttl: ${(e as Error).message}`);
  }
  const token = TOKEN_PREFIX + randomBytes(24).toString("base64url");
  const now = fleet.clock.now();
  const row: EnrollmentTokenTable = {
    id: randomUUID(),
    device_id: req.deviceId,
    token_hash: hashToken(token).toString("hex"),
    created_at: now.toISOString(),
    expires_at: new Date(now.getTime() + ttlMs).toISOString(),
    used_at: null,
    created_by: "",
    certificate_serial: null,
  };
  return { created: { token, deviceId: req.deviceId, expiresAt: new Date(row.expires_at) }, row, at: now };
}

/** Stores a prepared token inside the caller's write transaction (e.g. with the device it is for). */
export async function storeToken(tx: Operations, prepared: PreparedToken, actor: string): Promise<CreatedToken> {
  const { row, at } = prepared;
  const device = await tx.devices.get(row.device_id);
  if (device === undefined) throw new UnknownDevice(row.device_id);
  // A removed device never enrolls again: a token for it could only mislead.
  if (device.status === "removed") throw new DeviceNotActive(row.device_id, device.status);
  await tx.enrollment.insertToken({ ...row, created_by: actor });
  // The hash (never the token) lets `audit verify` find a token hash planted or replaced behind the log.
  const details = { token_id: row.id, token_hash: row.token_hash, expires_at: row.expires_at };
  await tx.audit.append([{ actor, action: "token.create", subject: `device:${row.device_id}`, details, at }]);
  return prepared.created;
}

export async function createToken(fleet: FleetServices, req: { deviceId: string; ttl?: string; actor: string }): Promise<CreatedToken> {
  const prepared = prepareToken(fleet, req);
  return fleet.store.transaction((tx) => storeToken(tx, prepared, req.actor));
}

/** The row among a device's tokens whose hash is `presented`, compared in constant time (every row is compared). */
export function matchToken<T extends Pick<EnrollmentTokenTable, "token_hash">>(rows: readonly T[], presented: Buffer): T | undefined {
  let found: T | undefined;
  for (const row of rows) if (timingSafeEqual(Buffer.from(row.token_hash, "hex"), presented)) found = row;
  return found;
}

/**
 * Read-only check before any expensive work, so wrong tokens cost no signature. Returns the condition
 * that consumes the token in the recording transaction (issue/conditions.ts), where a lost race is refused.
 */
export async function checkToken(
  fleet: FleetServices,
  deviceId: string,
  token: string,
  now: Date = fleet.clock.now(),
): Promise<TokenCondition> {
  const presented = hashToken(token);
  const rows = await fleet.store.ops.enrollment.tokensOf(deviceId);
  const at = now.toISOString();
  const row = matchToken(rows, presented);
  assertUsableToken(row, deviceId, at);
  return { kind: "token", deviceId, tokenId: row.id, at };
}

/**
 * The certificate a spent token paid for, or undefined (a wrong token, or one spent before
 * serials were recorded): a retry after a lost answer is answered with it (provisioners/token.ts).
 */
export async function certificateOfSpentToken(fleet: FleetServices, deviceId: string, token: string): Promise<string | undefined> {
  const rows = await fleet.store.ops.enrollment.spentTokensOf(deviceId);
  return matchToken(rows, hashToken(token))?.certificate_serial ?? undefined;
}
