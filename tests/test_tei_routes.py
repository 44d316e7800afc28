"""TEI's other routes against a live server, with TEI-shaped requests and responses: /embed_sparse, /embed_all,
/tokenize, /decode, /similarity, /predict (and their errors in TEI's {"error", "error_type"} format); and the
collection API / web page with sparse, late and weighted hybrid search. The sparse model is MiniLM with a
stand-in sparse / multi-vector output following Encoder's contract (log(1 + count) per wordpiece; MiniLM's
token vectors), so the routes are checked against the encoder's own outputs."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from encoderkit.serve.app import create_app  # noqa: E402
from encoderkit.serve.metrics import Metrics  # noqa: E402
from encoderkit.serve.models import EmbeddingModel, ModelRegistry, RerankModel  # noqa: E402
from encoderkit.serve.state import ServeConfig  # noqa: E402
from encoderkit.serve.testing import LiveServer  # noqa: E402
from test_serve_clients import shared_encoder  # noqa: E402

TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply on Monday.", "hi"]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


class SparseMiniLM:
    """MiniLM plus output="sparse" (CSR of log(1 + count) per non-special wordpiece) and output="multivector"
    (its token vectors), as Encoder promises them."""

    def __init__(self, enc):
        self._enc, self.name = enc, "minilm-sparse"

    def __getattr__(self, key):
        return getattr(self._enc, key)

    def encode(self, texts, *, output: str = "pooled", prompt_name=None, prompt=None, task=None, **kw):
        if output == "sparse":
            from scipy.sparse import csr_matrix

            single = isinstance(texts, str)
            texts = [texts] if single else list(texts)
            prefix = self._enc._prefix(prompt, prompt_name)
            rows, cols, vals = [], [], []
            for i, e in enumerate(self._enc.tokenize([prefix + t for t in texts])):
                ids, counts = np.unique([t for t, s in zip(e.ids, e.special_tokens_mask) if not s], return_counts=True)
                rows += [i] * len(ids)
                cols += ids.tolist()
                vals += np.log1p(counts).tolist()
            return csr_matrix((np.asarray(vals, np.float32), (rows, cols)),
                              shape=(len(texts), self._enc.tokenizer.get_vocab_size()))
        if output == "multivector":
            return self._enc.encode(texts, output="tokens", prompt_name=prompt_name, prompt=prompt, **kw)
        return self._enc.encode(texts, output=output, prompt_name=prompt_name, prompt=prompt, **kw)

    def encode_query(self, texts, **kw):
        return self.encode(texts, **kw)

    def encode_document(self, texts, **kw):
        return self.encode(texts, **kw)


def tiny_classifier(path):
    """A random 2-layer BERT sequence classifier with three named labels, saved with the MiniLM tokenizer."""
    transformers = pytest.importorskip("transformers")
    import torch

    from encoderkit.checkpoints.hub import packaged_folder

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=512, num_labels=3,
                                  id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    transformers.BertForSequenceClassification(cfg).eval().save_pretrained(path)
    tok_dir = packaged_folder("sentence-transformers/all-MiniLM-L6-v2")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tok_dir / f, path / f)
    return path


@pytest.fixture(scope="module")
def enc():
    return shared_encoder()


@pytest.fixture(scope="module")
def server(enc, tmp_path_factory):
    from encoderkit.tasks.rerank import CrossEncoder

    cfg = ServeConfig(max_inputs=64, store=str(tmp_path_factory.mktemp("store")))
    metrics = Metrics()
    reg = ModelRegistry()
    reg.add(EmbeddingModel("all-MiniLM-L6-v2", enc, cfg.limits, metrics))
    reg.add(EmbeddingModel("minilm-sparse", SparseMiniLM(enc), cfg.limits, metrics))
    path = tiny_classifier(tmp_path_factory.mktemp("cls"))
    reg.add_reranker(RerankModel("tiny-cls", CrossEncoder.load(path), cfg.limits, metrics))
    with LiveServer(create_app(cfg, registry=reg, metrics=metrics)) as srv:
        srv.cls_path = path
        yield srv


def _tei_error(r, status: int, kind: str, text: str = ""):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == kind, body
    assert text in body["error"], body


# ------------------------------------------------------------------ /embed_sparse
def test_embed_sparse(server, enc):
    sm = SparseMiniLM(enc)
    r = httpx.post(server.url + "/embed_sparse", json={"inputs": TEXTS, "model": "minilm-sparse"})
    assert r.status_code == 200
    ref = sm.encode(TEXTS, output="sparse")
    for row, got in zip(ref, r.json()):
        assert [g["index"] for g in got] == row.indices.tolist()
        assert np.allclose([g["value"] for g in got], row.data, atol=1e-6)
        assert all(set(g) == {"index", "value"} for g in got)
    one = httpx.post(server.url + "/embed_sparse", json={"inputs": "the the cat", "model": "minilm-sparse"}).json()
    assert len(one) == 1 and max(g["value"] for g in one[0]) == pytest.approx(np.log(3))
    long = "alpha " * 300 + "omega"
    _tei_error(httpx.post(server.url + "/embed_sparse", json={"inputs": long, "model": "minilm-sparse"}),
               413, "Validation", "less than 256 tokens")
    right = httpx.post(server.url + "/embed_sparse", json={"inputs": long, "model": "minilm-sparse",
                                                           "truncate": True}).json()[0]
    left = httpx.post(server.url + "/embed_sparse", json={"inputs": long, "model": "minilm-sparse", "truncate": True,
                                                          "truncation_direction": "Left"}).json()[0]
    omega = enc.tokenizer.token_to_id("omega")
    assert omega not in [g["index"] for g in right] and omega in [g["index"] for g in left]
    # a dense-only model has no sparse output: TEI's Backend error
    _tei_error(httpx.post(server.url + "/embed_sparse", json={"inputs": "x"}), 424, "Backend", "sparse")
    _tei_error(httpx.post(server.url + "/embed_sparse", json={"inputs": [], "model": "minilm-sparse"}), 400, "Empty")
    _tei_error(httpx.post(server.url + "/embed_sparse", json={"inputs": "x", "model": "minilm-sparse",
                                                              "prompt_name": "nope"}), 422, "Tokenizer", "nope")
    _tei_error(httpx.post(server.url + "/embed_sparse", json={"inputs": 3}), 422, "Validation")


# ------------------------------------------------------------------ /embed_all
def test_embed_all(server, enc):
    r = httpx.post(server.url + "/embed_all", json={"inputs": TEXTS[:2]})
    assert r.status_code == 200
    got = r.json()
    ref = enc.encode(TEXTS[:2], output="tokens")
    assert [len(g) for g in got] == [len(x) for x in ref] and len(got[0][0]) == 384
    for g, x in zip(got, ref):
        assert np.abs(np.array(g) - x).max() <= 1e-4
    long = "alpha " * 300
    _tei_error(httpx.post(server.url + "/embed_all", json={"inputs": long}), 413, "Validation")
    assert len(httpx.post(server.url + "/embed_all", json={"inputs": long, "truncate": True}).json()[0]) == 256


# ------------------------------------------------------------------ /tokenize and /decode
def test_tokenize_and_decode(server, enc):
    text = "Hello world, encoders!"
    r = httpx.post(server.url + "/tokenize", json={"inputs": text})
    assert r.status_code == 200
    toks = r.json()[0]
    e = enc.tokenizer.encode(text)
    assert [t["id"] for t in toks] == e.ids
    assert toks[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert toks[1] == {"id": e.ids[1], "text": "Hello", "special": False, "start": 0, "stop": 5}
    assert all(text[t["start"]:t["stop"]] == t["text"] for t in toks if not t["special"])
    plain = httpx.post(server.url + "/tokenize", json={"inputs": [text, "hi"], "add_special_tokens": False}).json()
    assert len(plain) == 2 and not any(t["special"] for t in plain[0]) and [t["id"] for t in plain[1]] == [7632]
    long = httpx.post(server.url + "/tokenize", json={"inputs": "word " * 400}).json()[0]
    assert len(long) == 402  # /tokenize does not truncate
    r = httpx.post(server.url + "/decode", json={"ids": e.ids})
    assert r.status_code == 200 and r.json() == ["hello world, encoders!"]
    r = httpx.post(server.url + "/decode", json={"ids": [e.ids, [101, 7632, 102]], "skip_special_tokens": False})
    assert r.json()[1] == "[CLS] hi [SEP]"
    _tei_error(httpx.post(server.url + "/decode", json={"ids": [5, 999999]}), 422, "Tokenizer", "999999")
    _tei_error(httpx.post(server.url + "/decode", json={"ids": []}), 400, "Empty")
    _tei_error(httpx.post(server.url + "/tokenize", json={"inputs": []}), 400, "Empty")
    _tei_error(httpx.post(server.url + "/tokenize", content=b'{"inputs": "\\ud800"}',
                          headers={"content-type": "application/json"}), 400, "Validation")


# ------------------------------------------------------------------ /similarity
def test_similarity(server, enc):
    body = {"inputs": {"source_sentence": "A cat sits.", "sentences": ["A kitten rests.", "Markets fell.", "a cat"]}}
    r = httpx.post(server.url + "/similarity", json=body)
    assert r.status_code == 200
    X = enc.encode(["A cat sits.", *body["inputs"]["sentences"]], normalize=True)
    assert np.allclose(r.json(), X[1:] @ X[0], atol=1e-5) and len(r.json()) == 3
    _tei_error(httpx.post(server.url + "/similarity", json={"inputs": {"source_sentence": "x", "sentences": []}}),
               400, "Empty")
    _tei_error(httpx.post(server.url + "/similarity", json={"inputs": "x"}), 422, "Validation")


# ------------------------------------------------------------------ /predict
def test_predict(server):
    from encoderkit.tasks.rerank import CrossEncoder

    ce = CrossEncoder.load(server.cls_path)
    r = httpx.post(server.url + "/predict", json={"inputs": "I like you."})
    assert r.status_code == 200
    got = r.json()
    z = ce.logits(["I like you."])[0]
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert [g["label"] for g in got] == [LABELS[i] for i in np.argsort(-p, kind="stable")]
    assert np.allclose([g["score"] for g in got], np.sort(p)[::-1], atol=1e-5)
    raw = httpx.post(server.url + "/predict", json={"inputs": "I like you.", "raw_scores": True}).json()
    assert np.allclose(sorted(g["score"] for g in raw), np.sort(z), atol=1e-5)
    pair = httpx.post(server.url + "/predict", json={"inputs": ["a question", "an answer"], "raw_scores": True}).json()
    zp = ce.logits([("a question", "an answer")])[0]
    assert {g["label"]: g["score"] for g in pair} == pytest.approx({LABELS[i]: float(zp[i]) for i in range(3)}, abs=1e-5)
    batch = httpx.post(server.url + "/predict", json={"inputs": [["I like you."], ["I hate it.", "why"], "plain"],
                                                      "raw_scores": True}).json()
    zb = ce.logits(["I like you.", ("I hate it.", "why"), "plain"])
    assert len(batch) == 3 and all(len(b) == 3 for b in batch)
    for b, zz in zip(batch, zb):
        assert max(g["score"] for g in b) == pytest.approx(float(zz.max()), abs=1e-5)
    _tei_error(httpx.post(server.url + "/predict", json={"inputs": []}), 400, "Empty")
    _tei_error(httpx.post(server.url + "/predict", json={"inputs": [["a", "b", "c"]]}), 422, "Validation", "3 texts")
    _tei_error(httpx.post(server.url + "/predict", json={"inputs": "x " * 600}), 413, "Validation", "less than 512")
    assert httpx.post(server.url + "/predict", json={"inputs": "x " * 600, "truncate": True}).status_code == 200
    _tei_error(httpx.post(server.url + "/predict", json={"inputs": "x", "model": "nope"}), 404, "NotFound")


# ------------------------------------------------------------------ collections with sparse / late
def test_collection_sparse_late_hybrid_over_http(server):
    url = server.url
    http = httpx.Client(timeout=120)  # creating probes the model's outputs: slow on a busy 2-core machine
    r = http.post(url + "/collections", json={"name": "multi", "model": "minilm-sparse",
                                               "kinds": ["dense", "sparse", "late"]})
    assert r.status_code == 201, r.text
    assert r.json()["kinds"] == ["dense", "sparse", "late"] and "late" in r.json()["modes"]
    docs = [{"id": "cat", "text": "The cat sat on the mat.", "metadata": {"lang": "en"}},
            {"id": "stock", "text": "Stock markets fell sharply on Monday.", "metadata": {"lang": "en"}},
            {"id": "tern", "text": "Arctic terns migrate across the globe.", "metadata": {"lang": "de"}}]
    assert http.post(url + "/collections/multi/documents", json={"documents": docs}).status_code == 200
    for mode in ("sparse", "late", "vector", "keyword"):
        hits = http.post(url + "/collections/multi/search", json={"query": "a cat on a mat", "mode": mode}).json()
        assert hits["hits"][0]["id"] == "cat" and mode in hits["hits"][0]["scores"], (mode, hits)
    r = http.post(url + "/collections/multi/search", json={"query": "terns migrate", "mode": "hybrid",
                                                            "fusion": "weighted", "weights": {"sparse": 1, "late": 1},
                                                            "modes": ["sparse", "late"]})
    top = r.json()["hits"][0]
    assert top["id"] == "tern" and set(top["scores"]) == {"sparse", "late", "fused"}
    r = http.post(url + "/collections/multi/search", json={"query": "cat", "mode": "late", "where": {"lang": "de"}})
    assert [h["id"] for h in r.json()["hits"]] == ["tern"]
    stats = http.get(url + "/collections/multi/stats").json()
    assert stats["modes"] == ["vector", "keyword", "sparse", "late", "hybrid"]
    # a dense-only collection offers no sparse mode, and says so
    assert http.post(url + "/collections", json={"name": "dense"}).json()["kinds"] == ["dense"]
    http.post(url + "/collections/dense/documents", json={"documents": docs[:1]})
    r = http.post(url + "/collections/dense/search", json={"query": "cat", "mode": "sparse"})
    _tei_error(r, 422, "Validation", "cannot search by sparse")
    assert http.get(url + "/collections/dense/stats").json()["modes"] == ["vector", "keyword", "hybrid"]
    r = http.post(url + "/collections/multi/search", json={"query": "cat", "mode": "colbert"})
    assert r.status_code == 422
