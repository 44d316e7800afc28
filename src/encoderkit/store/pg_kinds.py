"""Sparse and token vectors of a PostgreSQL collection, in two side tables of its table encoderkit_NAME, each row
deleted with its document (ON DELETE CASCADE) and written in the document's transaction:
- encoderkit_NAME_sparse (rid, vec sparsevec(vocab)): pgvector's sparse type, scored by inner product (<#>);
- encoderkit_NAME_tokens (rid, pos, embedding vector(d)): one row per token vector, with an HNSW index
  (vector_ip_ops) for candidate generation when the collection's late index is "HNSW{m}" (exact MaxSim over
  every document for "Flat"). The exact MaxSim re-scoring runs in numpy, as for the embedded store."""
from __future__ import annotations

import re
from typing import Iterator, Sequence

import numpy as np
from psycopg import sql

from encoderkit.store.pg_store import MAX_INDEX_DIM, PgStore

_HNSW = re.compile(r"HNSW(\d+)")


def check_late_factory_pg(factory: str, dim: int) -> None:
    m = _HNSW.fullmatch(factory)
    if factory != "Flat" and (m is None or not 2 <= int(m.group(1)) <= 100):
        raise ValueError(f"pgvector cannot build token index {factory!r}: use 'Flat' (exact MaxSim over every "
                         "document) or 'HNSW{m}' (m from 2 to 100)")
    if factory != "Flat" and dim > MAX_INDEX_DIM:
        raise ValueError(f"pgvector indexes at most {MAX_INDEX_DIM} dimensions; token vectors have {dim}")


def sparsevec_text(idx: np.ndarray, val: np.ndarray, vocab: int) -> str:
    """pgvector's text form of a sparse vector: {i:v,...}/dim with 1-based indices."""
    return "{" + ",".join(f"{int(i) + 1}:{float(v)!r}" for i, v in zip(idx, val)) + f"}}/{vocab}"


def parse_sparsevec(text: str) -> tuple[np.ndarray, np.ndarray]:
    body = text[text.index("{") + 1: text.index("}")]
    if not body:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    pairs = [p.split(":") for p in body.split(",")]
    return (np.asarray([int(a) - 1 for a, _ in pairs], np.int64), np.asarray([float(b) for _, b in pairs], np.float32))


class _Side:
    def __init__(self, store: PgStore, suffix: str):
        self.store, self.conn = store, store.conn
        self.name = f"{store.table_name}_{suffix}"
        self.t = sql.Identifier(self.name)

    def _where(self, where) -> tuple[sql.Composable, list]:
        return self.store._where(where)


class PgSparse(_Side):
    """The sparsevec side table of a collection."""

    def __init__(self, store: PgStore, vocab: int):
        super().__init__(store, "sparse")
        self.vocab = vocab

    def ensure(self) -> None:
        with self.store.transaction():
            self.store._lock(f"encoderkit:{self.store.name}:sparse")
            self.conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (rid bigint PRIMARY KEY REFERENCES {} (rid) "
                                      "ON DELETE CASCADE, vec sparsevec({}) NOT NULL)").format(
                self.t, self.store.table, sql.Literal(int(self.vocab))))

    def insert(self, rids: Sequence[int], rows) -> None:
        self.conn.cursor().executemany(sql.SQL("INSERT INTO {} (rid, vec) VALUES (%s, %s::sparsevec)").format(self.t),
                                       [(int(r), sparsevec_text(i, v, self.vocab)) for r, (i, v) in zip(rids, rows)])

    def search(self, terms: np.ndarray, weights: np.ndarray, k: int, where=None) -> list[tuple[int, float]]:
        """(rid, inner product) of the top-k documents sharing a term with the query, filtered by `where`."""
        if not len(terms):
            return []
        cond, params = self._where(where)
        q = sparsevec_text(terms, weights, self.vocab)
        query = (sql.SQL("SELECT s.rid, -(s.vec <#> %s::sparsevec) AS score FROM {} s JOIN {} d ON d.rid = s.rid "
                         "WHERE ").format(self.t, self.store.table) + cond +
                 sql.SQL(" ORDER BY s.vec <#> %s::sparsevec, s.rid LIMIT %s"))
        rows = self.conn.execute(query, [q, *params, q, int(k)]).fetchall()
        return [(int(r), float(s)) for r, s in rows if s > 0]

    def rows(self, rids: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        got = self.conn.execute(sql.SQL("SELECT rid, vec::text FROM {} WHERE rid = ANY(%s)").format(self.t),
                                ([int(r) for r in rids],)).fetchall()
        return {int(r): parse_sparsevec(v) for r, v in got}

    def problems(self) -> list[str]:
        if not self.store.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.name,)).fetchone()[0]:
            return [f"the sparse table {self.name} is missing; reopening the collection creates it"]
        return []


