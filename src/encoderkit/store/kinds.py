"""What a collection holds beside one dense vector per document, and how it is searched: learned sparse vectors
(`mode="sparse"`, store/sparse_index.py) and token vectors for late interaction (`mode="late"`,
store/late_index.py; candidates from PLAID centroids, store/plaid.py, or a FAISS token index). A collection
records its kinds in its meta ("kinds": "dense,sparse,late"); one created before kinds existed holds "dense" only
and opens as before. The encoder contract: `encode(texts, output="sparse")` -> scipy CSR (n, vocab);
`encode(texts, output="multivector")` -> list of (n_i, d) arrays; `encode_query` / `encode_document` for the two
sides when the model has them."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from encoderkit.store.fusion import rrf, weighted
from encoderkit.store.late_index import (LATE_INDEX_NAME, SQLiteMultivectors, TokenIndex, maxsim,
                                         prepare_multivectors)
from encoderkit.store.plaid import MIN_CANDIDATES, MIN_TOKENS, NPROBE, RETRAIN_GROWTH, PlaidIndex, is_plaid
from encoderkit.store.sparse_index import SQLiteSparse, as_rows

log = logging.getLogger(__name__)

KINDS = ("dense", "sparse", "late")
LISTS = ("vector", "keyword", "sparse", "late")  # what hybrid search can fuse
DEFAULT_LATE_INDEX = "PLAID"  # a new embedded collection's late index (PostgreSQL: "Flat", store/pg_kinds.py)
EXACT_LATE_BELOW = 2048  # a filter leaving at most this many documents: MaxSim over all of them, no candidates


_UNSET = object()


def _side(encoder: Any, side: str):
    fn = getattr(encoder, f"encode_{side}", None)
    return fn if callable(fn) else encoder.encode


def encode_sparse(encoder: Any, texts: list[str], side: str = "document"):
    out = _side(encoder, side)(texts, output="sparse")
    if not hasattr(out, "tocsr"):
        raise TypeError(f"{getattr(encoder, 'name', 'the encoder')} gave {type(out).__name__} for output='sparse'; "
                        "expected a scipy sparse matrix")
    return out.tocsr()


def encode_multivector(encoder: Any, texts: list[str], side: str = "document", plain: bool = False) -> list[np.ndarray]:
    """Token vectors of texts; plain: a dense model without a multi-vector head gives its own normalized token vectors
    (what a collection created with `token_late` holds), whether or not this encoder object has `token_late` set."""
    if plain and getattr(encoder, "late", _UNSET) is None and not getattr(encoder, "token_late", False):
        from encoderkit.multivector import encode_multivector as token_vectors

        route = encoder.route(side) if hasattr(encoder, "route") else encoder
        out = token_vectors(route, texts, task=side, prompt=getattr(encoder, "prompts", {}).get(side, ""), plain=True)
    else:
        out = _side(encoder, side)(texts, output="multivector")
    if not isinstance(out, list) or any(np.asarray(x).ndim != 2 for x in out):
        raise TypeError(f"{getattr(encoder, 'name', 'the encoder')} gave {type(out).__name__} for "
                        "output='multivector'; expected a list of (tokens, dim) arrays")
    return out



def supported_kinds(encoder: Any) -> dict[str, int]:
    """{kind: size} of what `encoder` can give: dense (its dim), sparse (vocabulary size), late (token-vector dim),
    found by encoding one probe text each way (an encoder without that output raises or returns the wrong type).
    A multi-vector model (Encoder.late set) has no pooled output."""
    out = {} if getattr(encoder, "late", None) is not None else {"dense": int(encoder.dim)}
    why = {}
    for kind, fn in (("sparse", encode_sparse), ("late", encode_multivector)):
        try:
            got = fn(encoder, ["probe"])
            out[kind] = int(got.shape[1]) if kind == "sparse" else int(np.asarray(got[0]).shape[1])
        except (ValueError, TypeError, NotImplementedError, AttributeError, KeyError, IndexError) as exc:
            why[kind] = " ".join(str(exc).split())
    _WHY.update(why)
    return out


_WHY: dict[str, str] = {}  # the last probe's reason per kind, for the error naming a kind the encoder lacks


def default_kinds(encoder: Any, have: dict[str, int]) -> list[str]:
    """What a new collection holds unless told: a SPLADE model's sparse vectors, a ColBERT model's token vectors,
    a plain model's dense vectors (and its normalized token vectors when `encoder.token_late` is set); an encoder
    that says nothing of its kind (no `sparse` / `late` attribute), every output it has."""
    sp, lt = getattr(encoder, "sparse", _UNSET), getattr(encoder, "late", _UNSET)
    if sp is not _UNSET and sp is not None:
        return ["sparse"]
    if lt is not _UNSET and lt is not None:
        return ["late"]
    token_late = bool(getattr(encoder, "token_late", False))  # Encoder: its plain token vectors, asked for
    return [k for k in KINDS if k in have and not (k == "sparse" and sp is None)
            and not (k == "late" and lt is None and not token_late)]


def check_late_factory(factory: str, dim: int) -> None:
    """Refuse a late index this store cannot build: 'PLAID' / 'PLAID{K}', or a FAISS factory ('Flat', 'HNSW32')."""
    from encoderkit.store.faiss_index import check_factory
    from encoderkit.store.plaid import check_plaid

    if factory.startswith("PLAID"):
        check_plaid(factory)
    else:
        check_factory(factory, dim, "ip")


def kinds_meta(encoder: Any, kinds: Sequence[str] | None, late_index: str | None = None) -> dict[str, str]:
    """The meta entries of a new collection: its kinds (default: default_kinds) and their sizes; a collection
    without dense vectors records dim 1 (its documents keep a zero placeholder vector)."""
    have = supported_kinds(encoder)
    if isinstance(kinds, str):
        kinds = [kinds]
    kinds = list(dict.fromkeys(default_kinds(encoder, have) if kinds is None else kinds))
    if not kinds:
        raise ValueError(f"a collection must hold at least one kind of vector: {', '.join(KINDS)}")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown kind {k!r}; a collection can hold {', '.join(KINDS)}")
        if k not in have:
            raise ValueError(f"the encoder {getattr(encoder, 'name', '')!r} has no {k} output "
                             f"(output={'sparse' if k == 'sparse' else 'multivector'!r}: {_WHY.get(k, 'failed')}); "
                             f"it supports {', '.join(have)}")
    meta = {"kinds": ",".join(k for k in KINDS if k in kinds)}
    if "dense" not in kinds:
        meta["dim"] = "1"
    if "sparse" in kinds:
        meta["vocab"] = str(have["sparse"])
    if "late" in kinds:
        meta["late_dim"], meta["late_index"] = str(have["late"]), late_index or "Flat"
    return meta


class KindsMixin:
    """Sparse and late-interaction storage, search and fusion for Collection (SQLite) and PgCollection."""

    def _init_kinds(self) -> None:
        meta = self.meta
        self.kinds = tuple(meta.get("kinds", "dense").split(","))
        self.vocab = int(meta["vocab"]) if "vocab" in meta else None
        self.late_dim = int(meta["late_dim"]) if "late_dim" in meta else None
        self.late_factory = meta.get("late_index", "Flat")
        self._late_index: TokenIndex | PlaidIndex | None = None
        self._late_dirty = False
        self.late_per_token = 32
        self.late_nprobe = NPROBE  # PLAID: centroids probed per query token
        self._open_kind_stores()

    def _open_kind_stores(self) -> None:
        conn = self.store.conn
        self._sparse = SQLiteSparse(conn) if "sparse" in self.kinds else None
        self._mv = SQLiteMultivectors(conn, self.late_dim) if "late" in self.kinds else None

    def modes(self) -> list[str]:
        """The search modes this collection offers."""
        return [*(["vector"] if "dense" in self.kinds else []), "keyword", *(["sparse"] if "sparse" in self.kinds else []),
                *(["late"] if "late" in self.kinds else []), "hybrid"]

    def _need(self, kind: str) -> None:
        if kind == "dense" and kind not in self.kinds:
            raise ValueError(f"collection {self.path} holds no dense vectors (kinds: {', '.join(self.kinds)}); "
                             f"search it with mode {' or '.join(repr(m) for m in self.modes() if m != 'vector')}")
        if kind not in self.kinds:
            raise ValueError(f"collection {self.path} holds no {kind} vectors (kinds: {', '.join(self.kinds)}); "
                             f"create it with a model that has {'a sparse' if kind == 'sparse' else 'a multi-vector'} "
                             "output to search it that way")

    # ------------------------------------------------------------------ writes
    def _encode_kinds(self, texts: list[str], sparse: Any, multivectors: Any) -> dict:
        """The sparse rows / token vectors to store with these texts (encoded unless given)."""
        out: dict = {}
        if sparse is not None and "sparse" not in self.kinds:
            self._need("sparse")
        if multivectors is not None and "late" not in self.kinds:
            self._need("late")
        if "sparse" in self.kinds:
            if sparse is None:
                sparse = encode_sparse(self.encoder, texts) if texts else []
            out["sparse"] = as_rows(sparse, len(texts), self.vocab)
        if "late" in self.kinds:
            if multivectors is None:
                multivectors = encode_multivector(self.encoder, texts, plain=True) if texts else []
            out["late"] = prepare_multivectors(multivectors, len(texts), self.late_dim, self.metric == "cosine")
        return out

    def _write_kinds(self, rids: list[int], extra: dict) -> None:
        """Store the extra kinds of freshly inserted rows (inside the write's transaction)."""
        if "sparse" in extra:
            self._sparse.insert(rids, extra["sparse"])
        if "late" in extra:
            self._mv.insert(rids, extra["late"])

    # ------------------------------------------------------------------ the token index (SQLite's cache)
    def _sync_late(self) -> TokenIndex | PlaidIndex:
        gen = self.store.generation()
        if self._late_index is not None and self._late_index.generation == gen:
            return self._late_index
        if is_plaid(self.late_factory):
            return self._sync_plaid(gen)
        idx = TokenIndex.load(self.path / LATE_INDEX_NAME, self.late_dim, self.late_factory, gen, self.meta["uid"])
        if idx is None:
            log.info("building the token-vector index of %s", self.path)
            idx = TokenIndex(self.late_dim, self.late_factory)
            for rids, mvs in self._mv.iter_all():
                idx.add(rids, mvs)
            idx.generation = gen
            self._late_dirty = True
        self._late_index = idx
        return idx

    def _sync_plaid(self, gen: int) -> PlaidIndex:
        """The PLAID cache, loaded if it reflects this generation, else rebuilt: k-means on a sample of the stored
        token vectors (none below MIN_TOKENS: every document is then scored exactly), every document's codes."""
        path = self.path / LATE_INDEX_NAME
        idx = PlaidIndex.load(path, self.late_dim, self.late_factory, gen, self.meta["uid"])
        if idx is None:
            idx = PlaidIndex(self.late_dim, self.late_factory)
            n_tokens = self._mv.count_tokens()
            if n_tokens >= MIN_TOKENS:
                from encoderkit.store.plaid import SAMPLE_PER_CENTROID, n_centroids

                K = n_centroids(self.late_factory, n_tokens)
                log.info("training %d PLAID centroids on the token vectors of %s (%d tokens)", K, self.path, n_tokens)
                p = min(1.0, 1.2 * SAMPLE_PER_CENTROID * K / n_tokens)
                rng = np.random.default_rng(0)
                sample = [X[rng.random(len(X)) < p] for _, mvs in self._mv.iter_all(batch=256) for X in mvs]
                idx.train(np.concatenate(sample), n_tokens)
                for rids, mvs in self._mv.iter_all(batch=256):
                    idx.add(rids, mvs)
            idx.generation = gen
            self._late_dirty = True
        self._late_index = idx
        return idx

    def _after_write_late(self, g0: int, g1: int, removed: list[int], added: tuple | None) -> None:
        idx = self._late_index
        if idx is None or "late" not in self.kinds:
            return
        if idx.generation != g0:
            self._late_index = None
            return
        if isinstance(idx, PlaidIndex) and added is not None and (
                idx.trained_tokens * RETRAIN_GROWTH < idx.n_tokens + sum(map(len, added[1])) if idx.is_trained
                else self._mv.count_tokens() >= MIN_TOKENS):  # (untrained: a small collection, a cheap count)
            self._late_index = None  # enough tokens to train centroids now, or many more than they were trained on
            return
        try:
            idx.remove(removed)
            if added is not None:
                idx.add(*added)
            idx.generation = g1
            self._late_dirty = True
        except Exception:
            log.exception("token index update failed; it will be rebuilt from SQLite")
            self._late_index = None

    def _flush_late(self) -> None:
        idx = self._late_index
        if idx is not None and self._late_dirty and idx.generation == self.store.generation():
            idx.save(self.path / LATE_INDEX_NAME, idx.generation, self.meta["uid"])
            self._late_dirty = False

    def _late_candidates(self, Q: np.ndarray, per_token: int, ef_search, nprobe) -> np.ndarray | None:
        """rids proposed by the token index, or None when it cannot propose (untrained): search exactly."""
        idx = self._sync_late()
        if not idx.is_trained:
            return None
        return idx.candidates(Q, per_token, ef_search=ef_search, nprobe=nprobe)

    # ------------------------------------------------------------------ search
    def _query_sparse(self, text: str | None, sparse: Any) -> tuple[np.ndarray, np.ndarray]:
        if sparse is None:
            sparse = encode_sparse(self.encoder, [text], side="query")
        elif isinstance(sparse, dict) or (isinstance(sparse, tuple) and len(sparse) == 2):
            sparse = [sparse]
        return as_rows(sparse, 1, self.vocab, "query sparse")[0]

    def _query_multivector(self, text: str | None, mv: Any) -> np.ndarray:
        if mv is None:
            mv = encode_multivector(self.encoder, [text], side="query", plain=True)
        elif not isinstance(mv, list):
            mv = [mv]
        return prepare_multivectors(mv, 1, self.late_dim, self.metric == "cosine", "query multivector")[0]

    def _sparse_search(self, terms: np.ndarray, weights: np.ndarray, k: int, where) -> list[tuple[int, float]]:
        return self._sparse.search(terms, weights, k, where)

    def _late_search(self, Q: np.ndarray, k: int, where, per_token: int | None = None, ef_search=None,
                     nprobe=None, late_nprobe: int | None = None) -> list[tuple[int, float]]:
        """(rid, MaxSim) of the top-k documents: candidates from the token index (or PLAID's centroids), then
        exact MaxSim over their stored token vectors (exact over every allowed document when a filter leaves few,
        or candidates run dry)."""
        allowed = self.store.filter_rids(where) if where is not None else None
        if allowed is not None and len(allowed) == 0:
            return []
        if is_plaid(self.late_factory):
            idx = self._sync_late()
            if idx.is_trained:
                n = max(k, per_token or max(4 * k, MIN_CANDIDATES))
                rids, _ = idx.candidates(Q, n, late_nprobe or self.late_nprobe, allowed)
                return self._maxsim_top(Q, k, np.sort(rids))
            return self._maxsim_top(Q, k, allowed)  # too few tokens for centroids: every document, exactly
        rids = None
        if allowed is None or len(allowed) > EXACT_LATE_BELOW:
            rids = self._late_candidates(Q, per_token or max(self.late_per_token, k), ef_search, nprobe)
            if rids is not None and allowed is not None:
                rids = np.intersect1d(rids, allowed)
            if rids is not None and len(rids) < k:
                rids = None  # too few candidates: score them all
        return self._maxsim_top(Q, k, rids if rids is not None else allowed)

    def _maxsim_top(self, Q: np.ndarray, k: int, rids: np.ndarray | None) -> list[tuple[int, float]]:
        """(rid, exact MaxSim) of the top-k among `rids` (None: every document), from their stored token vectors."""
        scored: list[tuple[int, float]] = []
        for ids, mvs in self._mv.iter_all(rids, batch=256):
            scored.extend((int(r), maxsim(Q, D)) for r, D in zip(ids, mvs))
        scored.sort(key=lambda t: (-t[1], t[0]))
        return scored[:k]

    def _ranked_lists(self, names: Sequence[str], text: str | None, depth: int, where, *, vector, sparse, multivector,
                      late_candidates, ef_search, nprobe, late_nprobe=None) -> dict[str, list[tuple[int, float]]]:
        out = {}
        for name in names:
            if name == "vector":
                self._need("dense")
                qv = self.embed([text])[0] if vector is None else self._prepare_vectors(vector, 1)[0]
                out[name] = self._vector_search(qv, depth, where, ef_search, nprobe)
            elif name == "keyword":
                out[name] = self._keyword_search(text, depth, where)
            elif name == "sparse":
                self._need("sparse")
                out[name] = self._sparse_search(*self._query_sparse(text, sparse), depth, where)
            elif name == "late":
                self._need("late")
                out[name] = self._late_search(self._query_multivector(text, multivector), depth, where,
                                              late_candidates, ef_search, nprobe, late_nprobe)
        return out

    @staticmethod
    def _fuse(lists: dict[str, list], fusion: str, weights: Any, alpha: float, rrf_k: int) -> list:
        names = list(lists)
        if isinstance(weights, dict):
            unknown = set(weights) - set(names)
            if unknown:
                raise ValueError(f"weights name {sorted(unknown)}, not among the fused lists {names}")
            w = [float(weights.get(n, 1.0 if fusion == "rrf" else 0.0)) for n in names]
        elif weights is not None:
            w = [float(x) for x in weights]
            if len(w) != len(names):
                raise ValueError(f"{len(w)} weights for {len(names)} fused lists ({', '.join(names)})")
        elif fusion == "weighted" and names == ["vector", "keyword"]:
            w = [alpha, 1 - alpha]
        else:
            w = [1.0 if fusion == "rrf" else 1.0 / len(names)] * len(names)
        if any(not np.isfinite(x) or x < 0 for x in w):
            raise ValueError(f"fusion weights must be finite and >= 0, got {w}")
        ranked = [lists[n] for n in names]
        return rrf(ranked, k=rrf_k, weights=w) if fusion == "rrf" else weighted(ranked, w)

    def _kinds_problems(self, all_rids: np.ndarray) -> list[str]:
        problems = []
        if self._sparse is not None:
            problems += self._sparse.problems()
        if self._mv is not None:
            problems += self._mv.problems(all_rids)
        if isinstance(self._mv, SQLiteMultivectors):  # the token index (a cache) against the stored token vectors
            rows = self.store.conn.execute("SELECT rid FROM multivectors WHERE n > 0 ORDER BY rid").fetchall()
            want = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            idx = self._sync_late()
            if idx.is_trained:  # an untrained PLAID cache holds no documents: every search is exact
                got = idx.doc_ids()
                if not np.array_equal(got, want):
                    problems.append(f"{'PLAID cache' if isinstance(idx, PlaidIndex) else 'token index'} disagrees "
                                    f"with the stored token vectors: {len(np.setdiff1d(want, got))} documents "
                                    f"missing, {len(np.setdiff1d(got, want))} extra")
            if isinstance(idx, PlaidIndex) and len(want):  # codes of a few documents recomputed from their vectors
                pick = np.random.default_rng(len(want)).choice(want, size=min(64, len(want)), replace=False)
                problems += idx.problems(self._mv.get(pick.tolist()))
        return problems

    def sparse_vectors(self, ids: str | Sequence[str]) -> Any:
        """Stored sparse vectors of documents by id, as a CSR matrix (len(ids), vocab) (zero rows where missing)."""
        from encoderkit.store.sparse_index import to_csr

        self._need("sparse")
        wanted = [ids] if isinstance(ids, str) else list(ids)
        rows = self.store.rows_by_ids(wanted)
        rids = [int(rows[i][3]) for i in wanted if i in rows]
        got = self._sparse.rows(rids)
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        return to_csr([got.get(int(rows[i][3]), empty) if i in rows else empty for i in wanted], self.vocab)

    def multivectors(self, ids: str | Sequence[str]) -> list[np.ndarray | None]:
        """Stored token vectors of documents by id (None where missing)."""
        self._need("late")
        wanted = [ids] if isinstance(ids, str) else list(ids)
        rows = self.store.rows_by_ids(wanted)
        got = self._mv.get([int(rows[i][3]) for i in wanted if i in rows])
        return [got.get(int(rows[i][3])) if i in rows else None for i in wanted]
