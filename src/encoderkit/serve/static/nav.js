/* encoderkit web page: the address bar holds the page's state (collection, query, mode, metadata filters), so
   Back / Forward and shared links work; "/" jumps to the search box. Uses app.js's functions (loaded first, same
   page). */
"use strict";

function readUrl() {
  const p = new URLSearchParams(location.search);
  return { collection: p.get("collection") || "", q: p.get("q") || "", mode: p.get("mode") || "",
    where: p.get("where") || "" };
}

function readUrlState() {
  const st = readUrl();
  return { c: st.collection, q: st.q, mode: st.mode, where: st.where };
}

/* Put the page's state in the address bar: push (a new history entry) for a new search or collection. */
function writeUrl(st, push) {
  const p = new URLSearchParams();
  if (st.c) p.set("collection", st.c);
  if (st.q) p.set("q", st.q);
  if (st.q && st.mode) p.set("mode", st.mode);
  if (st.q && st.where) p.set("where", st.where); // the `where` JSON the search sent
  const url = location.pathname + (p.toString() ? "?" + p.toString() : "");
  if (url === location.pathname + location.search) return;
  history[push ? "pushState" : "replaceState"]({ c: st.c, q: st.q, mode: st.mode, where: st.where }, "", url);
}
EK.writeUrl = writeUrl;

/* The filter rows of a `where` from the address bar (replacing the rows there): {f: {op: v}}, {f: v} or
   {$and: [...]} as buildWhere writes them. A filter this page cannot show is said, and left out. */
function setFilters(text) {
  for (const row of document.querySelectorAll(".filter")) row.remove();
  if (!text) return;
  let where = null;
  try { where = JSON.parse(text); } catch (e) { where = null; }
  const conds = where && Array.isArray(where.$and) ? where.$and : [where];
  const focused = document.activeElement;
  for (const c of conds) {
    const entry = c && typeof c === "object" ? Object.entries(c)[0] : null;
    if (!entry || entry[0].startsWith("$")) {
      showMessage(`The address holds a filter this page cannot show (${text}); it is left out.`, "info");
      continue;
    }
    const [field, spec] = entry;
    const plain = spec === null || typeof spec !== "object" || Array.isArray(spec);
    const [op, value] = plain ? ["$eq", spec] : Object.entries(spec)[0] || ["$eq", ""];
    addFilter();
    const rows = document.querySelectorAll(".filter");
    const row = rows[rows.length - 1];
    if (!row) return; // the collection has no fields to filter on (addFilter said so)
    const sel = row.querySelector(".filter-field");
    if (![...sel.options].some((o) => o.value === field)) sel.append(el("option", { value: field, text: field }));
    sel.value = field;
    sel.dispatchEvent(new Event("change"));
    row.querySelector(".filter-op").value = op;
    row.querySelector(".filter-value").value = Array.isArray(value) ? value.join(",") : String(value);
  }
  if (focused && focused.focus) focused.focus(); // restoring filters does not move the focus from the query box
}

/* Show what the URL says (on load, and on Back / Forward): its collection, query and mode, searched again. */
async function applyUrl() {
  const st = readUrl();
  const options = [...$("#collection").options].map((o) => o.value);
  if (st.collection && st.collection !== EK.collection && options.includes(st.collection)) {
    $("#collection").value = st.collection;
    await selectCollection(st.collection);
  }
  $("#query").value = st.q;
  setFilters(st.q ? st.where : "");
  const radio = st.mode && document.querySelector(`input[name=mode][value="${CSS.escape(st.mode)}"]`);
  if (radio && !radio.closest("label").hidden) radio.checked = true;
  if (st.q && EK.stats && EK.stats.documents) await search(null, false);
  else if (EK.stats && EK.stats.documents) clearResults(`Search “${EK.collection}”.`);
}

function setupNavigation() {
  window.addEventListener("popstate", () => { clearMessage(); applyUrl(); });
  document.addEventListener("keydown", (ev) => { // "/" jumps to the search box, as on most search pages
    if (ev.key !== "/" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    ev.preventDefault();
    $("#query").focus();
    $("#query").select();
  });
}
