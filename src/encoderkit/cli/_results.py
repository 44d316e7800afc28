"""How `encoderkit index search` prints results: one line per document, its rank, the scores a reader can
judge (cosine for vector hits, BM25 for keyword hits, for hybrid each fused list's score beside the fused rank,
the reranker's score when reranked), its id, and its title and passage trimmed on word boundaries."""
from __future__ import annotations

import shutil
from typing import Any

PARTS = ("vector", "keyword", "sparse", "late")
SHORT = {"cosine": "COSINE", "dot product": "DOT", "-squared L2": "-L2²", "BM25": "BM25",
         "sparse dot product": "SPARSE", "MaxSim": "MAXSIM", "cross-encoder": "RERANK"}


def score_columns(hits: list[Any], mode: str) -> list[str]:
    """The `scores` keys shown as columns: the mode's own list, or each fused list of a hybrid search, after the
    reranker's score when there is one."""
    have = {k for h in hits for k in (h.scores or {})}
    parts = [m for m in PARTS if m in have] if mode == "hybrid" else [mode]
    return (["rerank"] if "rerank" in have else []) + parts


def trim_words(text: str, room: int) -> str:
    """text in at most `room` characters, cut after a whole word and marked with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= room:
        return text
    cut = text.rfind(" ", 0, room)
    return (text[:cut] if cut > room // 2 else text[:room - 1]).rstrip(" ,;:") + "…"


def headline(hit: Any) -> str:
    """Title and passage: "Title — passage" when the document has a title (not repeated if the text starts with it)."""
    text = " ".join(hit.text.split())
    title = (hit.metadata or {}).get("title")
    if not isinstance(title, str) or not title.strip():
        return text
    title = " ".join(title.split())
    if text.startswith(title):
        text = text[len(title):].lstrip(" .:-—")
    return f"{title} — {text}" if text else title


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.2f}" if abs(v) >= 10 else f"{v:.3f}"


def summary(hits: list[Any], query: str, mode: str, names: dict[str, str], grouped: bool) -> str:
    """The line above the table: how many documents (and chunks) and what the scores are."""
    what = f"{len(hits)} document{'s' if len(hits) != 1 else ''}" if grouped else f"{len(hits)} chunks"
    matched = sum(h.matched_chunks for h in hits)
    if grouped and any(h.chunk_id for h in hits):
        what += f" ({matched} matching chunks)"
    how = mode
    if mode == "hybrid":
        fused = [m for m in PARTS if any(m in (h.scores or {}) for h in hits)]
        how = f"hybrid: ranked by {names['fused']} of {' + '.join(names[m] for m in fused)}"
    return f"{what} for {query!r} ({how})"


def print_hits(hits: list[Any], query: str, mode: str, names: dict[str, str], grouped: bool) -> None:
    """Print the results table of a search."""
    cols = score_columns(hits, mode)
    heads = [SHORT.get(names.get(c, c), c.upper()) for c in cols]
    widths = [max(6, len(h)) for h in heads]
    width = max(2, min(32, max(len(h.id) for h in hits)))
    term = shutil.get_terminal_size((120, 20)).columns
    room = max(30, term - width - 8 - sum(w + 2 for w in widths))
    print(summary(hits, query, mode, names, grouped))
    print(f"{'#':>3s}  " + "".join(f"{h:>{w}s}  " for h, w in zip(heads, widths)) + f"{'ID':{width}s}  TEXT")
    for i, h in enumerate(hits, start=1):
        cells = "".join(f"{_fmt((h.scores or {}).get(c, h.score if c == mode else None)):>{w}s}  "
                        for c, w in zip(cols, widths))
        print(f"{i:>3d}  {cells}{h.id[:width]:{width}s}  {trim_words(headline(h), room)}")
