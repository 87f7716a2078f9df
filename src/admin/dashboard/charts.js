// Small inline-SVG charts drawn here (no chart library): grouped bars per bucket, and a timeline
// of dates. Sizes are in viewBox units; the stylesheet scales the SVG to its container.
import { h, s } from "./dom.js";

const W = 640;
const H = 200;
const PAD = { left: 36, right: 8, top: 10, bottom: 28 };

function yAxis(max) {
  const ticks = [0, Math.ceil(max / 2), max];
  const y = (v) => H - PAD.bottom - (v / Math.max(max, 1)) * (H - PAD.top - PAD.bottom);
  return {
    y,
    nodes: ticks.map((t) => [
      s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(t), y2: y(t), stroke: "#e3e8ec" }),
      s("text", { x: PAD.left - 4, y: y(t) + 3, "text-anchor": "end" }, t),
    ]),
  };
}

/** labels: bucket names; series: [{ name, values: number[] }] (one value per label). */
export function barChart(title, labels, series) {
  const max = Math.max(1, ...series.flatMap((x) => x.values));
  const { y, nodes } = yAxis(max);
  const slot = (W - PAD.left - PAD.right) / Math.max(labels.length, 1);
  const bar = Math.max(1, (slot * 0.8) / series.length);
  const every = Math.ceil(labels.length / 10);
  const svg = s(
    "svg",
    { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title },
    s("title", {}, title),
    nodes,
    labels.map((label, i) => [
      series.map((x, j) =>
        s(
          "rect",
          {
            class: `s${j}`,
            x: PAD.left + i * slot + slot * 0.1 + j * bar,
            y: y(x.values[i] ?? 0),
            width: bar,
            height: H - PAD.bottom - y(x.values[i] ?? 0),
          },
          s("title", {}, `${x.name} ${label}: ${x.values[i] ?? 0}`),
        ),
      ),
      i % every === 0 ? s("text", { x: PAD.left + i * slot + slot / 2, y: H - 10, "text-anchor": "middle" }, label) : null,
    ]),
  );
  return h("figure", {}, svg, legend(series.map((x) => x.name)));
}

export function legend(names) {
  return h(
    "figcaption",
    { class: "legend" },
    names.map((n, i) => h("span", {}, h("span", { class: `swatch s${i}` }), n)),
  );
}

/**
 * Dates on a line from `from` to `to`: one mark per item (stacked when they share a day), so a
 * wave of expiries shows where it falls. points: [{ at: Date, label, cls }].
 */
export function timeline(title, from, to, points) {
  const span = Math.max(1, to.getTime() - from.getTime());
  const x = (d) => PAD.left + ((d.getTime() - from.getTime()) / span) * (W - PAD.left - PAD.right);
  const base = H - PAD.bottom;
  const stacks = new Map();
  const marks = points.map((p) => {
    const day = Math.floor(p.at.getTime() / 86400000);
    const n = stacks.get(day) ?? 0;
    stacks.set(day, n + 1);
    return s("circle", { class: p.cls ?? "s0", cx: x(p.at), cy: base - 6 - (n % 20) * 8, r: 3.5 }, s("title", {}, p.label));
  });
  const days = Math.round(span / 86400000);
  const step = Math.max(1, Math.ceil(days / 8));
  const ticks = [];
  for (let d = 0; d <= days; d += step) {
    const at = new Date(from.getTime() + d * 86400000);
    ticks.push(s("line", { x1: x(at), x2: x(at), y1: base, y2: base + 4, stroke: "#5f6b73" }));
    ticks.push(s("text", { x: x(at), y: H - 10, "text-anchor": "middle" }, at.toISOString().slice(5, 10)));
  }
  return s(
    "svg",
    { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title },
    s("title", {}, title),
    s("line", { x1: PAD.left, x2: W - PAD.right, y1: base, y2: base, stroke: "#5f6b73" }),
    ticks,
    marks,
  );
}
