// Where things live inside a fleet directory (all paths relative to it).
import { join } from "node:path";
import { OID } from "../der/oids.js";

export const layout = {
  passphrase: join("secrets", "passphrase"),
  caCert: (id: string) => join("ca", id, "cert.pem"),
  caKey: (id: string) => join("ca", id, "key.pem"),
  /** The CA's certificate followed by the root: what a relying party needs besides the root. */
  caChain: (id: string) => join("ca", id, "chain.pem"),
  /** A ROS 2 CA's self-signed twin (same key and subject): the trust anchor DDS loads (src/ros2/keystore/). */
  caAnchor: (id: string) => join("ca", id, "anchor.pem"),
  serverDir: "server",
  operatorDir: (name: string) => join("operators", name),
  ceremonyRequest: (id: string) => join("ceremony", `${id}.request.json`),
  ceremonyDir: "ceremony",
  /** The gateway's access policy (src/access/, docs/policy.md); written by init. */
  policy: "policy.yaml",
} as const;

export const STANDARD_INTERMEDIATES = ["devices", "services", "operators"] as const;
/**
 * The SROS2 CAs (src/ros2/keystore/): DDS identities and the signer of governance/permissions
 * documents. Made by the first `ros2 keystore init`; trusted by no listener of fleetpki.
 */
export const ROS2_CAS = { identity: "ros2-identity", permissions: "ros2-permissions" } as const;
export type Ros2CaRole = (typeof ROS2_CAS)[keyof typeof ROS2_CAS];
export const isRos2Ca = (id: string): id is Ros2CaRole => id === ROS2_CAS.identity || id === ROS2_CAS.permissions;
export type IntermediateRole = (typeof STANDARD_INTERMEDIATES)[number] | "local" | Ros2CaRole;

export const LOCAL_CA_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;
export const localCaId = (name: string): string => `local-${name}`;

/**
 * The ROS 2 CAs' fleet (root-signed) certificates are limited to non-TLS purposes: their keys sign at
 * every enclave renewal, online, and agents trust the root for the registration server. DDS loads the
 * self-signed anchors (no EKU), never these; S/MIME verification through the root still works.
 */
export function intermediateKeyPurposes(role: IntermediateRole): string[] | undefined {
  if (role === ROS2_CAS.permissions) return [OID.emailProtection];
  if (role === ROS2_CAS.identity) return [OID.documentSigning];
  return undefined;
}
