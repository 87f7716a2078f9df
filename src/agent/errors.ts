// Errors of the device agent. Every one is named "AgentError" so the CLI prints it as one line.

export class AgentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AgentError";
  }
}

/** The server refused this enrollment (403). */
export class EnrollmentRefused extends AgentError {
  constructor(
    detail: string,
    /** The problem type URI, e.g. …/enrollment-denied. */
    readonly problemType: string | undefined,
  ) {
    super(`enrollment refused: ${detail}`);
    this.name = "EnrollmentRefused";
  }

  /** An operator's decision on this request (denied, or approved for another key), not a passing state such as a held device. */
  get decided(): boolean {
    return /\/(enrollment-denied|key-mismatch)$/.test(this.problemType ?? "");
  }
}

/** A problem+json (RFC 9457) or other non-2xx answer from the registration server. */
export class ServerError extends AgentError {
  constructor(
    message: string,
    readonly status: number,
    /** The problem type URI, when the server sent one. */
    readonly type: string | undefined,
    /** Milliseconds the server asked us to wait (Retry-After), if any. */
    readonly retryAfterMs: number | undefined,
  ) {
    super(message);
  }

  /** True for statuses worth retrying as they are: 5xx, 408 and 429. */
  get transient(): boolean {
    return this.status >= 500 || this.status === 408 || this.status === 429;
  }
}

/** Network, DNS, TLS or timeout failure: no HTTP answer at all. Always worth retrying. */
export class TransportError extends AgentError {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/** The certificate is past the server's after-expiry grace: only a new enrollment helps. */
export class ReEnrollRequired extends AgentError {
  constructor(detail: string) {
    super(`must re-enroll: ${detail}`);
  }
}

/** Non-2xx problem types end with this path segment when renewal is no longer possible. */
export const RE_ENROLL_PROBLEM_SUFFIX = "/re-enroll-required";
