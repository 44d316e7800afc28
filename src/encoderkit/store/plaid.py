"""PLAID-style candidate generation for late interaction (Santhanam et al., 2022, "centroid interaction"): k-means
centroids C over the stored token vectors, each document kept as the set of its tokens' centroid codes, and
inverted lists centroid -> documents. A query Q (n_q, d) is scored in three steps:

    S = Q C^T                                            # (n_q, K): every query token against every centroid
    candidates = documents holding a code among the top-`nprobe` centroids of some query token
    approx(D) = sum_i max_{c in codes(D) and probed for i} S[i, c]   # MaxSim, each token replaced by its centroid

(a query token i none of whose probed centroids D holds counts its best unprobed score S[i, c_(nprobe+1)], a bound:
PLAID's centroid pruning, which keeps this step to the probed inverted lists),
and only the best `candidates` documents by approx are re-scored exactly (MaxSim over their stored vectors, by the
caller). Like the token index it replaces, it is a cache of SQLite: saved as `late.faiss` (here an .npz archive,
not a FAISS file) + `late.json` naming the generation it reflects, and rebuilt when that does not match. Its
memory is the centroids plus ~8 bytes per distinct code of a document (the code and its inverted-list entry)."""
from __future__ import annotations

import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PLAID = re.compile(r"PLAID(\d*)")
MIN_TOKENS = 4096  # fewer stored token vectors: no centroids, every document is scored exactly
RETRAIN_GROWTH = 4  # the collection now holds this many times the tokens the centroids were trained on: retrain
SAMPLE_PER_CENTROID = 64  # k-means training sample
# defaults: centroids probed per query token; documents re-scored exactly = max(4 k, 256)
NPROBE, MIN_CANDIDATES = 32, 256


def is_plaid(factory: str) -> bool:
    return PLAID.fullmatch(factory) is not None


def check_plaid(factory: str) -> None:
    m = PLAID.fullmatch(factory)
    if m is None or (m.group(1) and not 2 <= int(m.group(1)) <= 1 << 20):
        raise ValueError(f"cannot read late index {factory!r}: 'PLAID' (centroids chosen by the number of tokens) "
                         "or 'PLAID{K}' with K centroids from 2 to 1048576, e.g. 'PLAID1024'")


def n_centroids(factory: str, n_tokens: int) -> int:
    """K: as given ('PLAID{K}'), else the power of two nearest 4 sqrt(tokens) (4,096 for 0.5M-2M tokens), at most
    tokens / 39 (k-means' sample floor), at least 16. On SciFact a ColBERT head's 128-d tokens lost 0.0077 NDCG@10
    to exact MaxSim with sqrt(tokens) centroids (1,024), 0.0014 with 4,096."""
    m = PLAID.fullmatch(factory)
    if m and m.group(1):
        return int(m.group(1))
    k = 2 ** round(np.log2(max(4 * np.sqrt(n_tokens), 1)))
    return int(max(16, min(k, 2 ** int(np.log2(max(n_tokens / 39, 1))))))


