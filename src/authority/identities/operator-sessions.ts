// Login links and browser sessions for operators: `fleetpki operator login NAME` makes a one-time
// link (valid 10 minutes) whose token the dashboard trades for a session (admin.session_lifetime).
// Token and session secret are 32 random bytes, given out once and stored only as SHA-256, so a
// copy of the database logs no one in and the audit log never holds one. Every time comes from
// fleet.clock.
import { createHash, createHmac, randomBytes } from "node:crypto";
import type { OperatorRole } from "../../access/identity.js";
import { parseDuration } from "../../config/duration.js";
import { AuthenticationFailed, InvalidArgument, UnknownOperator } from "../errors.js";
import type { FleetServices } from "../services.js";
import { assertOperatorName } from "./operators.js";

export const LOGIN_LINK_LIFETIME_MS = 10 * 60_000;

/** 32 bytes in base64url without padding. */
const SECRET_PATTERN = /^[A-Za-z0-9_-]{43}$/;

const newSecret = () => randomBytes(32).toString("base64url");
const sha256 = (secret: string) => createHash("sha256").update(secret).digest("hex");
/** What the audit log names a link or session by: a prefix of the stored hash, never the secret. */
const handle = (hash: string) => hash.slice(0, 16);

/** One answer for every bad link, so a caller cannot tell unknown from spent, expired or a removed operator's. */
const loginInvalid = () => new AuthenticationFailed("login-invalid", "the login link is invalid, expired or already used");

/** The double-submit value a session's state-changing requests must carry: fixed per session, so nothing more is stored. */
export function sessionCsrf(secret: string): string {
  return createHmac("sha256", secret).update("csrf").digest("base64url");
}

export interface LoginLink {
  token: string;
  expiresAt: Date;
}

/** A one-time login token for an active operator; audited `operator.login-link` (without the token). */
export async function createLoginLink(fleet: FleetServices, req: { name: string; actor: string }): Promise<LoginLink> {
  assertOperatorName(req.name);
  const now = fleet.clock.now();
  const expiresAt = new Date(now.getTime() + LOGIN_LINK_LIFETIME_MS);
  const token = newSecret();
  const hash = sha256(token);
  await fleet.store.transaction(async (tx) => {
    const operator = await tx.operators.get(req.name);
    if (!operator) throw new UnknownOperator(req.name);
    if (operator.status !== "active") throw new InvalidArgument(`operator "${req.name}" is removed`);
    // Links and sessions that expired can never be used again: housekeeping here keeps both tables small.
    await tx.operators.purgeExpired(now.toISOString());
    await tx.operators.addLogin({
      token_hash: hash,
      operator: req.name,
      expires_at: expiresAt.toISOString(),
      used_at: null,
      created_at: now.toISOString(),
    });
    await tx.audit.append([
      {
        actor: req.actor,
        action: "operator.login-link",
        subject: `operator:${req.name}`,
        details: { link: handle(hash), expires_at: expiresAt.toISOString() },
        at: now,
      },
    ]);
  });
  return { token, expiresAt };
}

export interface OperatorSessionStart {
  /** The session secret (the cookie's value): given out once, stored only as SHA-256. */
  secret: string;
  operator: string;
  role: OperatorRole;
  csrf: string;
  expiresAt: Date;
}

/**
 * Trades a login token for a browser session. The token is spent in the transaction that starts
 * the session, so of two redeems only one succeeds. Unknown, spent, expired, malformed, or of an
 * operator removed since: AuthenticationFailed "login-invalid", the same for all.
 */
