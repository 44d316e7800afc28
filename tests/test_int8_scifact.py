"""int8 compute keeps SciFact retrieval quality (slow, real data): the 300 SciFact test queries against their judged
abstracts plus 1,000 others (seed 0), encoded by compute="int8" and by fp32 (the session's cached fp32 vectors,
tests/scifact_fixtures.py), give NDCG@10 within 0.005 of each other: issue 19's bar for an int8 mode (the full
5,183-abstract figure, `encoderkit eval beir --compute int8`, is in benchmarks/README.md). A subset keeps the
int8 encode to ~1,300 abstracts; the comparison is on the same documents for both."""
from __future__ import annotations

import numpy as np
import pytest

from scifact_fixtures import scifact_vectors

pytestmark = pytest.mark.slow


def test_int8_ndcg_within_0005_of_fp32():
    import encoderkit
    from encoderkit.evaluate.beir import exact_run
    from encoderkit.evaluate.metrics import evaluate

    sv = scifact_vectors()
    data, D, Q = sv["data"], sv["D"], sv["Q"]
    ids = data.doc_ids()
    judged = {d for rels in data.qrels.values() for d in rels}
    rng = np.random.default_rng(0)
    others = [i for i, d in enumerate(ids) if d not in judged]
    keep = sorted([i for i, d in enumerate(ids) if d in judged] + list(rng.choice(others, 1000, replace=False)))
    texts, sub_ids = [data.doc_texts()[i] for i in keep], [ids[i] for i in keep]
    qids = list(data.queries)

    enc = encoderkit.load("all-MiniLM-L6-v2", compute="int8")
    D8 = enc.encode(texts, batch_size=64, normalize=True, progress=False)
    Q8 = enc.encode(list(data.queries.values()), batch_size=64, normalize=True, progress=False)
    assert (D8 * D[keep]).sum(1).mean() < 0.99999  # really int8, not the fp32 vectors again

    fp32 = evaluate(data.qrels, exact_run(D[keep], sub_ids, Q, qids))["ndcg@10"]
    int8 = evaluate(data.qrels, exact_run(D8, sub_ids, Q8, qids))["ndcg@10"]
    assert abs(int8 - fp32) <= 0.005, (int8, fp32, enc.info()["compute_engine"])
