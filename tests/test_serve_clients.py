"""The real client packages (openai, ollama, langchain-openai) and plain HTTP (TEI) against a live
encoderkit server on loopback: vectors equal Encoder.encode, errors come in each API's own format."""
from __future__ import annotations

import base64
import functools
import shutil

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import encoderkit  # noqa: E402
from encoderkit.serve.app import create_app  # noqa: E402
from encoderkit.serve.metrics import Metrics  # noqa: E402
from encoderkit.serve.models import EmbeddingModel, ModelRegistry, RerankModel  # noqa: E402
from encoderkit.serve.state import ServeConfig  # noqa: E402
from encoderkit.serve.testing import LiveServer  # noqa: E402

TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply on Monday.", "hi",
         "A considerably longer sentence about the migration patterns of arctic terns across the globe."]


def tiny_cross_encoder(path):
    """A random 2-layer BERT cross-encoder (one label) saved with the MiniLM tokenizer."""
    transformers = pytest.importorskip("transformers")
    import torch

    from encoderkit.checkpoints.hub import packaged_folder

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=512, num_labels=1)
    transformers.BertForSequenceClassification(cfg).eval().save_pretrained(path)
    tok_dir = packaged_folder("sentence-transformers/all-MiniLM-L6-v2")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tok_dir / f, path / f)
    return path


@functools.lru_cache(maxsize=1)
def shared_encoder():
    """MiniLM, loaded once for all the serve test modules."""
    return encoderkit.load("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def enc():
    return shared_encoder()


@pytest.fixture(scope="module")
def server(enc, tmp_path_factory):
    from encoderkit.tasks.rerank import CrossEncoder

    cfg = ServeConfig(max_inputs=64)
    metrics = Metrics()
    reg = ModelRegistry()
    reg.add(EmbeddingModel("all-MiniLM-L6-v2", enc, cfg.limits, metrics))
    ce_path = tiny_cross_encoder(tmp_path_factory.mktemp("ce"))
    reg.add_reranker(RerankModel("tiny-ce", CrossEncoder.load(ce_path), cfg.limits, metrics))
    with LiveServer(create_app(cfg, registry=reg, metrics=metrics)) as srv:
        srv.ce_path = ce_path
        yield srv


# ------------------------------------------------------------------ OpenAI
def test_openai_client_float_and_base64(server, enc):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    want = enc.encode(TEXTS)
    for fmt in ("float", "base64"):
        res = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS, encoding_format=fmt)
        if fmt == "base64":  # asked for explicitly, the client hands back the string
            got = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in res.data])
        else:
            got = np.array([d.embedding for d in res.data], dtype=np.float32)
        assert [d.index for d in res.data] == list(range(len(TEXTS)))
        assert np.abs(got - want).max() <= 1e-5
        assert res.usage.prompt_tokens == res.usage.total_tokens == sum(len(e.ids) for e in enc.tokenize(TEXTS))
        assert res.model == "all-MiniLM-L6-v2"
    # the client's default asks for base64 and decodes it itself
    res = client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input="hi")
    assert np.abs(np.array(res.data[0].embedding) - enc.encode("hi")).max() <= 1e-5
    # dimensions: Matryoshka truncation, renormalized as Encoder.encode does
    res = client.embeddings.create(model="all-minilm", input=TEXTS[:2], dimensions=64, encoding_format="float")
    assert np.abs(np.array([d.embedding for d in res.data]) - enc.encode(TEXTS[:2], dimensions=64)).max() <= 1e-5
    assert [m.id for m in client.models.list().data] == ["all-MiniLM-L6-v2"]


def test_openai_token_id_inputs(server, enc):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    plain = [enc.tokenizer.encode(t, add_special_tokens=False).ids for t in TEXTS]
    with_specials = [enc.tokenizer.encode(t).ids for t in TEXTS]
    want = enc.encode(TEXTS)
    for ids in (plain, with_specials):
        res = client.embeddings.create(model="all-minilm", input=ids, encoding_format="float")
        assert np.abs(np.array([d.embedding for d in res.data]) - want).max() <= 1e-5
    res = client.embeddings.create(model="all-minilm", input=plain[0], encoding_format="float")  # one token array
    assert np.abs(np.array(res.data[0].embedding) - want[0]).max() <= 1e-5


