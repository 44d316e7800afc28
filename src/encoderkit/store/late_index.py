"""The late-interaction side of an embedded collection (ColBERT): each document's token vectors, stored in the
collection's SQLite file (table `multivectors`, one float32 blob per document, deleted with it by ON DELETE
CASCADE, so they commit or roll back with it), and a FAISS index over all token vectors that proposes
candidates: the documents owning the nearest tokens of each query token. Candidates are then scored exactly,
MaxSim(Q, D) = sum_i max_j q_i . d_j (Khattab & Zaharia, 2020). The token index is a cache of SQLite, saved as
`late.faiss` + `late.json` with the generation it reflects, and rebuilt when that does not match, like the
dense index; a token's FAISS id is rid * 2**16 + its position. A collection whose late index is "PLAID" (the default
for new embedded collections) keeps k-means centroids and codes under the same file names instead (store/plaid.py):
a few bytes per token in memory rather than the token vectors themselves."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from encoderkit.store.faiss_index import VectorIndex

log = logging.getLogger(__name__)

POS_BITS = 16
MAX_TOKENS = 1 << POS_BITS  # token vectors per document
LATE_INDEX_NAME = "late.faiss"

LATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS multivectors (
    rid INTEGER PRIMARY KEY REFERENCES docs(rid) ON DELETE CASCADE,
    n INTEGER NOT NULL,                      -- token vectors
    vectors BLOB NOT NULL                    -- float32, n * dim values, row-major
);
"""


def maxsim(Q: np.ndarray, D: np.ndarray) -> float:
    """sum over query vectors of the best dot product with any document vector (0 for an empty document)."""
    if len(D) == 0 or len(Q) == 0:
        return 0.0
    return float((Q @ D.T).max(axis=1).sum())


def prepare_multivectors(mvs: Any, n: int, dim: int | None, normalize: bool, what: str = "multivector") -> list[np.ndarray]:
    """Checked float32 (n_i, dim) arrays (rows unit length when normalize); ValueError naming the bad one."""
    if isinstance(mvs, np.ndarray) and mvs.ndim == 2:
        raise TypeError(f"{what} vectors must be a list of (tokens, dim) arrays, one per text; got one 2-D array")
    out = list(mvs)
    if len(out) != n:
        raise ValueError(f"{len(out)} {what} arrays for {n} texts")
    for i, X in enumerate(out):
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or (dim is not None and X.shape[1] != dim):
            raise ValueError(f"{what} {i} has shape {X.shape}; expected (tokens, {dim if dim is not None else 'dim'})")
        if len(X) > MAX_TOKENS:
            raise ValueError(f"{what} {i} has {len(X)} token vectors; at most {MAX_TOKENS} per document")
        if not np.isfinite(X).all():
            raise ValueError(f"{what} {i} holds NaN or infinity")
        if normalize:
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        out[i] = np.ascontiguousarray(X, dtype=np.float32)
    return out


def token_ids(rids: Sequence[int], mvs: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([(int(r) << POS_BITS) + np.arange(len(X), dtype=np.int64) for r, X in zip(rids, mvs)]
                          or [np.zeros(0, np.int64)])


class SQLiteMultivectors:
    """Token vectors of one collection in its SQLite file (call writes inside the collection's transaction)."""

    def __init__(self, conn, dim: int):
        self.conn, self.dim = conn, dim
        conn.executescript(LATE_SCHEMA)

    def insert(self, rids: Sequence[int], mvs: Sequence[np.ndarray]) -> None:
        self.conn.executemany("INSERT INTO multivectors(rid, n, vectors) VALUES (?, ?, ?)",
                              ((int(r), len(X), X.tobytes()) for r, X in zip(rids, mvs)))

    def get(self, rids: Sequence[int]) -> dict[int, np.ndarray]:
        out = {}
        for i in range(0, len(rids), 500):
            chunk = [int(r) for r in rids[i:i + 500]]
            marks = ",".join("?" * len(chunk))
            for rid, n, blob in self.conn.execute(f"SELECT rid, n, vectors FROM multivectors WHERE rid IN ({marks})",
                                                  chunk):
                out[int(rid)] = np.frombuffer(blob, np.float32).reshape(n, self.dim)
        return out

    def iter_all(self, rids: np.ndarray | None = None, batch: int = 2000) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        if rids is not None:
            for i in range(0, len(rids), batch):
                got = self.get(rids[i:i + batch].tolist())
                keys = sorted(got)
                yield keys, [got[r] for r in keys]
            return
        last = -1
        while True:
            rows = self.conn.execute("SELECT rid, n, vectors FROM multivectors WHERE rid > ? ORDER BY rid LIMIT ?",
                                     (last, batch)).fetchall()
            if not rows:
                return
            yield [int(r[0]) for r in rows], [np.frombuffer(r[2], np.float32).reshape(r[1], self.dim) for r in rows]
            last = rows[-1][0]

    def count_tokens(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(SUM(n), 0) FROM multivectors").fetchone()[0])

    def problems(self, all_rids: np.ndarray) -> list[str]:
        rows = self.conn.execute("SELECT rid FROM multivectors ORDER BY rid").fetchall()
        have = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        out = []
        if not np.array_equal(have, all_rids):
            out.append(f"token vectors: {len(np.setdiff1d(all_rids, have))} documents without, "
                       f"{len(np.setdiff1d(have, all_rids))} without a document")
        bad = self.conn.execute("SELECT count(*) FROM multivectors WHERE length(vectors) != 4 * n * ?",
                                (self.dim,)).fetchone()[0]
        if bad:
            out.append(f"{bad} stored token-vector blobs do not hold n x {self.dim} float32 values")
        return out


class TokenIndex:
    """The FAISS index over every stored token vector (inner product), ids rid << 16 | position."""

    def __init__(self, dim: int, factory: str = "Flat"):
        self.vi = VectorIndex(dim, factory, "ip")

    @property
    def generation(self) -> int:
        return self.vi.generation

    @generation.setter
    def generation(self, g: int) -> None:
        self.vi.generation = g

    @property
    def is_trained(self) -> bool:
        return self.vi.is_trained

    def add(self, rids: Sequence[int], mvs: Sequence[np.ndarray]) -> None:
        if len(rids):
            self.vi.add(token_ids(rids, mvs), np.concatenate(list(mvs)))

    def remove(self, rids: Sequence[int]) -> None:
        """Remove every token of these documents (tombstoned under HNSW, which cannot remove)."""
        if not len(rids):
            return
        import faiss

        ids = faiss.vector_to_array(self.vi.index.id_map).astype(np.int64)
        gone = ids[np.isin(ids >> POS_BITS, np.asarray(list(rids), np.int64))]
        self.vi.remove(gone.tolist())

    def doc_ids(self) -> np.ndarray:
        return np.unique(self.vi.ids() >> POS_BITS)

    def candidates(self, Q: np.ndarray, per_token: int, ef_search: int | None = None,
                   nprobe: int | None = None) -> np.ndarray:
        """rids owning one of the `per_token` nearest tokens of any query vector (sorted, unique)."""
        _, I = self.vi.search(Q, per_token, ef_search=ef_search, nprobe=nprobe)
        I = I[I >= 0]
        return np.unique(I >> POS_BITS)

    def save(self, path: Path, generation: int, uid: str) -> None:
        self.vi.save(path, generation, uid)

    @classmethod
    def load(cls, path: Path, dim: int, factory: str, generation: int, uid: str) -> "TokenIndex | None":
        vi = VectorIndex.load(path, dim, factory, "ip", generation, uid)
        if vi is None:
            return None
        obj = cls.__new__(cls)
        obj.vi = vi
        return obj
