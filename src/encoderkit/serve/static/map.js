/* encoderkit web page: the embedding map. An SVG scatter of the collection's 2-D projection (UMAP, or PCA
   without umap-learn; one circle per document, up to the server's sample size), coloured by cluster with each
   cluster's keywords written on it, or by a metadata field the user picks; hover or arrow keys for a document,
   click or Enter for details and "more like this"; the current query drawn as a star and its hits ringed. */
"use strict";

(function () {
  const EK = window.EK;
  const $ = (sel) => document.querySelector(sel);
  const SVGNS = "http://www.w3.org/2000/svg";
  const W = 1000, H = 640, PAD = 30;
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#17becf"];
  // clusters: matplotlib's tab20, dark shades for the first ten, light for the next (as `encoderkit map`)
  const TAB20 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d",
    "#9edae5"];
  const OTHER = "#bab0ac", MISSING = "#dcdcdc", PLAIN = "#4e79a7";
  const HIDDEN_FIELDS = ["thumbnail", "thumb", "image_url", "image", "img", "thumbnail_path", "path"];
  const CLUSTER = "__cluster"; // the colour-by choice for clusters (a metadata field cannot start with __)

  const state = { data: null, loading: null, name: "", sx: null, sy: null, byId: new Map(), fields: {}, focus: -1 };

  function svg(tag, attrs) {
    const n = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    return n;
  }

  function visible() { return !$("#map-view").hidden; }

  function reset() {
    state.data = null; state.name = ""; state.byId.clear(); state.focus = -1;
    $("#map").replaceChildren();
    $("#map-legend").replaceChildren();
    $("#map-detail").replaceChildren();
    $("#map-summary").textContent = "";
  }

  function setFields(fields) {
    state.fields = fields || {};
    const sel = $("#color-by");
    const cur = sel.value;
    const names = Object.keys(state.fields).filter((f) => !HIDDEN_FIELDS.includes(f));
    sel.replaceChildren(EK.el("option", { value: CLUSTER, text: "cluster (topics)" }),
      EK.el("option", { value: "", text: "(one colour)" }),
      ...names.map((f) => EK.el("option", { value: f, text: f })));
    sel.value = cur === "" || names.includes(cur) ? cur : CLUSTER; // clusters unless the user picked a field
  }

  async function load() {
    const name = EK.collection;
    if (!name) { $("#map-summary").textContent = "Pick a collection first."; return; }
    if (state.data && state.name === name) { markQuery(); return; }
    if (state.loading === name) return;
    state.loading = name;
    $("#map-summary").replaceChildren(EK.el("span", { class: "spinner", "aria-hidden": "true" }),
      " Projecting the collection and finding its clusters… (the first map after a server start takes longest)");
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

  const clusterColor = (c) => (c < 0 ? MISSING : TAB20[c % TAB20.length]);

  /* A colour per point and its legend: {color(p), title, legend: [[colour, label]], ramp?: [lo, hi, css]}.
     Grey always says what it means: no cluster, a missing field, or values beyond the ten most frequent. */
  function colouring(field, points) {
    if (!field) return { color: () => PLAIN, title: "", legend: [] };
    if (field === CLUSTER) return clusterColouring(points);
    const info = state.fields[field] || {};
    const get = (p) => field.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), p.metadata);
    const missing = points.filter((p) => get(p) === undefined || get(p) === null).length;
    const none = missing ? [[MISSING, `no ${field} (${missing})`]] : [];
    if (info.type === "number" && info.max > info.min) {
      const lo = info.min, hi = info.max;
      const ramp = (v) => {
        const t = Math.max(0, Math.min(1, (v - lo) / (hi - lo)));
        return `hsl(${220 - 200 * t}, 70%, ${45 + 5 * t}%)`;
      };
      return { color: (p) => (typeof get(p) === "number" ? ramp(get(p)) : MISSING), title: field, legend: none,
        ramp: [fmt(lo), fmt(hi), `linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map((t) => ramp(lo + t * (hi - lo))).join(", ")})`] };
    }
    const counts = new Map();
    for (const p of points) {
      const v = get(p);
      if (v !== undefined && v !== null) counts.set(String(v), (counts.get(String(v)) || 0) + 1);
    }
    const top = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, PALETTE.length).map(([v]) => v);
    const colorOf = new Map(top.map((v, i) => [v, PALETTE[i]]));
    const legend = top.map((v) => [colorOf.get(v), `${v} (${counts.get(v)})`]);
    const rest = [...counts.entries()].filter(([v]) => !colorOf.has(v));
    if (rest.length) legend.push([OTHER, `${rest.length} other values (${rest.reduce((n, [, c]) => n + c, 0)})`]);
    const color = (p) => { const v = get(p); return v === undefined || v === null ? MISSING : colorOf.get(String(v)) || OTHER; };
    return { color, title: field, legend: legend.concat(none) };
  }

  function clusterColouring(points) {
    const clusters = state.data.clusters || [];
    const noise = points.filter((p) => p.cluster < 0).length;
    const legend = clusters.map((c) => [clusterColor(c.id), `${c.label} (${c.size})`]);
    if (noise) legend.push([MISSING, `no cluster (${noise}): not in any dense group`]);
    return { color: (p) => clusterColor(p.cluster), title: clusters.length ? "Clusters, by their top keywords" : "", legend };
  }

  function fmt(v) { return String(Number.isInteger(v) ? v : Math.round(v * 100) / 100); } // a year stays 2020

  function draw() {
    const { points, method, explained_variance: ev, total } = state.data;
    const root = $("#map");
    root.replaceChildren();
    state.byId.clear();
    scales(points);
    const field = $("#color-by").value;
    const colours = colouring(field, points);
    const g = svg("g", { class: "points" });
    points.forEach((p, i) => {
      const c = svg("circle", { class: "pt", id: `pt-${i}`, cx: state.sx(p.x).toFixed(1), cy: state.sy(p.y).toFixed(1),
        r: 6, fill: colours.color(p), "data-i": i, "data-id": p.id, "data-cluster": p.cluster });
      g.append(c);
      state.byId.set(p.id, c);
    });
    root.append(g, field === CLUSTER ? clusterLabels(points) : svg("g"), svg("g", { class: "overlay" }));
    root.dataset.points = String(points.length);
    state.focus = -1;
    const axes = method === "pca" ? ` — PCA, axes explain ${(100 * ev[0]).toFixed(0)}% and ${(100 * ev[1]).toFixed(0)}% of the variance`
      : " — UMAP: near points are similar documents; the distances between islands mean little";
    $("#map-summary").textContent = `${points.length} points` +
      (total > points.length ? ` (a sample of ${total} documents)` : ` (all ${total} documents)`) + axes +
      (state.data.note ? `. ${state.data.note}` : "") + ". Arrow keys move between points, Enter opens one.";
    drawLegend(colours);
  }

  /* Each cluster's label at the middle (median) of its points, on a white halo. */
  function clusterLabels(points) {
    const g = svg("g", { class: "cluster-labels", "aria-hidden": "true" });
    for (const c of state.data.clusters || []) {
      const mine = points.filter((p) => p.cluster === c.id);
      if (!mine.length) continue;
      const mid = (vals) => { const v = vals.sort((a, b) => a - b); return v[Math.floor(v.length / 2)]; };
      const half = 4.2 * c.label.length; // about half the label's width at 14 px bold: kept inside the map
      const x = Math.min(Math.max(state.sx(mid(mine.map((p) => p.x))), half + 4), W - half - 4);
      const t = svg("text", { class: "cluster-label", x: x.toFixed(1),
        y: state.sy(mid(mine.map((p) => p.y))).toFixed(1), "text-anchor": "middle", "data-cluster": c.id });
      t.textContent = c.label;
      g.append(t);
    }
    return g;
  }

  function drawLegend({ title, legend, ramp }) {
    const swatch = (c) => {
      const i = EK.el("i");
      i.style.background = c; // CSSOM, allowed by the page's content security policy
      return i;
    };
    const items = [];
    if (title) items.push(EK.el("strong", { class: "legend-title", text: ramp ? `${title}:` : title }));
    if (ramp) {
      const bar = EK.el("b", { class: "ramp", "aria-hidden": "true" });
      bar.style.background = ramp[2];
      items.push(EK.el("span", { class: "key ramp-key" }, EK.el("span", { text: ramp[0] }), bar, EK.el("span", { text: ramp[1] })));
    }
    items.push(...legend.map(([c, label]) => EK.el("span", { class: "key" }, swatch(c), label)));
    $("#map-legend").replaceChildren(...items);
  }

  /* Place the current query (or the example document) on the map and ring its hits. */
  async function markQuery() {
    const overlay = $("#map .overlay");
    if (!overlay || !state.data) return;
    overlay.replaceChildren();
    for (const c of $("#map").querySelectorAll(".pt.hit")) c.classList.remove("hit");
    const last = EK.last;
    if (!last) return;
    const hitIds = last.hits.map((h) => h.chunk_id || h.id); // a document's point is its best chunk's
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
    const label = last.byExample ? `like “${docName(last.byExample)}”` : last.query;
    const title = svg("title", {});
    title.textContent = `query: ${label}`;
    mark.append(title);
    const text = svg("text", { class: "query-label", x: (x + 18).toFixed(1), y: (y + 5).toFixed(1) });
    text.textContent = label.length > 40 ? label.slice(0, 40) + "…" : label;
    overlay.append(mark, text);
    $("#map").dataset.hits = String(hitIds.filter((id) => state.byId.has(id)).length);
  }

  /* A document's name for labels: its title when it has one, else the start of its text, else its id. */
  function docName(id) {
    const c = state.byId.get(id);
    const p = c && state.data.points[Number(c.dataset.i)];
    const name = p ? (typeof p.metadata.title === "string" && p.metadata.title) || p.text || id : id;
    return name.length > 40 ? name.slice(0, 40) + "…" : name;
  }

  function pointAt(ev) {
    const t = ev.target;
    if (!t.classList || !t.classList.contains("pt")) return null;
    return state.data.points[Number(t.dataset.i)];
  }

  function tipLines(p) {
    const meta = Object.entries(p.metadata || {}).filter(([k, v]) => !HIDDEN_FIELDS.includes(k) && (typeof v !== "string" || v.length < 80))
      .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
    const cluster = (state.data.clusters || [])[p.cluster];
    return [EK.el("strong", { text: p.id }), EK.el("p", { text: p.text.length > 200 ? p.text.slice(0, 200) + "…" : p.text }),
      cluster ? EK.el("p", { class: "hint", text: `cluster: ${cluster.label}` }) : "",
      meta ? EK.el("p", { class: "hint", text: meta }) : ""];
  }

  /* The tooltip for point p at (clientX, clientY). */
  function placeTip(p, cx, cy) {
    const tip = $("#tooltip");
    tip.replaceChildren(...tipLines(p));
    const box = $("#map-wrap").getBoundingClientRect();
    tip.style.left = Math.max(0, Math.min(cx - box.left + 12, box.width - 260)) + "px";
    tip.style.top = cy - box.top + 12 + "px";
    tip.hidden = false;
  }

  function showTip(ev) {
    const p = pointAt(ev);
    if (!p) { $("#tooltip").hidden = true; return; }
    placeTip(p, ev.clientX, ev.clientY);
  }

  /* Keyboard: the map is one tab stop; arrows move to the nearest point that way, Home to the first hit (or
     the first point), Enter / Space open the focused point, Escape leaves it. */
  function focusPoint(i) {
    const old = state.focus >= 0 && $(`#pt-${state.focus}`);
    if (old) old.classList.remove("focused");
    state.focus = i;
    const map = $("#map");
    if (i < 0) { map.removeAttribute("aria-activedescendant"); $("#tooltip").hidden = true; $("#map-focus").textContent = ""; return; }
    const c = $(`#pt-${i}`);
    c.classList.add("focused");
    c.parentNode.append(c);
    map.setAttribute("aria-activedescendant", c.id);
    const p = state.data.points[i];
    const r = c.getBoundingClientRect();
    placeTip(p, r.right, r.bottom);
    const cluster = (state.data.clusters || [])[p.cluster];
    $("#map-focus").textContent = `${p.id}${cluster ? ", cluster " + cluster.label : ""}: ${p.text.slice(0, 120)}`;
  }

  function nextPoint(from, dx, dy) {
    const pts = state.data.points, a = pts[from];
    let best = -1, bestCost = Infinity;
    pts.forEach((p, i) => {
      const vx = state.sx(p.x) - state.sx(a.x), vy = state.sy(p.y) - state.sy(a.y);
      const along = vx * dx + vy * dy, across = Math.abs(vx * dy - vy * dx);
      if (i === from || along <= 0 || across > 2 * along) return; // ahead, within a 60-degree cone either side
      const cost = along + 2 * across;
      if (cost < bestCost) { best = i; bestCost = cost; }
    });
    return best;
  }

  function firstPoint() {
    const hit = $("#map .pt.hit");
    return hit ? Number(hit.dataset.i) : 0;
  }

  const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

  function onKey(ev) {
    if (!state.data || !state.data.points.length) return;
    if (ARROWS[ev.key]) {
      const next = state.focus < 0 ? firstPoint() : nextPoint(state.focus, ...ARROWS[ev.key]);
      if (next >= 0) focusPoint(next);
    } else if (ev.key === "Home") focusPoint(firstPoint());
    else if ((ev.key === "Enter" || ev.key === " ") && state.focus >= 0) showDetailOf(state.data.points[state.focus]);
    else if (ev.key === "Escape") focusPoint(-1);
    else return;
    ev.preventDefault();
  }

  function showDetail(ev) {
    const p = pointAt(ev);
    if (p) showDetailOf(p);
  }

  function showDetailOf(p) {
    const img = EK.imageOf(p.metadata);
    $("#map-detail").replaceChildren(EK.el("div", { class: "card" },
      img ? EK.el("img", { class: "thumb", src: img, alt: `image of ${p.id}` }) : null,
      EK.el("div", { class: "body" },
        EK.el("div", { class: "head" }, EK.el("span", { class: "doc-id", text: p.id })),
        EK.el("p", { class: "text", text: p.text }), EK.metaList(withoutPaths(p.metadata)),
        EK.el("button", { type: "button", class: "more", text: "More like this", onclick: () => EK.moreLikeThis(p.id) }))));
    $("#map-detail .more").focus();
  }

  function withoutPaths(meta) {
    return Object.fromEntries(Object.entries(meta || {}).filter(([k]) => k !== "path" && k !== "thumbnail_path"));
  }

  function setup() {
    const map = $("#map");
    map.addEventListener("mousemove", showTip);
    map.addEventListener("mouseleave", () => { if (state.focus < 0) $("#tooltip").hidden = true; });
    map.addEventListener("keydown", onKey);
    map.addEventListener("blur", () => focusPoint(-1));
    map.addEventListener("click", showDetail);
    $("#color-by").addEventListener("change", () => { if (state.data) { draw(); markQuery(); } });
  }

  EK.map = { load, reset, visible, setFields, markQuery };
  document.addEventListener("DOMContentLoaded", setup);
})();