def test_openai_errors(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert e.value.status_code == 404 and e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="all-minilm", input="word " * 600)
    assert e.value.code == "context_length_exceeded" and "256" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="all-minilm", input=["x"] * 65)
    assert e.value.code == "too_many_inputs"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="all-minilm", input="x", dimensions=1000)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="all-minilm", input=[[1, 2, 999999]])
    r = httpx.post(server.url + "/v1/embeddings", json={"model": "all-minilm"})
    body = r.json()
    assert r.status_code == 400 and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == "input"


def test_langchain_openai_embeddings(server, enc):
    lc = pytest.importorskip("langchain_openai")
    emb = lc.OpenAIEmbeddings(model="all-MiniLM-L6-v2", base_url=server.url + "/v1", api_key="unused",
                              check_embedding_ctx_length=False)
    docs = emb.embed_documents(TEXTS)
    assert np.abs(np.array(docs) - enc.encode(TEXTS)).max() <= 1e-5
    assert np.abs(np.array(emb.embed_query("hi")) - enc.encode("hi")).max() <= 1e-5


# ------------------------------------------------------------------ Ollama
def test_ollama_client(server, enc):
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=server.url)
    res = client.embed(model="all-minilm", input=TEXTS)
    assert np.abs(np.array(res.embeddings) - enc.encode(TEXTS)).max() <= 1e-5
    assert res.model == "all-minilm" and res.prompt_eval_count == sum(len(e.ids) for e in enc.tokenize(TEXTS))
    assert res.total_duration > 0
    res = client.embed(model="all-minilm:latest", input="hi")
    assert np.abs(np.array(res.embeddings[0]) - enc.encode("hi")).max() <= 1e-5
    legacy = client.embeddings(model="all-minilm", prompt=TEXTS[1])
    assert np.abs(np.array(legacy.embedding) - enc.encode(TEXTS[1])).max() <= 1e-5
    names = [m.model for m in client.list().models]
    assert names == ["all-minilm:latest"]
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model="nomic-embed-text", input="x")
    assert e.value.status_code == 404 and "not found" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model="all-minilm", input="word " * 600, truncate=False)
    assert e.value.status_code == 400 and "context length" in e.value.error
    long = client.embed(model="all-minilm", input="word " * 600)  # truncate defaults to true
    assert np.abs(np.array(long.embeddings[0]) - enc.encode("word " * 600)).max() <= 1e-5
    r = httpx.get(server.url + "/api/version")
    assert r.status_code == 200 and r.json()["version"] == encoderkit.__version__
    r = httpx.post(server.url + "/api/embed", json={"input": "x"})
    assert r.status_code == 400 and set(r.json()) == {"error"}


# ------------------------------------------------------------------ TEI
def test_tei_embed(server, enc):
    r = httpx.post(server.url + "/embed", json={"inputs": TEXTS})
    assert r.status_code == 200
    assert np.abs(np.array(r.json()) - enc.encode(TEXTS)).max() <= 1e-5
    r = httpx.post(server.url + "/embed", json={"inputs": "hi", "normalize": False})
    assert np.abs(np.array(r.json()[0]) - enc.encode("hi", normalize=False)).max() <= 1e-5
    r = httpx.post(server.url + "/embed", json={"inputs": "hi", "dimensions": 32})
    assert np.abs(np.array(r.json()[0]) - enc.encode("hi", dimensions=32)).max() <= 1e-5
    long = "alpha " * 300 + "omega " * 300
    r = httpx.post(server.url + "/embed", json={"inputs": long})
    assert r.status_code == 413 and r.json()["error_type"] == "Validation" and "256" in r.json()["error"]
    right = httpx.post(server.url + "/embed", json={"inputs": long, "truncate": True}).json()[0]
    assert np.abs(np.array(right) - enc.encode(long)).max() <= 1e-5
    left = httpx.post(server.url + "/embed", json={"inputs": long, "truncate": True,
                                                   "truncation_direction": "Left"}).json()[0]
    assert np.abs(np.array(left) - enc.encode("omega " * 254)).max() <= 1e-5  # the last 254 words + [CLS] [SEP]
    r = httpx.post(server.url + "/embed", json={"inputs": ["x"] * 65})
    assert r.status_code == 413 and r.json()["error_type"] == "Validation"
    r = httpx.post(server.url + "/embed", json={"inputs": []})
    assert r.status_code == 400 and r.json()["error_type"] == "Empty"
    r = httpx.post(server.url + "/embed", json={"inputs": "x", "prompt_name": "query"})
    assert r.status_code == 422 and r.json()["error_type"] == "Tokenizer"
    r = httpx.post(server.url + "/embed", json={"inputs": 5})
    assert r.status_code == 422 and set(r.json()) == {"error", "error_type"}


