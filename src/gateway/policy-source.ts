// The access policy the gateway enforces: <dir>/policy.yaml, reloaded when it changes.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../config/config.js";
import type { Logger } from "../log.js";
import type { PolicySource } from "./server.js";

export const POLICY_FILE = "policy.yaml";

export interface OpenedPolicy extends PolicySource {
  close(): void;
}

/** Without a policy file the gateway does not start: default deny would refuse every message silently. */
export function openPolicySource(dir: string, _logger: Logger, _onReload: () => void): OpenedPolicy {
  const path = join(dir, POLICY_FILE);
  if (!existsSync(path))
    throw new ConfigError(
      `the gateway needs an access policy: ${path} not found (fleetpki init writes a default one; check it with \`fleetpki policy check\`)`,
    );
  throw new ConfigError(`${path}: policy loading is not wired yet`);
}
