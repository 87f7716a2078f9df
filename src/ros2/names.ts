// ROS 2 name checks (rcl/rmw "validate_namespace", "validate_topic_name"), shared by the SROS2 policy
// reader, the fleet policy's ros2 section and the keystore. Each returns why a name is refused, or
// undefined when it is fine, so callers can wrap the reason in their own error.

const TOKEN = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Longest name we take: RTPS caps a DDS topic name at 256 characters, and "rt"/"rq"/"rr" prefixes come on top. */
export const MAX_ROS2_NAME_LENGTH = 255;

function describeBadCharacter(s: string, notAllowed = /[^A-Za-z0-9_/~*?]/): string | undefined {
  const bad = notAllowed.exec(s);
  if (!bad) return undefined;
  const c = bad[0];
  const code = c.codePointAt(0)!;
  const shown =
    code < 0x20 || code === 0x7f
      ? `control character U+${code.toString(16).toUpperCase().padStart(4, "0")}`
      : /\s/.test(c)
        ? "whitespace"
        : JSON.stringify(c);
  return `contains ${shown} at position ${bad.index + 1}; ROS 2 names use only A-Z a-z 0-9 _ and /`;
}

/**
 * An enclave path as sros2's create_enclave and rcl's security directory lookup take it: an absolute
 * ROS 2 namespace ("/", "/ns", "/ns/node"), tokens of [A-Za-z0-9_] not starting with a digit, no
 * empty token ("//"), no trailing "/" except for the root itself (rmw_validate_namespace allows "/").
 */
export function enclavePathProblem(path: string): string | undefined {
  if (path.length === 0) return "is empty; an enclave path is an absolute ROS 2 namespace such as /ns/node";
  if (path.length > MAX_ROS2_NAME_LENGTH) return `is ${path.length} characters long; the limit is ${MAX_ROS2_NAME_LENGTH}`;
  const bad = describeBadCharacter(path, /[^A-Za-z0-9_/]/);
  if (bad) return bad;
  if (!path.startsWith("/")) return 'must start with "/" (an absolute namespace such as /ns/node)';
  if (path === "/") return undefined;
  if (path.endsWith("/")) return 'must not end with "/"';
  if (path.includes("//")) return 'contains an empty token ("//")';
  for (const token of path.slice(1).split("/")) if (!TOKEN.test(token)) return `has the token "${token}" that starts with a digit`;
  return undefined;
}

/**
 * A namespace in a <profile ns=".."> : sros2's permissions.xsl prefixes it to relative names, adding
 * a "/" when it does not end with one; so "/" and "/a/" are taken as well as "/a".
 */
export function profileNamespaceProblem(ns: string): string | undefined {
  if (ns === "/") return undefined;
  return enclavePathProblem(ns.endsWith("/") ? ns.slice(0, -1) : ns);
}

/** A node name: one token. */
export function nodeNameProblem(node: string): string | undefined {
  if (node.length === 0) return "is empty";
  if (node.length > MAX_ROS2_NAME_LENGTH) return `is ${node.length} characters long; the limit is ${MAX_ROS2_NAME_LENGTH}`;
  const why = describeBadCharacter(node, /[^A-Za-z0-9_]/);
  if (why) return why;
  if (!TOKEN.test(node)) return "must be one token of A-Z a-z 0-9 _ not starting with a digit";
  return undefined;
}

/**
 * A topic, service or action name as written in a policy: absolute ("/a/b"), relative ("a/b") or
 * private ("~", "~/a"), as rcl_validate_topic_name takes them, plus the DDS partition/topic wildcards
 * "*" and "?" (sros2's default policy grants "/*"). Tokens may not start with a digit; "{}"
 * substitutions are refused because nothing expands them in a permissions file.
 */
export function topicNameProblem(name: string): string | undefined {
  if (name.length === 0) return "is empty";
  if (name.length > MAX_ROS2_NAME_LENGTH) return `is ${name.length} characters long; the limit is ${MAX_ROS2_NAME_LENGTH}`;
  const why = describeBadCharacter(name);
  if (why) return why.replace("; ROS 2 names", "; ROS 2 names (with ~ and the DDS wildcards * and ?)");
  if (name.endsWith("/") && name !== "/") return 'must not end with "/"';
  if (name.includes("//")) return 'contains an empty token ("//")';
  if (name.indexOf("~", 1) !== -1) return '"~" may only be the first character';
  if (name.startsWith("~") && name.length > 1 && name[1] !== "/") return 'a private name is "~" or starts with "~/"';
  const body = name.startsWith("~") ? name.slice(1) : name;
  for (const token of body.split("/").filter((t) => t.length > 0))
    if (/^[0-9]/.test(token)) return `has the token "${token}" that starts with a digit`;
  if (name === "/") return 'is only "/"';
  return undefined;
}
