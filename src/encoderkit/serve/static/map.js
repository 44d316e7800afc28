/* encoderkit web page: the embedding map. An SVG scatter of the collection's 2-D projection (one circle per
   document, up to the server's sample size), hover for the document, click for details and "more like this",
   colour by a metadata field, the current query drawn as a star and its hits ringed. */
"use strict";

(function () {
  const EK = window.EK;
  const $ = (sel) => document.querySelector(sel);
  const SVGNS = "http://www.w3.org/2000/svg";
  const W = 1000, H = 640, PAD = 30;
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#17becf"];
  const OTHER = "#bab0ac", PLAIN = "#4e79a7";

  const state = { data: null, loading: null, name: "", sx: null, sy: null, byId: new Map(), fields: {} };

  function svg(tag, attrs) {
    const n = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    return n;
  }

  function visible() { return !$("#map-view").hidden; }

  function reset() {
    state.data = null; state.name = ""; state.byId.clear();
    $("#map").replaceChildren();
    $("#map-legend").replaceChildren();
    $("#map-detail").replaceChildren();
    $("#map-summary").textContent = "";
  }

  function setFields(fields) {
    state.fields = fields || {};
    const sel = $("#color-by");
    const cur = sel.value;
    const names = Object.keys(state.fields).filter((f) => !["thumbnail", "thumb", "image_url", "image", "img"].includes(f));
    sel.replaceChildren(EK.el("option", { value: "", text: "(none)" }),
      ...names.map((f) => EK.el("option", { value: f, text: f })));
    sel.value = names.includes(cur) ? cur : (names[0] || "");
  }

  async function load() {
    const name = EK.collection;
    if (!name) { $("#map-summary").textContent = "Pick a collection first."; return; }
    if (state.data && state.name === name) { markQuery(); return; }
    if (state.loading === name) return;
    state.loading = name;
    $("#map-summary").textContent = "Projecting the collection…";
    try {
      const data = await EK.api("GET", `/collections/${encodeURIComponent(name)}/map`);
      if (EK.collection !== name) return; // the user moved on meanwhile
      state.data = data; state.name = name;
      draw();
      await markQuery();
    } catch (err) {
      $("#map-summary").textContent = "No map: see the message above.";
      EK.showError(err, "drawing the map");
    } finally {
      state.loading = null;
    }
  }

  function scales(points) {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const p of points) { x0 = Math.min(x0, p.x); x1 = Math.max(x1, p.x); y0 = Math.min(y0, p.y); y1 = Math.max(y1, p.y); }
    const dx = x1 - x0 || 1, dy = y1 - y0 || 1;
    state.sx = (x) => PAD + ((x - x0) / dx) * (W - 2 * PAD);
    state.sy = (y) => H - PAD - ((y - y0) / dy) * (H - 2 * PAD);
  }

  /* A colour per point from the chosen field: categories (most frequent 10) or a numeric ramp. */
  function colouring(field, points) {
    if (!field) return { color: () => PLAIN, legend: [] };
    const info = state.fields[field] || {};
    const get = (p) => field.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), p.metadata);
    if (info.type === "number" && info.max > info.min) {
      const lo = info.min, hi = info.max;
      const ramp = (v) => {
        const t = Math.max(0, Math.min(1, (v - lo) / (hi - lo)));
        return `hsl(${220 - 200 * t}, 70%, ${45 + 5 * t}%)`;
      };
      return { color: (p) => (typeof get(p) === "number" ? ramp(get(p)) : OTHER),
        legend: [[ramp(lo), `${field} ${lo}`], [ramp((lo + hi) / 2), String((lo + hi) / 2)], [ramp(hi), String(hi)]] };
    }
    const counts = new Map();
    for (const p of points) { const v = String(get(p)); counts.set(v, (counts.get(v) || 0) + 1); }
    const top = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, PALETTE.length).map(([v]) => v);
    const colorOf = new Map(top.map((v, i) => [v, PALETTE[i]]));
    const legend = top.map((v) => [colorOf.get(v), `${v === "undefined" ? "(missing)" : v} (${counts.get(v)})`]);
    if (counts.size > top.length) legend.push([OTHER, "other"]);
    return { color: (p) => colorOf.get(String(get(p))) || OTHER, legend };
  }

  function draw() {
    const { points, method, explained_variance: ev, total } = state.data;
    const root = $("#map");
    root.replaceChildren();
    state.byId.clear();
    scales(points);
    const field = $("#color-by").value;
    const { color, legend } = colouring(field, points);
    const g = svg("g", { class: "points" });
    points.forEach((p, i) => {
      const c = svg("circle", { class: "pt", cx: state.sx(p.x).toFixed(1), cy: state.sy(p.y).toFixed(1), r: 6,
        fill: color(p), "data-i": i, "data-id": p.id });
      g.append(c);
      state.byId.set(p.id, c);
    });
    root.append(g, svg("g", { class: "overlay" }));
    root.dataset.points = String(points.length);
    const axes = method === "pca" ? ` — PCA, axes explain ${(100 * ev[0]).toFixed(0)}% and ${(100 * ev[1]).toFixed(0)}% of the variance` : ` — ${method.toUpperCase()}`;
    $("#map-summary").textContent = `${points.length} points` +
      (total > points.length ? ` (a sample of ${total} documents)` : ` (all ${total} documents)`) + axes;
    $("#map-legend").replaceChildren(...legend.map(([c, label]) => {
      const swatch = EK.el("i");
      swatch.style.background = c; // CSSOM, allowed by the page's content security policy
      return EK.el("span", { class: "key" }, swatch, label);
    }));
  }

  /* Place the current query (or the example document) on the map and ring its hits. */
  async function markQuery() {
    const overlay = $("#map .overlay");
    if (!overlay || !state.data) return;
    overlay.replaceChildren();
    for (const c of $("#map").querySelectorAll(".pt.hit")) c.classList.remove("hit");
    const last = EK.last;
    if (!last) return;
    const hitIds = last.hits.map((h) => h.id);
    for (const id of hitIds) {
      const c = state.byId.get(id);
      if (c) { c.classList.add("hit"); c.parentNode.append(c); } // drawn last: on top
    }
    const name = state.name;
    let at;
    try {
      at = await EK.api("POST", `/collections/${encodeURIComponent(name)}/map/locate`,
        last.byExample ? { id: last.byExample } : { query: last.query });
    } catch (err) {
      EK.showError(err, "placing the query on the map");
      return;
    }
    if (state.name !== name || EK.last !== last) return;
    const x = state.sx(at.x), y = state.sy(at.y);
    const star = [];
    for (let i = 0; i < 10; i++) {
      const r = i % 2 ? 7 : 16, a = (Math.PI / 5) * i - Math.PI / 2;
      star.push(`${(x + r * Math.cos(a)).toFixed(1)},${(y + r * Math.sin(a)).toFixed(1)}`);
    }
    const mark = svg("polygon", { class: "query-marker", points: star.join(" ") });
    const label = last.byExample ? `like ${last.byExample}` : last.query;
    const title = svg("title", {});
    title.textContent = `query: ${label}`;
    mark.append(title);
    const text = svg("text", { class: "query-label", x: (x + 18).toFixed(1), y: (y + 5).toFixed(1) });
    text.textContent = label.length > 40 ? label.slice(0, 40) + "…" : label;
    overlay.append(mark, text);
    $("#map").dataset.hits = String(hitIds.filter((id) => state.byId.has(id)).length);
  }

  function pointAt(ev) {
    const t = ev.target;
    if (!t.classList || !t.classList.contains("pt")) return null;
    return state.data.points[Number(t.dataset.i)];
  }

  function showTip(ev) {
    const tip = $("#tooltip");
    const p = pointAt(ev);
    if (!p) { tip.hidden = true; return; }
    const meta = Object.entries(p.metadata || {}).filter(([, v]) => typeof v !== "string" || v.length < 80)
      .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
    tip.replaceChildren(EK.el("strong", { text: p.id }), EK.el("p", { text: p.text.length > 200 ? p.text.slice(0, 200) + "…" : p.text }),
      meta ? EK.el("p", { class: "hint", text: meta }) : "");
    const box = $("#map-wrap").getBoundingClientRect();
    const left = Math.min(ev.clientX - box.left + 12, box.width - 260);
    tip.style.left = Math.max(0, left) + "px";
    tip.style.top = ev.clientY - box.top + 12 + "px";
    tip.hidden = false;
  }

  function showDetail(ev) {
    const p = pointAt(ev);
    if (!p) return;
    const img = EK.imageOf(p.metadata);
    $("#map-detail").replaceChildren(EK.el("div", { class: "card" },
      img ? EK.el("img", { class: "thumb", src: img, alt: `image of ${p.id}` }) : null,
      EK.el("div", { class: "body" },
        EK.el("div", { class: "head" }, EK.el("span", { class: "doc-id", text: p.id })),
        EK.el("p", { class: "text", text: p.text }), EK.metaList(p.metadata),
        EK.el("button", { type: "button", class: "more", text: "More like this", onclick: () => EK.moreLikeThis(p.id) }))));
    $("#map-detail .more").focus();
  }

  function setup() {
    const map = $("#map");
    map.addEventListener("mousemove", showTip);
    map.addEventListener("mouseleave", () => { $("#tooltip").hidden = true; });
    map.addEventListener("click", showDetail);
    $("#color-by").addEventListener("change", () => { if (state.data) { draw(); markQuery(); } });
  }

  EK.map = { load, reset, visible, setFields, markQuery };
  document.addEventListener("DOMContentLoaded", setup);
})();
