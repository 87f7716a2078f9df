// DOM helpers. Every datum goes in as a text node or an attribute value, never as markup, so a
// device id, label or audit detail cannot inject HTML (and the CSP forbids inline script anyway).
const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [event, fn] of Object.entries(v)) el.addEventListener(event, fn);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** h("a", { href: "/x", class: "y" }, "text", child, ...) */
export const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
export const s = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

export function replace(target, ...children) {
  target.replaceChildren(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false));
}

export const badge = (value) => h("span", { class: `badge ${String(value).replace(/[^a-z-]/g, "")}` }, value);

export function fmtDate(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

export function fmtAgo(iso, now = Date.now()) {
  if (!iso) return "never";
  const s = Math.round((now - new Date(iso).getTime()) / 1000);
  if (s < 0) return fmtDate(iso);
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function daysLeft(iso, now = Date.now()) {
  const d = (new Date(iso).getTime() - now) / 86400000;
  return d < 0 ? "expired" : `${Math.floor(d)} d left`;
}

/** A table from column definitions { title, cell(row) -> node|string, class? }. */
export function table(columns, rows, empty = "Nothing here.") {
  if (rows.length === 0) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    {},
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        columns.map((c) => h("th", {}, c.title)),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((r) =>
        h(
          "tr",
          {},
          columns.map((c) => h("td", { class: c.class }, c.cell(r))),
        ),
      ),
    ),
  );
}

export const notice = (text, kind = "") => h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : undefined }, text);

/** Asks with the page's <dialog>; resolves true when confirmed. */
export function confirmDialog(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}
