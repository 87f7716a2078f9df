// Reading SROS2 policy files (sros2's policy.xsd 0.2.0, with XInclude) into the shared policy model.
// It accepts what `xmllint --xinclude --schema policy.xsd` accepts (see schema.ts and xinclude.ts for
// the few forms refused on purpose) and then checks every name as ROS 2 does (src/ros2/names.ts).
// Every refusal is a Sros2PolicyError naming the file, the line when the parser gives one, and why.
import { realpathSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { Sros2Policy } from "../policy-model.js";
import { Sros2PolicyError } from "../errors.js";
import { validatePolicy } from "./schema.js";
import { DEFAULT_LIMITS, type PolicyLimits } from "./tree.js";
import { checkExpandedSize, loadBytes, loadFile, newContext } from "./xinclude.js";

export { DEFAULT_LIMITS, type PolicyLimits } from "./tree.js";

/** Reads the policy file at `path` with its includes (which must stay inside its directory). */
export function readSros2PolicyFile(path: string, limits: PolicyLimits = DEFAULT_LIMITS): Sros2Policy {
  let real: string;
  try {
    real = realpathSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Sros2PolicyError(code === "ENOENT" ? "no such file" : `cannot read the file (${code})`, path);
  }
  const ctx = newContext(dirname(real), limits);
  const root = loadFile(ctx, real, path, []);
  checkExpandedSize(ctx, root, path);
  return validatePolicy(root);
}

/** Parses policy text; its includes are resolved against (and must stay inside) `baseDir`. */
export function parseSros2Policy(xml: string, baseDir: string, limits: PolicyLimits = DEFAULT_LIMITS): Sros2Policy {
  let root: string;
  try {
    root = realpathSync(baseDir);
  } catch {
    throw new Sros2PolicyError(`the base directory ${baseDir} does not exist`);
  }
  const ctx = newContext(root, limits);
  // A name no file has, so a policy including "itself" is not mistaken for a cycle; it reads a file.
  const pseudo = join(resolve(root), "\u0000policy");
  const tree = loadBytes(ctx, Buffer.from(xml, "utf8"), pseudo, "(policy)");
  checkExpandedSize(ctx, tree, "(policy)");
  return validatePolicy(tree);
}
