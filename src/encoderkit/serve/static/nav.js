/* encoderkit web page: the address bar holds the page's state (collection, query, mode), so Back / Forward
   and shared links work; "/" jumps to the search box. Uses app.js's functions (loaded first, same page). */
"use strict";

function readUrl() {
  const p = new URLSearchParams(location.search);
  return { collection: p.get("collection") || "", q: p.get("q") || "", mode: p.get("mode") || "" };
}

function readUrlState() {
  const st = readUrl();
  return { c: st.collection, q: st.q, mode: st.mode };
}

/* Put the page's state in the address bar: push (a new history entry) for a new search or collection. */
function writeUrl(st, push) {
  const p = new URLSearchParams();
  if (st.c) p.set("collection", st.c);
  if (st.q) p.set("q", st.q);
  if (st.q && st.mode) p.set("mode", st.mode);
  const url = location.pathname + (p.toString() ? "?" + p.toString() : "");
  if (url === location.pathname + location.search) return;
  history[push ? "pushState" : "replaceState"]({ c: st.c, q: st.q, mode: st.mode }, "", url);
}
EK.writeUrl = writeUrl;

/* Show what the URL says (on load, and on Back / Forward): its collection, query and mode, searched again. */
async function applyUrl() {
  const st = readUrl();
  const options = [...$("#collection").options].map((o) => o.value);
  if (st.collection && st.collection !== EK.collection && options.includes(st.collection)) {
    $("#collection").value = st.collection;
    await selectCollection(st.collection);
  }
  $("#query").value = st.q;
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
