// The admin API from the browser: the session cookie goes along by itself (same origin); unsafe
// calls echo the session's CSRF token, read from GET /api/session.
import { h, notice } from "./dom.js";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

let current = null;

/** Who is logged in ({ operator, role, via, csrf }), or null. */
export const session = () => current;

export async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && current?.csrf) headers["x-csrf-token"] = current.csrf;
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export async function loadSession() {
  try {
    current = await api("GET", "/api/session");
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
    current = null;
  }
  return current;
}

export async function login(token) {
  current = await api("POST", "/api/session", { token });
  return current;
}

export async function logout() {
  await api("DELETE", "/api/session").catch(() => undefined);
  current = null;
}

const RANK = { viewer: 0, operator: 1, admin: 2 };
export const can = (role) => current !== null && RANK[current.role] >= RANK[role];

/** Lists come as an array or as { items }. */
export const items = (data) => (Array.isArray(data) ? data : (data?.items ?? []));

/** What a page shows instead of data it could not get: 404 is an endpoint this server does not offer. */
export function failure(e, what) {
  if (e instanceof ApiError && e.status === 404 && e.problem?.type?.endsWith("/not-found"))
    return notice(`${what}: not available on this server.`, "unavailable");
  if (e instanceof ApiError && e.status === 403) return notice(`${what}: your role may not see this (${e.message}).`, "error");
  if (e instanceof ApiError && e.status === 401)
    return h("div", { class: "notice error" }, "Not logged in. Run ", h("code", {}, "fleetpki operator login NAME"), " and open its link.");
  return notice(`${what}: ${e.message}`, "error");
}

/** Fetches, and on failure returns the notice to show instead (so one missing endpoint does not blank a page). */
export async function attempt(method, path, what) {
  try {
    return { data: await api(method, path) };
  } catch (e) {
    return { error: failure(e, what) };
  }
}
