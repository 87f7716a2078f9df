// XInclude as libxml2 (xmllint --xinclude, xsltproc --xinclude) does it for SROS2 policy files, limited
// to the forms sros2's own files use: <xi:include href="relative/file.xml" xpointer="xpointer(/a/b/*)"/>
// in the 2001 namespace or the 2003 one libxml2 still honours (sros2's common/node.xml uses it).
// Decisions, each refused by name: other xpointer forms, parse="text", xi:fallback, absolute or URL
// hrefs, hrefs that leave the top policy file's directory (a policy must not read arbitrary files of
// the CA machine), include cycles; plus limits on depth, number of includes, bytes and elements.
//
// Like libxml2, an included document has its own includes done first and the xpointer is evaluated
// on the result; and each element brought in gets an xml:base attribute when the included file's
// path relative to the including file's directory contains a "/" (xinclude.c, "xml:base fixup").
// The schema allows xml:base only on some elements, so that attribute decides validity too.
import { readFileSync, realpathSync, statSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { Sros2PolicyError } from "../errors.js";
import { decodePolicyBytes, MAX_ELEMENT_DEPTH, parsePolicyText, XML_NS, type PolicyLimits, type XChild, type XElement } from "./tree.js";

export const XINCLUDE_NAMESPACES = ["http://www.w3.org/2001/XInclude", "http://www.w3.org/2003/XInclude"];

interface Budget {
  bytes: number;
  elements: number;
  includes: number;
}

export interface LoadContext {
  limits: PolicyLimits;
  /**
   * Files already loaded (with their includes done), by real path: a policy that includes
   * common/node.xml in each of 1,000 profiles parses it once, as libxml2 does. Safe for cycles: a
   * file that loaded without a cycle cannot close one later (its includes are the same each time).
   */
  loaded: Map<string, XElement>;
  /** realpath of each include target seen (one syscall per distinct href, not one lstat per path component each time). */
  realpaths: Map<string, string>;
  /** Real path of the directory no include may leave. */
  rootDir: string;
  budget: Budget;
}

export function newContext(rootDir: string, limits: PolicyLimits): LoadContext {
  return { limits, rootDir, budget: { bytes: 0, elements: 0, includes: 0 }, loaded: new Map(), realpaths: new Map() };
}

function countElement(ctx: LoadContext, file: string): () => void {
  return () => {
    if (++ctx.budget.elements > ctx.limits.maxElements)
      throw new Sros2PolicyError(`the policy has more than ${ctx.limits.maxElements} elements (with its includes)`, file);
  };
}

/** Reads, parses and includes one file. `stack` holds the real paths of the files including it. */
export function loadFile(ctx: LoadContext, realPath: string, shown: string, stack: readonly string[], depth = 0): XElement {
  let bytes: Buffer;
  try {
    const st = statSync(realPath);
    // A FIFO or device would block the read (or never end): only regular files are policies.
    if (!st.isFile()) throw new Sros2PolicyError("is not a regular file", shown);
    const size = st.size;
    if (size > ctx.limits.maxFileBytes)
      throw new Sros2PolicyError(`the file is ${size} bytes; the limit for a policy file is ${ctx.limits.maxFileBytes}`, shown);
    bytes = readFileSync(realPath);
  } catch (e) {
    if (e instanceof Sros2PolicyError) throw e;
    throw new Sros2PolicyError(`cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, shown);
  }
  return loadText(ctx, decodeCounted(ctx, bytes, shown), realPath, shown, stack, depth);
}

function decodeCounted(ctx: LoadContext, bytes: Uint8Array, shown: string): string {
  ctx.budget.bytes += bytes.length;
  if (ctx.budget.bytes > ctx.limits.maxTotalBytes)
    throw new Sros2PolicyError(`the policy and its includes exceed ${ctx.limits.maxTotalBytes} bytes`, shown);
  return decodePolicyBytes(bytes, shown, ctx.limits);
}

export function loadBytes(ctx: LoadContext, bytes: Uint8Array, pseudoPath: string, shown: string): XElement {
  return loadText(ctx, decodeCounted(ctx, bytes, shown), pseudoPath, shown, []);
}

/** `depth`: how deep the including element stands (0 for the top file); the file's root comes in at depth + 1. */
function loadText(ctx: LoadContext, text: string, realPath: string, shown: string, stack: readonly string[], depth = 0): XElement {
  const root = parsePolicyText(text, shown, countElement(ctx, shown), depth);
  const here = [...stack, realPath];
  const out = expand(ctx, root, realPath, shown, here, depth + 1);
  if (out.length !== 1 || out[0]!.kind !== "element")
    throw new Sros2PolicyError("the root element cannot be an xi:include", shown, root.line);
  return out[0] as XElement;
}

const sizes = new WeakMap<XElement, number>();

/** Elements in the tree with its includes done; included subtrees are shared, so this is memoized. */
function treeSize(el: XElement): number {
  let n = sizes.get(el);
  if (n === undefined) {
    n = 1;
    for (const c of el.children) if (c.kind === "element") n += treeSize(c);
    sizes.set(el, n);
  }
  return n;
}

const depths = new WeakMap<XElement, number>();

/** Levels of elements in the tree (1 for a leaf); memoized like treeSize, and bounded by the parse-time limit. */
function treeDepth(el: XElement): number {
  let n = depths.get(el);
  if (n === undefined) {
    n = 1;
    for (const c of el.children) if (c.kind === "element") n = Math.max(n, 1 + treeDepth(c));
    depths.set(el, n);
  }
  return n;
}

/**
 * The included trees are shared, not copied, so a file that includes another twice, which includes
 * another twice... costs no memory; but validating and rendering would walk every copy. Refuse here.
 */
export function checkExpandedSize(ctx: LoadContext, root: XElement, shown: string): void {
  const n = treeSize(root);
  if (n > ctx.limits.maxElements)
    throw new Sros2PolicyError(`the policy has more than ${ctx.limits.maxElements} elements with its includes done (${n})`, shown);
}

function isInclude(el: XElement): boolean {
  return el.ns !== null && XINCLUDE_NAMESPACES.includes(el.ns) && el.local === "include";
}

/** The element with its includes replaced, as a list (an include at the top yields several nodes). */
function expand(ctx: LoadContext, el: XElement, realPath: string, shown: string, stack: readonly string[], depth: number): XChild[] {
  if (isInclude(el)) return include(ctx, el, realPath, shown, stack, depth);
  if (el.ns !== null && XINCLUDE_NAMESPACES.includes(el.ns) && el.local === "fallback")
    throw new Sros2PolicyError("xi:fallback is not supported (outside xi:include it is not allowed either)", shown, el.line);
  // The size with includes done is tracked as the children come in, so a fan-out of includes is
  // refused before its arrays grow (subtrees are shared, so their sizes are memoized).
  const children: XChild[] = [];
  let size = 1;
  for (const c of el.children) {
    if (c.kind === "text") {
      children.push(c);
      continue;
    }
    for (const x of expand(ctx, c, realPath, shown, stack, depth + 1)) {
      children.push(x);
      if (x.kind !== "element") continue;
      size += treeSize(x);
      // A file loaded once (shallow) and included again deeper comes from ctx.loaded, unparsed: its depth counts here.
      if (depth + treeDepth(x) > MAX_ELEMENT_DEPTH)
        throw new Sros2PolicyError(`elements nest deeper than ${MAX_ELEMENT_DEPTH} levels with the includes done`, shown, c.line);
    }
    if (size > ctx.limits.maxElements)
      throw new Sros2PolicyError(
        `the policy has more than ${ctx.limits.maxElements} elements with its includes done (${size})`,
        shown,
        el.line,
      );
  }
  const out: XElement = { ...el, children };
  sizes.set(out, size);
  return [out];
}

const XPOINTER = /^xpointer\(((?:\/[A-Za-z_][A-Za-z0-9_.-]*)+)(\/\*)?\)$/;

function include(ctx: LoadContext, el: XElement, realPath: string, shown: string, stack: readonly string[], depth: number): XChild[] {
  const fail = (why: string): never => {
    throw new Sros2PolicyError(why, shown, el.line);
  };
  let href: string | undefined;
  let xpointer: string | undefined;
  for (const a of el.attrs) {
    if (a.ns === null && a.local === "href") href = a.value;
    else if (a.ns === null && a.local === "xpointer") xpointer = a.value;
    else if (a.ns === null && a.local === "parse") {
      if (a.value !== "xml") fail(`xi:include parse="${a.value}" is not supported (only parse="xml")`);
    } else fail(`xi:include attribute ${a.qname} is not supported (only href, xpointer and parse="xml")`);
  }
  for (const c of el.children) {
    if (c.kind === "text" && c.text.trim() === "") continue;
    if (c.kind === "element" && c.local === "fallback" && c.ns !== null && XINCLUDE_NAMESPACES.includes(c.ns))
      fail("xi:fallback is not supported: an include that cannot be loaded is an error");
    fail("xi:include must be empty");
  }
  if (href === undefined || href === "")
    fail("xi:include needs an href naming a file next to the policy (local references are not supported)");
  const h = href!;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(h) || h.startsWith("//"))
    fail(`xi:include href "${h}" is a URL; only relative file paths are supported`);
  if (isAbsolute(h) || h.startsWith("/") || h.includes("\\"))
    fail(`xi:include href "${h}" is an absolute path; use a path relative to the including file`);
  if (/[#%?]/.test(h)) fail(`xi:include href "${h}" has a fragment, query or %-escape; use a plain relative path and xpointer`);
  let steps: string[] = [];
  let allChildren = false;
  if (xpointer !== undefined) {
    const m = XPOINTER.exec(xpointer);
    if (!m)
      fail(`xi:include xpointer "${xpointer}" is not supported; use the form xpointer(/a/b) or xpointer(/a/b/*) (absolute element paths)`);
    steps = m![1]!.slice(1).split("/");
    allChildren = m![2] !== undefined;
  }
  if (stack.length > ctx.limits.maxIncludeDepth) fail(`includes nest deeper than ${ctx.limits.maxIncludeDepth} levels`);
  if (++ctx.budget.includes > ctx.limits.maxIncludes) fail(`the policy has more than ${ctx.limits.maxIncludes} includes`);

  const target = resolve(dirname(realPath), h);
  const targetShown = join(dirname(shown), h);
  let targetReal: string;
  try {
    targetReal = ctx.realpaths.get(target) ?? realpathSync.native(target);
    ctx.realpaths.set(target, targetReal);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return fail(`xi:include of "${h}": ${code === "ENOENT" ? "no such file" : `cannot read it (${code})`} (${targetShown})`);
  }
  const rel = relative(ctx.rootDir, targetReal);
  if (rel === "" || rel.startsWith("..") || isAbsolute(rel))
    fail(`xi:include of "${h}" leaves the policy's directory ${ctx.rootDir}; includes must stay inside it`);
  if (stack.includes(targetReal)) {
    const chain = [...stack, targetReal].map((p) => relative(ctx.rootDir, p) || p).join(" -> ");
    fail(`xi:include cycle: ${chain}`);
  }
  let doc = ctx.loaded.get(targetReal);
  if (!doc) {
    doc = loadFile(ctx, targetReal, targetShown, stack, depth - 1);
    ctx.loaded.set(targetReal, doc);
  }

  let selected: XElement[];
  if (xpointer === undefined) selected = [doc];
  else {
    let set: XElement[] = doc.ns === null && doc.local === steps[0] ? [doc] : [];
    for (const step of steps.slice(1))
      set = set.flatMap((e) => e.children.filter((c): c is XElement => c.kind === "element" && c.ns === null && c.local === step));
    if (allChildren) set = set.flatMap((e) => e.children.filter((c): c is XElement => c.kind === "element"));
    if (set.length === 0) fail(`xi:include xpointer "${xpointer}" selects nothing in ${targetShown}`);
    selected = set;
  }
  // libxml2's xml:base fixup: from xmlBuildRelativeURI(included, including); only when it has a "/".
  const relToIncluding = relative(dirname(realPath), targetReal).split(sep).join("/");
  if (!relToIncluding.includes("/")) return selected;
  return selected.map((e) => ({
    ...e,
    attrs: [
      ...e.attrs.filter((a) => !(a.ns === XML_NS && a.local === "base")),
      { ns: XML_NS, local: "base", qname: "xml:base", value: relToIncluding },
    ],
  }));
}
