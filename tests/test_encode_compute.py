"""Compute precisions that trade exactness for speed: int8 (per-channel int8 weights; activations per token with
int8 dot-product instructions (encoderkit.compute.int8), else fbgemm's per-batch dynamic quantization) and bf16, on
the real all-MiniLM-L6-v2 and real SciFact queries; and their bad-input cases."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import encoderkit
from conftest import data_path


@pytest.fixture(scope="module")
def queries():
    f = data_path("scifact", "queries.jsonl")
    return [json.loads(line)["text"] for line in f.open()][:128]


@pytest.fixture(scope="module")
def fp32(queries):
    return encoderkit.load("all-MiniLM-L6-v2").encode(queries)


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("compute, min_mean, min_worst", [("bf16", 0.9995, 0.999), ("int8", 0.96, 0.90)])
def test_compute_modes_stay_close_to_fp32(compute, min_mean, min_worst, queries, fp32):
    enc = encoderkit.load("all-MiniLM-L6-v2", compute=compute)
    assert enc.compute == compute
    v = enc.encode(queries)
    assert v.dtype == np.float32 and v.shape == fp32.shape
    cos = _cos(v, fp32)
    assert cos.mean() >= min_mean and cos.min() >= min_worst, (cos.mean(), cos.min())
    assert cos.mean() < 0.9999999  # it really computed differently (not silently fp32)
    if compute == "int8":
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

        from encoderkit.compute.int8 import Int8Linear, fast_int8_matmul

        kind = Int8Linear if fast_int8_matmul() else DynamicLinear  # the kernel this CPU runs fast
        mods = list(enc.model.modules())
        assert not any(type(m) is torch.nn.Linear for m in mods)
        assert sum(isinstance(m, kind) for m in mods) == 6 * 4  # qkv, o, fc1, fc2 in each of 6 layers
        assert ("W8A8" if kind is Int8Linear else "fbgemm") in enc.info()["compute_engine"]
    else:
        assert next(enc.model.parameters()).dtype == torch.bfloat16
    # still a usable retrieval model: each query's nearest neighbour among the fp32 vectors is itself
    sims = (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (fp32 / np.linalg.norm(fp32, axis=1, keepdims=True)).T
    assert (sims.argmax(1) == np.arange(len(v))).mean() >= 0.98


def test_compute_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown compute 'fp8'"):
        encoderkit.load("all-MiniLM-L6-v2", compute="fp8")
    enc = encoderkit.load("all-MiniLM-L6-v2", compute="int8")
    with pytest.raises(ValueError, match="computes in int8; save the fp32"):
        enc.save(tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="already computes in int8"):
        enc.set_compute("bf16")
    assert enc.set_compute("int8") is enc
