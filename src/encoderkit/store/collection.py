"""`Collection`: a persistent set of documents searchable by meaning (vectors), by words (BM25), by learned sparse
vectors, by late interaction (token vectors, MaxSim), or a fusion of these (store/kinds.py).
A directory holds `collection.db` (SQLite: the truth) and `index.faiss` + `index.json` (a rebuildable cache;
`late.faiss` + `late.json` too when it holds token vectors)."""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from encoderkit.store.documents import DocumentsMixin, fetch_documents
from encoderkit.store.faiss_index import VectorIndex, check_factory, train_size
from encoderkit.store.kinds import DEFAULT_LATE_INDEX, LISTS, KindsMixin, check_late_factory, kinds_meta
from encoderkit.store.records import (Hit, check_rerank_weight, collection_path, content_hash,  # noqa: F401
                                      rerank_hits)
from encoderkit.store.sqlite_store import SCHEMA_VERSION, SQLiteStore
from encoderkit.store.validate import check_delete, check_document, surrogate_at

log = logging.getLogger(__name__)

MODES = ("vector", "keyword", "sparse", "late", "hybrid")
DB_NAME, INDEX_NAME = "collection.db", "index.faiss"


def _check_k(k: Any, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{what} must be a positive integer, got {type(k).__name__} {k!r}")
    if k <= 0:
        raise ValueError(f"{what} must be a positive integer, got {k}")
    return int(k)


def keyword_query(text: str) -> str:
    """An FTS5 MATCH expression from free text: its words, each quoted, joined by OR (BM25 ranks them)."""
    words = re.findall(r"\w+", text.lower())
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


class Collection(KindsMixin, DocumentsMixin):
    """Documents with metadata, vectors and a keyword index (and, by the collection's kinds, sparse vectors and
    token vectors); `search` by vector, keyword, sparse, late or hybrid."""

    def __init__(self, path: Path, store: SQLiteStore, encoder: Any, meta: dict):
        self.path, self.store, self._encoder, self.meta = path, store, encoder, meta
        self.dim, self.metric, self.factory = int(meta["dim"]), meta["metric"], meta["index"]
        self.model = meta["model"]
        self._index: VectorIndex | None = None
        self._dirty = False  # in-memory index newer than the file on disk
        self._lock = threading.RLock()
        self._rerankers: dict[str, Any] = {}
        self.ef_search, self.nprobe = 128, 16
        self._init_kinds()

    # ------------------------------------------------------------------ open / close
    @classmethod
    def open(cls, path: str | os.PathLike, encoder: Any = None, *, index: str | None = None, metric: str | None = None,
             create: bool = True, kinds: Sequence[str] | None = None, late_index: str | None = None) -> "Collection":
        """Open (or create) the collection in directory `path`. encoder: an Encoder, a model name, or None
        (loaded by the recorded name when a text query needs vectors). A different model or embedding size
        than the one the collection was built with is refused. A URL postgresql://user@host:port/db?collection=NAME
        opens collection NAME in that PostgreSQL database instead (pgvector backend, store/pg_collection.py).
        kinds (at creation): what to hold, any of "dense", "sparse", "late" (default: a SPLADE model's sparse, a
        ColBERT model's late, else dense; store/kinds.py); late_index: how late candidates are found, "PLAID" (the
        default: k-means centroids, store/plaid.py; exact MaxSim below 4,096 tokens), "PLAID{K}", or the FAISS
        factory of a token index ("Flat", "HNSW32")."""
        if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
            from encoderkit.store.pg_collection import PgCollection

            return PgCollection.open_url(path, encoder, index=index, metric=metric, create=create, kinds=kinds,
                                         late_index=late_index)
        path = Path(path).expanduser()
        db = path / DB_NAME
        if not db.exists():
            if not create:
                raise FileNotFoundError(f"no collection at {path}; create it first (encoderkit index create)")
            if encoder is None:
                raise ValueError(f"creating a collection at {path} needs an encoder (a model name or Encoder)")
        if isinstance(encoder, (str, os.PathLike)):
            import encoderkit

            encoder = encoderkit.load(str(encoder))
        extra = None
        if not db.exists():  # validate everything before creating anything: a bad --index leaves no folder behind
            extra = kinds_meta(encoder, kinds, late_index or DEFAULT_LATE_INDEX)
            check_factory(index or "Flat", int(extra.get("dim", encoder.dim)), metric or "cosine")
            if "late_dim" in extra:
                check_late_factory(extra["late_index"], int(extra["late_dim"]))
            path.mkdir(parents=True, exist_ok=True)
        store = SQLiteStore(db)
        meta = store.meta()
        if "model" not in meta:
            if encoder is None:
                store.close()
                raise ValueError(f"collection at {path} has no recorded model; open it with an encoder")
            factory, metric = index or "Flat", metric or "cosine"
            extra = extra or kinds_meta(encoder, kinds, late_index or DEFAULT_LATE_INDEX)
            check_factory(factory, int(extra.get("dim", encoder.dim)), metric)
            with store.transaction():
                meta = store.meta()  # another process may have created it meanwhile
                if "model" not in meta:
                    meta = {"model": encoder.name, "dim": str(int(encoder.dim)), "metric": metric, "index": factory,
                            "uid": uuid.uuid4().hex, "schema": SCHEMA_VERSION, "generation": "0",
                            **extra}
                    store.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", meta.items())
        else:
            if encoder is not None and (encoder.name != meta["model"] or int(encoder.dim) != int(meta["dim"])
                                        and "dense" in meta.get("kinds", "dense").split(",")):
                store.close()
                raise ValueError(f"collection at {path} was built with model {meta['model']!r} (dim {meta['dim']}); "
                                 f"the encoder given is {encoder.name!r} (dim {encoder.dim}). Open it with the same "
                                 "model, or create a new collection for this one")
            for what, asked in (("index", index), ("metric", metric)):
                if asked is not None and asked != meta[what]:
                    store.close()
                    raise ValueError(f"collection at {path} uses {what} {meta[what]!r}, not {asked!r}; "
                                     "the index type is fixed at creation")
        return cls(path, store, encoder, meta)

    def close(self) -> None:
        """Save the vector index if it changed, and close the database."""
        with self._lock:
            if self.store is None:
                return
            self.flush()
            self.store.close()
            self.store = None

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def flush(self) -> None:
        """Write the in-memory vector index to disk (it is rebuilt from SQLite if this never happens)."""
        with self._lock:
            if self._index is not None and self._dirty and self._index.generation == self.store.generation():
                self._index.save(self.path / INDEX_NAME, self._index.generation, self.meta["uid"])
                self._dirty = False
            self._flush_late()

    # ------------------------------------------------------------------ encoder / vectors
    @property
    def encoder(self) -> Any:
        """The encoder; loaded by the recorded model name on first use when none was given."""
        if self._encoder is None:
            import encoderkit

            self._encoder = encoderkit.load(self.model)
            if int(self._encoder.dim) != self.dim and "dense" in self.kinds:
                raise ValueError(f"model {self.model!r} now gives dim {self._encoder.dim}, collection has {self.dim}")
        return self._encoder

    def _prepare_vectors(self, X: np.ndarray, n: int) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if X.shape != (n, self.dim):
            raise ValueError(f"vectors must have shape ({n}, {self.dim}), got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("vectors contain NaN or infinity")
        if self.metric == "cosine":
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(X, dtype=np.float32)

    def embed(self, texts: Sequence[str], batch_size: int = 32, progress: bool | None = None) -> np.ndarray:
        """Vectors for texts with this collection's model (normalized when the metric is cosine)."""
        if not texts or "dense" not in self.kinds:  # no dense kind: a zero placeholder per document
            return np.zeros((len(texts), self.dim), np.float32)
        X = self.encoder.encode(list(texts), batch_size=batch_size, normalize=self.metric == "cosine",
                                progress=progress)
        return self._prepare_vectors(X, len(texts))

    # ------------------------------------------------------------------ the vector index (SQLite's cache)
    def _sync_index(self) -> VectorIndex:
        """The vector index, loaded from disk or rebuilt from SQLite if it does not reflect the latest write."""
        gen = self.store.generation()
        if self._index is not None and self._index.generation == gen:
            return self._index
        idx = VectorIndex.load(self.path / INDEX_NAME, self.dim, self.factory, self.metric, gen, self.meta["uid"])
        if idx is None:
            idx = self._rebuild(gen)
        self._index = idx
        return idx

    def _rebuild(self, gen: int) -> VectorIndex:
        n = self.store.count()
        log.info("building the %s vector index of %s from %d stored vectors", self.factory, self.path, n)
        idx = VectorIndex(self.dim, self.factory, self.metric)
        if not idx.is_trained:
            if n < max(train_size(self.factory), 1):
                idx.generation = gen  # too few vectors to train: searches are exact over SQLite meanwhile
                self._dirty = False
                return idx
            rng = np.random.default_rng(0)
            all_rids = self.store.all_rids()
            sample = np.sort(rng.choice(all_rids, size=min(len(all_rids), 100_000), replace=False))
            idx.train(np.concatenate([X for _, X in self.store.iter_vectors(self.dim, sample)]))
        bar = None
        if n > 50_000:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"index {self.factory}", unit="vec")
        for rids, X in self.store.iter_vectors(self.dim):
            idx.add(rids, X)
            if bar is not None:
                bar.update(len(rids))
        if bar is not None:
            bar.close()
        idx.generation = gen
        self._dirty = True
        return idx

    def _after_write(self, gen_before: int, gen_after: int, removed: list[int], added: tuple | None) -> None:
        """Apply a committed write to the in-memory index (or drop it to be rebuilt if it fell behind)."""
        idx = self._index
        if idx is None or idx.generation != gen_before:
            self._index = None
            return
        try:
            idx.remove(removed)
            if added is not None and len(added[0]):
                if idx.is_trained:
                    idx.add(*added)
                elif self.store.count() >= train_size(self.factory):
                    self._index = None  # enough vectors now: train and build on next use
                    return
            idx.generation = gen_after
            self._dirty = True
        except Exception:  # never leave a half-applied cache around
            log.exception("vector index update failed; it will be rebuilt from SQLite")
            self._index = None

    # ------------------------------------------------------------------ writes
    def _normalize_docs(self, texts, ids, metadatas, vectors, require_ids: bool, sparse=None, multivectors=None):
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings (wrap a single text in a list)")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is a {type(t).__name__}, expected str")
        if ids is None:
            if require_ids:
                raise ValueError("upsert needs ids")
            ids = [uuid.uuid4().hex for _ in texts]
        ids = [str(i) for i in ids]
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"id {dup!r} appears more than once in this batch")
        metadatas = [dict(m or {}) for m in (metadatas or [{}] * len(texts))]
        if len(metadatas) != len(texts):
            raise ValueError(f"{len(metadatas)} metadatas for {len(texts)} texts")
        for id_, text, m in zip(ids, texts, metadatas):  # NaN, huge integers, lone surrogates: refused by name
            check_document(id_, text, m)
        X = self.embed(texts) if vectors is None else self._prepare_vectors(vectors, len(texts))
        return texts, ids, metadatas, (X, self._encode_kinds(texts, sparse, multivectors))

    def add(self, texts: Sequence[str], *, ids: Sequence[str] | None = None, metadatas: Sequence[dict] | None = None,
            vectors: np.ndarray | None = None, sparse: Any = None, multivectors: Any = None) -> list[str]:
        """Add documents in one transaction (encoded unless `vectors` / `sparse` (CSR, or {term: weight} dicts) /
        `multivectors` (list of (tokens, dim) arrays) are given); an existing id is an error."""
        texts, ids, metadatas, X = self._normalize_docs(texts, ids, metadatas, vectors, False, sparse, multivectors)
        return self._write(ids, texts, metadatas, X, replace=False)

    def upsert(self, texts: Sequence[str], *, ids: Sequence[str], metadatas: Sequence[dict] | None = None,
               vectors: np.ndarray | None = None, sparse: Any = None, multivectors: Any = None) -> list[str]:
        """Insert or replace documents by id, in one transaction."""
        texts, ids, metadatas, X = self._normalize_docs(texts, ids, metadatas, vectors, True, sparse, multivectors)
        return self._write(ids, texts, metadatas, X, replace=True)

    def _write(self, ids, texts, metadatas, X, replace: bool) -> list[str]:
        if not ids:
            return []
        X, extra = X
        with self._lock:
            hashes = [content_hash(t) for t in texts]
            with self.store.transaction():
                g0 = self.store.generation()
                removed = self.store.delete_ids(ids) if replace else []
                rids = self.store.insert(ids, texts, metadatas, hashes, X)
                self._write_kinds(rids, extra)
                g1 = self.store.generation()
            self._after_write(g0, g1, removed, (np.asarray(rids, np.int64), X))
            self._after_write_late(g0, g1, removed, (rids, extra["late"]) if "late" in extra else None)
        return ids

    def delete(self, ids: str | Sequence[str] | None = None, *, where: dict | None = None, all: bool = False) -> int:
        """Delete documents by id (missing ids are ignored) or by metadata filter, or every document with all=True
        (an empty filter alone is refused: it would match everything); returns how many went."""
        where = check_delete(ids, where, all)
        with self._lock:
            # an id with a lone surrogate cannot have been stored (refused at ingest): missing, like any other
            ids = [i for i in ([ids] if isinstance(ids, str) else [str(i) for i in ids or []]) if surrogate_at(i) is None]
            with self.store.transaction():
                g0 = self.store.generation()
                if where is not None:
                    rids = self.store.filter_rids(where).tolist()
                    ids += [r[0] for r in self.store.rows_by_rids(rids).values()]
                removed = self.store.delete_ids(ids)
                g1 = self.store.generation()
            self._after_write(g0, g1, removed, None)
            self._after_write_late(g0, g1, removed, None)
        return len(removed)

    # ------------------------------------------------------------------ reads
    def get(self, ids: str | Sequence[str]) -> Hit | None | list[Hit | None]:
        """Documents by id (None where missing); one id gives one result."""
        single = isinstance(ids, str)
        wanted = [ids] if single else [str(i) for i in ids]
        rows = self.store.rows_by_ids([i for i in wanted if surrogate_at(i) is None])  # others cannot be stored
        out = [Hit(r[0], r[1], json.loads(r[2])) if (r := rows.get(i)) else None for i in wanted]
        return out[0] if single else out

    def count(self, where: dict | None = None) -> int:
        """Number of documents (matching `where`, if given)."""
        return self.store.count(where)

    def __len__(self) -> int:
        return self.count()

    def info(self) -> dict:
        """What `encoderkit index info` shows."""
        db = self.path / DB_NAME
        size = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        documents, chunks = self.document_counts()  # a chunked document counts once among documents
        return {"path": str(self.path), "model": self.model, "dim": self.dim, "metric": self.metric,
                "index": self.factory, "documents": documents, "chunks": chunks, "generation": self.store.generation(),
                "bytes": size, "database": str(db), "kinds": list(self.kinds), "modes": self.modes()}

    # ------------------------------------------------------------------ search
    def search(self, query: str | np.ndarray, k: int = 10, mode: str = "vector", where: dict | str | None = None,
               rerank: Any = None, rerank_top: int = 50, *, rerank_weight: float = 1.0,
               vector: np.ndarray | None = None, sparse: Any = None,
               multivector: np.ndarray | None = None, fusion: str = "rrf", alpha: float = 0.5,
               weights: Sequence[float] | dict | None = None, modes: Sequence[str] | None = None, rrf_k: int = 60,
               candidates: int | None = None, late_candidates: int | None = None, late_nprobe: int | None = None,
               ef_search: int | None = None, nprobe: int | None = None,
               group_by_document: bool | None = None) -> list[Hit]:
        """Top-k documents for a query. mode: vector | keyword | sparse | late | hybrid. hybrid fuses `modes` (any of
        vector, keyword, sparse, late; default vector + keyword + the collection's sparse / late) by RRF (k=60) or
        fusion="weighted" (min-max normalized scores); `weights` per list (a dict by name, or a sequence in `modes`
        order; weighted vector + keyword default to alpha, 1 - alpha). where: metadata filter applied before
        top-k. rerank: an object with .score(query, passages) or a cross-encoder name/path, on the top
        `rerank_top`; rerank_weight < 1 orders them by rerank_weight * z(rerank) + (1 - rerank_weight) * z(first
        stage) instead of the reranker's score alone (records.rerank_hits). A vector query needs mode="vector";
        `vector=` / `sparse=` / `multivector=` give the query's encodings with the text, to skip encoding. late_candidates: token neighbours per query vector (a FAISS
        token index), or documents re-scored exactly (a PLAID index; default max(4 k, 256)); late_nprobe: PLAID's
        centroids probed per query token (default 8).
        group_by_document (default on; False: the chunks themselves): chunks of one document come back once, as
        the document's id with its best chunk's score and text (hit.chunk_id, hit.matched_chunks; store/documents.py)."""
        k = _check_k(k)
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
        if fusion not in ("rrf", "weighted"):
            raise ValueError(f"unknown fusion {fusion!r}; choose 'rrf' or 'weighted'")
        text = query if isinstance(query, str) else None
        if text is None:
            if mode != "vector" or rerank is not None:
                raise ValueError(f"a vector query needs mode='vector' and no rerank; give text for {mode}/rerank")
            vector = query
        if mode == "hybrid":
            names = list(dict.fromkeys(modes)) if modes is not None else [m for m in self.modes() if m != "hybrid"]
            bad = [m for m in names if m not in LISTS]
            if bad or not names:
                raise ValueError(f"hybrid fuses modes among {', '.join(LISTS)}; got {list(modes or [])}")
        else:
            names = [mode]
        if rerank is not None:
            rerank_top = _check_k(rerank_top, "rerank_top")
            rerank_weight = check_rerank_weight(rerank_weight)
        depth = max(k, rerank_top) if rerank is not None else k
        opts = dict(vector=vector, sparse=sparse, multivector=multivector, late_candidates=late_candidates,
                    late_nprobe=late_nprobe, ef_search=ef_search, nprobe=nprobe)

        def fetch(n: int) -> list[Hit]:
            return self._ranked_hits(mode, names, text, n, where, (fusion, weights, alpha, rrf_k, candidates), opts)

        with self._lock:
            if self.store.is_empty():
                for m in names:  # the same error for a mode the collection lacks, empty or not
                    if m in ("sparse", "late"):
                        self._need(m)
                return []
            grouped = group_by_document is not False and self.has_chunks()
            hits = fetch_documents(fetch, depth) if grouped else fetch(depth)
        if rerank is not None and hits:
            hits = self._rerank(text, hits[:rerank_top], rerank, rerank_weight)
        return hits[:k]

    def _ranked_hits(self, mode: str, names: list[str], text: str | None, n: int, where, fuse: tuple,
                     opts: dict) -> list[Hit]:
        """The top-n stored rows (chunks, not grouped) of one search, each with its per-list scores."""
        fusion, weights, alpha, rrf_k, candidates = fuse
        depth = (candidates or max(2 * n, 100)) if mode == "hybrid" else n
        parts = self._ranked_lists(names, text, depth, where, **opts)
        ranked = parts[mode] if mode != "hybrid" else self._fuse(parts, fusion, weights, alpha, rrf_k)
        parts = {name: dict(p) for name, p in parts.items()}
        ranked = ranked[:n]
        rows = self.store.rows_by_rids([r for r, _ in ranked])
        hits = []
        for rid, score in ranked:
            row = rows.get(rid)
            if row is None:
                continue
            detail = {name: float(p[rid]) for name, p in parts.items() if rid in p}
            if mode == "hybrid":
                detail["fused"] = float(score)
            hits.append(Hit(row[0], row[1], json.loads(row[2]), float(score), detail))
        return hits

    def _keyword_search(self, text: str, k: int, where) -> list[tuple[int, float]]:
        """(rid, score; higher is better) of the top-k documents holding any of the words of `text` (BM25)."""
        match = keyword_query(text)
        return self.store.keyword_search(match, k, where) if match else []

    def _vector_search(self, qv: np.ndarray, k: int, where, ef_search, nprobe) -> list[tuple[int, float]]:
        allowed = None
        if where is not None:
            allowed = self.store.filter_rids(where)
            if len(allowed) == 0:
                return []
        idx = self._sync_index()
        want = min(k, idx.ntotal if allowed is None else len(allowed))
        if not idx.is_trained or (allowed is not None and len(allowed) <= 2048 and idx.factory != "Flat"):
            return self._exact(qv, k, allowed)
        D, I = idx.search(qv, k, allowed=allowed, ef_search=ef_search or self.ef_search, nprobe=nprobe or self.nprobe)
        out = [(int(i), float(d)) for d, i in zip(D[0], I[0]) if i >= 0]
        if len(out) < want:  # an approximate index ran dry under a selective filter: answer exactly
            log.debug("approximate search found %d of %d under the filter; exact fallback", len(out), want)
            return self._exact(qv, k, allowed)
        return out

    def neighbors(self, Q: np.ndarray, k: int, ef_search: int | None = None) -> np.ndarray:
        """rids of the k nearest stored vectors for each row of Q (-1 pads), through the vector index."""
        Q = self._prepare_vectors(Q, len(np.atleast_2d(Q)))
        with self._lock:
            idx = self._sync_index()
            if idx.is_trained:
                return idx.search(Q, k, ef_search=ef_search or self.ef_search, nprobe=self.nprobe)[1]
            out = np.full((len(Q), k), -1, np.int64)
            for r, q in enumerate(Q):  # untrained IVF/PQ: a small collection, exact
                found = [i for i, _ in self._exact(q, k, None)]
                out[r, :len(found)] = found
            return out

    def _exact(self, qv: np.ndarray, k: int, rids: np.ndarray | None) -> list[tuple[int, float]]:
        """Brute force over the vectors stored in SQLite (all, or the given rids)."""
        best_ids, best_s = np.zeros(0, np.int64), np.zeros(0, np.float32)
        for ids, X in self.store.iter_vectors(self.dim, rids):
            s = X @ qv if self.metric != "l2" else -((X - qv) ** 2).sum(1)
            best_ids, best_s = np.concatenate([best_ids, ids]), np.concatenate([best_s, s.astype(np.float32)])
            if len(best_s) > k:
                top = np.argpartition(-best_s, k)[:k]
                best_ids, best_s = best_ids[top], best_s[top]
        order = np.lexsort((best_ids, -best_s))
        return [(int(best_ids[i]), float(best_s[i])) for i in order[:k]]

    def _rerank(self, text: str, hits: list[Hit], rerank: Any, weight: float = 1.0) -> list[Hit]:
        scorer = rerank
        if isinstance(rerank, (str, os.PathLike)):
            key = str(rerank)
            if key not in self._rerankers:
                from encoderkit.tasks.rerank import CrossEncoder

                self._rerankers[key] = CrossEncoder.load(key)
            scorer = self._rerankers[key]
        if not hasattr(scorer, "score"):
            raise TypeError(f"rerank must be a cross-encoder name/path or an object with .score(query, passages); "
                            f"got {type(rerank).__name__}")
        s = np.asarray(scorer.score(text, [h.text for h in hits]), dtype=np.float64).reshape(-1)
        return rerank_hits(hits, s.tolist(), weight)

    # ------------------------------------------------------------------ integrity
    def check(self) -> dict:
        """Verify that the table, the FTS5 index and the vector index agree (the saved index too, if current).
        Returns {"ok": bool, "documents": n, "problems": [...]}."""
        with self._lock:
            problems = self.store.fts_problems()
            rids = self.store.all_rids()
            bad = self.store.conn.execute("SELECT count(*) FROM docs WHERE length(vector) != ?",
                                          (4 * self.dim,)).fetchone()[0]
            if bad:
                problems.append(f"{bad} stored vectors do not have {self.dim} float32 values")
            gen = self.store.generation()
            saved = VectorIndex.load(self.path / INDEX_NAME, self.dim, self.factory, self.metric, gen, self.meta["uid"])
            for name, idx in (("saved vector index", saved), ("vector index", self._sync_index())):
                if idx is None or not idx.is_trained:
                    continue
                ids = idx.ids()
                if len(ids) != len(rids) or not np.array_equal(ids, rids):
                    missing = np.setdiff1d(rids, ids)
                    extra = np.setdiff1d(ids, rids)
                    problems.append(f"{name} disagrees with the table: {len(missing)} documents missing, "
                                    f"{len(extra)} extra ids")
            problems += self._kinds_problems(rids)
            return {"ok": not problems, "documents": int(len(rids)), "generation": gen, "problems": problems}

    # ------------------------------------------------------------------ backup (see store/backup.py)
    def backup(self, dest: str | os.PathLike) -> dict:
        """A consistent copy of this collection in the new folder `dest`, taken while other processes may write
        (they wait for the copy); returns what backup.json records. Restore with Collection.restore."""
        from encoderkit.store.backup import backup_collection

        return backup_collection(self, dest)

    @classmethod
    def restore(cls, src: str | os.PathLike, path: str | os.PathLike, encoder: Any = None) -> "Collection":
        """Restore the backup folder `src` as a new collection at `path` (checked before it is put in place)."""
        from encoderkit.store.backup import restore_collection

        restore_collection(src, path)
        return cls.open(path, encoder, create=False)

    # ------------------------------------------------------------------ ingest (see store/ingest.py)
    def ingest(self, paths: str | os.PathLike | Sequence[str | os.PathLike], **kwargs) -> Any:
        """Add files or directories (.txt .md .jsonl .csv): chunked, duplicates skipped, batched commits."""
        from encoderkit.store.ingest import ingest

        return ingest(self, paths, **kwargs)

    def vectors(self) -> tuple[list[str], np.ndarray]:
        """All (ids, vectors) in rid order (for dedup, export and analysis)."""
        ids: list[str] = []
        chunks = []
        for rids, X in self.store.iter_vectors(self.dim):
            rows = self.store.rows_by_rids(rids.tolist())
            ids.extend(rows[int(r)][0] for r in rids)
            chunks.append(X)
        return ids, (np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32))
