/* encoderkit web page: pick a collection, search it, read the results, open the map (map.js).
   Plain browser JavaScript, no build step. Every server answer goes through api(); every failure through
   showError(), which turns HTTP statuses into sentences: the page never goes blank. */
"use strict";

const EK = (window.EK = {
  key: sessionStorage.getItem("encoderkit.apiKey") || "",
  collection: "",
  stats: null,
  last: null, // {query, mode, hits, byExample}
});

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
EK.el = el;

/* ------------------------------------------------------------------ messages */
function showMessage(text, kind = "error") {
  const box = $("#message");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
}
function clearMessage() {
  $("#message").hidden = true;
  $("#message").textContent = "";
}
EK.showMessage = showMessage;
EK.clearMessage = clearMessage;

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/* One request to the server; resolves to the JSON body or throws an ApiError with a readable message. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (EK.key) headers.Authorization = "Bearer " + EK.key;
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "Cannot reach the server (" + e.message + "). Is encoderkit serve still running?");
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (resp.ok) {
    if (data === null) throw new ApiError(resp.status, "The server sent an answer this page cannot read (not JSON).");
    return data;
  }
  let msg = "";
  if (data && typeof data.error === "string") msg = data.error;
  else if (data && data.error && data.error.message) msg = data.error.message;
  else if (data && typeof data.detail === "string") msg = data.detail;
  else if (text && !/^\s*</.test(text)) msg = text.slice(0, 300); // never dump an HTML error page
  throw new ApiError(resp.status, msg || resp.statusText || "no details", resp.headers.get("Retry-After"));
}
EK.api = api;

/* Turn a failure into a sentence on the page; `what` says what the page was doing. */
function showError(err, what) {
  if (!(err instanceof ApiError)) {
    console.error(err);
    showMessage(`Something went wrong while ${what}: ${err && err.message ? err.message : err}. Reload the page to retry.`);
    return;
  }
  const s = err.status;
  if (s === 401) {
    showKeyForm(true);
    showMessage(EK.key
      ? `The API key was refused (${err.message}). Enter a valid key above.`
      : `This server needs an API key: enter it above. (${err.message})`);
  } else if (s === 403) {
    showMessage(`This API key is not allowed to do that: ${err.message}. Ask the operator for a key with access.`);
  } else if (s === 404 && EK.collection && /collection/i.test(err.message) && !/document/i.test(err.message)) {
    const gone = EK.collection;
    showMessage(`The collection “${gone}” no longer exists (it may have been dropped) — pick another one.`);
    EK.collection = "";
    loadCollections(true);
  } else if (s === 0) {
    showMessage(err.message);
  } else if (s === 429) {
    showMessage(`The server is busy; try again${err.retryAfter ? " in " + err.retryAfter + " s" : " shortly"}. (${err.message})`);
  } else if (s >= 500) {
    showMessage(`The server failed while ${what} (HTTP ${s}${err.message && err.message !== "no details" ? ": " + err.message : ""}). Try again; if it keeps failing, check the server log.`);
  } else {
    showMessage(`The server refused ${what} (HTTP ${s}): ${err.message}`);
  }
}
EK.showError = showError;

/* ------------------------------------------------------------------ API key */
function showKeyForm(open) {
  $("#key-form").hidden = !open;
  $("#key-button").setAttribute("aria-expanded", String(open));
  if (open) $("#api-key").focus();
}
function setupKey() {
  $("#key-button").addEventListener("click", () => showKeyForm($("#key-form").hidden));
  $("#key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) { showMessage("Type the API key first (it starts with ek-)."); return; }
    EK.key = key;
    sessionStorage.setItem("encoderkit.apiKey", key);
    $("#api-key").value = "";
    clearMessage();
    showKeyForm(false);
    loadCollections();
  });
  $("#key-forget").addEventListener("click", () => {
    EK.key = "";
    sessionStorage.removeItem("encoderkit.apiKey");
    showMessage("The key is forgotten for this tab.", "info");
  });
}

