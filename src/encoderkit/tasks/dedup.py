"""Near-duplicate detection over a collection: every document asks the collection's vector index for its
nearest neighbours (batched, FAISS does the work), pairs with cosine >= threshold become edges, and the
connected components of that graph are the duplicate groups."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def find_duplicates(collection: Any, threshold: float = 0.95, *, neighbors: int = 16, batch_size: int = 1024,
                    progress: bool | None = None) -> list[dict]:
    """Groups of near-duplicate documents (cosine >= threshold), largest first:
    [{"ids": [...], "size": n, "min_cosine": c}]. A document whose `neighbors` nearest all pass the threshold
    is asked again with twice as many, so large groups are found whole."""
    if not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold is a cosine in [-1, 1], got {threshold}")
    if neighbors < 2:
        raise ValueError(f"neighbors must be >= 2, got {neighbors}")
    ids, X = collection.vectors()
    n = len(ids)
    if n < 2:
        return []
    if collection.metric != "cosine":  # stored vectors are raw: compare directions
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    rids = collection.store.all_rids()  # sorted, the same order as collection.vectors()
    src, dst = [], []
    bar = None
    if progress or (progress is None and n > 20_000):
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="dedup", unit="doc")
    todo = np.arange(n)
    k = neighbors
    while len(todo):
        again = []
        for s in range(0, len(todo), batch_size):
            rows = todo[s:s + batch_size]
            I = collection.neighbors(X[rows], min(k + 1, n))  # includes the document itself
            J = np.clip(np.searchsorted(rids, I), 0, n - 1)  # rid -> row of X
            valid = (I >= 0) & (rids[J] == I)
            Jc = np.where(valid, J, 0)
            cos = np.einsum("ij,ikj->ik", X[rows], X[Jc])  # exact cosine of each candidate pair
            ok = valid & (cos >= threshold) & (Jc != rows[:, None])
            r_idx, c_idx = np.nonzero(ok)
            src.append(rows[r_idx])
            dst.append(Jc[r_idx, c_idx])
            full = ok.sum(1) >= min(k, n - 1)  # every neighbour passed: there may be more
            if k + 1 < n:
                again.extend(rows[full].tolist())
            if bar is not None and k == neighbors:
                bar.update(len(rows))
        todo = np.asarray(again, dtype=np.int64)
        k *= 2
    if bar is not None:
        bar.close()
    a = np.concatenate(src) if src else np.zeros(0, np.int64)
    b = np.concatenate(dst) if dst else np.zeros(0, np.int64)
    if not len(a):
        return []
    labels = _components(n, a, b)
    groups: dict[int, list[int]] = {}
    for node in np.unique(np.concatenate([a, b])):
        groups.setdefault(int(labels[node]), []).append(int(node))
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        M = X[members]
        sims = M @ M.T
        out.append({"ids": [ids[m] for m in members], "size": len(members),
                    "min_cosine": round(float(sims[np.triu_indices(len(members), 1)].min()), 4)})
    out.sort(key=lambda g: (-g["size"], g["ids"][0]))
    return out
