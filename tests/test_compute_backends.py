"""Exact compute backends (issue 19): the backbone exported to ONNX and run by ONNX Runtime (compute="onnx") or
OpenVINO (compute="openvino") gives the torch fp32 vectors (cosine >= 0.99999) on the real all-MiniLM-L6-v2 with
real SciFact queries and on tiny checkpoints of each text family; padding and batch size do not change them; an
absent engine fails in one line naming what to install."""
from __future__ import annotations

import json

import numpy as np
import pytest

import encoderkit
from encoderkit.cli import main as cli
from conftest import data_path
from tiny_checkpoints import TINY_FAMILIES, TINY_VOCAB, sentences, tiny_family_folder

BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino"}
FLOOR = 0.99999


def _engine(backend: str) -> None:
    pytest.importorskip(BACKENDS[backend], reason=f"compute={backend!r} needs {BACKENDS[backend]} (encoderkit[fast])")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def queries():
    f = data_path("scifact", "queries.jsonl")
    return [json.loads(line)["text"] for line in f.open()][:96]


@pytest.fixture(scope="module")
def minilm():
    return encoderkit.load("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def minilm_fp32(queries, minilm):
    return minilm.encode(queries)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_minilm_backend_matches_fp32_and_ignores_padding(backend, queries, minilm, minilm_fp32):
    _engine(backend)
    enc = encoderkit.load("all-MiniLM-L6-v2", compute=backend)
    assert enc.compute == backend and enc._runner is not None
    info = enc.info()
    assert info["compute"] == backend and BACKENDS[backend] in info["compute_engine"]
    v = enc.encode(queries)
    assert v.dtype == np.float32 and v.shape == minilm_fp32.shape
    cos = _cos(v, minilm_fp32)
    assert cos.min() >= FLOOR, cos.min()
    # batch 1 (no padding), odd batches (padding, several sequence lengths), one long padded batch: same vectors
    for bs in (1, 7, 96):
        assert np.abs(enc.encode(queries[:24], batch_size=bs) - v[:24]).max() <= 1e-5, bs
    # a single string, tokens output and a text at the max length go through the engine too
    assert np.abs(enc.encode(queries[0]) - v[0]).max() <= 1e-5
    toks = enc.encode(queries[:3], output="tokens")
    ref = minilm.encode(queries[:3], output="tokens")
    assert all(np.abs(a - b).max() <= 1e-4 for a, b in zip(toks, ref))
    long_text = " ".join(queries) * 3
    assert _cos(enc.encode([long_text]), minilm.encode([long_text]))[0] >= FLOOR


TEXTS = sentences(40, TINY_VOCAB, seed=5, min_len=1, max_len=40)


@pytest.fixture(scope="module", params=list(TINY_FAMILIES))
def family_folder(request, tmp_path_factory):
    pytest.importorskip("transformers")
    return tiny_family_folder(request.param, tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_text_family_exports_exactly(backend, family_folder):
    _engine(backend)
    want = encoderkit.load(family_folder).encode(TEXTS, batch_size=8)
    enc = encoderkit.load(family_folder, compute=backend)
    assert enc.compute == backend
    got = enc.encode(TEXTS, batch_size=8)
    assert _cos(got, want).min() >= FLOOR, _cos(got, want).min()
    # padding / batch invariance: each text alone (no padding) vs one padded batch of all of them
    alone = np.stack([enc.encode(t) for t in TEXTS[:10]])
    assert np.abs(alone - enc.encode(TEXTS[:10], batch_size=10)).max() <= 1e-5


def test_auto_picks_an_installed_exact_engine_or_fp32(monkeypatch):
    from encoderkit.compute import backends

    enc = encoderkit.load("all-MiniLM-L6-v2", compute="auto")
    assert enc.compute == backends.best_exact_backend()
    monkeypatch.setattr(backends, "available_backends", lambda: [])
    monkeypatch.setattr("encoderkit.compute.amx.available", lambda: False)  # no AMX-BF16 either
    enc = encoderkit.load("all-MiniLM-L6-v2", compute="auto")
    assert enc.compute == "fp32" and enc._runner is None and enc.info()["compute_engine"].startswith("torch")


@pytest.mark.parametrize("backend, missing", [("onnx", "onnxruntime"), ("openvino", "openvino"), ("onnx", "onnx")])
def test_missing_engine_is_one_line(backend, missing, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    with pytest.raises(ImportError) as err:
        encoderkit.load("all-MiniLM-L6-v2", compute=backend)
    msg = str(err.value)
    assert "\n" not in msg and f"compute={backend!r} needs the {missing} package" in msg
    assert "encoderkit[fast]" in msg


def test_backend_bad_uses():
    _engine("onnx")
    enc = encoderkit.load("all-MiniLM-L6-v2", compute="onnx")
    with pytest.raises(ValueError, match="already computes in onnx"):
        enc.set_compute("int8")
    assert enc.set_compute("onnx") is enc
    with pytest.raises(ValueError, match="unknown compute 'ort'"):
        encoderkit.load("all-MiniLM-L6-v2", compute="ort")


def test_cli_info_names_the_engine(capsys):
    _engine("onnx")
    assert cli(["info", "--json", "--compute", "onnx"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["compute"] == "onnx" and info["compute_engine"].startswith("onnxruntime")
