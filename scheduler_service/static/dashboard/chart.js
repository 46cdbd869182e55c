// Small SVG charts for the dashboard: a line chart with axes, ticks, labels and gaps,
// and a helper that builds DOM elements without ever parsing HTML (names are user data).

const SVG_NS = "http://www.w3.org/2000/svg";

/** Create an HTML element: h("td", {class: "num"}, "0.25", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** Create an SVG element. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

/** Replace an element's children (null, undefined and false are skipped). */
export function fill(el, ...children) {
  el.replaceChildren();
  appendAll(el, children);
  return el;
}

function appendAll(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^n). */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((v) => v >= raw) ?? raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return ticks;
}

/** 1234567 -> "1.23M", 50000 -> "50k". */
export function formatCount(value) {
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${trim(value / 1e9)}G`;
  if (abs >= 1e6) return `${trim(value / 1e6)}M`;
  if (abs >= 1e3) return `${trim(value / 1e3)}k`;
  return trim(value);
}

function trim(value) {
  return String(Number(value.toFixed(2)));
}

/** Decimals that print a tick step as a percent exactly: 0.1 -> 0, 0.025 -> 1, 0.0002 -> 2. */
export function percentDigits(step) {
  if (!(step > 0)) return 0;
  for (let digits = 0; digits < 3; digits++) {
    const scaled = step * 100 * 10 ** digits;
    if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(1, scaled)) return digits;
  }
  return 3;
}

/** 0.253 -> "25%" (or "25.3%" with digits = 1). */
export function formatPercent(value, digits = 0) {
  return `${(value * 100).toFixed(digits)}%`;
}

/**
 * A line chart as an <svg>.
 *
 * options.series: [{key, label, color, points: [[x, y], ...], dashed, width}]; a null y
 * breaks the line. options.xLabel / yLabel: axis titles. options.xFormat / yFormat:
 * tick formatters (yFormat also gets the tick step). options.yMin / yMax: fixed bounds (yMax defaults to the data's max).
 * options.empty: the message shown when there is nothing to draw.
 */
export function lineChart(options) {
  const width = options.width ?? 560;
  const height = options.height ?? 230;
  const margin = { top: 12, right: 16, bottom: 40, left: 52 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const xFormat = options.xFormat ?? formatCount;
  const yFormat = options.yFormat ?? ((v) => trim(v));
  const svg = s("svg", {
    class: "chart",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": options.title ?? "chart",
  });

  const points = options.series.flatMap((series) => series.points.filter((p) => p[1] !== null));
  if (points.length === 0) {
    svg.append(
      s("rect", { x: margin.left, y: margin.top, width: plotW, height: plotH, class: "plot-bg" }),
      s(
        "text",
        { x: margin.left + plotW / 2, y: margin.top + plotH / 2, class: "empty", "text-anchor": "middle" },
        options.empty ?? "no data yet",
      ),
    );
    return svg;
  }

  let xMin = Math.min(...points.map((p) => p[0]));
  let xMax = Math.max(...points.map((p) => p[0]));
  if (xMax === xMin) {
    xMin = Math.max(0, xMin - 1);
    xMax = xMax + 1;
  }
  const yMin = options.yMin ?? Math.min(0, ...points.map((p) => p[1]));
  // automatic top: the data's max with a little headroom, so lines do not hug the frame
  let yMax = options.yMax ?? Math.max(...points.map((p) => p[1])) * 1.08;
  if (!(yMax > yMin)) yMax = yMin + 1;
  const yTicks = niceTicks(yMin, yMax, 4);
  const yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 1;
  yMax = Math.max(yMax, yTicks[yTicks.length - 1]);
  const xTicks = niceTicks(xMin, xMax, 5).filter((v) => v >= xMin && v <= xMax);
  const sx = (x) => margin.left + ((x - xMin) / (xMax - xMin)) * plotW;
  const sy = (y) => margin.top + plotH - ((y - yMin) / (yMax - yMin)) * plotH;

  const grid = s("g", { class: "grid" });
  grid.append(s("rect", { x: margin.left, y: margin.top, width: plotW, height: plotH, class: "plot-bg" }));
  for (const t of yTicks) {
    grid.append(
      s("line", { x1: margin.left, x2: margin.left + plotW, y1: sy(t), y2: sy(t) }),
      s("text", { x: margin.left - 6, y: sy(t) + 4, class: "tick", "text-anchor": "end" }, yFormat(t, yStep)),
    );
  }
  for (const t of xTicks) {
    grid.append(
      s("line", { x1: sx(t), x2: sx(t), y1: margin.top, y2: margin.top + plotH, class: "vgrid" }),
      s("text", { x: sx(t), y: margin.top + plotH + 16, class: "tick", "text-anchor": "middle" }, xFormat(t)),
    );
  }
  grid.append(
    s("line", { x1: margin.left, x2: margin.left + plotW, y1: margin.top + plotH, y2: margin.top + plotH, class: "axis" }),
    s("line", { x1: margin.left, x2: margin.left, y1: margin.top, y2: margin.top + plotH, class: "axis" }),
  );
  if (options.xLabel) {
    grid.append(
      s("text", { x: margin.left + plotW / 2, y: height - 6, class: "axis-label", "text-anchor": "middle" }, options.xLabel),
    );
  }
  if (options.yLabel) {
    const cy = margin.top + plotH / 2;
    grid.append(
      s("text", { x: 14, y: cy, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 14 ${cy})` }, options.yLabel),
    );
  }
  svg.append(grid);

  const lines = s("g", { class: "lines" });
  for (const series of options.series) {
    const d = [];
    let pen = "M";
    const dots = [];
    series.points.forEach((p, i) => {
      if (p[1] === null || !Number.isFinite(p[1])) {
        pen = "M";
        return;
      }
      d.push(`${pen}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`);
      const prev = series.points[i - 1];
      const next = series.points[i + 1];
      const isolated = (!prev || prev[1] === null) && (!next || next[1] === null);
      if (isolated) dots.push(p);
      pen = "L";
    });
    if (d.length === 0) continue;
    const path = s("path", {
      d: d.join(""),
      class: `series${series.dashed ? " dashed" : ""}`,
      stroke: series.color,
      "stroke-width": series.width ?? (series.dashed ? 1.5 : 2),
      dataset: { key: series.key },
    });
    path.append(s("title", {}, series.label));
    lines.append(path);
    for (const p of dots) {
      lines.append(s("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: series.color }));
    }
  }
  svg.append(lines);
  return svg;
}

/** An HTML legend: [{label, color, dashed}] as swatches. */
export function legend(items, note) {
  return h(
    "div",
    { class: "legend" },
    items.map((item) =>
      h(
        "span",
        { class: "legend-item" },
        h("span", { class: `swatch${item.dashed ? " dashed" : ""}`, style: `--c: ${item.color}` }),
        item.label,
      ),
    ),
    note ? h("span", { class: "legend-note" }, note) : null,
  );
}
