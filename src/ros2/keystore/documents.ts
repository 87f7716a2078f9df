// The documents of a keystore: permissions.xml from an SROS2 policy model (src/ros2/permissions.ts),
// S/MIME signatures by the permissions CA (src/x509/smime.ts), and sros2's default ("allow-all") policy.
import type { Signer } from "../../x509/certificate.js";
import { signSmime } from "../../x509/smime.js";
import { renderPermissions } from "../permissions.js";
import type { Enclave, PermissionsParameters, Sros2Policy } from "../policy-model.js";
import { readSros2PolicyFile } from "../policy-xml/index.js";

/** sros2's defaults/policy.xml with the enclave path set: every topic, service and action allowed. */
export function allowAllPolicy(path: string): Sros2Policy {
  return {
    enclaves: [
      {
        path,
        profileSets: [
          [
            {
              ns: "/",
              node: "default",
              rules: [
                { kind: "topics", publish: "ALLOW", subscribe: "ALLOW", names: ["/*"] },
                { kind: "services", reply: "ALLOW", request: "ALLOW", names: ["/*"] },
                { kind: "actions", call: "ALLOW", execute: "ALLOW", names: ["/*"] },
              ],
            },
          ],
        ],
      },
    ],
  };
}

/** The one enclave of `policy` at `path`, as a policy of its own (what ros2_enclaves keeps), or undefined. */
export function enclaveOf(policy: Sros2Policy, path: string): Sros2Policy | undefined {
  const enclave: Enclave | undefined = policy.enclaves.find((e) => e.path === path);
  return enclave ? { enclaves: [enclave] } : undefined;
}

/** Reads an SROS2 policy file (XInclude, schema; Sros2PolicyError with the reason). */
export function readPolicyFile(file: string): Sros2Policy {
  return readSros2PolicyFile(file);
}

/** permissions.xml for the enclaves of `policy` (byte for byte what sros2's permissions.xsl makes). */
export function renderEnclavePermissions(policy: Sros2Policy, params: PermissionsParameters): string {
  return renderPermissions(policy, params);
}

/** S/MIME (PKCS#7 detached, text) signature of `content` by the CA, as sros2 writes its .p7s files. */
export function signDocument(content: Buffer, signerCertDer: Buffer, signer: Signer, now: Date): string {
  return signSmime(content, signerCertDer, signer, { signingTime: now });
}
