"""`encoderkit eval beir --dimensions 64,128,...` (issue 16's Matryoshka figure): every width is scored from one
encoding of the corpus and queries, and equals exact search on vectors cut to the first d dimensions and
renormalized (what Encoder.encode(dimensions=d) returns)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

import encoderkit
from encoderkit.cli import main
from encoderkit.evaluate.beir import evaluate_beir, evaluate_beir_dimensions
from store_fakes import FakeEncoder


class CutEncoder(FakeEncoder):
    """FakeEncoder whose vectors are its full vectors cut to `cut` dimensions, then renormalized."""

    def __init__(self, cut: int):
        super().__init__(dim=32)
        self.cut = cut

    def encode(self, texts, batch_size: int = 32, normalize: bool = True, progress=None, **_):
        X = super().encode(texts, normalize=False)[:, : self.cut]
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def beir_folder(tmp_path, n_docs: int = 60, n_queries: int = 25):
    """Random-word documents; each query is 3 words of its one relevant document plus 2 of another."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(150)]
    docs = {f"d{i}": " ".join(rng.choice(vocab) for _ in range(12)) for i in range(n_docs)}
    ids = list(docs)
    b = tmp_path / "beir"
    (b / "qrels").mkdir(parents=True)
    queries, qrels = {}, []
    for j in range(n_queries):
        rel, other = rng.sample(ids, 2)
        queries[f"q{j}"] = " ".join(rng.sample(docs[rel].split(), 3) + rng.sample(docs[other].split(), 2))
        qrels.append(f"q{j}\t{rel}\t1\n")
    (b / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n"
                                            for i, t in docs.items()), encoding="utf-8")
    (b / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()),
                                     encoding="utf-8")
    (b / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(qrels), encoding="utf-8")
    return b


def test_each_width_equals_search_on_cut_vectors_from_one_encoding(tmp_path):
    b = beir_folder(tmp_path)
    enc = FakeEncoder(dim=32)
    results = evaluate_beir_dimensions(b, enc, [2, 8, 32])
    assert enc.calls == 2  # the corpus once and the queries once, whatever the number of widths
    assert [r["dimensions"] for r in results] == [2, 8, 32]
    for r in results:
        want = evaluate_beir(b, CutEncoder(r["dimensions"]))
        for m in ("ndcg@10", "recall@100", "mrr@10", "map@100"):
            assert r[m] == pytest.approx(want[m], abs=1e-5), (r, want)
    assert results[0]["ndcg@10"] < results[2]["ndcg@10"]  # 2 dimensions lose most of the ranking: not a copy
    with pytest.raises(ValueError, match="integers in 1..32"):
        evaluate_beir_dimensions(b, enc, [8, 64])


def test_eval_beir_cli_dimensions(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(encoderkit, "load", lambda name, **kw: FakeEncoder(dim=32, name="fake"))
    b = beir_folder(tmp_path)
    assert main(["eval", "beir", str(b), "--dimensions", "8,32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["dimensions"]
    assert [r["dimensions"] for r in out] == [8, 32]
    assert out[1]["ndcg@10"] == pytest.approx(evaluate_beir(b, FakeEncoder(dim=32))["ndcg@10"], abs=1e-5)
    assert main(["eval", "beir", str(b), "--dimensions", "8", "--mode", "hybrid"]) == 2
    assert "exact vector search only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse refuses the flag's value before anything loads
        main(["eval", "beir", str(b), "--dimensions", "0,8"])
    assert exc.value.code == 2 and "comma-separated positive integers" in capsys.readouterr().err
