// voxperf dashboard: polls GET /api/performance/dashboard and draws it. No build step, no
// dependencies: charts are plain SVG. Each chart's <figure> gets data-points (points drawn) and
// each table body data-rows, so tests (and people) can tell an empty panel from a full one.
"use strict";

const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function fmt(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString();
  return Number(v).toFixed(digits);
}

function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "–";
}

// lines: [{name, color, points: [{t, avg}]}]
function drawChart(figure, lines, unit) {
  const plot = figure.querySelector(".plot");
  const W = 600, H = 180, L = 44, R = 8, T = 8, B = 22;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  const all = lines.flatMap(l => l.points);
  figure.dataset.points = String(lines.length ? lines[0].points.length : 0);
  if (all.length === 0) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" });
    t.textContent = "no data yet";
    s.appendChild(t);
    plot.replaceChildren(s);
    return;
  }
  const t0 = Math.min(...all.map(p => p.t)), t1 = Math.max(...all.map(p => p.t));
  let vmax = Math.max(...all.map(p => p.avg));
  if (unit === "%") vmax = Math.max(vmax, 1);
  vmax = vmax <= 0 ? 1 : vmax * 1.1;
  const x = t => L + (t1 === t0 ? (W - L - R) / 2 : (t - t0) / (t1 - t0) * (W - L - R));
  const y = v => T + (1 - v / vmax) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = vmax * i / 4, yy = y(v);
    s.appendChild(svg("line", { x1: L, x2: W - R, y1: yy, y2: yy, class: "axis" }));
    const label = svg("text", { x: L - 4, y: yy + 3, "text-anchor": "end" });
    label.textContent = fmt(v, vmax < 10 ? 1 : 0);
    s.appendChild(label);
  }
  for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
    const label = svg("text", { x: x(t), y: H - 6, "text-anchor": anchor });
    label.textContent = clock(t);
    s.appendChild(label);
  }
  lines.forEach((line, i) => {
    if (line.points.length === 0) return;
    const d = line.points.map((p, j) => `${j ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.avg).toFixed(1)}`).join(" ");
    s.appendChild(svg("path", { d, fill: "none", stroke: line.color, "stroke-width": 1.8, "data-series": line.name }));
    if (line.points.length === 1) {
      const p = line.points[0];
      s.appendChild(svg("circle", { cx: x(p.t), cy: y(p.avg), r: 3, fill: line.color }));
    }
    const key = svg("text", { x: L + 8 + i * 70, y: T + 10, fill: line.color });
    key.textContent = line.name;
    s.appendChild(key);
  });
  plot.replaceChildren(s);
}

function fillTable(id, rows, columns, emptyText) {
  const body = document.getElementById(id);
  const out = [];
  for (const row of rows) {
    const tr = el("tr");
    for (const [value, cls] of columns(row)) tr.appendChild(el("td", cls ? { class: cls } : {}, String(value)));
    out.push(tr);
  }
  if (out.length === 0) {
    const tr = el("tr");
    tr.appendChild(el("td", { colspan: "8", class: "note" }, emptyText));
    out.push(tr);
  }
  body.replaceChildren(...out);
  body.dataset.rows = String(rows.length);
}

function section(s, id, columns, emptyText) {
  if (!s.available) {
    fillTable(id, [], columns, `unavailable: ${s.error}`);
    document.getElementById(id).dataset.unavailable = s.error;
  } else {
    fillTable(id, s.items, columns, emptyText);
    delete document.getElementById(id).dataset.unavailable;
  }
}

