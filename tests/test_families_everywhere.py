"""The new families work everywhere a BERT does (issue 18, item 7): `encoderkit info`, `encoderkit encode`, a
collection (add + vector search), the server's OpenAI, Ollama and TEI routes (vectors equal Encoder.encode), and
a fine-tuning step where the family is an encoder. One tiny sentence-transformers 6 folder per family."""
from __future__ import annotations

import json

import numpy as np
import pytest

import encoderkit
from encoderkit.cli import main as cli
from tiny_checkpoints import TINY_FAMILIES, TINY_VOCAB, sentences, tiny_family_folder

transformers = pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")

FAMILIES = [f for f in TINY_FAMILIES if f != "bert"]  # the families added after BERT
TEXTS = sentences(6, TINY_VOCAB, seed=3, max_len=30)


@pytest.fixture(scope="module", params=FAMILIES)
def folder(request, tmp_path_factory):
    return tiny_family_folder(request.param, tmp_path_factory.mktemp(request.param),
                              prompts={"query": "w1 w2 ", "document": ""})


def test_info_and_encode_cli(folder, tmp_path, capsys):
    assert cli(["info", "--json", str(folder)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["embedding_size"] == 32 and info["max_length"] == 48 and info["parameters"] > 0
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    assert cli(["encode", "-m", str(folder), str(src), "-o", str(tmp_path / "v.npy")]) == 0
    got = np.load(tmp_path / "v.npy")
    assert np.abs(got - encoderkit.load(folder).encode(TEXTS)).max() <= 1e-5


def test_collection_search_finds_each_text(folder, tmp_path):
    from encoderkit.store.collection import Collection

    enc = encoderkit.load(folder)
    coll = Collection.open(tmp_path / "c", enc)
    coll.add(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))])
    for i, t in enumerate(TEXTS):
        hits = coll.search(t, k=1, mode="vector")
        assert hits[0].id == f"d{i}", (folder, i)


def test_server_apis_equal_encode(folder):
    from encoderkit.serve.app import create_app
    from encoderkit.serve.models import EmbeddingModel, ModelRegistry
    from encoderkit.serve.state import ServeConfig
    from encoderkit.serve.testing import LiveServer

    enc = encoderkit.load(folder)
    want = enc.encode(TEXTS)
    cfg = ServeConfig()
    reg = ModelRegistry()
    reg.add(EmbeddingModel("tiny", enc, cfg.limits))
    with LiveServer(create_app(cfg, registry=reg)) as srv:
        r = httpx.post(srv.url + "/v1/embeddings", json={"model": "tiny", "input": TEXTS, "encoding_format": "float"})
        assert r.status_code == 200, r.text
        assert np.abs(np.array([d["embedding"] for d in r.json()["data"]]) - want).max() <= 1e-5
        r = httpx.post(srv.url + "/api/embed", json={"model": "tiny", "input": TEXTS})
        assert r.status_code == 200, r.text
        assert np.abs(np.array(r.json()["embeddings"]) - want).max() <= 1e-5
        r = httpx.post(srv.url + "/embed", json={"inputs": TEXTS})
        assert r.status_code == 200, r.text
        assert np.abs(np.array(r.json()) - want).max() <= 1e-5


def test_fine_tuning_moves_an_encoder_family(folder):
    """One epoch of in-batch-negatives training changes the vectors and keeps them finite (decoders too)."""
    from encoderkit.train.recipes.text import train_contrastive
    from encoderkit.train.trainer import TrainConfig

    enc = encoderkit.load(folder)
    before = enc.encode(TEXTS)
    pairs = list(zip(sentences(16, TINY_VOCAB, seed=5), sentences(16, TINY_VOCAB, seed=6)))
    hist = train_contrastive(enc, pairs, TrainConfig(epochs=1, batch_size=8, lr=1e-3, warmup_steps=0,
                                                     restore_best=False))
    after = enc.encode(TEXTS)
    assert hist and np.isfinite(after).all()
    assert np.abs(after - before).max() > 1e-3
