/* encoderkit web page: result cards of a text collection. One card per document: its title as the heading (the
   id as a small chip), the matching passage cut on word boundaries with an ellipsis, the query's words marked
   (never stopwords or one-letter tokens), and scores people can read: cosine for vector hits, BM25 for keyword
   hits, and for hybrid the fused rank with each fused list's own score beside it. */
"use strict";

(function () {
  const EK = window.EK;
  const el = (...a) => EK.el(...a);

  const WORD = /[\p{L}\p{N}_]+/gu;
  const STOPWORDS = new Set(("a an and are as at be been but by can could did do does for from had has have how " +
    "i if in into is it its may might no not of on or our over so such than that the their them then there these " +
    "they this those to under up was we were what when where which while who whom why will with would you your " +
    "about after all also any because before between both each few more most much must only other out same should " +
    "some very via vs").split(" "));
  const PARTS = ["vector", "keyword", "sparse", "late"];
  const NAMES = { vector: "cosine", keyword: "BM25", sparse: "sparse dot product", late: "MaxSim",
    fused: "RRF (k=60)", rerank: "cross-encoder" };

  function stem(w) {
    w = w.toLowerCase();
    for (const suf of ["ing", "ed", "es", "ly", "s"]) {
      if (w.length - suf.length >= 3 && w.endsWith(suf)) return w.slice(0, -suf.length);
    }
    return w;
  }

  /* A word worth marking: at least two characters and not a stopword. */
  function meaningful(word) {
    return word.length > 1 && !STOPWORDS.has(word.toLowerCase());
  }

  /* word -> whether it matches a meaningful word of the query (same stem, or a longer form of a 4+ letter stem). */
  function termMatcher(query) {
    const stems = new Set((query.match(WORD) || []).filter(meaningful).map(stem));
    if (!stems.size) return null;
    return (word) => {
      if (!meaningful(word)) return false;
      const s = stem(word);
      if (stems.has(s)) return true;
      for (const t of stems) if (t.length >= 4 && s.startsWith(t)) return true;
      return false;
    };
  }

  /* Text as nodes with the matched words in <mark> (text nodes only: document text is never HTML). */
  function highlighted(text, match) {
    const out = document.createDocumentFragment();
    if (!match) { out.append(text); return out; }
    let last = 0;
    for (const m of text.matchAll(WORD)) {
      if (!match(m[0])) continue;
      out.append(text.slice(last, m.index), el("mark", { text: m[0] }));
      last = m.index + m[0].length;
    }
    out.append(text.slice(last));
    return out;
  }

  /* About `size` characters around the first matched word, starting and ending on whole words; "…" marks a cut
     (and a passage that is not the start or end of its document). */
  function snippet(text, match, size = 320, cutBefore = false, cutAfter = false) {
    text = text.replace(/\s+/g, " ").trim();
    let start = 0, end = text.length;
    if (text.length > size) {
      if (match) {
        for (const m of text.matchAll(WORD)) if (match(m[0])) { start = Math.max(0, m.index - 80); break; }
      }
      if (start > 0) { // back to the sentence's start when it is near, else on to the next whole word
        const sentence = text.lastIndexOf(". ", start);
        start = sentence >= 0 && start - sentence < 60 ? sentence + 2 : nextWord(text, start);
      }
      end = Math.min(text.length, start + size);
      if (end < text.length) {
        const space = text.lastIndexOf(" ", end);
        if (space > start) end = space;
      }
    }
    const body = text.slice(start, end).replace(/[\s,;:]+$/, "");
    return (start > 0 || cutBefore ? "… " : "") + body + (end < text.length || cutAfter ? " …" : "");
  }
  function nextWord(text, i) {
    if (i <= 0 || /\s/.test(text[i - 1])) return i;
    const space = text.indexOf(" ", i);
    return space < 0 ? i : space + 1;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);
    return a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(2) : v.toFixed(3);
  }

  /* [label, value, title] of the scores a card shows, best first. */
  function scoreParts(h, mode, names, lists) {
    const s = h.scores || {};
    const out = [];
    if ("rerank" in s) out.push(["rerank", fmt(s.rerank), "the cross-encoder's score of query and passage"]);
    for (const p of lists) {
      const v = p in s ? s[p] : (mode === p ? h.score : null);
      out.push([names[p] || p, fmt(v), v === null || v === undefined
        ? `not among the ${p} list's top candidates` : `${p} search: ${names[p] || p}`]);
    }
    return out;
  }

  /* "10 documents (23 matching chunks)" — or "10 chunks" in the chunk view. */
  function countText(hits, grouped = true) {
    const n = hits.length;
    if (!grouped) return `${n} chunk${n === 1 ? "" : "s"}`;
    const chunked = hits.some((h) => h.chunk_id);
    const matched = hits.reduce((a, h) => a + (h.matched_chunks || 1), 0);
    return `${n} document${n === 1 ? "" : "s"}` + (chunked ? ` (${matched} matching chunks)` : "");
  }

  function titleOf(h) {
    const t = h.metadata && h.metadata.title;
    return typeof t === "string" && t.trim() ? t.trim() : null;
  }

  /* The chunk a card shows, in words: "passage 3 of 7". */
  function passageNote(h) {
    const m = h.metadata || {};
    if (typeof m.chunk !== "number" || typeof m.chunks !== "number") return null;
    return `passage ${m.chunk + 1} of ${m.chunks}` + (h.matched_chunks > 1 ? ` · ${h.matched_chunks} passages matched` : "");
  }

  /* The metadata a card lists: not what it already shows (title, passage), no server paths (a source file by
     its name only). */
  function shownMeta(meta) {
    const out = {};
    for (const [k, v] of Object.entries(meta || {})) {
      if (["title", "parent", "chunk", "chunks", "path", "thumbnail_path"].includes(k)) continue;
      out[k] = k === "source" && typeof v === "string" ? v.split(/[\\/]/).pop() : v;
    }
    return out;
  }

  function card(h, i, ctx) {
    const title = titleOf(h);
    let text = h.text;
    if (title && text.startsWith(title)) text = text.slice(title.length).replace(/^[\s.:—-]+/, "");
    const m = h.metadata || {};
    const first = typeof m.chunk !== "number" || m.chunk === 0;
    const last = typeof m.chunk !== "number" || m.chunk === m.chunks - 1;
    const parts = scoreParts(h, ctx.mode, ctx.names, ctx.lists);
    const rank = el("span", { class: "rank", text: `#${i + 1}`, title: ctx.mode === "hybrid"
      ? `fused rank: ${ctx.names.fused || "RRF"} of the lists' ranks orders the results` : "rank" });
    const scores = el("span", { class: "scores" }, ...parts.map(([label, v, tip]) =>
      el("span", { class: "score", title: tip, "data-score": label, text: `${label} ${v}` })));
    const full = h.text.length > 320 ? el("details", {}, el("summary", { text: "full passage" }),
      el("p", { class: "full" }, highlighted(h.text, ctx.match))) : null;
    const note = passageNote(h);
    return el("li", { class: "card", "data-id": h.id },
      EK.imageOf(h.metadata) ? el("img", { class: "thumb", src: EK.imageOf(h.metadata), alt: `image of ${h.id}`,
        loading: "lazy" }) : null,
      el("div", { class: "body" },
        el("div", { class: "head" }, rank,
          el("h3", { class: "doc-title", text: title || h.id, title: title || h.id })),
        el("div", { class: "sub" },
          title ? el("span", { class: "doc-id chip", text: h.id, title: h.chunk_id ? `best passage: ${h.chunk_id}` : h.id })
            : null,
          note ? el("span", { class: "hint passage-note", text: note }) : null, scores),
        el("p", { class: "text" }, highlighted(snippet(text, ctx.match, 320, !first, !last), ctx.match)),
        full,
        EK.metaList(shownMeta(h.metadata)),
        el("button", { type: "button", class: "more", text: "More like this",
          "aria-label": `more like ${title || h.id}`, onclick: () => EK.moreLikeThis(h.id) })));
  }

  /* Fill #results with one card per hit. */
  function render(hits, last) {
    const names = Object.assign({}, NAMES, (last && last.names) || {});
    const mode = (last && last.mode) || "vector";
    const match = last && last.query && mode !== "vector" ? termMatcher(last.query) : null; // words: not vector's
    const lists = mode === "hybrid" ? PARTS.filter((p) => hits.some((h) => p in (h.scores || {}))) : [mode];
    const ctx = { mode, names, match, lists };
    document.querySelector("#results").replaceChildren(...hits.map((h, i) => card(h, i, ctx)));
  }

  EK.cards = { render, snippet, termMatcher, highlighted, countText, meaningful };
})();