class PgMultivectors(_Side):
    """The token-vector side table of a collection."""

    def __init__(self, store: PgStore, dim: int, factory: str):
        super().__init__(store, "tokens")
        self.dim, self.factory = dim, factory

    def ensure(self) -> None:
        with self.store.transaction():
            self.store._lock(f"encoderkit:{self.store.name}:tokens")
            self.conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (rid bigint NOT NULL REFERENCES {} (rid) ON "
                                      "DELETE CASCADE, pos integer NOT NULL, embedding vector({}) NOT NULL, "
                                      "PRIMARY KEY (rid, pos))").format(self.t, self.store.table,
                                                                        sql.Literal(int(self.dim))))
            m = _HNSW.fullmatch(self.factory)
            if m is not None:
                M = int(m.group(1))
                self.conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_ip_ops) "
                                          "WITH (m = {}, ef_construction = {})").format(
                    sql.Identifier(f"{self.name}_ann"), self.t, sql.Literal(M), sql.Literal(max(80, 2 * M))))

    def insert(self, rids: Sequence[int], mvs: Sequence[np.ndarray]) -> None:
        self.conn.cursor().executemany(
            sql.SQL("INSERT INTO {} (rid, pos, embedding) VALUES (%s, %s, %b)").format(self.t),
            [(int(r), p, X[p]) for r, X in zip(rids, mvs) for p in range(len(X))])

    def get(self, rids: Sequence[int]) -> dict[int, np.ndarray]:
        out: dict[int, list] = {int(r): [] for r in rids}
        cur = self.conn.cursor(binary=True)
        cur.execute(sql.SQL("SELECT rid, embedding FROM {} WHERE rid = ANY(%s) ORDER BY rid, pos").format(self.t),
                    ([int(r) for r in rids],))
        for rid, blob in cur.fetchall():
            out[int(rid)].append(blob)
        return {r: np.frombuffer(b"".join(v), ">f4").astype(np.float32).reshape(len(v), self.dim)
                for r, v in out.items()}

    def iter_all(self, rids: np.ndarray | None = None, batch: int = 2000) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        if rids is None:
            rids = self.store.all_rids()
        for i in range(0, len(rids), batch):
            got = self.get(np.asarray(rids[i:i + batch]).tolist())
            keys = sorted(got)
            yield keys, [got[r] for r in keys]

    def candidates(self, Q: np.ndarray, per_token: int, ef_search: int) -> np.ndarray | None:
        """rids owning one of the `per_token` nearest tokens of any query vector (HNSW), or None for "Flat"."""
        if _HNSW.fullmatch(self.factory) is None:
            return None
        found: set[int] = set()
        query = sql.SQL("SELECT rid FROM {} ORDER BY embedding <#> %b LIMIT %s").format(self.t)
        with self.store.transaction():
            self.conn.execute("SELECT set_config('hnsw.ef_search', %s, true)",
                              (str(min(max(int(ef_search), per_token), 1000)),))
            for q in np.asarray(Q, np.float32):
                found.update(int(r[0]) for r in self.conn.execute(query, (q, int(per_token))).fetchall())
        return np.asarray(sorted(found), np.int64)

    def problems(self, all_rids: np.ndarray) -> list[str]:
        if not self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.name,)).fetchone()[0]:
            return [f"the token table {self.name} is missing; reopening the collection creates it"]
        rows = self.conn.execute(sql.SQL("SELECT DISTINCT rid FROM {} ORDER BY rid").format(self.t)).fetchall()
        have = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        extra = np.setdiff1d(have, all_rids)
        return [f"{len(extra)} documents' token vectors belong to no document"] if len(extra) else []

    def count_tokens(self) -> int:
        return int(self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.t)).fetchone()[0])
