"""Evaluators that run during training (as sentence-transformers' evaluators do): each is called with the model
being trained and returns {metric: value}, higher is better; `names()` lists those metrics and `primary` the one
that picks the best checkpoint by default.

    IREvaluator(queries, corpus, qrels)        bi-encoder: exact cosine search, NDCG@10 / MRR@10 / recall@k
    STSEvaluator(sentences1, sentences2, gold) bi-encoder: Spearman (and Pearson) of the cosine to the gold score
    RerankEvaluator(samples)                   cross-encoder: MRR@10 / NDCG@10 of its order of each candidate list

A Trainer takes one as `eval_fn=as_eval_fn(evaluator, target)` (target: what the evaluator is called with)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from encoderkit.evaluate.metrics import evaluate as retrieval_metrics

log = logging.getLogger(__name__)

IR_METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100")


class IREvaluator:
    """Exact top-k cosine retrieval of each query over the corpus with the encoder as it is now; metrics as
    trec_eval computes them (encoderkit.evaluate.metrics), averaged over the judged queries."""

    primary = "ndcg@10"

    def __init__(self, queries: Mapping[str, str], corpus: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                 metrics: Sequence[str] = IR_METRICS, batch_size: int = 64, k: int = 100):
        judged = [q for q in queries if q in qrels and any(r > 0 for r in qrels[q].values())]
        if not judged:
            raise ValueError("the IR evaluator needs at least one query with a relevant document in qrels")
        if not corpus:
            raise ValueError("the IR evaluator needs a non-empty corpus")
        self.qids, self.queries = judged, [queries[q] for q in judged]
        self.doc_ids, self.docs = list(corpus), list(corpus.values())
        self.qrels = {q: dict(qrels[q]) for q in judged}
        self.metrics, self.batch_size, self.k = tuple(metrics), batch_size, k
        retrieval_metrics({"q": {"d": 1}}, {"q": {"d": 1.0}}, self.metrics)  # unknown metric names fail here
        if self.primary not in self.metrics:
            self.primary = self.metrics[0]

    def __call__(self, encoder: Any) -> dict[str, float]:
        from encoderkit.evaluate.beir import exact_run

        D = encoder.encode(self.docs, batch_size=self.batch_size, normalize=True, progress=False)
        Q = encoder.encode(self.queries, batch_size=self.batch_size, normalize=True, progress=False)
        run = exact_run(np.asarray(D, np.float32), self.doc_ids, np.asarray(Q, np.float32), self.qids,
                        min(self.k, len(self.doc_ids)))
        return retrieval_metrics(self.qrels, run, self.metrics)

    def names(self) -> tuple[str, ...]:
        return self.metrics

    def describe(self) -> str:
        return f"IR: {len(self.qids)} queries, {len(self.doc_ids)} documents"


class STSEvaluator:
    """Spearman (and Pearson) correlation between cos(enc(s1), enc(s2)) and the gold scores."""

    primary = "spearman"

    def __init__(self, sentences1: Sequence[str], sentences2: Sequence[str], scores: Sequence[float],
                 batch_size: int = 64):
        if not (len(sentences1) == len(sentences2) == len(scores)):
            raise ValueError(f"STS evaluator: {len(sentences1)} first sentences, {len(sentences2)} second, "
                             f"{len(scores)} scores; they must be equal")
        if len(scores) < 2 or len(set(map(float, scores))) < 2:
            raise ValueError("the STS evaluator needs at least two pairs with different gold scores")
        self.s1, self.s2 = list(sentences1), list(sentences2)
        self.gold = np.asarray(scores, np.float64)
        self.batch_size = batch_size

    def __call__(self, encoder: Any) -> dict[str, float]:
        from scipy.stats import pearsonr, spearmanr

        uniq = list(dict.fromkeys(self.s1 + self.s2))
        X = np.asarray(encoder.encode(uniq, batch_size=self.batch_size, normalize=True, progress=False), np.float64)
        pos = {s: i for i, s in enumerate(uniq)}
        cos = (X[[pos[s] for s in self.s1]] * X[[pos[s] for s in self.s2]]).sum(1)
        return {"spearman": float(spearmanr(cos, self.gold).statistic),
                "pearson": float(pearsonr(cos, self.gold).statistic)}

    def names(self) -> tuple[str, ...]:
        return ("spearman", "pearson")

    def describe(self) -> str:
        return f"STS: {len(self.gold)} pairs"


@dataclass
class RerankSample:
    """One query with its candidate passages; relevant: the indices of the relevant candidates."""

    query: str
    candidates: list[str]
    relevant: set[int]


class RerankEvaluator:
    """A cross-encoder scores every (query, candidate) pair; MRR@10 and NDCG@10 of the resulting order (binary
    relevance), averaged over the samples. Ties rank the irrelevant candidates first (no credit for a constant score)."""

    primary = "ndcg@10"

    def __init__(self, samples: Sequence[RerankSample], batch_size: int = 32, at_k: int = 10):
        keep = [s for s in samples if s.relevant and len(s.candidates) > 1]
        if not keep:
            raise ValueError("the reranking evaluator needs samples with at least two candidates, one relevant")
        self.samples, self.batch_size, self.k = keep, batch_size, at_k

    def __call__(self, model: Callable[[list[tuple[str, str]]], torch.Tensor]) -> dict[str, float]:
        pairs = [(s.query, c) for s in self.samples for c in s.candidates]
        scores = []
        for i in range(0, len(pairs), self.batch_size):
            chunk = pairs[i:i + self.batch_size]
            scores.append(torch.as_tensor(model(chunk)).detach().float().reshape(len(chunk), -1)[:, 0])
        flat = torch.cat(scores).numpy()
        mrr, ndcg, start = [], [], 0
        for s in self.samples:
            z = flat[start:start + len(s.candidates)]
            start += len(s.candidates)
            order = sorted(range(len(z)), key=lambda j: (-z[j], j in s.relevant))[: self.k]
            hits = [j in s.relevant for j in order]
            mrr.append(next((1.0 / (r + 1) for r, h in enumerate(hits) if h), 0.0))
            dcg = sum(1.0 / np.log2(r + 2) for r, h in enumerate(hits) if h)
            ideal = sum(1.0 / np.log2(r + 2) for r in range(min(len(s.relevant), self.k)))
            ndcg.append(dcg / ideal)
        return {f"mrr@{self.k}": float(np.mean(mrr)), f"ndcg@{self.k}": float(np.mean(ndcg))}

    def names(self) -> tuple[str, ...]:
        return (f"mrr@{self.k}", f"ndcg@{self.k}")

    def describe(self) -> str:
        return f"reranking: {len(self.samples)} queries"


def rerank_samples(records: Sequence[Mapping[str, Any]]) -> list[RerankSample]:
    """Samples from mined records {"query", "positive" (or "positives": [...]), "negatives": [...]}: the
    positives first, then the negatives (the evaluator's order does not depend on where they stand)."""
    out = []
    for r in records:
        pos = list(r.get("positives") or [r["positive"]])
        cands = pos + [n for n in r.get("negatives", []) if n not in pos]
        out.append(RerankSample(r["query"], cands, set(range(len(pos)))))
    return out


def ir_evaluator_from_beir(folder: Any, split: str = "dev", max_queries: int | None = None,
                           **kw: Any) -> IREvaluator:
    """An IREvaluator over a BEIR folder's corpus and the judged queries of `split` (the first max_queries)."""
    from encoderkit.evaluate.beir import load_beir

    data = load_beir(folder, split)
    qids = list(data.queries)[:max_queries] if max_queries else list(data.queries)
    return IREvaluator({q: data.queries[q] for q in qids}, dict(zip(data.doc_ids(), data.doc_texts())),
                       {q: data.qrels[q] for q in qids}, **kw)


def sts_evaluator_from_file(path: Any, max_pairs: int | None = None, **kw: Any) -> STSEvaluator:
    """An STSEvaluator over an STS Benchmark file (tab-separated; a folder means its sts-dev.csv)."""
    from pathlib import Path

    from encoderkit.evaluate.sts import load_sts

    p = Path(path).expanduser()
    s1, s2, gold = load_sts(p / "sts-dev.csv" if p.is_dir() else p)
    n = max_pairs or len(gold)
    return STSEvaluator(s1[:n], s2[:n], gold[:n], **kw)


def as_eval_fn(evaluator: Callable[[Any], Mapping[str, float]], target: Any) -> Callable[[Any, Any], dict]:
    """The Trainer's eval_fn(model, eval_data): the evaluator applied to `target` (e.g. the Encoder whose backbone
    the Trainer's model trains), metrics as floats."""
    def eval_fn(_model: Any, _data: Any) -> dict[str, float]:
        return {k: float(v) for k, v in evaluator(target).items()}
    return eval_fn
