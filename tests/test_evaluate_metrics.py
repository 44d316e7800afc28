"""Retrieval metrics: hand-computed cases, and agreement with pytrec_eval (trec_eval) on random runs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from encoderkit.evaluate.metrics import (evaluate, map_at_k, mrr_at_k, ndcg_at_k, per_query, precision_at_k,
                                         ranked, recall_at_k)

# one query, graded judgments: a=2, b=1, c=0 (judged non-relevant), d=1; run ranks x, a, c, d, b
RELS = {"a": 2, "b": 1, "c": 0, "d": 1}
RUN = {"x": 0.9, "a": 0.8, "c": 0.7, "d": 0.6, "b": 0.5}


def test_ndcg_by_hand():
    dcg3 = 2 / math.log2(3)  # a at rank 2
    idcg3 = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(RELS, RUN, 3) == pytest.approx(dcg3 / idcg3)
    dcg5 = 2 / math.log2(3) + 1 / math.log2(5) + 1 / math.log2(6)
    assert ndcg_at_k(RELS, RUN, 5) == pytest.approx(dcg5 / idcg3)  # ideal has only 3 positive judgments
    assert ndcg_at_k({"z": 1}, RUN, 10) == 0.0
    assert ndcg_at_k(RELS, {"a": 1, "b": 0.9, "d": 0.8}, 10) == pytest.approx(1.0)


def test_recall_map_mrr_precision_by_hand():
    assert recall_at_k(RELS, RUN, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RELS, RUN, 5) == pytest.approx(1.0)
    # relevant at ranks 2, 4, 5: precisions 1/2, 2/4, 3/5; divided by all 3 relevant
    assert map_at_k(RELS, RUN, 5) == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    assert map_at_k(RELS, RUN, 4) == pytest.approx((1 / 2 + 2 / 4) / 3)  # map_cut: still over all relevant
    assert mrr_at_k(RELS, RUN, 10) == pytest.approx(1 / 2)
    assert mrr_at_k(RELS, RUN, 1) == 0.0
    assert precision_at_k(RELS, RUN, 4) == pytest.approx(2 / 4)


def test_ties_broken_by_doc_id_descending():
    assert ranked({"a": 1.0, "c": 1.0, "b": 1.0, "z": 2.0}) == ["z", "c", "b", "a"]
    # the relevant "a" loses the tie to "b" for rank 1
    assert mrr_at_k({"a": 1}, {"a": 0.5, "b": 0.5}, 10) == pytest.approx(1 / 2)


def test_averaging_and_errors():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
    run = {"q1": {"a": 1.0}, "q2": {"x": 1.0, "b": 0.5}, "q9": {"a": 1.0}}  # q3 not run, q9 not judged
    res = evaluate(qrels, run, ["mrr@10", "recall@1"])
    assert res["mrr@10"] == pytest.approx((1 + 0.5) / 2)  # over queries in both (BEIR's average)
    assert res["recall@1"] == pytest.approx(0.5)
    assert set(per_query(qrels, run, ["ndcg@10"])) == {"q1", "q2"}
    with pytest.raises(ValueError, match="unknown metric 'ndgc@10'"):
        evaluate(qrels, run, ["ndgc@10"])
    with pytest.raises(ValueError, match="no query"):
        evaluate({"q": {"a": 1}}, {"other": {"a": 1.0}})


def test_agrees_with_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec_eval (pip install pytrec-eval-terrier) is the oracle")
    rng = np.random.default_rng(0)
    docs = [f"doc{i:03d}" for i in range(150)]
    qrels, run = {}, {}
    for q in range(40):
        judged = rng.choice(docs, size=rng.integers(1, 12), replace=False)
        qrels[f"q{q}"] = {d: int(rng.integers(0, 3)) for d in judged}
        qrels[f"q{q}"][judged[0]] = max(1, qrels[f"q{q}"][judged[0]])
        retrieved = rng.choice(docs, size=rng.integers(5, 120), replace=False)
        scores = np.round(rng.random(len(retrieved)), 1)  # coarse scores: many ties
        run[f"q{q}"] = {d: float(s) for d, s in zip(retrieved, scores)}
        for d in list(qrels[f"q{q}"])[:2]:  # make sure some relevant ones are retrieved
            run[f"q{q}"][d] = float(np.round(rng.random(), 1))
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map_cut.100", "P.5", "ndcg_cut.3"})
    ref = ev.evaluate(run)
    mine = per_query(qrels, run, ["ndcg@10", "recall@100", "map@100", "precision@5", "ndcg@3"])
    for q in ref:
        assert mine[q]["ndcg@10"] == pytest.approx(ref[q]["ndcg_cut_10"], abs=1e-9)
        assert mine[q]["ndcg@3"] == pytest.approx(ref[q]["ndcg_cut_3"], abs=1e-9)
        assert mine[q]["recall@100"] == pytest.approx(ref[q]["recall_100"], abs=1e-9)
        assert mine[q]["map@100"] == pytest.approx(ref[q]["map_cut_100"], abs=1e-9)
        assert mine[q]["precision@5"] == pytest.approx(ref[q]["P_5"], abs=1e-9)
