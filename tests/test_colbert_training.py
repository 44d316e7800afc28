"""ColBERT training (train/recipes/colbert.py) on a tiny random BERT: a dense sentence-transformers folder gets PyLate's
head ([Q] / [D] markers added to the vocabulary, [MASK] expansion, a bias-free projection), trains a few steps with
in-batch contrastive over MaxSim, and is saved as a PyLate ColBERT folder that encoderkit, PyLate and
sentence-transformers' MultiVectorEncoder all read to the same token vectors (within 1e-5). Also the CLI recipe."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.multivector import add_colbert_head
from encoderkit.train.recipes.colbert import as_examples, train_colbert
from encoderkit.train.trainer import TrainConfig
from tiny_checkpoints import TINY_VOCAB, sentences, tiny_family_folder

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)

QL, DL, DIM = 10, 20, 16
QUERIES = sentences(6, TINY_VOCAB, seed=3, max_len=12)  # longer than QL: truncated; shorter: expanded
DOCS = sentences(6, TINY_VOCAB, seed=4, max_len=30)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return tiny_family_folder("bert", tmp_path_factory.mktemp("tiny"))


def _pairs(n=24, seed=1):
    q = sentences(n, TINY_VOCAB, seed=seed, max_len=8)
    return [(a, a + " " + b) for a, b in zip(q, sentences(n, TINY_VOCAB, seed=seed + 1, max_len=20))]


def _colbert(dense):
    enc = encoderkit.load(dense)
    torch.manual_seed(0)
    return add_colbert_head(enc, DIM, query_length=QL, document_length=DL)


def _same(a, b, tol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.asarray(x).shape == np.asarray(y).shape, (np.asarray(x).shape, np.asarray(y).shape)
        assert np.abs(np.asarray(x) - np.asarray(y)).max() <= tol


def _pylate(folder):
    """pylate.models.ColBERT(folder) as PyLate 1.6 loads it under sentence-transformers 5, given back what
    sentence-transformers 6 took from it: its own model type (6.x 'converts' a ColBERT folder to a plain
    SentenceTransformer, dropping the Dense), its config read (PyLate reads config_sentence_transformers.json in a
    5.x loading hook 6.x no longer calls: the settings are passed as the arguments it would have set), and the 5.x
    Transformer.tokenize (as tests/test_multivector_encoder.py)."""
    models = pytest.importorskip("pylate.models")

    class ColBERT(models.ColBERT):
        model_type = "ColBERT"

    c = json.loads((folder / "config_sentence_transformers.json").read_text())
    keys = ("query_prefix", "document_prefix", "query_length", "document_length", "do_query_expansion",
            "attend_to_expansion_tokens", "skiplist_words")
    cb = ColBERT(str(folder), device="cpu", trust_remote_code=True, **{k: c[k] for k in keys})
    first = cb._first_module()
    first.tokenize = lambda texts, padding=True: dict(first.tokenizer(
        texts, padding=padding, truncation="longest_first", return_tensors="pt", max_length=first.max_seq_length))
    cb._text_length = len
    return cb


def test_head_adds_markers_and_projection(dense):
    enc = _colbert(dense)
    assert enc.late.insert_ids == {"query": TINY_VOCAB, "document": TINY_VOCAB + 1}  # "[Q] ", "[D] " appended
    assert enc.config.vocab_size == TINY_VOCAB + 2 and enc.model.embeddings.word.num_embeddings == TINY_VOCAB + 2
    assert enc.dim == DIM and enc.head.dense[-1].linear.bias is None
    q = enc.encode_query(QUERIES, output="multivector")
    assert {x.shape for x in q} == {(QL, DIM)}  # expanded to the query length
    assert all(abs(np.linalg.norm(x, axis=1) - 1).max() < 1e-5 for x in q)
    with pytest.raises(ValueError, match="plain text encoder"):
        add_colbert_head(enc)


def test_trained_folder_loads_in_encoderkit_pylate_and_sentence_transformers(dense, tmp_path):
    enc = _colbert(dense)
    before = [p.detach().clone() for p in (enc.head.dense[-1].linear.weight, enc.model.embeddings.word.weight)]
    history = train_colbert(enc, _pairs(), TrainConfig(epochs=1, batch_size=8, lr=1e-3, warmup_steps=0, seed=0,
                                                       restore_best=False, progress=False))
    assert len([h for h in history if "train_loss" in h]) == 1 and np.isfinite(history[-1]["train_loss"])
    after = (enc.head.dense[-1].linear.weight, enc.model.embeddings.word.weight)
    assert all((a - b).abs().max() > 1e-4 for a, b in zip(after, before)), "training changed nothing"
    assert (after[1][TINY_VOCAB:] - before[1][TINY_VOCAB:]).abs().max() > 1e-4  # the markers' rows learn too
    q, d = enc.encode_query(QUERIES, output="multivector"), enc.encode_document(DOCS, output="multivector")

    folder = enc.save(tmp_path / "colbert")
    c = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert (c["model_type"], c["query_prefix"], c["query_length"], c["document_length"]) == ("ColBERT", "[Q] ", QL, DL)
    again = encoderkit.load(folder)
    assert again.late is not None and again.late.layout == "pylate" and again.dim == DIM
    _same(again.encode_query(QUERIES, output="multivector"), q, 1e-6)
    _same(again.encode_document(DOCS, output="multivector"), d, 1e-6)

    cb = _pylate(folder)
    assert (cb.query_prefix_id, cb.document_prefix_id) == (TINY_VOCAB, TINY_VOCAB + 1)
    _same(list(cb.encode(QUERIES, is_query=True, convert_to_numpy=True)), q)
    _same(list(cb.encode(DOCS, is_query=False, convert_to_numpy=True)), d)

    st = pytest.importorskip("sentence_transformers")
    mve = st.MultiVectorEncoder(str(folder), device="cpu")
    _same(list(mve.encode_query(QUERIES, convert_to_numpy=True)), q)
    _same(list(mve.encode_document(DOCS, convert_to_numpy=True)), d)


def test_training_lowers_the_loss_on_its_batch(dense):
    from encoderkit.train.recipes.colbert import ColBERTTrainable

    enc = _colbert(dense)
    pairs = _pairs(8, seed=5)
    batch = ([p[0] for p in pairs], [p[1] for p in pairs], [])
    model = ColBERTTrainable(enc)
    with torch.no_grad():
        start = float(model.loss(batch))
    train_colbert(enc, pairs * 4, TrainConfig(epochs=1, batch_size=8, lr=1e-3, warmup_steps=0, seed=0,
                                              shuffle=False, restore_best=False, progress=False))
    with torch.no_grad():
        end = float(ColBERTTrainable(enc).loss(batch))
    assert end < start - 0.1, (start, end)


def test_examples_and_negatives():
    assert as_examples([("q", "d"), {"query": "q2", "positive": "d2", "negatives": ["n"]}]) == \
        [("q", "d", []), ("q2", "d2", ["n"])]
    with pytest.raises(ValueError, match="example 1"):
        as_examples([("q", "d"), ("q", "")])
    from encoderkit.train.recipes.colbert import _collate

    qs, ps, ns = _collate(None)([("a", "A", ["x", "y"]), ("b", "B", ["z"])])
    assert (qs, ps, ns) == (["a", "b"], ["A", "B"], ["x", "z"])  # the fewest negatives any record has


def test_cli_recipe(dense, tmp_path):
    from encoderkit.cli import main

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{q}\t{d}\n" for q, d in _pairs(16)), encoding="utf-8")
    out = tmp_path / "cli_colbert"
    rc = main(["train", "colbert", "--data", str(tsv), "--model", str(dense), "--out", str(out), "--batch-size", "8",
               "--dim", str(DIM), "--query-length", str(QL), "--document-length", str(DL), "--lr", "1e-3",
               "--no-progress"])
    assert rc == 0
    enc = encoderkit.load(out)
    assert enc.late is not None and enc.dim == DIM
    assert "ColBERT" in (out / "README.md").read_text() and (out / "training_history.json").is_file()
    assert {x.shape for x in enc.encode_query(QUERIES, output="multivector")} == {(QL, DIM)}


def test_hard_negatives_join_the_candidates(dense):
    from encoderkit.objectives.late_interaction import maxsim_contrastive_loss
    from encoderkit.train.recipes.colbert import ColBERTTrainable

    enc = _colbert(dense)
    pairs = _pairs(4, seed=7)
    negs = sentences(4, TINY_VOCAB, seed=8, max_len=15)
    model = ColBERTTrainable(enc)
    with torch.no_grad():
        got = float(model.loss(([q for q, _ in pairs], [d for _, d in pairs], negs)))
        q, qk = model.tokens([q for q, _ in pairs], "query")
        d, dk = model.tokens([d for _, d in pairs] + negs, "document")  # one padded batch: same vectors, same mask
        want = float(maxsim_contrastive_loss(q, d[:4], qk, dk[:4], 1.0, d[4:], dk[4:]))
        without = float(model.loss(([q for q, _ in pairs], [d for _, d in pairs], [])))
    assert abs(got - want) <= 1e-5 and got > without  # more candidates, a larger loss
    records = [{"query": q, "positive": d, "negatives": [n]}
               for (q, d), n in zip(_pairs(16, seed=9), sentences(16, TINY_VOCAB, seed=10))]
    history = train_colbert(enc, records, TrainConfig(epochs=1, batch_size=8, lr=1e-3, seed=0, restore_best=False,
                                                      progress=False))
    assert np.isfinite(history[-1]["train_loss"])
