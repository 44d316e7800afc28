"""Retrieval metrics as `trec_eval` / `pytrec_eval` compute them (and BEIR reports them).

qrels: {query_id: {doc_id: relevance int}}; run: {query_id: {doc_id: score}}. A run is ranked by score,
highest first, ties broken by doc id in descending string order (trec_eval's rule). A document is relevant
when its relevance is >= 1. Per-query values are averaged over the queries present in both qrels and run,
as BEIR does."""
from __future__ import annotations

import math
from typing import Iterable, Mapping

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Doc ids by score descending, ties by doc id descending (as trec_eval sorts)."""
    return [d for d, _ in sorted(scores.items(), key=lambda t: (t[1], t[0]), reverse=True)]


def ndcg_at_k(rels: Mapping[str, int], scores: Mapping[str, float], k: int) -> float:
    """trec_eval ndcg_cut.k: gain = relevance (linear), discount log2(rank + 1), ideal from all judged docs."""
    order = ranked(scores)[:k]
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(order) if rels.get(d, 0) > 0)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(rels: Mapping[str, int], scores: Mapping[str, float], k: int) -> float:
    """trec_eval recall.k: relevant docs in the top k / all relevant docs."""
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked(scores)[:k])) / len(relevant)


def map_at_k(rels: Mapping[str, int], scores: Mapping[str, float], k: int) -> float:
    """trec_eval map_cut.k: sum of precision at each relevant doc's rank within the top k / all relevant docs."""
    n_rel = sum(1 for r in rels.values() if r > 0)
    if n_rel == 0:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(ranked(scores)[:k], start=1):
        if rels.get(d, 0) > 0:
            hits += 1
            total += hits / i
    return total / n_rel


def mrr_at_k(rels: Mapping[str, int], scores: Mapping[str, float], k: int) -> float:
    """BEIR's MRR@k: 1 / rank of the first relevant doc within the top k, else 0."""
    for i, d in enumerate(ranked(scores)[:k], start=1):
        if rels.get(d, 0) > 0:
            return 1.0 / i
    return 0.0


def precision_at_k(rels: Mapping[str, int], scores: Mapping[str, float], k: int) -> float:
    """trec_eval P.k: relevant docs in the top k / k."""
    return sum(1 for d in ranked(scores)[:k] if rels.get(d, 0) > 0) / k


METRICS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "map": map_at_k, "mrr": mrr_at_k, "precision": precision_at_k}
DEFAULT = ("ndcg@10", "recall@100", "mrr@10", "map@100")


def _parse(name: str) -> tuple[str, int]:
    base, _, k = name.lower().partition("@")
    if base not in METRICS or not k.isdigit() or int(k) < 1:
        raise ValueError(f"unknown metric {name!r}; use one of {', '.join(METRICS)} with @k, e.g. 'ndcg@10'")
    return base, int(k)


def per_query(qrels: Qrels, run: Run, metrics: Iterable[str] = DEFAULT) -> dict[str, dict[str, float]]:
    """{query_id: {metric: value}} for queries present in both qrels and run."""
    parsed = [(m, *_parse(m)) for m in metrics]
    out = {}
    for qid, scores in run.items():
        if qid not in qrels:
            continue
        rels = qrels[qid]
        out[qid] = {m: METRICS[base](rels, scores, k) for m, base, k in parsed}
    return out


def evaluate(qrels: Qrels, run: Run, metrics: Iterable[str] = DEFAULT) -> dict[str, float]:
    """Mean of each metric over the evaluated queries, e.g. {"ndcg@10": 0.645, ...}."""
    metrics = list(metrics)
    pq = per_query(qrels, run, metrics)
    if not pq:
        raise ValueError("no query of the run has relevance judgments (check that query ids match the qrels)")
    return {m: sum(v[m] for v in pq.values()) / len(pq) for m in metrics}
