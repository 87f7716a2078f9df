// What the OCSP/CRL bench measures and against what: sizes, targets from the issue, and the names
// the scenarios and the report share.
import type { RevokeReason } from "../../src/authority/status/revocation.js";

/** Concurrent clients, each with one request in flight. */
export const CONCURRENCY = 4;
export const DEVICE_COUNT = 1000;
/** Every REVOKE_EVERY-th certificate is revoked, the reasons taking turns. */
export const REVOKE_EVERY = 10;
/** Reasons an openssl index.txt can express too (openssl's list has no privilegeWithdrawn). */
export const REVOKE_REASONS: readonly RevokeReason[] = [
  "unspecified",
  "keyCompromise",
  "superseded",
  "cessationOfOperation",
  "affiliationChanged",
];
/** The cached scenario repeats this many no-nonce requests, one per good certificate. */
export const CACHED_REQUESTS = 4;
export const NONCE_BYTES = 16;
/** From the issue: cached fleetpki must answer >= 3x the openssl responder's rate. */
export const TARGET_CACHED_RATIO = 3;
/** From the issue: "a cached Node responder measured 16.7k/s here against 5.5k/s". */
export const ISSUE_NODE_CACHED = 16_700;
export const ISSUE_OPENSSL = 5_500;
/** Responses per run and scenario whose signature is verified with the responder's key. */
export const SIGNATURE_SAMPLE = 25;
export const CRL_ENTRIES = 100_000;
/** From the issue: re-signing a CRL with 100,000 revoked entries takes <= 0.5 s. */
export const CRL_TARGET_MS = 500;
export const CRL_SIGN_RUNS = 5;
export const ACTOR = "bench";
export const OCSP_REQUEST_TYPE = "application/ocsp-request";
export const OCSP_RESPONSE_TYPE = "application/ocsp-response";

export type Target = "fleet" | "openssl";
export type Mode = "cached" | "uncached";
export type Client = "node" | "raw";

export const TARGET_LABEL: Record<Target, string> = { fleet: "fleetpki serve --only status", openssl: "openssl ocsp responder" };
export const CLIENT_LABEL: Record<Client, string> = { node: "node:http", raw: "lean" };
/** Where each server takes POSTed OCSP requests. */
export const OCSP_PATH: Record<Target, string> = { fleet: "/ocsp", openssl: "/" };
