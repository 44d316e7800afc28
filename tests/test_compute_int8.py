"""The per-token W8A8 int8 linear layer (encoderkit.compute.int8): equal to its formula, and on the real
all-MiniLM-L6-v2 close enough to fp32 for retrieval (cosine mean >= 0.997, min >= 0.99 on real SciFact texts, the
quality bar of issue 19; the per-batch dynamic quantization gives 0.977 / 0.946). Runs the layer directly, so it is
checked on every CPU, also where `compute="int8"` keeps fbgemm because int8 products are slow there."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import encoderkit
from conftest import data_path
from encoderkit.compute.int8 import ROWS, Int8Linear, quantize_linears, quantize_rows


def _reference(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The formula in float64: per-row symmetric scales max|.|/127 for the weight's output channels and for each
    token, integer products summed exactly, rescaled, bias added."""
    w = linear.weight.double() if hasattr(linear, "weight") else \
        linear.weight_int8.double() * linear.weight_scale.double().unsqueeze(1)  # an Int8Linear's own weights
    x = x.double()
    sw = w.abs().amax(1, keepdim=True) / 127
    sx = x.abs().amax(1, keepdim=True) / 127
    wq, xq = torch.round(w / sw), torch.round(x / sx)
    return (xq @ wq.T) * sx * sw.T + linear.bias.double()


@pytest.mark.parametrize("rows", [1, 7, ROWS, ROWS + 3, 3 * ROWS])  # one block, a part block, several
def test_int8_linear_is_its_formula(rows):
    torch.manual_seed(0)
    lin = nn.Linear(40, 24)
    x = torch.randn(rows, 40) * torch.logspace(-2, 2, rows).unsqueeze(1)  # tokens of very different magnitudes
    got = Int8Linear(lin)(x)
    want = _reference(lin, x)
    assert got.dtype == torch.float32 and got.shape == (rows, 24)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    # each token keeps its own resolution: the smallest token is not rounded to zero by the largest
    assert got[0].abs().max() > 0
    y3 = Int8Linear(lin)(x.reshape(1, rows, 40))  # leading dimensions kept
    assert y3.shape == (1, rows, 24) and torch.equal(y3[0], got)


def test_quantize_rows_bounds_and_zero_rows():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5], [-3.0, 3.0, 1e-9]])
    q, s = quantize_rows(x)
    assert q.dtype == torch.int8 and q.abs().max() == 127 and s.shape == (3, 1)
    assert torch.equal(q[0], torch.zeros(3, dtype=torch.int8))  # an all-zero row stays zero (no 0/0)
    assert (q.float() * s - x).abs().max() <= s.max() / 2 + 1e-7  # error at most half a step


@pytest.fixture(scope="module")
def texts():
    queries = [json.loads(line)["text"] for line in data_path("scifact", "queries.jsonl").open()][:200]
    docs = [json.loads(line) for line in data_path("scifact", "corpus.jsonl").open()][:40]
    return queries + [(d["title"] + " " + d["text"]).strip() for d in docs]


def test_w8a8_minilm_keeps_fp32_retrieval_quality(texts):
    fp32 = encoderkit.load("all-MiniLM-L6-v2", max_length=256)
    ref = fp32.encode(texts, normalize=True)
    enc = encoderkit.load("all-MiniLM-L6-v2", max_length=256)
    quantize_linears(enc.model)
    assert sum(isinstance(m, Int8Linear) for m in enc.model.modules()) == 24
    assert not any(type(m) is nn.Linear for m in enc.model.modules())
    cos = (enc.encode(texts, normalize=True) * ref).sum(1)
    assert cos.mean() >= 0.997 and cos.min() >= 0.99, (cos.mean(), cos.min())  # measured 0.9973 / 0.9955
    assert cos.mean() < 0.99999  # really computed in int8
    sims = ref[:200] @ enc.encode(texts[:200], normalize=True).T
    assert (sims.argmax(0) == np.arange(200)).mean() >= 0.99


@pytest.mark.parametrize("rows, k, n, bias", [(1, 40, 24, True), (33, 100, 50, False), (600, 384, 1152, True),
                                              (70, 1536, 384, True)])
def test_amx_kernel_equals_the_torch_path(rows, k, n, bias):
    """Where the CPU has AMX-INT8 the layer runs kernels/amx_int8.c (quantization and scaling fused around the tile
    products); it must give the torch._int_mm path's numbers: same quantization, exact int32 sums, same scaling."""
    torch.manual_seed(rows)
    layer = Int8Linear(nn.Linear(k, n, bias=bias))
    if layer._amx is None:
        pytest.skip("no AMX-INT8 here (or no C compiler): the torch._int_mm path runs, tested above")
    x = torch.randn(rows, k) * torch.logspace(-2, 2, rows).unsqueeze(1)
    x[:, 3] *= 30  # an outlier channel, as BERT's activations have
    with torch.inference_mode():
        amx = layer(x)
        kept, layer._amx = layer._amx, None
        try:
            torch_path = layer(x)
        finally:
            layer._amx = kept
    assert amx.shape == (rows, n) and torch.equal(amx, torch_path)


def test_amx_kernel_fused_gelu():
    torch.manual_seed(3)
    layer = Int8Linear(nn.Linear(384, 1536))
    if layer._amx is None:
        pytest.skip("no AMX-INT8 here (or no C compiler): the torch._int_mm path runs, tested above")
    layer.act = "gelu"
    x = torch.randn(300, 384) * 2
    with torch.inference_mode():
        fused = layer(x)
        kept, layer._amx = layer._amx, None
        try:
            torch_path = layer(x)  # torch._int_mm, then torch's GELU
        finally:
            layer._amx = kept
    assert torch.allclose(fused, torch_path, rtol=1e-5, atol=1e-6 * torch_path.abs().max().item())
    assert not torch.equal(fused, torch.nn.functional.gelu(fused))  # the GELU was applied (not twice, not never)


def test_fused_feed_forward_equals_its_two_layers():
    """On AMX-INT8 CPUs quantize_linears runs each GELU FeedForward as one kernel call per 32-row strip
    (Int8FeedForward); it must give the two Int8Linear layers' numbers, and fall back to them when training."""
    from encoderkit.compute.int8 import Int8FeedForward
    from encoderkit.nn.layers import FeedForward

    torch.manual_seed(5)
    holder = nn.Sequential(FeedForward(96, 200).eval())
    quantize_linears(holder)
    ffn = holder[0]
    if not isinstance(ffn, Int8FeedForward):
        pytest.skip("no AMX-INT8 here (or no C compiler): feed-forward blocks keep their two layers")
    x = torch.randn(3, 45, 96) * 3  # 135 rows: several strips and a part strip
    with torch.inference_mode():
        fused = ffn(x)
        layers = ffn.fc2(ffn.fc1(x))
    assert fused.shape == (3, 45, 96) and torch.equal(fused, layers)
    # and the layers are the formula: W8A8 fc1, exact GELU, W8A8 fc2 (float64 reference, per-token scales)
    h = torch.nn.functional.gelu(_reference(ffn.fc1, x.reshape(-1, 96).float()).float())
    want = _reference(ffn.fc2, h)
    assert torch.allclose(fused.reshape(-1, 96).double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
