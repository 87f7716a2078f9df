// Errors of the ROS 2 module. A bad SROS2 policy file is bad input: InvalidArgument, which every
// transport already maps (HTTP 400, CLI exit 2), with a message naming the file, line and problem.
import { InvalidArgument } from "../authority/errors.js";

export class Sros2PolicyError extends InvalidArgument {
  constructor(
    message: string,
    /** The file the problem is in (as the user named it or as an include resolved it), when there is one. */
    readonly file?: string,
    readonly line?: number,
  ) {
    super(file === undefined ? message : `${file}${line === undefined ? "" : `:${line}`}: ${message}`);
  }
}

/** permissions.xml asked for an enclave the policy does not have. */
export class UnknownEnclave extends InvalidArgument {
  constructor(path: string, known: readonly string[]) {
    super(
      `the policy has no enclave "${path}"${
        known.length > 0 ? ` (it has ${known.slice(0, 5).join(", ")}` + `${known.length > 5 ? `, ... ${known.length} in all` : ""})` : ""
      }`,
    );
  }
}
