// Typed outcomes of authority operations. Transports map `code` to their own status codes.

export abstract class AuthorityError extends Error {
  abstract readonly code: string;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** An AuthorityError that also says why, as a short machine-readable reason. */
export abstract class ReasonedError<Reason extends string = string> extends AuthorityError {
  constructor(
    readonly reason: Reason,
    message: string,
  ) {
    super(message);
  }
}

export class CsrInvalid extends ReasonedError {
  readonly code = "csr-invalid";
}
export class KeyTypeNotAllowed extends AuthorityError {
  readonly code = "key-type-not-allowed";
}
export class InvalidDeviceId extends AuthorityError {
  readonly code = "invalid-device-id";
  constructor(id: string, why = "use 1-63 characters a-z 0-9 _ - starting with a letter or digit") {
    super(`invalid device id "${id}": ${why}`);
  }
}
export class UnknownDevice extends AuthorityError {
  readonly code = "unknown-device";
  constructor(id: string) {
    super(`unknown device "${id}" (add it with \`fleetpki device add ${id}\`)`);
  }
}
export class DeviceExists extends AuthorityError {
  readonly code = "device-exists";
  constructor(id: string) {
    super(`device "${id}" already exists`);
  }
}
export class DeviceNotActive extends AuthorityError {
  readonly code = "device-not-active";
  constructor(id: string, status: string) {
    super(`device "${id}" is ${status}; it cannot receive certificates`);
  }
}
export class UnknownService extends AuthorityError {
  readonly code = "unknown-service";
  constructor(name: string) {
    super(`unknown service "${name}" (add it with \`fleetpki service add ${name} --out DIR\`)`);
  }
}
export class ServiceExists extends AuthorityError {
  readonly code = "service-exists";
  constructor(name: string) {
    super(`service "${name}" already exists; give --renew for a new key and certificate, or remove it first`);
  }
}
export class UnknownOperator extends AuthorityError {
  readonly code = "unknown-operator";
  constructor(name: string) {
    super(`unknown operator "${name}" (add it with \`fleetpki operator add ${name} --role ROLE --out DIR\`)`);
  }
}
export class OperatorExists extends AuthorityError {
  readonly code = "operator-exists";
  constructor(name: string) {
    super(`operator "${name}" already exists; give --renew for a new key and certificate, or remove it first`);
  }
}
export class UnknownCertificate extends AuthorityError {
  readonly code = "unknown-certificate";
  constructor(serial: string) {
    super(`no certificate with serial ${serial} was issued by this fleet`);
  }
}
/** No gateway session with this MQTT client id is open (on any gateway of this fleet directory). */
export class UnknownGatewaySession extends AuthorityError {
  readonly code = "unknown-session";
  constructor(clientId: string) {
    super(`no gateway session with client id ${JSON.stringify(clientId)} is open`);
  }
}
export class FleetExists extends AuthorityError {
  readonly code = "fleet-exists";
  constructor(dir: string) {
    super(`a fleet already exists at ${dir}; refusing to overwrite it`);
  }
}
export class UnknownCa extends AuthorityError {
  readonly code = "unknown-ca";
  constructor(id: string) {
    super(`unknown CA "${id}"`);
  }
}
export class CaExists extends AuthorityError {
  readonly code = "ca-exists";
  constructor(id: string) {
    super(`CA "${id}" already exists`);
  }
}
export class CaKeyOffline extends AuthorityError {
  readonly code = "ca-key-offline";
}
export class CaNotActive extends AuthorityError {
  readonly code = "ca-not-active";
}
export class InvalidArgument extends AuthorityError {
  readonly code = "invalid-argument";
}
/** A list cursor that this server did not issue for this query (malformed, altered, from another query or an earlier run). */
export class InvalidCursor extends AuthorityError {
  readonly code = "invalid-cursor";
}
export class CeremonyError extends AuthorityError {
  readonly code = "ceremony-error";
}

/** Credentials missing or wrong (token, client certificate); transports answer 401. */
export class AuthenticationFailed extends ReasonedError<
  | "token-invalid"
  | "token-expired"
  | "token-used"
  | "credentials-required"
  | "certificate-required"
  | "certificate-unknown"
  | "proof-invalid"
  | "nonce-invalid"
  | "login-invalid"
> {
  readonly code = "authentication-failed";
}
/** A valid identity that may not do this; transports answer 403. */
export class NotPermitted extends ReasonedError<
  | "certificate-revoked"
  | "certificate-expired"
  | "wrong-issuer"
  | "provisioner-disabled"
  | "enrollment-denied"
  | "identity-mismatch"
  | "key-mismatch"
  | "factory-already-enrolled"
  | "role-too-weak"
  | "other-admin"
> {
  readonly code = "not-permitted";
}
export class ReEnrollRequired extends AuthorityError {
  readonly code = "re-enroll-required";
}
export class TooManyRequests extends AuthorityError {
  readonly code = "too-many-requests";
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}
/** A concurrent poll collected the approval first (enrollment.ts retries and answers with its certificate). */
export class ApprovalAlreadyIssued extends AuthorityError {
  readonly code = "approval-already-issued";
  constructor() {
    super("the approval was already used");
  }
}
/**
 * The certificate was renewed already (by a racing or earlier request): enrollment.ts answers with
 * that renewal when the key is the same, and refuses otherwise.
 */
export class CertificateAlreadyRenewed extends AuthorityError {
  readonly code = "certificate-already-renewed";
  constructor(
    readonly renewedSerial: string,
    readonly serial: string,
  ) {
    super(`certificate ${renewedSerial} was already renewed (certificate ${serial})`);
  }
}
