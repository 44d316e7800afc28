"""The sparse side of an embedded collection: learned sparse vectors (SPLADE, BGE-M3's sparse head) kept as a
persistent inverted index in the collection's own SQLite file, table `sparse` (term, rid, weight), clustered
by term so a query reads only the posting lists of its own terms. Rows go in and out in the same transaction
as their document (ON DELETE CASCADE from `docs`), so the index is never a cache: nothing to rebuild after a
crash. Score = sum over shared terms of w_query * w_doc (the dot product SPLADE is trained for)."""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from encoderkit.store.where import compile_where

SPARSE_SCHEMA = """
CREATE TABLE IF NOT EXISTS sparse (
    term INTEGER NOT NULL,                   -- vocabulary index
    rid INTEGER NOT NULL REFERENCES docs(rid) ON DELETE CASCADE,
    weight REAL NOT NULL,
    PRIMARY KEY (term, rid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sparse_rid ON sparse(rid);
"""


def as_rows(x: Any, n: int, vocab: int | None, what: str = "sparse") -> list[tuple[np.ndarray, np.ndarray]]:
    """(term indices int64, weights float32) per row, zeros dropped, from a scipy sparse matrix (n, vocab), a list of
    {term: weight} dicts or of (indices, values) pairs. Raises ValueError naming what is wrong."""
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    if hasattr(x, "tocsr"):
        m = x.tocsr()
        if m.shape[0] != n:
            raise ValueError(f"{what} vectors have {m.shape[0]} rows for {n} texts")
        if vocab is not None and m.shape[1] != vocab:
            raise ValueError(f"{what} vectors have {m.shape[1]} dimensions; the collection's vocabulary has {vocab}")
        m.sum_duplicates()
        for i in range(n):
            a, b = m.indptr[i], m.indptr[i + 1]
            rows.append((m.indices[a:b].astype(np.int64), m.data[a:b].astype(np.float32)))
    else:
        items = list(x)
        if len(items) != n:
            raise ValueError(f"{len(items)} {what} vectors for {n} texts")
        for it in items:
            if isinstance(it, dict):
                idx = np.fromiter((int(k) for k in it), np.int64, len(it))
                val = np.fromiter((float(v) for v in it.values()), np.float64, len(it)).astype(np.float32)
            else:
                idx, val = np.asarray(it[0], np.int64).reshape(-1), np.asarray(it[1], np.float32).reshape(-1)
            order = np.argsort(idx, kind="stable")
            rows.append((idx[order], val[order]))
    out = []
    for i, (idx, val) in enumerate(rows):
        if len(idx) != len(val):
            raise ValueError(f"{what} vector {i}: {len(idx)} indices for {len(val)} values")
        if not np.isfinite(val).all():
            raise ValueError(f"{what} vector {i} holds NaN or infinity")
        if len(idx) and (idx.min() < 0 or (vocab is not None and idx.max() >= vocab)):
            raise ValueError(f"{what} vector {i}: index {int(idx.max() if idx.min() >= 0 else idx.min())} is outside "
                             f"the vocabulary 0..{(vocab or 0) - 1}")
        if len(np.unique(idx)) != len(idx):
            raise ValueError(f"{what} vector {i} repeats an index")
        keep = val != 0
        out.append((idx[keep], val[keep]))
    return out


def to_csr(rows: Sequence[tuple[np.ndarray, np.ndarray]], vocab: int):
    """A scipy CSR matrix (len(rows), vocab) float32 from (indices, values) rows."""
    from scipy.sparse import csr_matrix

    indptr = np.cumsum([0] + [len(r[0]) for r in rows])
    idx = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int64)
    val = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, np.float32)
    return csr_matrix((val.astype(np.float32), idx, indptr), shape=(len(rows), vocab))


class SQLiteSparse:
    """Postings of one collection in its SQLite file (call writes inside the collection's transaction)."""

    def __init__(self, conn):
        self.conn = conn
        conn.executescript(SPARSE_SCHEMA)

    def insert(self, rids: Sequence[int], rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        self.conn.executemany("INSERT INTO sparse(term, rid, weight) VALUES (?, ?, ?)",
                              ((int(t), int(rid), float(w)) for rid, (idx, val) in zip(rids, rows)
                               for t, w in zip(idx.tolist(), val.tolist())))

    def search(self, terms: np.ndarray, weights: np.ndarray, k: int, where=None) -> list[tuple[int, float]]:
        """(rid, dot product; higher is better) of the top-k documents sharing a term with the query (ties by rid)."""
        if not len(terms):
            return []
        q = json.dumps([[int(t), float(w)] for t, w in zip(terms, weights)])
        join, params = "", []
        if where is not None:
            cond, params = compile_where(where, column="d.metadata")
            join = f" JOIN docs d ON d.rid = s.rid AND {cond}"
        rows = self.conn.execute(
            "SELECT s.rid, SUM(s.weight * q.w) AS score FROM (SELECT CAST(json_extract(value, '$[0]') AS INTEGER) AS "
            "term, json_extract(value, '$[1]') AS w FROM json_each(?)) q JOIN sparse s ON s.term = q.term" + join +
            " GROUP BY s.rid HAVING score > 0 ORDER BY score DESC, s.rid LIMIT ?", [q, *params, int(k)]).fetchall()
        return [(int(r), float(s)) for r, s in rows]

    def rows(self, rids: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """rid -> (terms, weights) of stored documents."""
        out: dict[int, list] = {int(r): [[], []] for r in rids}
        for i in range(0, len(rids), 500):
            chunk = [int(r) for r in rids[i:i + 500]]
            marks = ",".join("?" * len(chunk))
            for rid, t, w in self.conn.execute(f"SELECT rid, term, weight FROM sparse WHERE rid IN ({marks}) "
                                               "ORDER BY rid, term", chunk):
                out[rid][0].append(t)
                out[rid][1].append(w)
        return {r: (np.asarray(v[0], np.int64), np.asarray(v[1], np.float32)) for r, v in out.items()}

    def problems(self) -> list[str]:
        orphans = self.conn.execute("SELECT count(*) FROM sparse s LEFT JOIN docs d ON d.rid = s.rid "
                                    "WHERE d.rid IS NULL").fetchone()[0]
        return [f"{orphans} sparse postings belong to no document"] if orphans else []

    def bytes_used(self) -> int:
        try:
            return int(self.conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name IN ('sparse', 'sparse_rid')")
                       .fetchone()[0] or 0)
        except Exception:  # dbstat is a compile-time option of SQLite
            return 0
