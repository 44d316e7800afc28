"""Documents, not chunks. Ingest splits a long document into chunks `ID#i` whose metadata names the document
(`parent`, `chunk`, `chunks`); a search groups them back, so each document appears once, ranked by its best
chunk, with that chunk as the matching passage. "More like this" starts from a document's own vectors and never
returns the document itself (or its chunks)."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from encoderkit.store.records import Hit
from encoderkit.store.validate import surrogate_at

OVERFETCH = 4  # chunk candidates asked per wanted document, grown by this factor while documents are missing
MAX_ROUNDS = 4


def document_id(hit: Hit) -> str:
    """The document a stored row belongs to: its `parent` when it is a chunk, else its own id."""
    parent = (hit.metadata or {}).get("parent")
    return str(parent) if parent is not None and "chunk" in hit.metadata else hit.id


def group_hits(hits: list[Hit]) -> list[Hit]:
    """One hit per document, best chunk first (hits must be best first): the document's id, its best chunk's
    score, scores and text (the passage), `chunk_id` naming that chunk and `matched_chunks` counting the
    document's chunks among `hits`."""
    order: list[str] = []
    best: dict[str, Hit] = {}
    matched: dict[str, int] = {}
    for h in hits:
        doc = document_id(h)
        matched[doc] = matched.get(doc, 0) + 1
        if doc not in best:
            order.append(doc)
            best[doc] = h
    return [replace(best[d], id=d, chunk_id=best[d].id if best[d].id != d else None, matched_chunks=matched[d])
            for d in order]


def fetch_documents(fetch: Callable[[int], list[Hit]], k: int) -> list[Hit]:
    """The top-k documents from `fetch(n)` (the top n chunks, best first): asks for OVERFETCH * k chunks, then
    OVERFETCH times more while fewer than k documents came back and the last answer was full (more may exist)."""
    depth = k * OVERFETCH
    for _ in range(MAX_ROUNDS):
        hits = fetch(depth)
        docs = group_hits(hits)
        if len(docs) >= k or len(hits) < depth:
            return docs[:k]
        depth *= OVERFETCH
    return docs[:k]


def join_chunks(texts: list[str]) -> str:
    """Consecutive chunks as one text: the words a chunk repeats from the end of the one before it (the overlap)
    once; chunks that do not overlap are joined by a space."""
    out = texts[0] if texts else ""
    for nxt in texts[1:]:
        shared = 0
        for n in range(min(len(out), len(nxt)), 0, -1):  # the longest end of `out` that starts `nxt`, on word edges
            if (out.endswith(nxt[:n]) and (n == len(nxt) or nxt[n].isspace())
                    and (n == len(out) or out[-n - 1].isspace())):
                shared = n
                break
        out = out + nxt[shared:] if shared else f"{out} {nxt}"
    return out


class DocumentsMixin:
    """Document-level reads of a Collection: counts of documents and chunks, a document's vector, similar(), and
    what its scores are called."""

    KEYWORD_SCORE = "BM25"  # SQLite FTS5; PgCollection: idf x ts_rank_cd

    def score_names(self, fusion: str = "rrf", rrf_k: int = 60) -> dict[str, str]:
        """What each key of a hit's `scores` measures here (store/fusion.py: score_names)."""
        from encoderkit.store.fusion import score_names

        return score_names(self.metric, fusion, rrf_k, self.KEYWORD_SCORE)

    def document_counts(self) -> tuple[int, int]:
        """(documents, stored rows): chunks of one document count once among documents."""
        rows = self.count()
        later_chunks = self.count({"chunk": {"$gt": 0}}) if rows else 0
        return rows - later_chunks, rows

    def has_chunks(self) -> bool:
        """Whether any document is stored as several chunks (checked once per write generation); searches of a
        collection without them need no grouping and no extra candidates."""
        gen = self.store.generation()
        if getattr(self, "_chunks_seen", None) is None or self._chunks_seen[0] != gen:
            self._chunks_seen = (gen, self.count({"chunk": {"$gt": 0}}) > 0)
        return self._chunks_seen[1]

    def document_rids(self, doc_id: str) -> list[int]:
        """The stored rows of a document: the row with that id, or its chunks (metadata parent = doc_id)."""
        if surrogate_at(doc_id) is not None:  # not valid UTF-8: refused at ingest, so never stored
            return []
        row = self.store.rows_by_ids([doc_id]).get(doc_id)
        if row is not None:
            return [int(row[3])]
        return [int(r) for r in self.store.filter_rids({"parent": doc_id})]

    def document_chunks(self, doc_id: str) -> list[Hit]:
        """The stored rows of a document in order: [the row] when `doc_id` is a stored id, else its chunks
        (`doc_id#0`, `doc_id#1`, ...) by chunk number; [] when there is no such document."""
        import json

        rows = self.store.rows_by_rids(self.document_rids(doc_id))
        hits = [Hit(r[0], r[1], json.loads(r[2]) if isinstance(r[2], str) else r[2]) for r in rows.values()]
        if any(h.id == doc_id for h in hits):
            return [h for h in hits if h.id == doc_id]
        hits = [h for h in hits if document_id(h) == doc_id]  # chunks (a user's own "parent" field is not one)
        return sorted(hits, key=lambda h: int(h.metadata["chunk"]))

    def get_document(self, doc_id: str) -> Hit | None:
        """A document as it was added, by the id a search returns: the stored row with that id (a chunk id DOC#N
        gives that chunk), else the document whose chunks name it as parent, put back together (the overlap of
        consecutive chunks once; metadata without the chunk bookkeeping, plus `chunks`, their number). None when
        there is no such document."""
        hits = self.document_chunks(doc_id)
        if not hits:
            return None
        if len(hits) == 1 and hits[0].id == doc_id:
            return hits[0]
        meta = {k: v for k, v in (hits[0].metadata or {}).items() if k not in ("parent", "chunk", "chunks")}
        return Hit(doc_id, join_chunks([h.text for h in hits]), {**meta, "chunks": len(hits)})

    def document_vector(self, doc_id: str) -> np.ndarray | None:
        """The vector of a document (the normalized mean of its chunks' vectors); None when there is no such id."""
        rids = self.document_rids(doc_id)
        if not rids:
            return None
        self._need("dense")
        X = np.concatenate([V for _, V in self.store.iter_vectors(self.dim, np.asarray(sorted(rids), np.int64))])
        v = X.mean(axis=0)
        if self.metric == "cosine":
            v = v / max(float(np.linalg.norm(v)), 1e-12)
        return v.astype(np.float32)

    def similar(self, doc_id: str, k: int = 10, where: dict | str | None = None,
                group_by_document: bool = True) -> list[Hit]:
        """More like this: the k documents (chunks when group_by_document is False) nearest to a stored
        document's vector, never the document itself nor any of its chunks. KeyError when there is no such id."""
        v = self.document_vector(doc_id)
        if v is None:
            raise KeyError(f"no document {doc_id!r} in collection {self.path}")
        row = self.get(doc_id)  # a chunk's id: its whole document is left out too
        owner = document_id(row) if row is not None else doc_id
        own = len(self.document_rids(owner)) if owner != doc_id else len(self.document_rids(doc_id))
        hits = self.search(v, k + own, mode="vector", where=where, group_by_document=group_by_document)
        return [h for h in hits if h.id not in (doc_id, owner) and document_id(h) != owner][:k]


__all__ = ["document_id", "group_hits", "fetch_documents", "join_chunks", "DocumentsMixin"]
