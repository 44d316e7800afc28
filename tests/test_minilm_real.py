"""The real default model (all-MiniLM-L6-v2 from its PyPI package) against sentence-transformers,
and the behaviour of Encoder.encode: padding invariance, quantized outputs, Matryoshka, bad input, save."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import encoderkit
from encoderkit.checkpoints.hub import packaged_folder
from encoderkit.datasets.stdlib import stdlib_docstrings

st = pytest.importorskip("sentence_transformers")
MODEL_DIR = packaged_folder("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def enc():
    return encoderkit.load("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def ref():
    return st.SentenceTransformer(str(MODEL_DIR), device="cpu")


@pytest.fixture(scope="module")
def sentences():
    docs = stdlib_docstrings()
    assert len(docs) >= 1000
    return [d.text for d in docs[::3][:1200]]


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_names_resolve_to_packaged_model(enc):
    assert MODEL_DIR is not None
    assert enc.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert enc.dim == 384 and enc.max_length == 256 and enc.pooling == "mean" and enc.normalize
    assert encoderkit.load("sentence-transformers/all-MiniLM-L6-v2").name == enc.name


@pytest.mark.slow
def test_matches_sentence_transformers_on_1200_real_texts(enc, ref, sentences):
    a = enc.encode(sentences, batch_size=32)
    b = ref.encode(sentences, batch_size=32, convert_to_numpy=True)
    assert a.shape == b.shape == (len(sentences), 384)
    cos = _cos(a, b)
    assert cos.min() >= 0.99999, f"worst cosine {cos.min()}"
    assert np.abs(a - b).max() < 1e-4


def test_padding_invariance(enc):
    short = "A text that will be padded inside a batch."
    batch = [short, "much longer neighbour " * 30, "tiny", short]
    alone = enc.encode([short])[0]
    together = enc.encode(batch, batch_size=4)
    assert np.abs(together[0] - alone).max() <= 1e-5
    assert np.abs(together[3] - alone).max() <= 1e-5


def test_order_restored_and_single_string(enc):
    texts = ["b " * n for n in (3, 40, 1, 20, 7)]
    full = enc.encode(texts, batch_size=2)
    for i, t in enumerate(texts):
        assert np.abs(enc.encode(t) - full[i]).max() <= 1e-5
    assert enc.encode("one").shape == (384,)


def test_token_output_matches_reference(enc, ref):
    texts = ["tokens of a short text", "and a second, somewhat longer text for the token check"]
    toks = enc.encode(texts, output="tokens")
    want = ref.encode(texts, output_value="token_embeddings", convert_to_numpy=False)
    for got, w in zip(toks, want):
        w = w.numpy() if hasattr(w, "numpy") else np.asarray(w)
        assert got.shape == w.shape
        assert np.abs(got - w).max() <= 1e-5


def test_quantized_outputs_follow_definitions(enc, ref, sentences):
    x = enc.encode(sentences[:200])
    calib = enc.encode(sentences[200:400])
    # each precision encoded once (the same 200 texts, so the same float vectors x underneath)
    ours = {prec: enc.encode(sentences[:200], precision=prec, calibration_embeddings=calib)
            for prec in ("int8", "uint8", "binary", "ubinary")}
    # binary: sign bits packed 8 per byte, int8 offset by -128
    ub = ours["ubinary"]
    assert ub.dtype == np.uint8 and ub.shape == (200, 48)
    assert np.array_equal(np.unpackbits(ub, axis=1).astype(bool), x > 0)
    b = ours["binary"]
    assert b.dtype == np.int8 and np.array_equal(b.astype(np.int16) + 128, ub.astype(np.int16))
    # int8: 256 buckets between the calibration set's per-dimension min and max
    q = ours["int8"]
    lo, hi = calib.min(0), calib.max(0)
    expect = np.clip(np.floor((x - lo) / ((hi - lo) / 255)), 0, 255) - 128
    assert q.dtype == np.int8 and np.array_equal(q.astype(np.int16), expect.astype(np.int16))
    from sentence_transformers.util import quantize_embeddings

    for prec, got in ours.items():
        theirs = quantize_embeddings(x, precision=prec, calibration_embeddings=calib)
        assert np.array_equal(got, theirs), prec
    assert enc.encode(sentences[:3], precision="float16").dtype == np.float16


def test_matryoshka_truncation_renormalizes(enc):
    full = enc.encode(["matryoshka dolls nest inside each other", "x"])
    cut = enc.encode(["matryoshka dolls nest inside each other", "x"], dimensions=64)
    assert cut.shape == (2, 64)
    assert np.allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)
    assert np.allclose(cut, full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True), atol=1e-6)
    raw = enc.encode(["x"], dimensions=64, normalize=False)
    assert not np.isclose(np.linalg.norm(raw), 1.0)
    with pytest.raises(ValueError, match="dimensions"):
        enc.encode(["x"], dimensions=1000)


def test_prompts_are_prefixes(enc):
    a = enc.encode(["query: what is a heap"])
    b = enc.encode(["what is a heap"], prompt="query: ")
    assert np.abs(a - b).max() <= 1e-6


def test_bad_input(enc):
    assert enc.encode([]).shape == (0, 384)
    v = enc.encode([""])
    assert v.shape == (1, 384) and np.isfinite(v).all()
    with pytest.raises(TypeError, match="input 2 is a int"):
        enc.encode(["a", "b", 3])
    with pytest.raises(TypeError):
        enc.encode(123)
    long = "word " * 2000
    assert enc.encode([long]).shape == (1, 384)  # truncated to max_length tokens (documented)
    with pytest.raises(ValueError, match="limit of 256 tokens"):
        enc.encode(["ok", long], truncate=False)
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode(["x"], batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        enc.encode(["x"], precision="int4")


def test_save_round_trip_all_three_loaders(enc, tmp_path, sentences):
    out = enc.save(tmp_path / "saved")
    texts = sentences[:64]
    base = enc.encode(texts)
    again = encoderkit.load(out).encode(texts)
    assert np.abs(base - again).max() <= 1e-6
    st_vecs = st.SentenceTransformer(str(out), device="cpu").encode(texts)
    assert _cos(base, st_vecs).min() >= 0.99999
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModel.from_pretrained(out).eval()
    batch = tok(texts[:8], padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    mean = (h * m).sum(1) / m.sum(1)
    mean = (mean / mean.norm(dim=1, keepdim=True)).numpy()
    assert np.abs(mean - base[:8]).max() <= 1e-5


def test_hub_ids_resolve_through_huggingface_cache(tmp_path):
    """A hub id that is not packaged goes through huggingface_hub; offline it is served from the HF cache."""
    import shutil

    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny-minilm" / "snapshots" / ("a" * 40)
    shutil.copytree(MODEL_DIR, snap)
    (cache / "models--acme--tiny-minilm" / "refs").mkdir(parents=True)
    (cache / "models--acme--tiny-minilm" / "refs" / "main").write_text("a" * 40)
    code = ("import encoderkit, json; e = encoderkit.load('acme/tiny-minilm'); "
            "print(json.dumps({'name': e.name, 'dim': e.dim, 'v': e.encode('hub').tolist()[:3]}))")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["name"] == "acme/tiny-minilm" and got["dim"] == 384
    bad = subprocess.run([sys.executable, "-c", "import encoderkit; encoderkit.load('acme/not-there')"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "acme/not-there" in bad.stderr and "hub" in bad.stderr
