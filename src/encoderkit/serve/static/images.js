/* encoderkit web page: results of an image collection as a grid of large thumbnails (the picture is the
   result; its only text is the file name). Server-side paths (`path`, `thumbnail_path`) are never shown. */
"use strict";

(function () {
  const EK = window.EK;

  function isImageCollection() {
    return Boolean(EK.stats && EK.stats.modality === "image");
  }

  /* "photos/beach/0001.jpg" -> "0001.jpg": the name a person recognises. */
  function fileName(id) {
    const parts = String(id).split("/");
    return parts[parts.length - 1] || String(id);
  }

  function size(meta) {
    const w = meta && meta.width, h = meta && meta.height;
    return typeof w === "number" && typeof h === "number" ? `${w} × ${h}` : "";
  }

  /* One tile: the thumbnail (or a placeholder saying there is none), rank, name, score, "more like this". */
  function tile(h, i, fmtScore) {
    const src = EK.imageOf(h.metadata);
    const name = fileName(h.id);
    const picture = src
      ? EK.el("img", { class: "tile-img", src, alt: name, loading: "lazy", title: h.id })
      : EK.el("div", { class: "tile-img no-image", text: "no thumbnail stored" });
    const dims = size(h.metadata);
    return EK.el("li", { class: "tile", "data-id": h.id },
      picture,
      EK.el("span", { class: "tile-name", text: name, title: h.id }),
      EK.el("div", { class: "tile-caption" },
        EK.el("span", { class: "rank", text: `#${i + 1}` }),
        dims ? EK.el("span", { class: "hint tile-size", text: dims }) : null,
        EK.el("span", { class: "score", text: fmtScore(h.score), title: "cosine similarity to the query" })),
      EK.el("button", { type: "button", class: "more", text: "More like this", "aria-label": `more like ${name}`,
        onclick: () => EK.moreLikeThis(h.id) }));
  }

  /* Fill #results with tiles; returns false (and does nothing) when the open collection is not of images. */
  function renderImageResults(hits, fmtScore) {
    const list = document.querySelector("#results");
    const on = isImageCollection() && hits.length > 0;
    list.classList.toggle("image-grid", on);
    if (!on) return false;
    list.replaceChildren(...hits.map((h, i) => tile(h, i, fmtScore)));
    return true;
  }

  EK.images = { isImageCollection, renderImageResults, fileName };
})();
