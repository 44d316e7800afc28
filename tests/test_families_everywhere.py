"""The new families work everywhere a BERT does (issue 18, item 7): `encoderkit info`, `encoderkit encode`, a
collection (add + vector search), the server's OpenAI, Ollama and TEI routes (vectors equal Encoder.encode), and
a fine-tuning step where the family is an encoder. One tiny sentence-transformers 6 folder per family."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.cli import main as cli
from tiny_checkpoints import sentences, st_folder, write_tokenizer

transformers = pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")

VOCAB = 120
COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)
DECODER = dict(COMMON, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=7)
# family -> (transformers config class, model class, config fields, tokenizer template, pad token, pooling)
FAMILIES = {
    "mpnet": ("MPNetConfig", "MPNetModel", dict(COMMON, max_position_embeddings=66, pad_token_id=1),
              "roberta", "<s>", "mean"),
    "modernbert": ("ModernBertConfig", "ModernBertModel",
                   dict(COMMON, max_position_embeddings=64, local_attention=8, pad_token_id=0), "bert", "[PAD]", "cls"),
    "nomic_bert": ("NomicBertConfig", "NomicBertModel", dict(COMMON, max_position_embeddings=64, pad_token_id=0),
                   "bert", "[PAD]", "mean"),
    "t5": ("T5Config", "T5EncoderModel", dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                              num_heads=4, feed_forward_proj="gated-gelu", pad_token_id=0),
           "t5", "[PAD]", "mean"),
    "qwen3": ("Qwen3Config", "Qwen3Model", dict(DECODER, head_dim=16), "eos", "<pad>", "lasttoken"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3TextModel",
                    dict(DECODER, head_dim=8, sliding_window=4, use_bidirectional_attention=True, pad_token_id=7),
                    "bos_eos", "<pad>", "mean"),
}
TEXTS = sentences(6, VOCAB, seed=3, max_len=30)


@pytest.fixture(scope="module", params=list(FAMILIES))
def folder(request, tmp_path_factory):
    cfg_name, model_name, kw, template, pad, pooling = FAMILIES[request.param]
    base = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    getattr(transformers, model_name)(getattr(transformers, cfg_name)(**kw)).eval().save_pretrained(base / "hf")
    write_tokenizer(base / "hf", VOCAB, template, pad=pad, model_max_length=48)
    return st_folder(base / "hf", base / "st", pooling=pooling, normalize=True,
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
    pairs = list(zip(sentences(16, VOCAB, seed=5), sentences(16, VOCAB, seed=6)))
    hist = train_contrastive(enc, pairs, TrainConfig(epochs=1, batch_size=8, lr=1e-3, warmup_steps=0,
                                                     restore_best=False))
    after = enc.encode(TEXTS)
    assert hist and np.isfinite(after).all()
    assert np.abs(after - before).max() > 1e-3
