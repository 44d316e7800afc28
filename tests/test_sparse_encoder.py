"""Sparse (SPLADE) encoders against sentence-transformers 6 `SparseEncoder` on tiny random masked-LM checkpoints
written by transformers: MLM head + SpladePooling (max / sum, relu / log1p_relu), the Transformer(fill-mask) and the
older MLMTransformer module names, BERT and DistilBERT heads (tied and untied decoders), max_active_dims, an
inference-free SparseStaticEmbedding query side in a Router, decode, and saving back."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import encoderkit
from tiny_checkpoints import sentences, write_tokenizer

st = pytest.importorskip("sentence_transformers")
transformers = pytest.importorskip("transformers")
logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)

V = 120
TEXTS = sentences(9, V, seed=5, min_len=1, max_len=30) + ["w1", "w3 w3 w3 w4"]


def _mlm(folder, family="bert", tied=True, seed=0):
    torch.manual_seed(seed)
    if family == "distilbert":
        cfg = transformers.DistilBertConfig(vocab_size=V, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                            max_position_embeddings=64, tie_word_embeddings=tied)
        m = transformers.DistilBertForMaskedLM(cfg)
    else:
        cfg = transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=tied)
        m = transformers.BertForMaskedLM(cfg)
    with torch.no_grad():  # logits big enough that relu keeps a fair share of the vocabulary
        for n, p in m.named_parameters():
            if "LayerNorm" in n or "layer_norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
            if n.endswith("predictions.bias") or n.endswith("vocab_projector.bias"):
                p.copy_(torch.randn_like(p) * 0.5)
    m.eval().save_pretrained(folder)
    write_tokenizer(folder, V, "bert", model_max_length=64)
    return folder


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    return _mlm(tmp_path_factory.mktemp("mlm"))


def _splade_folder(mlm, out, pooling="max", activation="relu", max_active_dims=None):
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    model = st.SparseEncoder(modules=[Transformer(str(mlm), transformer_task="fill-mask"),
                                      SpladePooling(pooling, activation)], device="cpu", max_active_dims=max_active_dims)
    model.save(str(out))
    return out


def _ref(folder, texts=TEXTS, side=None, **kw):
    m = st.SparseEncoder(str(folder), device="cpu")
    fn = m.encode if side is None else getattr(m, f"encode_{side}")
    return fn(texts, convert_to_sparse_tensor=False, **kw).numpy(), m


def _check(ours, ref, tol=1e-5):
    assert sp.isspmatrix_csr(ours) and ours.dtype == np.float32 and ours.shape == ref.shape
    dense = ours.toarray()
    assert ((dense != 0) == (ref != 0)).all(), "active dimensions differ"
    diff = float(np.abs(dense - ref).max())
    assert diff <= tol, f"max abs diff {diff}"
    return diff


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_splade_pooling(mlm_dir, tmp_path, pooling, activation):
    folder = _splade_folder(mlm_dir, tmp_path / "splade", pooling, activation)
    enc = encoderkit.load(folder)
    ref, model = _ref(folder)
    ours = enc.encode(TEXTS, output="sparse", batch_size=4)
    _check(ours, ref)
    assert ours.shape == (len(TEXTS), V) and enc.dim == V
    assert 0 < ours.nnz < ours.shape[0] * V  # sparse, not empty
    # decode: the same (token, weight) pairs as SparseEncoder.decode, heaviest first
    mine, theirs = enc.decode(ours[2], top_k=5), model.decode(torch.as_tensor(ref[2]).to_sparse(), top_k=5)
    assert [t for t, _ in mine] == [t for t, _ in theirs]
    assert np.allclose([w for _, w in mine], [w for _, w in theirs], atol=1e-5)
    assert len(enc.decode(ours[:3])) == 3
    # one string: a 1-row matrix; output="pooled": the same weights as a dense array
    assert enc.encode(TEXTS[0], output="sparse").shape == (1, V)
    np.testing.assert_allclose(enc.encode(TEXTS, batch_size=4), ours.toarray(), atol=1e-6)


@pytest.mark.parametrize("k", [1, 4, 17])
def test_max_active_dims(mlm_dir, tmp_path, k):
    folder = _splade_folder(mlm_dir, tmp_path / "splade", max_active_dims=k)
    enc = encoderkit.load(folder)
    assert enc.sparse.max_active_dims == k
    ours = enc.encode(TEXTS, output="sparse")
    _check(ours, _ref(folder)[0])
    assert ours.getnnz(axis=1).max() <= k
    # per call, as SparseEncoder.encode(max_active_dims=...)
    _check(enc.encode(TEXTS, output="sparse", max_active_dims=3), _ref(folder, max_active_dims=3)[0])


def test_older_mlmtransformer_module_name(mlm_dir, tmp_path):
    folder = _splade_folder(mlm_dir, tmp_path / "splade", "sum")
    mods = json.loads((folder / "modules.json").read_text())
    mods[0]["type"] = "sentence_transformers.sparse_encoder.modules.mlm_transformer.MLMTransformer"
    (folder / "modules.json").write_text(json.dumps(mods))
    cfg = json.loads((folder / "sentence_bert_config.json").read_text())
    cfg.pop("transformer_task")
    (folder / "sentence_bert_config.json").write_text(json.dumps(cfg))
    _check(encoderkit.load(folder).encode(TEXTS, output="sparse"), _ref(folder)[0])


@pytest.mark.parametrize("family,tied", [("bert", False), ("distilbert", True), ("distilbert", False)])
def test_other_heads(tmp_path, family, tied):
    mlm = _mlm(tmp_path / "mlm", family, tied, seed=2)
    folder = _splade_folder(mlm, tmp_path / "splade")
    enc = encoderkit.load(folder)
    _check(enc.encode(TEXTS, output="sparse"), _ref(folder)[0])
    enc.save(tmp_path / "resaved")
    _check(encoderkit.load(tmp_path / "resaved").encode(TEXTS, output="sparse"), _ref(folder)[0])
    _check(enc.encode(TEXTS, output="sparse"), _ref(tmp_path / "resaved")[0])


def test_save_round_trip(mlm_dir, tmp_path):
    folder = _splade_folder(mlm_dir, tmp_path / "splade", "max", "log1p_relu", max_active_dims=9)
    enc = encoderkit.load(folder)
    enc.save(tmp_path / "resaved")
    arch = json.loads((tmp_path / "resaved" / "config.json").read_text())["architectures"]
    assert arch == ["BertForMaskedLM"]
    ref, _ = _ref(tmp_path / "resaved")  # SparseEncoder loads our folder: same vectors, same max_active_dims
    _check(enc.encode(TEXTS, output="sparse"), ref)
    _check(encoderkit.load(tmp_path / "resaved").encode(TEXTS, output="sparse"), _ref(folder)[0])
    # transformers reads the MLM checkpoint too: same logits as the original
    ids = torch.tensor([[2, 20, 30, 40, 3]])
    a = transformers.AutoModelForMaskedLM.from_pretrained(folder).eval()(input_ids=ids).logits
    b = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "resaved").eval()(input_ids=ids).logits
    assert (a - b).abs().max() <= 1e-5


def test_inference_free_router(mlm_dir, tmp_path):
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling

    tok = transformers.AutoTokenizer.from_pretrained(str(mlm_dir))
    torch.manual_seed(4)
    router = Router.for_query_document(
        query_modules=[SparseStaticEmbedding(tok, weight=torch.rand(V) * 3, frozen=False)],
        document_modules=[Transformer(str(mlm_dir), transformer_task="fill-mask"), SpladePooling("max")])
    st.SparseEncoder(modules=[router], device="cpu", max_active_dims=12).save(str(tmp_path / "router"))
    enc = encoderkit.load(tmp_path / "router")
    assert set(enc.routes) == {"query", "document"}
    for side in ("query", "document"):
        ours = getattr(enc, f"encode_{side}")(TEXTS, output="sparse")
        _check(ours, _ref(tmp_path / "router", side=side)[0])
    # a query's weights are the table's entries of the words it holds (no network)
    q = enc.encode_query(["w3 w3 w4"], output="sparse")
    assert sorted(t for t, _ in enc.decode(q)) == ["w3", "w4"]
    enc.save(tmp_path / "resaved")
    for side in ("query", "document"):
        _check(getattr(encoderkit.load(tmp_path / "resaved"), f"encode_{side}")(TEXTS, output="sparse"),
               _ref(tmp_path / "resaved", side=side)[0])
        _check(getattr(enc, f"encode_{side}")(TEXTS, output="sparse"), _ref(tmp_path / "resaved", side=side)[0])


def test_errors(mlm_dir, tmp_path):
    enc = encoderkit.load(_splade_folder(mlm_dir, tmp_path / "splade"))
    with pytest.raises(ValueError, match="max_active_dims"):
        enc.encode(TEXTS, output="sparse", max_active_dims=0)
    with pytest.raises(ValueError, match="sparse encoder"):
        enc.encode(TEXTS, output="multivector")
    with pytest.raises(ValueError, match="top_k"):
        enc.decode(enc.encode(TEXTS[:1], output="sparse"), top_k=0)
