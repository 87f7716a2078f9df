// MQTT topic names and filters (MQTT 3.1.1 §4.7): validation, matching, and the two relations the
// policy needs between filters: "covers" (every topic one matches, the other matches too) and
// "intersects" (some topic matches both). Pure: no I/O. Filters are compared as arrays of levels.

/** MQTT's limit on a topic's UTF-8 length (a two-byte length prefix). */
export const MAX_TOPIC_BYTES = 65535;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function encodingProblem(text: string): string | undefined {
  if (text.length === 0) return "is empty";
  if (text.includes("\0")) return "contains NUL (U+0000)";
  if (LONE_SURROGATE.test(text)) return "is not valid UTF-8 (a lone surrogate)";
  if (Buffer.byteLength(text, "utf8") > MAX_TOPIC_BYTES) return `is longer than ${MAX_TOPIC_BYTES} bytes`;
  return undefined;
}

/** Why `topic` is not a valid PUBLISH topic name, or undefined when it is one. */
export function topicNameProblem(topic: string): string | undefined {
  const problem = encodingProblem(topic);
  if (problem) return problem;
  if (topic.includes("+") || topic.includes("#")) return "contains a wildcard (+ or #), which a topic name may not";
  return undefined;
}

/** Why `filter` is not a valid SUBSCRIBE topic filter, or undefined when it is one. */
export function topicFilterProblem(filter: string): string | undefined {
  const problem = encodingProblem(filter);
  if (problem) return problem;
  const levels = filter.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1))
      return `"#" must be the last level and alone in it (level ${i + 1}: "${level}")`;
    if (level.includes("+") && level !== "+") return `"+" must be alone in its level (level ${i + 1}: "${level}")`;
  }
  return undefined;
}

const isDollar = (level: string): boolean => level.startsWith("$");

/**
 * Does filter `f` match topic name `t` (both split into levels)? A leading wildcard never matches
 * a topic whose first level starts with "$" (MQTT 3.1.1 §4.7.2: $SYS and the like).
 */
export function filterMatches(f: readonly string[], t: readonly string[]): boolean {
  if (t.length > 0 && isDollar(t[0]!) && (f[0] === "+" || f[0] === "#")) return false;
  for (let i = 0; i < f.length; i++) {
    const level = f[i]!;
    if (level === "#") return true; // also matches the parent: "a/#" matches "a"
    if (i >= t.length) return false;
    if (level !== "+" && level !== t[i]) return false;
  }
  return f.length === t.length;
}

/** Does filter `a` match every topic that filter `s` matches? */
export function filterCovers(a: readonly string[], s: readonly string[]): boolean {
  // Topics starting with "$" that s can match (its first level is a literal "$..."): a leading
  // wildcard in a does not match them, so a must spell that level out.
  if (s.length > 0 && isDollar(s[0]!) && a[0] !== s[0]) return false;
  for (let i = 0; i < a.length; i++) {
    const level = a[i]!;
    if (level === "#") return true;
    if (i >= s.length) return false; // s matches topics with fewer levels than a needs
    const sl = s[i]!;
    if (sl === "#") return false; // s reaches any depth (and the parent); a stops at a fixed depth
    if (level === "+") continue; // + covers a literal or a + in s
    if (sl === "+" || sl !== level) return false;
  }
  return a.length === s.length;
}

/** Is there a topic that both filters match? */
export function filtersIntersect(a: readonly string[], b: readonly string[]): boolean {
  for (let i = 0; ; i++) {
    const x = a[i];
    const y = b[i];
    if (x === "#" || y === "#") {
      const other = x === "#" ? y : x;
      // At the first level, "#" does not match "$" topics: a literal "$..." there never meets it.
      return !(i === 0 && other !== undefined && other !== "+" && other !== "#" && isDollar(other));
    }
    if (x === undefined || y === undefined) return x === y;
    if (x === "+" && y === "+") continue;
    if (x === "+" || y === "+") {
      const literal = x === "+" ? y : x;
      if (i === 0 && isDollar(literal)) return false;
      continue;
    }
    if (x !== y) return false;
  }
}
