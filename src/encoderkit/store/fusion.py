"""Combining ranked lists from vector and keyword search: reciprocal rank fusion (Cormack et al., 2009)
and weighted fusion of min-max normalized scores."""
from __future__ import annotations

from typing import Hashable, Sequence

Ranked = Sequence[tuple[Hashable, float]]  # (id, score), best first


def rrf(lists: Sequence[Ranked], k: int = 60, weights: Sequence[float] | None = None) -> list[tuple[Hashable, float]]:
    """Reciprocal rank fusion: score(d) = sum_i w_i / (k + rank_i(d)), ranks from 1; best first."""
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, got {k}")
    weights = weights or [1.0] * len(lists)
    fused: dict[Hashable, float] = {}
    for w, ranked in zip(weights, lists):
        for rank, (doc, _) in enumerate(ranked, start=1):
            fused[doc] = fused.get(doc, 0.0) + w / (k + rank)
    return sorted(fused.items(), key=lambda t: -t[1])


def minmax(ranked: Ranked) -> dict[Hashable, float]:
    """Scores rescaled to [0, 1] within one list (all 1.0 when they are equal)."""
    if not ranked:
        return {}
    scores = [s for _, s in ranked]
    lo, hi = min(scores), max(scores)
    span = hi - lo
    return {d: (1.0 if span == 0 else (s - lo) / span) for d, s in ranked}


def weighted(lists: Sequence[Ranked], weights: Sequence[float]) -> list[tuple[Hashable, float]]:
    """sum_i w_i * minmax_i(score); a document missing from a list gets 0 there; best first."""
    if len(weights) != len(lists):
        raise ValueError(f"weighted fusion needs one weight per list ({len(lists)}), got {len(weights)}")
    fused: dict[Hashable, float] = {}
    for w, ranked in zip(weights, lists):
        for doc, s in minmax(ranked).items():
            fused[doc] = fused.get(doc, 0.0) + w * s
    return sorted(fused.items(), key=lambda t: -t[1])


VECTOR_SCORE = {"cosine": "cosine", "ip": "dot product", "l2": "-squared L2"}


def score_names(metric: str = "cosine", fusion: str = "rrf", rrf_k: int = 60, keyword: str = "BM25") -> dict[str, str]:
    """What each entry of a hit's `scores` measures, named for people (the CLI's columns, the page's labels, the
    API's `score_names`): a vector hit's similarity by the collection's metric, BM25 for keyword hits (PostgreSQL:
    idf x ts_rank_cd), and the fused value only as what orders a hybrid list (its rank is what a reader needs)."""
    return {"vector": VECTOR_SCORE.get(metric, metric), "keyword": keyword, "sparse": "sparse dot product",
            "late": "MaxSim", "fused": f"RRF (k={rrf_k})" if fusion == "rrf" else "weighted min-max",
            "rerank": "cross-encoder", "first_stage": "first stage"}
