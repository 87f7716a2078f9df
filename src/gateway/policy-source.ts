// The access policy the gateway enforces: <dir>/policy.yaml (src/access/policy-file.ts), reloaded
// when it changes; an invalid edit keeps the policy in force and is logged.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { PolicyFile } from "../access/policy-file.js";
import { layout } from "../authority/layout.js";
import { ConfigError } from "../config/config.js";
import type { Logger } from "../log.js";
import type { PolicySource } from "./server.js";

export const POLICY_FILE = layout.policy;

export interface OpenedPolicy extends PolicySource {
  close(): void;
}

/** Without a policy file the gateway does not start: default deny would drop every message without a word. */
export async function openPolicySource(dir: string, logger: Logger, onReload: () => void): Promise<OpenedPolicy> {
  const path = join(dir, POLICY_FILE);
  if (!existsSync(path))
    throw new ConfigError(
      `the gateway needs an access policy: ${path} not found (\`fleetpki policy init\` writes the default one; ` +
        "`fleetpki policy check` validates it; docs/policy.md)",
    );
  const file = await PolicyFile.open(
    path,
    (e) => logger.error({ file: path, problems: e.message }, "policy file invalid; the policy in force stays"),
    (p) => {
      logger.info({ file: path, rules: p.ruleCount }, "policy reloaded");
      onReload();
    },
  );
  logger.info({ file: path, rules: file.current.ruleCount }, "policy loaded");
  return { grantsFor: (identity) => file.current.grantsFor(identity), close: () => file.close() };
}