/* ------------------------------------------------------------------ collections and stats */
async function loadCollections(keepMessage = false) {
  const sel = $("#collection");
  let data;
  try {
    data = await api("GET", "/collections");
  } catch (err) {
    sel.replaceChildren(el("option", { value: "", text: "(none)" }));
    sel.disabled = true;
    if (err.status === 404) showMessage("This server has no collection store: start it with --store DIR.");
    else if (!keepMessage || err.status === 401) showError(err, "listing the collections");
    return;
  }
  if (!keepMessage) clearMessage();
  const names = data.collections.map((c) => c.name);
  sel.replaceChildren(...data.collections.map((c) =>
    el("option", { value: c.name, text: `${c.name} (${c.documents} docs)` })));
  sel.disabled = names.length === 0;
  if (!names.length) {
    sel.append(el("option", { value: "", text: "(no collections)" }));
    showMessage("This server has no collections yet. Make one from a terminal: encoderkit index add NAME " +
      "FILE_OR_FOLDER (or POST /collections, then add documents).", "info");
    renderStats(null);
    return;
  }
  const wanted = sessionStorage.getItem("encoderkit.collection");
  if (EK.collection && !names.includes(EK.collection)) {
    showMessage(`There is no collection “${EK.collection}” here; showing another one.`, "info");
  }
  const name = names.includes(EK.collection) ? EK.collection : names.includes(wanted) ? wanted : names[0];
  sel.value = name;
  await selectCollection(name);
}

async function selectCollection(name) {
  EK.collection = name;
  sessionStorage.setItem("encoderkit.collection", name);
  $("#query").placeholder = `Search “${name}”`; // never an example from another (or a test's) collection
  EK.searchSeq = (EK.searchSeq || 0) + 1; // an answer for the previous collection is now stale
  setBusy(false);
  $("#search-button").disabled = false;
  clearResults(`Search “${name}”.`);
  if (EK.map) EK.map.reset();
  EK.stats = null;
  $("#stats").replaceChildren(el("p", { class: "hint opening" }, el("span", { class: "spinner", "aria-hidden": "true" }),
    ` Opening “${name}”…`));
  let stats;
  try {
    stats = await api("GET", `/collections/${encodeURIComponent(name)}/stats`);
  } catch (err) {
    if (name !== EK.collection) return;
    renderStats(null); // never the previous collection's numbers under this one's name
    $("#results-summary").textContent = `“${name}” could not be opened: see the message above.`;
    showError(err, `opening “${name}”`);
    return;
  }
  if (name !== EK.collection) return; // the user picked another one meanwhile
  EK.stats = stats;
  renderStats(EK.stats);
  offerModes(EK.stats.modes || ["vector", "keyword", "hybrid"]);
  refreshFieldChoices();
  const canRerank = EK.stats.rerank_models.length > 0;
  $("#rerank").disabled = !canRerank;
  $("#rerank-label").title = canRerank ? "rerank the top results with " + EK.stats.rerank_models[0]
    : "this server has no rerank model (start it with --rerank-model)";
  if (EK.stats.documents === 0) showEmptyCollection(name);
  if (EK.map && EK.map.visible() && EK.stats.documents) EK.map.load();
}

/* A collection without documents says how to fill it instead of inviting searches that cannot find anything. */
function showEmptyCollection(name) {
  $("#results-summary").textContent = `“${name}” has no documents yet.`;
  const cmd = `encoderkit index add ${name} FILE_OR_FOLDER`;
  $("#results").replaceChildren(el("li", { class: "empty empty-collection" },
    el("p", { text: "Add documents from a terminal on the server's machine:" }),
    el("p", {}, el("code", { text: cmd })),
    el("p", { class: "hint", text: ".txt .md .jsonl .csv files or whole folders (images for a CLIP collection); or " +
      `POST /collections/${name}/documents. Reload this page afterwards.` })));
}

