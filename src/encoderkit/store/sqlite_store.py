"""The source of truth of a collection: one SQLite file (WAL mode) holding documents, JSON metadata, vectors,
an FTS5 keyword index kept in step by triggers, and a `generation` counter bumped by every write."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from encoderkit.store.where import compile_where

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: it is the vector index's int64 id
    id TEXT NOT NULL UNIQUE,                 -- the user's id
    text TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',     -- JSON object
    hash TEXT NOT NULL,                      -- sha256 of the text, for exact-duplicate skipping
    vector BLOB NOT NULL                     -- float32, dim values (normalized when metric is cosine)
);
CREATE INDEX IF NOT EXISTS docs_hash ON docs(hash);
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(
    text, content='docs', content_rowid='rid', tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS docs_ai AFTER INSERT ON docs BEGIN
    INSERT INTO docs_fts(rowid, text) VALUES (new.rid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS docs_ad AFTER DELETE ON docs BEGIN
    INSERT INTO docs_fts(docs_fts, rowid, text) VALUES ('delete', old.rid, old.text);
END;
CREATE TRIGGER IF NOT EXISTS docs_au AFTER UPDATE OF text ON docs BEGIN
    INSERT INTO docs_fts(docs_fts, rowid, text) VALUES ('delete', old.rid, old.text);
    INSERT INTO docs_fts(rowid, text) VALUES (new.rid, new.text);
END;
"""


