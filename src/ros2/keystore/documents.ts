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

/** The largest UTC offset in use (UTC+14, Line Islands). */
export const GRANT_LEAD_MS = 14 * 3600_000;

/** "YYYY-MM-DDTHH:MM:SS" of `d` in UTC, without zone (what sros2 writes). */
export const grantTimeText = (d: Date): string => d.toISOString().slice(0, 19);

/**
 * An enclave grant's <not_before>/<not_after> for a certificate valid notBefore..notAfter. Fast DDS reads
 * these zone-less times in the robot's LOCAL time zone (std::get_time + mktime), Cyclone DDS as UTC. The grant
 * spans the certificate widened by 14 h on both sides, so that it is valid from the certificate's first second
 * to its last on every robot, whatever its zone (east of UTC an unwidened end would come up to 14 h early). The
 * certificate's own expiry still ends the identity, and so every session, where the grant is read as UTC.
 */
export function enclaveGrantValidity(notBefore: Date, notAfter: Date): { notBefore: string; notAfter: string } {
  return {
    notBefore: grantTimeText(new Date(notBefore.getTime() - GRANT_LEAD_MS)),
    notAfter: grantTimeText(new Date(notAfter.getTime() + GRANT_LEAD_MS)),
  };
}

/** S/MIME (PKCS#7 detached, text) signature of `content` by the CA, as sros2 writes its .p7s files. */
export function signDocument(content: Buffer, signerCertDer: Buffer, signer: Signer, now: Date): string {
  return signSmime(content, signerCertDer, signer, { signingTime: now });
}
