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
/** `keystore init` on this fleet's keystore with the same domain: nothing to do (the CLI exits 0). */
export class KeystoreAlreadyInitialised extends KeystoreDirNotEmpty {
  constructor(
    message: string,
    readonly keystoreId: string,
  ) {
    super(message);
  }
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
    super(`enclave ${path} is revoked and cannot be renewed; create it again with \`fleetpki ros2 enclave create\``);
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
/**
 * Another live enclave (any keystore of the fleet) has this path, hence this subject: DDS matches a grant by
 * subject name and permissions travel in the clear in the handshake, so one robot could present the other's.
 */
export class EnclaveSubjectTaken extends AuthorityError {
  readonly code = "enclave-subject-taken";
  constructor(path: string, other: { keystoreId: string; dir: string; deviceId: string | null }, suggestion: string) {
    const owner = other.deviceId ? `, device "${other.deviceId}"` : "";
    super(
      `enclave ${path} is already live in keystore ${other.keystoreId} (${other.dir}${owner}); its certificate subject "CN=${path}" ` +
        "must be unique in the fleet (DDS matches permissions by subject name). Give each robot its own namespace, " +
        `e.g. ${suggestion}, or revoke the other enclave first`,
    );
  }
}
/** A ROS 2 CA recorded without its self-signed DDS trust anchor (made before fleetpki kept one). */
export class Ros2AnchorMissing extends AuthorityError {
  readonly code = "ca-anchor-missing";
  constructor(id: string) {
    super(
      `the ${id} CA has no self-signed trust anchor (ca/${id}/anchor.pem, made with the CA since this version); ` +
        "DDS implementations refuse a keystore whose CA files are intermediates",
    );
  }
}
