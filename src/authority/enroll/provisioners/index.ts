// The provisioners Enrollment consults, in the order it tries them: the first whose credential a
// request presents serves it. A new method (TPM, cloud attestation) is one file and one line here.
import type { Provisioner } from "../provisioner.js";
import { approvalProvisioner } from "./approval.js";
import { expiredRenewalProvisioner } from "./expired-renewal.js";
import { factoryProvisioner } from "./factory.js";
import { renewalProvisioner } from "./renewal.js";
import { tokenProvisioner } from "./token.js";

export const PROVISIONERS: readonly Provisioner[] = [
  tokenProvisioner,
  factoryProvisioner,
  // Last among enrollments: it applies to requests that present no credential.
  approvalProvisioner,
  renewalProvisioner,
  expiredRenewalProvisioner,
];
