"""Most similar pairs among n vectors (paraphrase mining): exact all-pairs cosine search in row blocks, so memory
stays O(block * n) while the work is one GEMM per block."""
from __future__ import annotations

import heapq

import numpy as np


def most_similar_pairs(vectors: np.ndarray, top: int = 1, *, block: int = 2048) -> list[tuple[float, int, int]]:
    """The `top` pairs (score, i, j) with i < j and the highest cosine similarity, best first. Exact: every pair is
    scored. Rows are normalized here, so any float vectors may be given."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (n, dim), got shape {x.shape}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 vectors to form a pair, got {n}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinity")
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    best: list[tuple[float, int, int]] = []  # min-heap of the current top pairs
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = x[start:stop] @ x[start:].T  # rows start..stop against columns start..n (upper triangle only)
        rows = np.arange(stop - start)
        cols = np.arange(sims.shape[1])
        sims[rows[:, None] >= cols[None, :]] = -np.inf  # keep j > i only (column offset equals the block start)
        k = min(top, sims.size)
        flat = np.argpartition(sims.ravel(), -k)[-k:]
        for f in flat:
            r, c = divmod(int(f), sims.shape[1])
            s = float(sims[r, c])
            if s == -np.inf:
                continue
            item = (s, start + r, start + c)
            if len(best) < top:
                heapq.heappush(best, item)
            elif item > best[0]:
                heapq.heapreplace(best, item)
    return sorted(best, key=lambda t: (-t[0], t[1], t[2]))
