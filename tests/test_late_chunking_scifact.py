"""Late chunking on real long documents (slow): BEIR SciFact test queries against documents longer than 256 tokens,
made by concatenating abstracts, each built into a collection by `Collection.ingest` (what `encoderkit index add`
runs) three ways with all-MiniLM-L6-v2: truncation (one vector of the first 256 tokens), naive chunking (128-token
chunks, each encoded alone) and late chunking (the same chunks pooled from 512-token passes over the document).
A document scores by its best chunk (exact cosine); NDCG@10 over the long documents.

How the long documents are made (seed 0): every abstract judged for a test query is joined ("\n\n") with one
abstract no test query judges, in random order; 120 more long documents join two unjudged abstracts each, as
distractors. A long document is relevant to a query when its judged abstract is (qrels mapped through).

Measured (2026-12-02, all 300 test queries, 403 long documents, fp32): truncation 0.4628, naive chunks 0.8077, late
chunking 0.7583. The suite encodes the documents in bf16 where the CPU multiplies bfloat16 natively
(conftest.bulk_compute; ~3x faster); the queries stay fp32. Both chunkings recover the abstract truncation cuts off; late chunking does NOT beat naive chunks
here: a chunk's pass also reads the unrelated abstract glued beside it, and that context pulls its vector away
(on the first 50 queries alone late chunking led, 0.9341 to 0.9215). The bars below hold those figures."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from conftest import bulk_compute, data_path

pytestmark = pytest.mark.slow

CHUNK, OVERLAP, DISTRACTORS = 128, 0, 120


def long_documents(data) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """({long id: text}, qrels over long ids), as the module docstring says."""
    rng = random.Random(0)
    texts = dict(zip(data.corpus, data.doc_texts()))
    judged = sorted({d for rel in data.qrels.values() for d in rel})
    free = sorted(d for d in data.corpus if d not in set(judged))
    rng.shuffle(free)
    docs, owner = {}, {}
    for i, d in enumerate(judged):
        parts = [d, free.pop()]
        rng.shuffle(parts)
        docs[f"L{i}"] = "\n\n".join(texts[p] for p in parts)
        owner[d] = f"L{i}"
    for j in range(DISTRACTORS):
        docs[f"X{j}"] = "\n\n".join(texts[free.pop()] for _ in range(2))
    qrels = {q: {owner[d]: r for d, r in rel.items()} for q, rel in data.qrels.items()}
    return docs, qrels


def best_chunk_run(col, Q: np.ndarray, qids: list[str]) -> dict[str, dict[str, float]]:
    """Each long document's score per query: its best chunk's cosine (exact, over every stored chunk)."""
    ids, X = col.vectors()
    parents = np.array([i.split("#")[0] for i in ids])
    names, inverse = np.unique(parents, return_inverse=True)
    S = Q @ X.T  # (queries, chunks)
    best = np.full((len(Q), len(names)), -np.inf, np.float32)
    np.maximum.at(best.T, inverse, S.T)
    run = {}
    for r, q in enumerate(qids):
        top = np.argsort(-best[r])[:100]
        run[q] = {str(names[j]): float(best[r, j]) for j in top}
    return run


def test_late_chunking_against_truncation_and_naive_chunks_on_long_scifact_documents(tmp_path):
    import encoderkit
    from encoderkit.evaluate.beir import load_beir
    from encoderkit.evaluate.metrics import evaluate
    from encoderkit.store import Collection
    from encoderkit.store.ingest import _untruncated

    data = load_beir(data_path("scifact"), "test")
    docs, qrels = long_documents(data)
    f = tmp_path / "long.jsonl"
    f.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in docs.items()) + "\n", encoding="utf-8")
    enc = encoderkit.load("all-MiniLM-L6-v2")  # its 256-token window
    wide = encoderkit.load("all-MiniLM-L6-v2", max_length=512)  # BERT's 512 positions, for the late-chunking passes
    lengths = [len(e.ids) for e in _untruncated(enc.tokenizer).encode_batch(list(docs.values()))]
    assert min(lengths) > 256  # every document is longer than the model's window
    qids = list(data.queries)
    Q = enc.encode([data.queries[q] for q in qids], normalize=True)
    if bulk_compute() == "bf16":  # the documents in bf16 where the CPU has it natively (~3x; cosine >= 0.9999)
        enc.set_compute("bf16")
        wide.set_compute("bf16")
    ndcg = {}
    for name, model, kw in (("truncation", enc, {"chunk_tokens": 0}),
                            ("naive chunks", enc, {"chunk_tokens": CHUNK, "overlap": OVERLAP}),
                            ("late chunking", wide, {"chunk_tokens": CHUNK, "overlap": OVERLAP, "late_chunking": True})):
        col = Collection.open(tmp_path / name.replace(" ", "_"), model)
        report = col.ingest(f, batch_size=64, progress=False, **kw)
        assert report.added >= len(docs) and not report.errors
        ndcg[name] = evaluate(qrels, best_chunk_run(col, Q, qids), ["ndcg@10"])["ndcg@10"]
        col.close()
    print("long SciFact documents, NDCG@10:", {k: round(v, 4) for k, v in ndcg.items()})
    assert ndcg["truncation"] <= 0.48 and ndcg["naive chunks"] >= 0.79 and ndcg["late chunking"] >= 0.74, ndcg
    assert ndcg["late chunking"] >= ndcg["truncation"] + 0.25, ndcg