def test_tei_rerank_info_health(server):
    from encoderkit.tasks.rerank import CrossEncoder

    ce = CrossEncoder.load(server.ce_path)
    passages = ["Paris is the capital of France.", "Bananas are yellow.", "The Eiffel tower is in Paris.", "x"]
    r = httpx.post(server.url + "/rerank", json={"query": "capital of france", "texts": passages,
                                                 "return_text": True})
    assert r.status_code == 200
    got = r.json()
    logits = ce.score("capital of france", passages)
    want = 1 / (1 + np.exp(-logits))
    assert [g["index"] for g in got] == list(np.argsort(-want, kind="stable"))
    for g in got:
        assert abs(g["score"] - want[g["index"]]) <= 1e-5 and g["text"] == passages[g["index"]]
    raw = httpx.post(server.url + "/rerank", json={"query": "capital of france", "texts": passages,
                                                   "raw_scores": True}).json()
    assert all(abs(g["score"] - logits[g["index"]]) <= 1e-5 and "text" not in g for g in raw)
    info = httpx.get(server.url + "/info").json()
    assert info["model_id"] == "all-MiniLM-L6-v2" and info["max_input_length"] == 256
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["rerank_models"] == ["tiny-ce"]
    assert httpx.get(server.url + "/health").status_code == 200
    r = httpx.get(server.url + "/no/such/route")
    assert r.status_code == 404 and r.json()["error_type"] == "NotFound"


def test_model_names_and_prompts(server, enc):
    reg = server.app.state.server.registry
    m = reg.get(None)
    for name in ("all-minilm", "all-minilm:latest", "ALL-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2",
                 "all-MiniLM-L6-v2:latest"):
        assert reg.get(name) is m, name
    assert reg.get("all-minilm:v2") is None and reg.get("bert-base") is None
    enc.prompts["query"] = "query: "  # a model with prompts: TEI's prompt_name prefixes the text
    try:
        r = httpx.post(server.url + "/embed", json={"inputs": ["heaps"], "prompt_name": "query"})
        assert np.abs(np.array(r.json()) - enc.encode(["heaps"], prompt_name="query")).max() <= 1e-5
        assert np.abs(np.array(r.json()) - enc.encode(["heaps"])).max() > 1e-3
    finally:
        del enc.prompts["query"]
    r = httpx.post(server.url + "/api/embed", json={"model": "all-minilm", "input": ["heaps"], "dimensions": 16})
    assert np.abs(np.array(r.json()["embeddings"]) - enc.encode(["heaps"], dimensions=16)).max() <= 1e-5


def test_model_failure_is_reported_in_each_format(server, monkeypatch):
    m = server.app.state.server.registry.get(None)

    def broken(seqs):
        raise RuntimeError("simulated backend failure")

    monkeypatch.setattr(m.batcher, "run_batch", broken)
    r = httpx.post(server.url + "/embed", json={"inputs": "x"})
    assert r.status_code == 424 and r.json()["error_type"] == "Backend"
    r = httpx.post(server.url + "/v1/embeddings", json={"model": "all-minilm", "input": "x"})
    assert r.status_code == 500 and r.json()["error"]["code"] == "model_error"
    monkeypatch.undo()
    assert httpx.post(server.url + "/embed", json={"inputs": "x"}).status_code == 200


def test_ollama_empty_input_and_too_many(server):
    r = httpx.post(server.url + "/api/embed", json={"model": "all-minilm", "input": ""})
    assert r.status_code == 200 and r.json()["embeddings"] == [] and r.json()["prompt_eval_count"] == 0
    assert httpx.post(server.url + "/api/embeddings", json={"model": "all-minilm", "prompt": ""}).json() == {"embedding": []}
    r = httpx.post(server.url + "/api/embed", json={"model": "all-minilm", "input": ["x"] * 65})
    assert r.status_code == 400 and "at most 64" in r.json()["error"]
