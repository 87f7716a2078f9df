// Where things live inside a fleet directory (all paths relative to it).
import { join } from "node:path";

export const layout = {
  passphrase: join("secrets", "passphrase"),
  caCert: (id: string) => join("ca", id, "cert.pem"),
  caKey: (id: string) => join("ca", id, "key.pem"),
  /** The CA's certificate followed by the root: what a relying party needs besides the root. */
  caChain: (id: string) => join("ca", id, "chain.pem"),
  serverDir: "server",
  operatorDir: (name: string) => join("operators", name),
  ceremonyRequest: (id: string) => join("ceremony", `${id}.request.json`),
  ceremonyDir: "ceremony",
  /** The gateway's access policy (src/access/, docs/policy.md); written by init. */
  policy: "policy.yaml",
} as const;

export const STANDARD_INTERMEDIATES = ["devices", "services", "operators"] as const;
export type IntermediateRole = (typeof STANDARD_INTERMEDIATES)[number] | "local";

export const LOCAL_CA_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;
export const localCaId = (name: string): string => `local-${name}`;
