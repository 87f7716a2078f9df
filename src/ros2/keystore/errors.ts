// Typed errors of SROS2 keystores and enclaves (transports map `code`; the CLI prints the message).
import { AuthorityError, InvalidArgument, NotPermitted } from "../../authority/errors.js";

/** DIR has no .fleetpki-keystore.json and the SROS2 tree, or they are damaged. */
export class NotAKeystore extends AuthorityError {
  readonly code = "not-a-keystore";
  constructor(dir: string, why: string) {
    super(`${dir} is not a fleetpki keystore: ${why}`);
  }
}
/** A keystore made by another fleet (its root differs): this fleet's CAs must not sign into it. */
export class ForeignKeystore extends AuthorityError {
  readonly code = "foreign-keystore";
  constructor(dir: string, fingerprint: string) {
    super(`${dir} is the keystore of another fleet (root ${fingerprint.slice(0, 16)}...), not of this one`);
  }
}
/** `keystore init` on a directory that exists and is not empty. */
export class KeystoreDirNotEmpty extends AuthorityError {
  readonly code = "keystore-exists";
}
/** The ROS 2 CAs await the offline root (ceremony). */
export class Ros2CasPending extends AuthorityError {
  readonly code = "ca-pending";
}
export class InvalidEnclavePath extends InvalidArgument {
  constructor(path: string, why: string) {
    super(`invalid enclave path ${JSON.stringify(path)}: it ${why}`);
  }
}
export class InvalidDomainId extends InvalidArgument {
  constructor(text: string) {
    super(`invalid DDS domain id ${JSON.stringify(text)}: an integer from 0 to 232`);
  }
}
export class EnclaveExists extends AuthorityError {
  readonly code = "enclave-exists";
  constructor(path: string) {
    super(`enclave ${path} already exists in this keystore; use \`fleetpki ros2 enclave renew\` for a new key and certificate`);
  }
}
export class UnknownKeystoreEnclave extends AuthorityError {
  readonly code = "unknown-enclave";
  constructor(path: string) {
    super(`no enclave ${path} in this keystore (create it with \`fleetpki ros2 enclave create\`)`);
  }
}
export class EnclaveRevoked extends AuthorityError {
  readonly code = "enclave-revoked";
  constructor(path: string) {
    super(`enclave ${path} is revoked; it cannot be renewed (create a new keystore enclave path, or a new keystore)`);
  }
}
/** A device asked to renew an enclave that is not linked to it. */
export class EnclaveNotOwned extends NotPermitted {
  constructor(path: string, deviceId: string) {
    super("identity-mismatch", `enclave ${path} does not belong to device "${deviceId}"`);
  }
}
/** Neither --policy nor --allow-all (or both). */
export class PermissionsSourceRequired extends InvalidArgument {}