class PlaidIndex:
    """Centroids, each document's distinct centroid codes, and the inverted lists code -> documents."""

    def __init__(self, dim: int, factory: str = "PLAID"):
        check_plaid(factory)
        self.dim, self.factory = dim, factory
        self.C: np.ndarray | None = None  # (K, d) unit centroids; None: untrained (too few tokens)
        self.trained_tokens = 0
        self.rids = np.zeros(0, np.int64)  # (n,) documents holding at least one token
        self.ntok = np.zeros(0, np.int32)  # (n,) their token counts (to know when to retrain)
        self.offsets = np.zeros(1, np.int64)  # (n + 1,) document i's codes are codes[offsets[i]:offsets[i + 1]]
        self.codes = np.zeros(0, np.int32)  # distinct codes of each document, sorted within it
        self.generation = -1
        self._lists: tuple[np.ndarray, np.ndarray] | None = None  # (list_offsets (K + 1,), document positions)

    # ------------------------------------------------------------------ state
    @property
    def is_trained(self) -> bool:
        return self.C is not None

    @property
    def K(self) -> int:
        return 0 if self.C is None else len(self.C)

    def doc_ids(self) -> np.ndarray:
        return np.sort(self.rids)

    @property
    def n_tokens(self) -> int:
        return int(self.ntok.sum())

    def nbytes(self) -> int:
        """Bytes held in memory (centroids, codes, offsets, ids, inverted lists)."""
        lists = self._inverted()
        return int((0 if self.C is None else self.C.nbytes) + self.codes.nbytes + self.offsets.nbytes
                   + self.rids.nbytes + self.ntok.nbytes + (lists[0].nbytes + lists[1].nbytes if lists else 0))

    # ------------------------------------------------------------------ build
    def train(self, sample: np.ndarray, n_tokens: int) -> None:
        """k-means (spherical: unit centroids, assignment by inner product) on a sample of the token vectors."""
        import faiss

        K = min(n_centroids(self.factory, n_tokens), len(sample))
        km = faiss.Kmeans(self.dim, K, niter=10, seed=0, spherical=True, max_points_per_centroid=SAMPLE_PER_CENTROID,
                          verbose=False)
        km.train(np.ascontiguousarray(sample, dtype=np.float32))
        self.C = np.ascontiguousarray(km.centroids, dtype=np.float32)
        self.trained_tokens = int(n_tokens)

    def assign(self, X: np.ndarray) -> np.ndarray:
        """The code (nearest centroid by inner product) of each row of X."""
        import faiss

        q = faiss.IndexFlatIP(self.dim)
        q.add(self.C)
        codes = np.empty(len(X), np.int32)
        for s in range(0, len(X), 65536):
            codes[s:s + 65536] = q.search(np.ascontiguousarray(X[s:s + 65536], dtype=np.float32), 1)[1][:, 0]
        return codes

    def add(self, rids: Sequence[int], mvs: Sequence[np.ndarray]) -> None:
        """Index these documents (a document without tokens is left out, as in the token index)."""
        keep = [(int(r), X) for r, X in zip(rids, mvs) if len(X)]
        if not keep or self.C is None:
            return
        lens = np.fromiter((len(X) for _, X in keep), np.int64, len(keep))
        codes = self.assign(np.concatenate([X for _, X in keep]))
        parts = [np.unique(c) for c in np.split(codes, np.cumsum(lens)[:-1])]
        sizes = np.fromiter((len(p) for p in parts), np.int64, len(parts))
        self.rids = np.concatenate([self.rids, np.fromiter((r for r, _ in keep), np.int64, len(keep))])
        self.ntok = np.concatenate([self.ntok, lens.astype(np.int32)])
        self.offsets = np.concatenate([self.offsets, self.offsets[-1] + np.cumsum(sizes)])
        self.codes = np.concatenate([self.codes, *parts]).astype(np.int32)
        self._lists = None

    def remove(self, rids: Iterable[int]) -> None:
        gone = np.isin(self.rids, np.fromiter((int(r) for r in rids), np.int64))
        if not gone.any():
            return
        sizes = np.diff(self.offsets)
        self.codes = self.codes[np.repeat(~gone, sizes)]
        self.rids, self.ntok = self.rids[~gone], self.ntok[~gone]
        self.offsets = np.concatenate([[0], np.cumsum(sizes[~gone])]).astype(np.int64)
        self._lists = None

    def _inverted(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(list_offsets, documents): the positions of the documents holding code c are docs[lo[c]:lo[c + 1]]
        (built on first use after a write)."""
        if self.C is None:
            return None
        if self._lists is None:
            owner = np.repeat(np.arange(len(self.rids), dtype=np.int32), np.diff(self.offsets))
            order = np.argsort(self.codes, kind="stable")
            lo = np.searchsorted(self.codes[order], np.arange(self.K + 1)).astype(np.int64)
            self._lists = (lo, owner[order])
        return self._lists

    # ------------------------------------------------------------------ search
    def centroid_scores(self, Q: np.ndarray, nprobe: int,
                        ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """(document positions, their approximate scores, the score of a document holding no probed centroid):
        the documents on the inverted lists of each query token's top-`nprobe` centroids (restricted to `ok`), each
        scored sum_i max over the probed centroids c of token i it holds of S[i, c], where a token with none of
        them counts the best unprobed score S[i, c_(nprobe + 1)] instead (a bound on what its own codes give).
        With every centroid probed this is the full centroid MaxSim, sum_i max_{c in codes(D)} S[i, c]."""
        S = np.asarray(Q, np.float32) @ self.C.T  # (n_q, K)
        n_q, t = len(S), max(1, min(int(nprobe), self.K))
        if t < self.K:
            part = np.argpartition(-S, t, axis=1)  # [:, :t] the top t of each row, [:, t] the next best
            top, fill = part[:, :t], S[np.arange(n_q), part[:, t]]
        else:
            top, fill = np.broadcast_to(np.arange(self.K), (n_q, self.K)), S.min(axis=1)
        lo, owner = self._inverted()
        c = top.ravel()
        sizes = lo[c + 1] - lo[c]
        ends = np.cumsum(sizes)
        if not len(ends) or ends[-1] == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), float(fill.sum())
        docs = owner[np.arange(ends[-1]) - np.repeat(ends - sizes, sizes) + np.repeat(lo[c], sizes)]
        qi = np.repeat(np.repeat(np.arange(n_q), t), sizes)  # each entry's query token ...
        vals = np.repeat(S[np.repeat(np.arange(n_q), t), c], sizes)  # ... and its centroid's score
        if ok is not None:
            keep = ok[docs]
            docs, qi, vals = docs[keep], qi[keep], vals[keep]
        if n_q * len(self.rids) <= 1 << 23:  # a dense (n_q, documents) table of maxima
            best = np.repeat(fill[:, None].astype(np.float32), len(self.rids), axis=1)
            np.maximum.at(best, (qi, docs), vals)
            found = np.zeros(len(self.rids), bool)
            found[docs] = True
            pos = np.flatnonzero(found)
            return pos, best[:, pos].sum(axis=0), float(fill.sum())
        pos, inv = np.unique(docs, return_inverse=True)  # a large collection: only the documents proposed
        best = np.repeat(fill[:, None].astype(np.float32), len(pos), axis=1)
        np.maximum.at(best, (qi, inv), vals)
        return pos, best.sum(axis=0), float(fill.sum())

    def candidates(self, Q: np.ndarray, n: int, nprobe: int = NPROBE,
                   allowed: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """(rids of the best `n` documents by approximate score (centroid_scores), best first; how many were
        proposed). When fewer than `n` are proposed, every (allowed) document joins them (those not proposed at
        the floor score), so the exact ranking comes back when n covers the collection."""
        ok = None if allowed is None else np.isin(self.rids, allowed)
        docs, approx, floor = self.centroid_scores(Q, nprobe, ok)
        proposed = len(docs)
        if proposed < n:
            rest = np.setdiff1d(np.arange(len(self.rids)) if ok is None else np.flatnonzero(ok), docs)
            docs = np.concatenate([docs, rest])
            approx = np.concatenate([approx, np.full(len(rest), floor, np.float32)])
        if len(docs) > n:
            keep = np.argpartition(-approx, n - 1)[:n]
            docs, approx = docs[keep], approx[keep]
        order = np.lexsort((self.rids[docs], -approx))
        return self.rids[docs[order]], proposed

    # ------------------------------------------------------------------ check
    def problems(self, sample: dict[int, np.ndarray]) -> list[str]:
        """Its own consistency, and the codes of the sampled stored documents recomputed from their vectors."""
        out = []
        if self.C is None:
            return out
        if len(self.codes) and (self.codes.min() < 0 or self.codes.max() >= self.K):
            out.append(f"PLAID codes outside 0..{self.K - 1}")
        if len(self.offsets) != len(self.rids) + 1 or self.offsets[-1] != len(self.codes):
            out.append("PLAID code offsets do not match its documents")
            return out
        if len(self.ntok) != len(self.rids):
            out.append("PLAID token counts do not match its documents")
            return out
        pos = {int(r): i for i, r in enumerate(self.rids)}
        wrong = []
        for r, X in sample.items():
            if r not in pos or not len(X):
                continue
            mine = self.codes[self.offsets[pos[r]]:self.offsets[pos[r] + 1]]
            S = X @ self.C.T  # each token's best centroid must be among its codes, each code some token's best
            best = S.max(axis=1, keepdims=True)  # (a float tie between two centroids may go either way: 1e-5)
            near = S >= best - 1e-5
            held = near[:, mine]
            if self.ntok[pos[r]] != len(X) or not held.any(axis=1).all() or not held.any(axis=0).all():
                wrong.append(r)
        if wrong:
            out.append(f"PLAID codes of {len(wrong)} of {len(sample)} sampled documents differ from their stored "
                       f"token vectors (e.g. rid {wrong[0]})")
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path, generation: int, uid: str) -> None:
        """Write the arrays + sidecar atomically (temp files then rename; sidecar last)."""
        path = Path(path)
        buf = io.BytesIO()
        C = self.C if self.C is not None else np.zeros((0, self.dim), np.float32)
        np.savez(buf, C=C, rids=self.rids, ntok=self.ntok, offsets=self.offsets, codes=self.codes)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
        side = {"generation": generation, "uid": uid, "factory": self.factory, "dim": self.dim, "K": self.K,
                "documents": int(len(self.rids)), "trained_tokens": self.trained_tokens,
                "size": path.stat().st_size}
        stmp = path.with_suffix(".json.tmp")
        stmp.write_text(json.dumps(side))
        os.replace(stmp, path.with_suffix(".json"))
        self.generation = generation

    @classmethod
    def load(cls, path: Path, dim: int, factory: str, generation: int, uid: str) -> "PlaidIndex | None":
        """The saved cache if its sidecar says it reflects exactly this SQLite generation; else None (stale)."""
        path = Path(path)
        try:
            side = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            return None
        if (side.get("generation") != generation or side.get("uid") != uid or side.get("dim") != dim
                or side.get("factory") != factory or not path.exists() or path.stat().st_size != side.get("size")):
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                C, rids, ntok, offsets, codes = z["C"], z["rids"], z["ntok"], z["offsets"], z["codes"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("PLAID cache %s unreadable (%s); it will be rebuilt", path, exc)
            return None
        obj = cls(dim, factory)
        obj.C = C.astype(np.float32) if len(C) else None
        obj.rids, obj.offsets, obj.codes = rids.astype(np.int64), offsets.astype(np.int64), codes.astype(np.int32)
        obj.ntok = ntok.astype(np.int32)
        obj.trained_tokens = int(side.get("trained_tokens", 0))
        if len(obj.rids) != side.get("documents") or obj.K != side.get("K"):
            return None
        obj.generation = generation
        return obj
