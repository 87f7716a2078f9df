// Loading one XML file into a small immutable tree, refusing what a policy file has no use for and
// what makes XML dangerous: DOCTYPE (no entities, so no XXE and no billion laughs), processing
// instructions other than the XML declaration, encodings other than UTF-8, characters XML 1.0 forbids,
// oversized files. @xmldom/xmldom does the well-formedness parsing; it expands no external entities.
import { DOMParser } from "@xmldom/xmldom";
import { Sros2PolicyError } from "../errors.js";

export const XML_NS = "http://www.w3.org/XML/1998/namespace";

export interface XAttr {
  ns: string | null;
  local: string;
  qname: string;
  value: string;
}
export interface XElement {
  kind: "element";
  ns: string | null;
  local: string;
  qname: string;
  attrs: XAttr[];
  children: XChild[];
  file: string;
  line?: number;
}
export interface XText {
  kind: "text";
  text: string;
  file: string;
  line?: number;
}
export type XChild = XElement | XText;

/** Limits on what one policy (with everything it includes) may be; far above any real policy. */
export interface PolicyLimits {
  maxFileBytes: number;
  maxTotalBytes: number;
  maxElements: number;
  maxIncludeDepth: number;
  maxIncludes: number;
}
export const DEFAULT_LIMITS: PolicyLimits = {
  maxFileBytes: 8 * 1024 * 1024,
  maxTotalBytes: 32 * 1024 * 1024,
  maxElements: 500_000,
  maxIncludeDepth: 16,
  maxIncludes: 20_000,
};

// XML 1.0 Char production: libxml2 refuses the rest (C0 controls but tab/LF/CR, lone surrogates, U+FFFE/U+FFFF).
const NOT_XML_CHAR = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;

function lineOf(text: string, index: number): number {
  let line = 1;
  for (let i = text.indexOf("\n"); i !== -1 && i < index; i = text.indexOf("\n", i + 1)) line++;
  return line;
}