export async function redeemLoginLink(fleet: FleetServices, req: { token: unknown; address?: string }): Promise<OperatorSessionStart> {
  if (typeof req.token !== "string" || !SECRET_PATTERN.test(req.token)) throw loginInvalid();
  const hash = sha256(req.token);
  const now = fleet.clock.now();
  const at = now.toISOString();
  const expiresAt = new Date(now.getTime() + parseDuration(fleet.config.admin.session_lifetime));
  // POST /api/session is public and has no rate limit (a 256-bit token is not guessed): a token that
  // opens nothing is refused after one read, without taking the database's write lock. The
  // transaction below decides again, so of two racing redeems still only one wins.
  const known = await fleet.store.ops.operators.getLogin(hash);
  if (!known || known.used_at !== null || known.expires_at <= at) throw loginInvalid();
  const secret = newSecret();
  const secretHash = sha256(secret);
  const started = await fleet.store.transaction(async (tx) => {
    const link = await tx.operators.spendLogin(hash, at);
    if (!link) return undefined;
    const operator = await tx.operators.get(link.operator);
    // The link stays spent: a removed operator's link is of no use to anyone.
    if (!operator || operator.status !== "active") return undefined;
    await tx.operators.addSession({
      secret_hash: secretHash,
      operator: operator.name,
      created_at: at,
      expires_at: expiresAt.toISOString(),
      ended_at: null,
    });
    await tx.audit.append([
      {
        actor: `operator:${operator.name}`,
        action: "operator.session-start",
        subject: `operator:${operator.name}`,
        details: {
          session: handle(secretHash),
          link: handle(hash),
          role: operator.role,
          expires_at: expiresAt.toISOString(),
          ...(req.address ? { address: String(req.address).slice(0, 64) } : {}),
        },
        at: now,
      },
    ]);
    return { operator: operator.name, role: operator.role };
  });
  if (!started) throw loginInvalid();
  return { secret, ...started, csrf: sessionCsrf(secret), expiresAt };
}

export interface OperatorSessionInfo {
  operator: string;
  /** Read now: a role changed since login applies at once. */
  role: OperatorRole;
  csrf: string;
  expiresAt: Date;
}

/** The live session this secret opens; undefined when malformed, unknown, expired, ended, or its operator is removed. */
export async function operatorSession(fleet: FleetServices, secret: unknown): Promise<OperatorSessionInfo | undefined> {
  if (typeof secret !== "string" || !SECRET_PATTERN.test(secret)) return undefined;
  const session = await fleet.store.ops.operators.getSession(sha256(secret));
  if (!session || session.ended_at !== null) return undefined;
  const now = fleet.clock.now().toISOString();
  if (session.expires_at <= now) return undefined;
  const operator = await fleet.store.ops.operators.get(session.operator);
  if (!operator || operator.status !== "active") return undefined;
  return { operator: operator.name, role: operator.role, csrf: sessionCsrf(secret), expiresAt: new Date(session.expires_at) };
}

/** Logout: ends the session (audited `operator.session-end`); false when it was unknown or already ended. */
export async function endOperatorSession(fleet: FleetServices, secret: unknown, actor: string): Promise<boolean> {
  if (typeof secret !== "string" || !SECRET_PATTERN.test(secret)) return false;
  const hash = sha256(secret);
  const now = fleet.clock.now();
  return fleet.store.transaction(async (tx) => {
    const session = await tx.operators.getSession(hash);
    if (!session || !(await tx.operators.endSession(hash, now.toISOString()))) return false;
    await tx.audit.append([
      { actor, action: "operator.session-end", subject: `operator:${session.operator}`, details: { session: handle(hash) }, at: now },
    ]);
    return true;
  });
}

/**
 * Where the dashboard redeems a login token: admin.public_url, else https://<first server name>:<admin
 * port>, then /login#<token>. The token rides in the fragment, which browsers never send: it stays
 * out of server logs and Referer headers (the page POSTs it to the API).
 */
export function loginUrl(fleet: FleetServices, token: string): string {
  const configured = fleet.config.admin.public_url;
  let base: string;
  if (configured) base = configured.replace(/\/+$/, "");
  else {
    const host = fleet.config.server.names[0] ?? "localhost";
    const port = /:(\d{1,5})$/.exec(fleet.config.listen.admin.trim())?.[1] ?? "9443";
    base = `https://${host.includes(":") ? `[${host}]` : host}${port === "443" ? "" : `:${port}`}`;
  }
  return `${base}/login#${token}`;
}