class SQLiteStore:
    """Documents + vectors + FTS5 in one SQLite file. Every public write is one transaction."""

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        self.conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no committed write
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(_SCHEMA)

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, values: dict[str, Any]) -> None:
        with self.transaction():
            self.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                  [(k, str(v)) for k, v in values.items()])

    def generation(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ transactions
    def transaction(self) -> "_Txn":
        """`with store.transaction():` — BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        return _Txn(self.conn)

    def _bump(self) -> int:
        g = self.generation() + 1
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('generation', ?)", (str(g),))
        return g

    # ------------------------------------------------------------------ writes (call inside a transaction)
    def insert(self, ids: list[str], texts: list[str], metadatas: list[dict], hashes: list[str],
               vectors: np.ndarray) -> list[int]:
        """Insert rows; returns their rids. Raises ValueError naming the first id that already exists."""
        rids = []
        cur = self.conn.cursor()
        for i, (id_, text, md, h) in enumerate(zip(ids, texts, metadatas, hashes)):
            try:
                cur.execute("INSERT INTO docs(id, text, metadata, hash, vector) VALUES (?, ?, ?, ?, ?)",
                            (id_, text, json.dumps(md, ensure_ascii=False), h, vectors[i].tobytes()))
            except sqlite3.IntegrityError:
                raise ValueError(f"a document with id {id_!r} already exists; use upsert() to replace it") from None
            rids.append(int(cur.lastrowid))
        self._bump()
        return rids

    def delete_ids(self, ids: Iterable[str]) -> list[int]:
        """Delete rows by user id; returns the rids removed (missing ids are ignored)."""
        rids = []
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"DELETE FROM docs WHERE id IN ({marks}) RETURNING rid", chunk).fetchall()
            rids.extend(int(r[0]) for r in rows)
        self._bump()
        return rids

    # ------------------------------------------------------------------ reads
    def count(self, where: dict | None = None) -> int:
        sql, params = compile_where(where)
        return int(self.conn.execute(f"SELECT count(*) FROM docs WHERE {sql}", params).fetchone()[0])

    def is_empty(self) -> bool:
        return self.conn.execute("SELECT 1 FROM docs LIMIT 1").fetchone() is None

    def rows_by_ids(self, ids: list[str]) -> dict[str, tuple]:
        out = {}
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT id, text, metadata, rid FROM docs WHERE id IN ({marks})", chunk):
                out[row[0]] = row
        return out

    def rows_by_rids(self, rids: list[int]) -> dict[int, tuple]:
        """rid -> (id, text, metadata JSON)."""
        out = {}
        for chunk in _chunks([int(r) for r in rids], 500):
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT rid, id, text, metadata FROM docs WHERE rid IN ({marks})", chunk):
                out[int(row[0])] = row[1:]
        return out

    def existing_hashes(self, hashes: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(list(set(hashes)), 500):
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.conn.execute(f"SELECT hash FROM docs WHERE hash IN ({marks})", chunk))
        return found

    def hashes_by_ids(self, ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for chunk in _chunks(list(set(ids)), 500):
            marks = ",".join("?" * len(chunk))
            out.update(self.conn.execute(f"SELECT id, hash FROM docs WHERE id IN ({marks})", chunk).fetchall())
        return out

    def existing_ids(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(list(set(ids)), 500):
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.conn.execute(f"SELECT id FROM docs WHERE id IN ({marks})", chunk))
        return found

    def filter_rids(self, where: dict | str | None) -> np.ndarray:
        """rids of documents matching `where` (int64, sorted)."""
        sql, params = compile_where(where)
        rows = self.conn.execute(f"SELECT rid FROM docs WHERE {sql} ORDER BY rid", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_vectors(self, dim: int, rids: np.ndarray | None = None, batch: int = 20000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rids, vectors) in batches: all documents, or only `rids`."""
        if rids is None:
            last = -1
            while True:
                rows = self.conn.execute("SELECT rid, vector FROM docs WHERE rid > ? ORDER BY rid LIMIT ?",
                                         (last, batch)).fetchall()
                if not rows:
                    return
                yield _unpack(rows, dim)
                last = rows[-1][0]
        else:
            for chunk in _chunks([int(r) for r in rids], min(batch, 900)):
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(f"SELECT rid, vector FROM docs WHERE rid IN ({marks})", chunk).fetchall()
                if rows:
                    yield _unpack(rows, dim)

    def keyword_search(self, match: str, k: int, where: dict | str | None = None) -> list[tuple[int, float]]:
        """(rid, BM25 score; higher is better) for an FTS5 MATCH expression, filtered by `where` in SQL."""
        sql, params = compile_where(where, column="d.metadata")
        rows = self.conn.execute(
            f"SELECT d.rid, bm25(docs_fts) AS s FROM docs_fts JOIN docs d ON d.rid = docs_fts.rowid "
            f"WHERE docs_fts MATCH ? AND {sql} ORDER BY s LIMIT ?", [match, *params, k]).fetchall()
        return [(int(r), -float(s)) for r, s in rows]  # FTS5's bm25() is lower-is-better

    def all_rids(self) -> np.ndarray:
        rows = self.conn.execute("SELECT rid FROM docs ORDER BY rid").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def fts_problems(self) -> list[str]:
        """Consistency of the FTS5 index with the documents table, and of the database file itself."""
        problems = []
        ok = self.conn.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            problems.append(f"sqlite quick_check: {ok}")
        try:
            self.conn.execute("INSERT INTO docs_fts(docs_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError as exc:
            problems.append(f"FTS5 index disagrees with the documents table: {exc}")
        n_docs = self.count()
        n_fts = int(self.conn.execute("SELECT count(*) FROM docs_fts").fetchone()[0])
        if n_docs != n_fts:
            problems.append(f"FTS5 has {n_fts} rows for {n_docs} documents")
        return problems

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass
        self.conn.close()


class _Txn:
    """BEGIN IMMEDIATE ... COMMIT; inside an open transaction, a savepoint (as psycopg nests transactions)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.nested = False

    def __enter__(self):
        if self.conn.in_transaction:
            self.nested = True
            self.conn.execute("SAVEPOINT encoderkit_nested")
            return self
        for attempt in range(50):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                return self
            except sqlite3.OperationalError as exc:  # another writer holds the lock past the busy timeout
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.nested:
            if exc_type is not None:
                self.conn.execute("ROLLBACK TO encoderkit_nested")
            self.conn.execute("RELEASE encoderkit_nested")
            return False
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        return False


def _unpack(rows: list, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    X = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
    return rids, X


def _chunks(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