function tiles(d) {
  const c = d.stats.current || {};
  const http = c.http || {}, cache = c.cache || {}, sys = c.system || {}, ext = c.extension || {};
  const items = [
    ["Requests/s", fmt(http.requests_per_second)],
    ["p95 latency", http.latency ? `${fmt(http.latency.p95_ms)} ms` : "–"],
    ["Error rate", http.error_rate_percent == null ? "–" : `${fmt(http.error_rate_percent)} %`],
    ["Cache hit rate", cache.hit_rate_percent == null ? "–" : `${fmt(cache.hit_rate_percent)} %`],
    ["CPU", sys.cpu_percent == null ? "–" : `${fmt(sys.cpu_percent)} %`],
    ["Memory", sys.memory_percent == null ? "–" : `${fmt(sys.memory_percent)} %`],
    ["DB queries/s", fmt(ext.queries_per_second)],
    ["DB query p95", ext.p95_ms == null ? "–" : `${fmt(ext.p95_ms, 2)} ms`],
    ["Requests (total)", fmt(d.stats.totals.requests, 0)],
  ];
  document.getElementById("tiles").replaceChildren(...items.map(([label, value]) => {
    const t = el("div", { class: "tile" });
    t.appendChild(el("div", { class: "label" }, label));
    t.appendChild(el("div", { class: "value" }, value));
    return t;
  }));
}

function render(d) {
  document.getElementById("instance").textContent = d.instance;
  const badge = document.getElementById("health");
  badge.textContent = `${d.health.status} · ${fmt(d.health.score, 0)}/100`;
  badge.className = `badge ${d.health.status}`;
  document.getElementById("updated").textContent = `updated ${clock(d.generated_at_ms)}`;
  tiles(d);
  const ch = d.charts;
  drawChart(document.getElementById("chart-latency"), [
    { name: "p50", color: "#2563eb", points: ch.latency_p50.points },
    { name: "p95", color: "#d97706", points: ch.latency_p95.points },
    { name: "p99", color: "#dc2626", points: ch.latency_p99.points },
  ], "ms");
  drawChart(document.getElementById("chart-throughput"), [{ name: "req/s", color: "#2563eb", points: ch.throughput.points }], "req/s");
  drawChart(document.getElementById("chart-errors"), [{ name: "errors %", color: "#dc2626", points: ch.error_rate.points }], "%");
  drawChart(document.getElementById("chart-cache"), [{ name: "hit %", color: "#15803d", points: ch.cache_hit_rate.points }], "%");
  fillTable("alerts-body", d.alerts.firing, a => [[a.rule], [a.severity, `sev-${a.severity}`], [`${fmt(a.value, 2)} ${a.unit}`], [clock(a.fired_ms)]], "no alert firing");
  fillTable("breakers-body", d.breakers, b => [[b.name], [b.state, `state-${b.state}`], [`${fmt(b.failure_rate)} %`, "n"], [b.rejected_calls, "n"]], "no breakers");
  fillTable("endpoints-body", d.endpoints, e => [[e.method], [e.route], [e.requests, "n"], [fmt(e.requests_per_second, 2), "n"], [e.errors, "n"], [fmt(e.p50_ms, 2), "n"], [fmt(e.p95_ms, 2), "n"], [fmt(e.p99_ms, 2), "n"]], "no requests yet");
  section(d.top_queries, "queries-body", q => [[q.calls, "n"], [fmt(q.total_exec_time_ms), "n"], [fmt(q.mean_exec_time_ms, 2), "n"], [fmt(q.p95_exec_time_ms, 2), "n"], [fmt(q.p99_exec_time_ms, 2), "n"], [q.query ?? "<hidden>", "q"]], "no statements recorded yet");
  section(d.slow_queries, "slow-body", s => [[clock(s.captured_at_ms)], [s.username ?? "–"], [fmt(s.duration_ms), "n"], [s.rows, "n"], [s.query ?? "<hidden>", "q"]], "no slow query captured");
  section(d.index_suggestions, "suggestions-body", s => [[s.relation], [s.method], [s.columns.join(", ")], [`${fmt(s.improvement * 100)} %`, "n"], [s.ddl, "q"]], "no index would help enough");
}

async function refresh() {
  const windowValue = document.getElementById("window").value;
  try {
    const response = await fetch(`/api/performance/dashboard?window=${encodeURIComponent(windowValue)}`, { headers: { accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    document.getElementById("error").hidden = true;
    document.body.dataset.state = "ready";
  } catch (e) {
    const box = document.getElementById("error");
    box.textContent = `Cannot load the dashboard data: ${e.message}`;
    box.hidden = false;
    document.body.dataset.state = "error";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("window").addEventListener("change", refresh);
  refresh();
  setInterval(refresh, REFRESH_MS);
});
