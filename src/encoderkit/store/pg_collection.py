"""`PgCollection`: a `Collection` whose documents, vectors and keyword index live in PostgreSQL + pgvector
(see store/pg_store.py). Same interface and behaviour as the embedded store; what differs is only where the
vector index lives: inside the database (pgvector HNSW / IVFFlat, or an exact scan for "Flat") instead of
a FAISS file beside SQLite, so there is no cache to save, load or rebuild here."""
from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import numpy as np

from encoderkit.store.collection import Collection
from encoderkit.store.kinds import kinds_meta
from encoderkit.store.pg_store import FTS_CONFIG, SCHEMA_VERSION, PgStore, check_factory_pg

log = logging.getLogger(__name__)


class PgCollection(Collection):
    """A collection in a PostgreSQL database: Collection.open("postgresql://user@host:port/db?collection=NAME")."""

    store: PgStore
    KEYWORD_SCORE = "idf x ts_rank_cd"  # PostgreSQL full text search: BM25's idf times the cover density rank

    @classmethod
    def open_url(cls, url: str, encoder: Any = None, *, index: str | None = None, metric: str | None = None,
                 create: bool = True, kinds=None, late_index: str | None = None) -> "PgCollection":
        """Open (or create) collection NAME of the database at `url`. The same checks as the embedded store: a
        different model or embedding size than the recorded one is refused, and so is another index/metric."""
        store = PgStore(url)
        try:
            meta = store.meta()
            where = f"collection {store.name!r} at {store.where}"
            if "model" not in meta:
                if not create:
                    raise FileNotFoundError(f"no {where}; create it first (open it with an encoder)")
                if encoder is None:
                    raise ValueError(f"creating {where} needs an encoder (a model name or Encoder)")
            if isinstance(encoder, (str, os.PathLike)):
                import encoderkit

                encoder = encoderkit.load(str(encoder))
            if "model" not in meta:
                factory, metric = index or "Flat", metric or "cosine"
                extra = kinds_meta(encoder, kinds, late_index)
                check_factory_pg(factory, int(extra.get("dim", encoder.dim)), metric)
                if "late_dim" in extra:
                    from encoderkit.store.pg_kinds import check_late_factory_pg

                    check_late_factory_pg(extra["late_index"], int(extra["late_dim"]))
                meta = store.create({"model": encoder.name, "dim": str(int(encoder.dim)), "metric": metric,
                                     "index": factory, "fts": FTS_CONFIG, "uid": uuid.uuid4().hex,
                                     "schema": SCHEMA_VERSION, "generation": "0", **extra})
            else:
                if encoder is not None and (encoder.name != meta["model"] or int(encoder.dim) != int(meta["dim"])
                                            and "dense" in meta.get("kinds", "dense").split(",")):
                    raise ValueError(f"{where} was built with model {meta['model']!r} (dim {meta['dim']}); the "
                                     f"encoder given is {encoder.name!r} (dim {encoder.dim}). Open it with the same "
                                     "model, or create a new collection for this one")
                for what, asked in (("index", index), ("metric", metric)):
                    if asked is not None and asked != meta[what]:
                        raise ValueError(f"{where} uses {what} {meta[what]!r}, not {asked!r}; "
                                         "the index type is fixed at creation")
                if store.column_dim() != int(meta["dim"]):
                    raise ValueError(f"{where} records dim {meta['dim']} but its table {store.table_name} stores "
                                     f"vector({store.column_dim()}) (altered or dropped outside encoderkit?)")
                if store.ensure_ann_index(meta["index"], meta["metric"]):
                    log.info("built the missing %s vector index of %s", meta["index"], where)
        except BaseException:
            store.close()
            raise
        return cls(store.where, store, encoder, meta)

    # ------------------------------------------------------------------ no FAISS cache to keep in step
    def flush(self) -> None:
        """Nothing to do: every write is committed to PostgreSQL, indexes included."""

    def _open_kind_stores(self) -> None:
        """The side tables of the sparse / token vectors (created if missing: a crash between creating the
        collection and them, or a collection made before them)."""
        from encoderkit.store.pg_kinds import PgMultivectors, PgSparse

        self._sparse = PgSparse(self.store, self.vocab) if "sparse" in self.kinds else None
        self._mv = PgMultivectors(self.store, self.late_dim, self.late_factory) if "late" in self.kinds else None
        for side in (self._sparse, self._mv):
            if side is not None:
                side.ensure()

    def _after_write_late(self, g0: int, g1: int, removed: list[int], added: tuple | None) -> None:
        """Nothing to do: the token index lives in the database."""

    def _flush_late(self) -> None:
        pass

    def _late_candidates(self, Q: np.ndarray, per_token: int, ef_search, nprobe) -> np.ndarray | None:
        return self._mv.candidates(Q, per_token, ef_search or self.ef_search)

    def _after_write(self, gen_before: int, gen_after: int, removed: list[int], added: tuple | None) -> None:
        if self.factory.startswith("IVF") and self.store.ensure_ann_index(self.factory, self.metric):
            log.info("%s holds enough vectors: built its %s index", self.path, self.factory)

    def _vector_search(self, qv: np.ndarray, k: int, where, ef_search, nprobe) -> list[tuple[int, float]]:
        exact = self.factory == "Flat" or self.store.ann_index() is None
        out = self.store.vector_search(qv, k, self.metric, where, exact=exact,
                                       ef_search=ef_search or self.ef_search, nprobe=nprobe or self.nprobe)
        if not exact and len(out) < k and len(out) < self.store.count(where):
            # the approximate scan ran dry under a selective filter (pgvector's max_scan_tuples): answer exactly
            log.debug("approximate search found %d of %d under the filter; exact fallback", len(out), k)
            out = self.store.vector_search(qv, k, self.metric, where, exact=True)
        return out

    def _keyword_search(self, text: str, k: int, where) -> list[tuple[int, float]]:
        return self.store.keyword_search(text, k, where, fts=self.meta.get("fts", FTS_CONFIG))

    def neighbors(self, Q: np.ndarray, k: int, ef_search: int | None = None) -> np.ndarray:
        """rids of the k nearest stored vectors for each row of Q (-1 pads), through the vector index."""
        Q = self._prepare_vectors(Q, len(np.atleast_2d(Q)))
        out = np.full((len(Q), k), -1, np.int64)
        with self._lock:
            for r, q in enumerate(Q):
                found = [i for i, _ in self._vector_search(q, k, None, ef_search, None)]
                out[r, :len(found)] = found
        return out

    def vectors(self) -> tuple[list[str], np.ndarray]:
        """All (ids, vectors) in rid order."""
        ids: list[str] = []
        chunks = []
        for _, X, batch_ids in self.store.iter_vectors(self.dim, with_ids=True):
            ids.extend(batch_ids)
            chunks.append(X)
        return ids, (np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32))

    def check(self) -> dict:
        """Verify the table, its full-text column and its indexes against the collection's meta.
        Returns {"ok": bool, "documents": n, "generation": g, "problems": [...]}."""
        with self._lock:
            problems = self.store.problems(self.dim, self.factory, self.meta.get("fts", FTS_CONFIG))
            problems += self._kinds_problems(self.store.all_rids())
            return {"ok": not problems, "documents": self.count(), "generation": self.store.generation(),
                    "problems": problems}

    def info(self) -> dict:
        """What `encoderkit index info` shows."""
        ann = self.store.ann_index()
        if self.factory == "Flat":
            vindex = "none (exact scan)"
        elif ann is None:
            vindex = f"{self.factory}: not built yet (exact scan until the table can train it)"
        else:
            vindex = f"{ann[0]}{'' if ann[1] else ' (INVALID)'}"
        documents, chunks = self.document_counts()  # a chunked document counts once among documents
        return {"path": self.path, "model": self.model, "dim": self.dim, "metric": self.metric,
                "index": self.factory, "documents": documents, "chunks": chunks, "generation": self.store.generation(),
                "bytes": self.store.size_bytes(), "database": self.path, "table": self.store.table_name,
                "vector_index": vindex, "fts": self.meta.get("fts", FTS_CONFIG), "kinds": list(self.kinds),
                "modes": self.modes()}