/** Bytes to text: UTF-8 only (with or without BOM), and an XML declaration, if any, that says so. */
export function decodePolicyBytes(bytes: Uint8Array, file: string, limits: PolicyLimits): string {
  if (bytes.length > limits.maxFileBytes)
    throw new Sros2PolicyError(`the file is ${bytes.length} bytes; the limit for a policy file is ${limits.maxFileBytes}`, file);
  if ((bytes[0] === 0xfe && bytes[1] === 0xff) || (bytes[0] === 0xff && bytes[1] === 0xfe))
    throw new Sros2PolicyError("the file is UTF-16; policy files must be UTF-8", file);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new Sros2PolicyError("the file is not valid UTF-8; policy files must be UTF-8", file);
  }
  const decl = /^<\?xml\s[^?]*\?>/.exec(text);
  if (decl) {
    const enc = /\sencoding\s*=\s*(["'])([^"']*)\1/.exec(decl[0]);
    if (enc && enc[2]!.toUpperCase() !== "UTF-8" && enc[2]!.toUpperCase() !== "UTF8")
      throw new Sros2PolicyError(`the XML declaration says encoding "${enc[2]}"; policy files must be UTF-8`, file, 1);
    const ver = /\sversion\s*=\s*(["'])([^"']*)\1/.exec(decl[0]);
    if (!ver || ver[2] !== "1.0") throw new Sros2PolicyError('the XML declaration must say version="1.0"', file, 1);
  }
  const bad = NOT_XML_CHAR.exec(text);
  if (bad) {
    const code = bad[0].codePointAt(0)!;
    throw new Sros2PolicyError(
      `character U+${code.toString(16).toUpperCase().padStart(4, "0")} is not allowed in XML`,
      file,
      lineOf(text, bad.index),
    );
  }
  return text;
}

/**
 * Deepest element nesting in one file: libxml2's own limit without XML_PARSE_HUGE (xmllint refuses
 * deeper documents too), far above any policy, and well inside the stack the recursive walks below need.
 */
export const MAX_ELEMENT_DEPTH = 256;

/**
 * Parses one file's text into a tree (XInclude elements are left in place for the caller). `baseDepth`:
 * where an included file's root will stand, so that a chain of includes cannot nest deeper than the limit either.
 */
export function parsePolicyText(text: string, file: string, countElement: () => void, baseDepth = 0): XElement {
  refuseDoctype(text, file);
  const problems: string[] = [];
  let doc: Document;
  try {
    doc = new DOMParser({
      onError: (level: string, message: string) => {
        problems.push(`${level}: ${message}`);
      },
    }).parseFromString(text, "text/xml") as unknown as Document;
  } catch (e) {
    throw new Sros2PolicyError(`not well-formed XML: ${firstLine((e as Error).message)}`, file);
  }
  if (problems.length > 0) throw new Sros2PolicyError(`not well-formed XML: ${firstLine(problems[0]!)}`, file);
  let root: Element | undefined;
  let index = 0;
  for (let n = doc.firstChild; n; n = n.nextSibling, index++) {
    const line = (n as unknown as { lineNumber?: number }).lineNumber;
    if (n.nodeType === 10)
      throw new Sros2PolicyError("DOCTYPE declarations are not allowed in a policy file (no DTDs, no entities)", file, line);
    if (n.nodeType === 7 && !(index === 0 && n.nodeName === "xml"))
      throw new Sros2PolicyError(`processing instruction <?${n.nodeName}?> is not allowed (only the XML declaration)`, file, line);
    if (n.nodeType === 1) root = n as Element;
  }
  if (!root) throw new Sros2PolicyError("the file has no root element", file);
  return convert(root, file, countElement, baseDepth + 1);
}

/** A character reference (&#1;) can name a character XML forbids; libxml2 refuses it, xmldom decodes it. */
function checkDecoded(value: string, file: string, line: number | undefined): void {
  const bad = NOT_XML_CHAR.exec(value);
  if (bad) {
    const code = bad[0].codePointAt(0)!;
    throw new Sros2PolicyError(
      `character reference to U+${code.toString(16).toUpperCase().padStart(4, "0")} is not allowed in XML`,
      file,
      line,
    );
  }
}

/**
 * A DOCTYPE can only stand in the prolog: look there before parsing, so that it is refused as such
 * (and before the parser sees any entity), not reported as an undefined entity further down.
 */
function refuseDoctype(text: string, file: string): void {
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  for (;;) {
    while (i < text.length && /[ \t\r\n]/.test(text[i]!)) i++;
    if (text.startsWith("<?", i)) {
      const end = text.indexOf("?>", i);
      if (end === -1) return;
      i = end + 2;
    } else if (text.startsWith("<!--", i)) {
      const end = text.indexOf("-->", i);
      if (end === -1) return;
      i = end + 3;
    } else break;
  }
  if (text.startsWith("<!DOCTYPE", i))
    throw new Sros2PolicyError("DOCTYPE declarations are not allowed in a policy file (no DTDs, no entities)", file, lineOf(text, i));
}

function firstLine(s: string): string {
  return s.split("\n")[0]!.slice(0, 300);
}

function convert(el: Element, file: string, countElement: () => void, depth: number): XElement {
  if (depth > MAX_ELEMENT_DEPTH)
    throw new Sros2PolicyError(
      `elements nest deeper than ${MAX_ELEMENT_DEPTH} levels (with the includes that lead here)`,
      file,
      (el as unknown as { lineNumber?: number }).lineNumber,
    );
  countElement();
  const attrs: XAttr[] = [];
  for (let i = 0; i < el.attributes.length; i++) {
    const a = el.attributes.item(i)!;
    if (a.name === "xmlns" || a.prefix === "xmlns") continue;
    checkDecoded(a.value, file, (el as unknown as { lineNumber?: number }).lineNumber);
    attrs.push({ ns: a.namespaceURI || null, local: a.localName ?? a.name, qname: a.name, value: a.value });
  }
  const children: XChild[] = [];
  for (let n = el.firstChild; n; n = n.nextSibling) {
    const line = (n as unknown as { lineNumber?: number }).lineNumber;
    if (n.nodeType === 1) children.push(convert(n as Element, file, countElement, depth + 1));
    else if (n.nodeType === 3 || n.nodeType === 4) {
      checkDecoded(n.nodeValue ?? "", file, line);
      children.push({ kind: "text", text: n.nodeValue ?? "", file, line });
    } else if (n.nodeType === 7)
      throw new Sros2PolicyError(`processing instruction <?${n.nodeName}?> is not allowed (only the XML declaration)`, file, line);
    else if (n.nodeType === 5) throw new Sros2PolicyError("entity references are not allowed in a policy file", file, line);
  }
  return {
    kind: "element",
    ns: el.namespaceURI || null,
    local: el.localName ?? el.nodeName,
    qname: el.nodeName,
    attrs,
    children,
    file,
    line: (el as unknown as { lineNumber?: number }).lineNumber,
  };
}
