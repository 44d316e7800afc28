"""The vector side of a collection: a FAISS index chosen by factory string ("Flat", "HNSW32", "IVF{n},PQ{m}")
under an IndexIDMap2, so FAISS ids are the documents' SQLite rids. It is a cache of SQLite: saved beside it
with a sidecar naming the SQLite generation it reflects, and rebuilt when that does not match."""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

METRICS = ("cosine", "ip", "l2")


def _faiss():
    import faiss

    return faiss


def check_factory(factory: str, dim: int, metric: str) -> None:
    """Raise a readable error when FAISS cannot build `factory` for this dim/metric."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    faiss = _faiss()
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise ValueError(f"FAISS cannot build index {factory!r} for dim {dim}: {first}. "
                         "Examples: 'Flat', 'HNSW32', 'IVF256,PQ16' (PQ m must divide the dim)") from None


def check_factory_syntax(factory: str) -> None:
    """Refuse a factory string FAISS cannot parse for any dimension, before a model is loaded to learn the real
    dimension (check_factory then checks that one: e.g. PQ m must divide it)."""
    faiss = _faiss()
    try:
        faiss.index_factory(3840, factory, faiss.METRIC_INNER_PRODUCT)  # 3840 = 2^8 * 3 * 5: most PQ m divide it
    except RuntimeError as exc:
        if "could not parse" in str(exc):
            raise ValueError(f"FAISS cannot parse index {factory!r}. Examples: 'Flat', 'HNSW32', 'IVF256,PQ16'") \
                from None


def train_size(factory: str) -> int:
    """How many vectors a trained index (IVF / PQ) needs before it is built; until then search is exact."""
    n = 0
    m = re.search(r"IVF(\d+)", factory)
    if m:
        n = max(n, 39 * int(m.group(1)))
    if re.search(r"PQ\d+", factory) or "SQ" in factory:
        n = max(n, 256)
    return n


def _no_polysemous_training(index) -> None:
    """PQ indexes default to polysemous training (an annealing over code assignments, ~10x the training time)
    whose result only a polysemous search uses; this index never searches that way, so skip it."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    for part in (index, ivf):
        part = faiss.downcast_index(part) if part is not None else None
        if part is not None and hasattr(part, "do_polysemous_training"):
            part.do_polysemous_training = False


class VectorIndex:
    """A FAISS index with int64 ids (the SQLite rids), deletions by removal or tombstones."""

    def __init__(self, dim: int, factory: str = "Flat", metric: str = "cosine"):
        faiss = _faiss()
        check_factory(factory, dim, metric)
        self.dim, self.factory, self.metric = dim, factory, metric
        inner = faiss.index_factory(dim, factory, faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efConstruction = max(inner.hnsw.efConstruction, 80)
        _no_polysemous_training(inner)
        self.index = faiss.IndexIDMap2(inner)
        self.tombstones: set[int] = set()  # deleted ids the inner index cannot remove (HNSW)
        self.generation = -1
        self.ef_search = 128
        self.nprobe = 16

    # ------------------------------------------------------------------ state
    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    @property
    def is_hnsw(self) -> bool:
        return isinstance(_faiss().downcast_index(self.index.index), _faiss().IndexHNSW)

    @property
    def is_ivf(self) -> bool:
        return _faiss().try_extract_index_ivf(self.index.index) is not None

    @property
    def ntotal(self) -> int:
        """Live vectors (added minus tombstoned)."""
        return int(self.index.ntotal) - len(self.tombstones)

    def ids(self) -> np.ndarray:
        """Live ids held by the index, sorted."""
        ids = _faiss().vector_to_array(self.index.id_map).astype(np.int64)
        if self.tombstones:
            ids = ids[~np.isin(ids, np.fromiter(self.tombstones, np.int64))]
        return np.sort(ids)

    # ------------------------------------------------------------------ writes
    def train(self, X: np.ndarray) -> None:
        self.index.train(np.ascontiguousarray(X, dtype=np.float32))

    def add(self, ids: np.ndarray, X: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(X, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: list[int]) -> None:
        if not ids:
            return
        arr = np.asarray(ids, dtype=np.int64)
        try:
            self.index.remove_ids(arr)
        except RuntimeError:  # HNSW cannot remove: hide them at search time instead
            self.tombstones.update(int(i) for i in arr)

    # ------------------------------------------------------------------ search
    def search(self, Q: np.ndarray, k: int, allowed: np.ndarray | None = None, ef_search: int | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of shape (nq, k), higher score = closer (negated squared L2 for l2); id -1 = empty."""
        faiss = _faiss()
        Q = np.ascontiguousarray(np.atleast_2d(Q), dtype=np.float32)
        k = max(1, min(int(k), max(self.ntotal, 1)))
        sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        elif self.tombstones:
            keep_out = faiss.IDSelectorBatch(np.fromiter(self.tombstones, np.int64))
            sel = faiss.IDSelectorNot(keep_out)
            sel._keep = keep_out  # keep the inner selector alive as long as the outer one
        if self.is_hnsw:
            params = faiss.SearchParametersHNSW(efSearch=max(int(ef_search or self.ef_search), k))
        elif self.is_ivf:
            params = faiss.SearchParametersIVF(nprobe=int(nprobe or self.nprobe))
        else:
            params = faiss.SearchParameters() if sel is not None else None
        if params is not None and sel is not None:
            params.sel = sel
        D, I = self.index.search(Q, k, params=params)
        if self.metric == "l2":
            D = -D
        return D, I

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path, generation: int, uid: str) -> None:
        """Write index + sidecar atomically (temp files then rename; sidecar last)."""
        faiss = _faiss()
        path = Path(path)
        tmp = path.with_suffix(".faiss.tmp")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)
        side = {"generation": generation, "uid": uid, "ntotal": int(self.index.ntotal), "dim": self.dim,
                "factory": self.factory, "metric": self.metric, "tombstones": sorted(self.tombstones),
                "size": path.stat().st_size}
        stmp = path.with_suffix(".json.tmp")
        stmp.write_text(json.dumps(side))
        os.replace(stmp, sidecar(path))
        self.generation = generation

    @classmethod
    def load(cls, path: Path, dim: int, factory: str, metric: str, generation: int, uid: str) -> "VectorIndex | None":
        """The saved index if its sidecar says it reflects exactly this SQLite generation; else None (stale)."""
        path = Path(path)
        try:
            side = json.loads(sidecar(path).read_text())
        except (OSError, ValueError):
            return None
        if (side.get("generation") != generation or side.get("uid") != uid or side.get("dim") != dim
                or side.get("factory") != factory or side.get("metric") != metric
                or not path.exists() or path.stat().st_size != side.get("size")):
            return None
        faiss = _faiss()
        try:
            idx = faiss.read_index(str(path))
        except RuntimeError as exc:
            log.warning("vector index %s unreadable (%s); it will be rebuilt", path, exc)
            return None
        if int(idx.ntotal) != side.get("ntotal") or not isinstance(idx, faiss.IndexIDMap2):
            return None
        obj = cls.__new__(cls)
        obj.dim, obj.factory, obj.metric = dim, factory, metric
        obj.index = idx
        obj.tombstones = set(int(t) for t in side.get("tombstones", []))
        obj.generation = generation
        obj.ef_search, obj.nprobe = 128, 16
        return obj


def sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")
