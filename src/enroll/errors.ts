// Typed authority outcomes -> HTTP statuses (RFC 7030's usual codes, RFC 9457 bodies).
import {
  AuthenticationFailed,
  AuthorityError,
  CaKeyOffline,
  CaNotActive,
  CsrInvalid,
  DeviceNotActive,
  InvalidArgument,
  InvalidDeviceId,
  KeyTypeNotAllowed,
  NotPermitted,
  ReEnrollRequired,
  TooManyRequests,
  UnknownDevice,
} from "../authority/errors.js";
import { Base64Error } from "../x509/base64.js";
import { EnclaveNotOwned } from "../ros2/keystore/errors.js";
import { HttpProblem } from "../http/http.js";

/** Every 401 carries a challenge (RFC 9110 11.6.1); Basic is the one EST clients understand. */
export const BASIC_CHALLENGE = { "www-authenticate": 'Basic realm="fleetpki", charset="UTF-8"' };

/** Maps an error to the problem to send; unknown errors become a 500 without internals. */
export function toProblem(e: unknown): HttpProblem {
  if (e instanceof HttpProblem) return e;
  if (e instanceof Base64Error) return new HttpProblem(400, "invalid-base64", e.message);
  if (e instanceof CsrInvalid) return new HttpProblem(400, `csr-${e.reason}`, e.message);
  if (e instanceof KeyTypeNotAllowed) return new HttpProblem(400, "key-type-not-allowed", e.message);
  if (e instanceof InvalidDeviceId || e instanceof InvalidArgument) return new HttpProblem(400, e.code, e.message);
  // Whether a device exists is not told to unauthenticated callers: same answer as a bad token.
  if (e instanceof UnknownDevice) return new HttpProblem(401, "token-invalid", "invalid credentials", BASIC_CHALLENGE);
  if (e instanceof AuthenticationFailed) return new HttpProblem(401, e.reason, e.message, BASIC_CHALLENGE);
  if (e instanceof EnclaveNotOwned) return new HttpProblem(403, "enclave-not-owned", e.message);
  if (e instanceof NotPermitted) return new HttpProblem(403, e.reason, e.message);
  if (e instanceof DeviceNotActive) return new HttpProblem(403, e.code, e.message);
  if (e instanceof ReEnrollRequired) return new HttpProblem(403, e.code, e.message);
  if (e instanceof TooManyRequests) return new HttpProblem(429, e.code, e.message, { "retry-after": String(e.retryAfterSeconds) });
  if (e instanceof CaNotActive || e instanceof CaKeyOffline) return new HttpProblem(503, e.code, e.message);
  // SROS2 enclaves (src/ros2/keystore/errors.ts, ros2-renewal.ts): unknown 404, revoked 409.
  if (e instanceof AuthorityError && e.code === "unknown-enclave") return new HttpProblem(404, e.code, e.message);
  if (e instanceof AuthorityError && e.code === "enclave-revoked") return new HttpProblem(409, e.code, e.message);
  // The CA-side message names the other keystore's directory and device: a robot is told only that the subject is taken.
  if (e instanceof AuthorityError && e.code === "enclave-subject-taken")
    return new HttpProblem(409, e.code, "this enclave's subject is live in another keystore of the fleet; an operator must resolve it");
  if (e instanceof AuthorityError) return new HttpProblem(400, e.code, e.message);
  return new HttpProblem(500, "internal-error", "internal error (see the server log)");
}