/* the search modes this collection has: sparse / late only when it holds those vectors */
function offerModes(modes) {
  for (const label of document.querySelectorAll("label[data-mode]")) {
    label.hidden = !modes.includes(label.dataset.mode);
  }
  const checked = document.querySelector("input[name=mode]:checked");
  if (!checked || checked.closest("label").hidden) document.querySelector("input[name=mode][value=vector]").checked = true;
}

function fmtBytes(n) {
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function renderStats(s) {
  const box = $("#stats");
  if (!s) { box.replaceChildren(); return; }
  const when = s.updated ? new Date(s.updated).toLocaleString() : "never";
  const docs = s.documents.toLocaleString() + (s.chunks > s.documents ? ` (${s.chunks.toLocaleString()} chunks)` : "");
  const items = [["documents", docs], ["model", s.model], ["index", s.index],
    ["embedding size", String(s.dim)], ["metric", s.metric], ["on disk", fmtBytes(s.bytes)], ["last update", when]];
  box.replaceChildren(el("dl", { class: "stats" }, ...items.flatMap(([k, v]) =>
    [el("div", { "data-stat": k }, el("dt", { text: k }), el("dd", { text: v }))])));
}

/* ------------------------------------------------------------------ filters */
const OPS = [["=", "$eq"], ["≠", "$ne"], [">", "$gt"], ["≥", "$gte"], ["<", "$lt"], ["≤", "$lte"], ["in", "$in"]];

function refreshFieldChoices() {
  const fields = Object.keys((EK.stats && EK.stats.fields) || {});
  for (const sel of document.querySelectorAll(".filter-field")) {
    const cur = sel.value;
    sel.replaceChildren(...fields.map((f) => el("option", { value: f, text: f })));
    if (fields.includes(cur)) sel.value = cur;
    sel.dispatchEvent(new Event("change"));
  }
  if (EK.map) EK.map.setFields(EK.stats ? EK.stats.fields : {});
}

function addFilter() {
  const fields = Object.keys((EK.stats && EK.stats.fields) || {});
  if (!fields.length) { showMessage("This collection has no metadata fields to filter on.", "info"); return; }
  const n = document.querySelectorAll(".filter").length + 1;
  const field = el("select", { class: "filter-field", "aria-label": `filter ${n} field` },
    ...fields.map((f) => el("option", { value: f, text: f })));
  const op = el("select", { class: "filter-op", "aria-label": `filter ${n} operator` },
    ...OPS.map(([t, v]) => el("option", { value: v, text: t })));
  const listId = `filter-values-${n}-${Date.now()}`;
  const values = el("datalist", { id: listId });
  const value = el("input", { class: "filter-value", "aria-label": `filter ${n} value`, list: listId,
    placeholder: "value" });
  field.addEventListener("change", () => {
    const info = EK.stats.fields[field.value] || {};
    values.replaceChildren(...(info.values || []).map((v) => el("option", { value: String(v) })));
    value.placeholder = info.type === "number" ? `${info.min} … ${info.max}` : "value";
  });
  const row = el("div", { class: "filter" }, field, op, value, values,
    el("button", { type: "button", class: "remove", "aria-label": `remove filter ${n}`, text: "✕",
      onclick: () => row.remove() }));
  $("#filters").append(row);
  field.dispatchEvent(new Event("change"));
  field.focus();
}

function parseValue(raw, type) {
  const t = raw.trim();
  if (type === "number" && t !== "" && !isNaN(Number(t))) return Number(t);
  if (type === "boolean" && /^(true|false)$/i.test(t)) return t.toLowerCase() === "true";
  return t;
}

/* The `where` filter of the filter rows, or null; throws a readable Error on an incomplete row. */
function buildWhere() {
  const conds = [];
  for (const row of document.querySelectorAll(".filter")) {
    const f = row.querySelector(".filter-field").value;
    const op = row.querySelector(".filter-op").value;
    const raw = row.querySelector(".filter-value").value;
    const type = ((EK.stats.fields || {})[f] || {}).type;
    if (!raw.trim()) throw new Error(`the filter on “${f}” has no value: type one or remove the filter`);
    const v = op === "$in" ? raw.split(",").map((x) => parseValue(x, type)) : parseValue(raw, type);
    conds.push({ [f]: { [op]: v } });
  }
  if (!conds.length) return null;
  return conds.length === 1 ? conds[0] : { $and: conds };
}
EK.buildWhere = buildWhere;

/* ------------------------------------------------------------------ search */
/* ev: a form submit (the search is pushed to the history); push=false when the URL already says it (load, Back). */
async function search(ev, push = true) {
  if (ev) ev.preventDefault();
  const query = $("#query").value.trim();
  if (!EK.collection) { showMessage("Pick a collection first.", "info"); return; }
  if (!query) {
    showMessage("The search box is empty: type what you are looking for, then press Enter.", "info");
    $("#query").focus();
    return;
  }
  let where;
  try { where = buildWhere(); } catch (e) { showMessage("Cannot search yet: " + e.message + ".", "info"); return; }
  const mode = document.querySelector("input[name=mode]:checked").value;
  const body = { query, mode, k: Number($("#k").value), where, rerank: $("#rerank").checked && !$("#rerank").disabled,
    group_by_document: !$("#chunks").checked };
  const name = EK.collection;
  if (push) writeUrl({ c: name, q: query, mode, where: where ? JSON.stringify(where) : "" }, true);
  const seq = (EK.searchSeq = (EK.searchSeq || 0) + 1);
  $("#search-button").disabled = true;
  setBusy(true, "Searching…");
  try {
    const t0 = performance.now();
    const data = await api("POST", `/collections/${encodeURIComponent(name)}/search`, body);
    if (seq !== EK.searchSeq || name !== EK.collection) return; // a newer search (or collection) took over
    clearMessage();
    EK.last = { query, mode, hits: data.hits, byExample: null, names: data.score_names };
    renderResults(data.hits, `${EK.cards.countText(data.hits, body.group_by_document)} for “${query}” ` +
      `(${mode}${mode === "hybrid" ? ", ordered by " + ((data.score_names || {}).fused || "RRF") + " of each list's rank"
        : ""}${body.rerank ? ", reranked" : ""}` +
      `${where ? ", filtered" : ""}) in ${Math.round(performance.now() - t0)} ms`, data.explanation);
    if (EK.map) EK.map.markQuery();
  } catch (err) {
    if (seq !== EK.searchSeq) return;
    clearResults("No results: see the message above.");
    showError(err, "searching");
  } finally {
    if (seq === EK.searchSeq) {
      setBusy(false);
      $("#search-button").disabled = false;
    }
  }
}

/* While a search runs the old results stay visible but dimmed, with a spinner in the summary line. */
function setBusy(on, text) {
  const view = $("#results-view");
  view.classList.toggle("busy", on);
  view.setAttribute("aria-busy", String(on));
  if (on) $("#results-summary").replaceChildren(el("span", { class: "spinner", "aria-hidden": "true" }), " " + text);
}
EK.setBusy = setBusy;

/* Old results never stay under a failed search or another collection's stats. */
function clearResults(summary) {
  EK.last = null;
  $("#results").replaceChildren();
  $("#results-summary").textContent = summary;
  if (EK.map && EK.map.markQuery) EK.map.markQuery();
}

async function moreLikeThis(id) {
  const name = EK.collection;
  let where;
  try { where = buildWhere(); } catch (e) { showMessage("Cannot search yet: " + e.message + ".", "info"); return; }
  try {
    const data = await api("POST", `/collections/${encodeURIComponent(name)}/similar`,
      { id, k: Number($("#k").value), where, group_by_document: !$("#chunks").checked });
    clearMessage();
    EK.last = { query: null, mode: "vector", hits: data.hits, byExample: id, names: data.score_names };
    renderResults(data.hits, `${EK.cards.countText(data.hits, !$("#chunks").checked)} like “${id}”`);
    selectTab("results");
    if (EK.map) EK.map.markQuery();
  } catch (err) {
    showError(err, `finding documents like “${id}”`);
  }
}
EK.moreLikeThis = moreLikeThis;

/* ------------------------------------------------------------------ result cards */
const IMAGE_FIELDS = ["thumbnail", "thumb", "image_url", "image", "img"];
// Only inline (data:) or same-origin images: a URL to another site in a document's metadata would make every
// viewer's browser fetch it (a tracking pixel, a request to an internal address). The page's CSP says the same.
function sameOriginImage(v) {
  if (/^data:image\//.test(v)) return v;
  try {
    const u = new URL(v, location.href);
    return u.origin === location.origin ? u.href : null;
  } catch (e) {
    return null;
  }
}
function imageOf(meta) {
  for (const f of IMAGE_FIELDS) {
    const v = meta && meta[f];
    const src = typeof v === "string" && /^(data:image\/|https?:\/\/|\/(?!\/))/.test(v) ? sameOriginImage(v) : null;
    if (src) return src;
  }
  return null;
}
EK.imageOf = imageOf;

function metaList(meta) {
  const entries = Object.entries(meta || {}).filter(([k]) => !IMAGE_FIELDS.includes(k));
  if (!entries.length) return null;
  return el("dl", { class: "meta" }, ...entries.map(([k, v]) => el("div", {},
    el("dt", { text: k }), el("dd", { text: typeof v === "object" ? JSON.stringify(v) : String(v) }))));
}
EK.metaList = metaList;

function fmtScore(v) {
  if (v === null || v === undefined) return "–";
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(3);
}

function renderResults(hits, summary, explanation) {
  $("#results-summary").textContent = summary;
  if (EK.images && EK.images.renderImageResults(hits, fmtScore)) return; // images.js: a grid of thumbnails
  EK.cards.render(hits, EK.last); // cards.js: one card per document, title, passage, readable scores
  if (!hits.length) $("#results").append(el("li", { class: "empty", text: explanation
    ? "Nothing found: " + explanation + "."
    : "Nothing matched. Try other words, another mode, or fewer filters." }));
}

/* ------------------------------------------------------------------ tabs and start-up */
function selectTab(which) {
  for (const t of ["results", "map"]) {
    const on = t === which;
    $(`#tab-${t}`).setAttribute("aria-selected", String(on));
    $(`#tab-${t}`).tabIndex = on ? 0 : -1;
    $(`#${t}-view`).hidden = !on;
  }
  if (which === "map" && EK.map) EK.map.load();
}
EK.selectTab = selectTab;

function start() {
  setupKey();
  $("#search-form").addEventListener("submit", search);
  $("#add-filter").addEventListener("click", addFilter);
  $("#collection").addEventListener("change", (ev) => {
    clearMessage();
    writeUrl({ c: ev.target.value }, true);
    selectCollection(ev.target.value);
  });
  setupNavigation(); // nav.js: Back / Forward and the "/" shortcut
  $("#tab-results").addEventListener("click", () => selectTab("results"));
  $("#tab-map").addEventListener("click", () => selectTab("map"));
  $(".tabs").addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowLeft" && ev.key !== "ArrowRight") return;
    const next = $("#tab-results").getAttribute("aria-selected") === "true" ? "map" : "results";
    selectTab(next);
    $(`#tab-${next}`).focus();
  });
  window.addEventListener("error", (ev) => showMessage("The page hit an error: " + ev.message + ". Reload to retry."));
  window.addEventListener("unhandledrejection", (ev) => showError(ev.reason, "working"));
  $("#query").focus();
  EK.collection = readUrl().collection; // loadCollections prefers it
  EK.ready = loadCollections().then(async () => {
    if (EK.collection) writeUrl({ ...readUrlState(), c: EK.collection }, false);
    await applyUrl();
  });
}
document.addEventListener("DOMContentLoaded", start);
