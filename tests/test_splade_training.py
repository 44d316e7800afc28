"""SPLADE training (train/recipes/splade.py) on a tiny random BERT with no MLM head: the dense folder gets one (dense
identity, GELU, LayerNorm, decoder tied to the word embeddings), trains a few steps with in-batch contrastive over
sparse dot products + FLOPS, and is saved as a sentence-transformers SparseEncoder folder that encoderkit and
sentence-transformers 6 `SparseEncoder` read to the same vectors (within 1e-5, same active dimensions). Also the CLI
recipe and `encoderkit eval beir --mode sparse` (exact sparse dot products) on a tiny BEIR folder."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.train.recipes.splade import SpladeTrainable, add_splade_head, train_splade
from encoderkit.train.trainer import TrainConfig
from tiny_checkpoints import TINY_VOCAB, sentences, tiny_family_folder

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)

TEXTS = sentences(7, TINY_VOCAB, seed=3, max_len=30) + ["w1", "w3 w3 w3 w4"]


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return tiny_family_folder("bert", tmp_path_factory.mktemp("tiny"))


def _pairs(n=24, seed=1):
    q = sentences(n, TINY_VOCAB, seed=seed, max_len=8)
    return [(a, a + " " + b) for a, b in zip(q, sentences(n, TINY_VOCAB, seed=seed + 1, max_len=20))]


def _cfg(**kw):
    return TrainConfig(**{**dict(epochs=1, batch_size=8, lr=1e-3, warmup_steps=0, seed=0, restore_best=False,
                                 progress=False), **kw})


def test_head_is_identity_tied_and_lexical(dense):
    enc = add_splade_head(encoderkit.load(dense), "identity")
    head, word = enc.model.head, enc.model.backbone.embeddings.word
    assert head.decoder.weight is word.weight  # tied: one tensor, trained as one
    assert torch.equal(head.dense.weight, torch.eye(head.dense.in_features)) and not head.decoder.bias.any()
    X = enc.encode(TEXTS, output="sparse")
    assert X.shape == (len(TEXTS), TINY_VOCAB) and X.nnz > 0 and (X.data > 0).all()
    bert = add_splade_head(encoderkit.load(dense), "bert", seed=0)
    assert 0.01 < float(bert.model.head.dense.weight.detach().std()) < 0.03
    from encoderkit.encoder import Encoder

    with pytest.raises(ValueError, match="plain BERT-family"):
        add_splade_head(Encoder(torch.nn.Identity()))


def test_trained_folder_loads_in_encoderkit_and_sentence_transformers(dense, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    enc = add_splade_head(encoderkit.load(dense), "identity")
    before = [p.detach().clone() for p in (enc.model.head.dense.weight, enc.model.backbone.embeddings.word.weight)]
    history = train_splade(enc, _pairs(), _cfg(), lambda_q=1e-2, lambda_d=1e-2, flops_warmup=1)
    assert np.isfinite(history[-1]["train_loss"]) and "train_active_d" in history[-1]
    after = (enc.model.head.dense.weight, enc.model.backbone.embeddings.word.weight)
    assert all((a - b).abs().max() > 1e-4 for a, b in zip(after, before)), "training changed nothing"
    ours = enc.encode(TEXTS, output="sparse").toarray()

    folder = enc.save(tmp_path / "splade")
    mods = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
    assert mods == ["Transformer", "SpladePooling"]
    again = encoderkit.load(folder)
    assert again.sparse is not None and again.dim == TINY_VOCAB
    assert np.abs(again.encode(TEXTS, output="sparse").toarray() - ours).max() <= 1e-6
    ref = st.SparseEncoder(str(folder), device="cpu").encode(TEXTS, convert_to_sparse_tensor=False).numpy()
    assert ((ref != 0) == (ours != 0)).all(), "active dimensions differ"
    assert np.abs(ref - ours).max() <= 1e-5
    # a loaded SPLADE folder trains on: its decoder is tied to the word embeddings again
    more = add_splade_head(again)
    assert more.model.head.decoder.weight is more.model.backbone.embeddings.word.weight


def test_training_lowers_rank_loss_and_flops_sparsifies(dense):
    enc = add_splade_head(encoderkit.load(dense), "identity")
    pairs = _pairs(8, seed=5)
    batch = ([p[0] for p in pairs], [p[1] for p in pairs], [])
    model = SpladeTrainable(enc, lambda_q=0.0, lambda_d=0.0)
    with torch.no_grad():
        _, start = model.loss(batch)
    train_splade(enc, pairs * 4, _cfg(shuffle=False), lambda_q=0.0, lambda_d=0.0)
    with torch.no_grad():
        _, end = SpladeTrainable(enc).loss(batch)
    assert end["contrastive"] < start["contrastive"] - 0.1, (start, end)
    # the same run with a strong FLOPS weight halves the FLOPS and leaves fewer active dimensions
    sparse = add_splade_head(encoderkit.load(dense), "identity")
    train_splade(sparse, pairs * 4, _cfg(shuffle=False), lambda_q=1.0, lambda_d=1.0, flops_warmup=0)
    with torch.no_grad():
        _, reg = SpladeTrainable(sparse).loss(batch)
    assert reg["flops_d"] < 0.7 * end["flops_d"] and reg["active_d"] < end["active_d"], (reg, end)


def test_hard_negatives_join_the_candidates(dense):
    from encoderkit.objectives.sparse import splade_loss

    enc = add_splade_head(encoderkit.load(dense), "identity")
    pairs = _pairs(4, seed=7)
    negs = sentences(4, TINY_VOCAB, seed=8, max_len=15)
    model = SpladeTrainable(enc, lambda_q=1e-3, lambda_d=1e-3).eval()
    qs, ds = [q for q, _ in pairs], [d for _, d in pairs]
    with torch.no_grad():
        got, parts = model.loss((qs, ds, negs))
        want, _ = splade_loss(model.vectors(qs), model.vectors(ds), model.vectors(negs), lambda_q=1e-3, lambda_d=1e-3)
        _, without = model.loss((qs, ds, []))
    assert abs(float(got) - float(want)) <= 1e-4 * max(1.0, abs(float(want)))
    assert parts["contrastive"] > without["contrastive"]  # more candidates, a larger ranking loss
    records = [{"query": q, "positive": d, "negatives": [n]}
               for (q, d), n in zip(_pairs(16, seed=9), sentences(16, TINY_VOCAB, seed=10))]
    assert np.isfinite(train_splade(enc, records, _cfg(), num_negatives=1)[-1]["train_loss"])


def _beir(folder, pairs):
    folder.mkdir()
    (folder / "qrels").mkdir()
    docs = {f"d{i}": d for i, (_, d) in enumerate(pairs)} | {f"x{i}": t for i, t in enumerate(TEXTS)}
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                                 for k, v in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n"
                                                  for i, (q, _) in enumerate(pairs)))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i}\t1\n" for i in range(len(pairs))))
    return folder, docs


def test_cli_recipe_and_sparse_beir_eval(dense, tmp_path, capsys):
    from encoderkit.cli import main
    from encoderkit.evaluate.beir import evaluate_beir, load_beir, sparse_run
    from encoderkit.evaluate.metrics import evaluate

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{q}\t{d}\n" for q, d in _pairs(16)), encoding="utf-8")
    out = tmp_path / "cli_splade"
    rc = main(["train", "splade", "--pairs", str(tsv), "--model", str(dense), "-o", str(out), "--batch-size", "8",
               "--lr", "1e-3", "--max-length", "40", "--head-bias", "0", "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["recipe"] == "splade" and summary["train_active_d"] > 0 and summary["cpu_seconds"] >= 0
    assert "SPLADE" in (out / "README.md").read_text() and (out / "training_history.json").is_file()
    enc = encoderkit.load(out)
    assert enc.sparse is not None and enc.max_length == 40

    beir, docs = _beir(tmp_path / "beir", _pairs(6, seed=11))
    data = load_beir(beir)
    run, active = sparse_run(enc, data, k=5)
    Q = enc.encode(list(data.queries.values()), output="sparse").toarray()
    D = enc.encode(data.doc_texts(), output="sparse").toarray()
    S = Q @ D.T  # every query against every document, densely
    ids = data.doc_ids()
    for r, qid in enumerate(data.queries):
        want = sorted(range(len(ids)), key=lambda j: -S[r, j])[:5]
        assert set(run[qid]) == {ids[j] for j in want}
        assert all(abs(run[qid][ids[j]] - S[r, j]) <= 1e-4 * max(1.0, abs(S[r, j])) for j in want)
    assert active["active_dims_documents"] == pytest.approx((D != 0).sum(1).mean(), abs=0.05)
    res = evaluate_beir(beir, enc, mode="sparse")
    full, _ = sparse_run(enc, data, k=100)
    assert res["ndcg@10"] == round(evaluate(data.qrels, full, ["ndcg@10"])["ndcg@10"], 5)
    assert res["active_dims_queries"] == pytest.approx((Q != 0).sum(1).mean(), abs=0.05)

    assert main(["eval", "beir", str(beir), "-m", str(out), "--mode", "sparse", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["mode"] == "sparse" and cli["ndcg@10"] == res["ndcg@10"] and "active_dims_documents" in cli
    with pytest.raises(SystemExit):
        main(["eval", "beir", str(beir), "-m", str(out), "--mode", "sparse,vector"])
    assert "runs on its own" in capsys.readouterr().err
