"""compute="bf16x3" (issue 19): every nn.Linear on AMX-BF16 tiles with each fp32 operand split into two bfloat16
parts (encoderkit.compute.amx). It must be exact by the exact path's bar (cosine >= 0.99999 to fp32) on real texts
and on every text family, keep the fp32 weights (the model saves unchanged, training falls back to autograd), and
say clearly why it cannot run where it cannot. Tests of the kernel itself skip on CPUs without AMX-BF16."""
from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
import torch
from torch import nn

import encoderkit
from conftest import data_path
from encoderkit.compute import amx
from tiny_checkpoints import TINY_FAMILIES, TINY_VOCAB, sentences, tiny_family_folder

needs_amx = pytest.mark.skipif(not amx.available(), reason=f"bf16x3 cannot run here: {amx.unavailable_reason()}")
FLOOR = 0.99999


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm())


@needs_amx
@pytest.mark.parametrize("rows, k, n, bias", [(1, 384, 384, True), (33, 100, 50, True), (300, 384, 1152, False),
                                              (257, 1536, 384, True), (64, 31, 17, False)])
def test_linear_matches_float64_like_fp32(rows, k, n, bias):
    torch.manual_seed(rows + k + n)
    lin = nn.Linear(k, n, bias=bias)
    x = torch.randn(rows, k) * 3
    want = x.double() @ lin.weight.double().t() + (lin.bias.double() if bias else 0)
    with torch.inference_mode():
        got = amx.Bf16x3Linear(lin)(x)
        bf16 = nn.functional.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16() if bias else None)
    assert got.shape == (rows, n) and got.dtype == torch.float32
    assert _rel(got, want) < 2e-5, _rel(got, want)  # fp32 GEMM: ~4e-7; the bf16 one below: ~3e-3
    assert _rel(bf16.float(), want) > 1e-3  # so the test can tell a bf16-rounded product from ours


@needs_amx
def test_threads_batch_shapes_and_repacking():
    torch.manual_seed(0)
    lin = nn.Linear(384, 1536)
    m = amx.Bf16x3Linear(lin)
    x = torch.randn(4, 700, 384)  # 2,800 rows: several row blocks, shared between threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = m(x)
        torch.set_num_threads(2)
        two = m(x)
    finally:
        torch.set_num_threads(threads)
    assert one.shape == (4, 700, 1536) and torch.equal(one, two)  # disjoint rows: same bits on any thread count
    with torch.no_grad():
        lin.weight.mul_(2)  # the same Parameter: the packed copy must follow
    want = x.double() @ lin.weight.double().t() + lin.bias.double()
    assert _rel(m(x).detach(), want) < 2e-5
    assert m.state_dict().keys() == {"weight", "bias"}  # saves like an nn.Linear


@needs_amx
def test_autograd_falls_back_to_the_fp32_product():
    lin = nn.Linear(64, 32)
    m = amx.Bf16x3Linear(lin)
    x = torch.randn(5, 64, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and lin.weight.grad is not None
    torch.testing.assert_close(lin.weight.grad, torch.ones(32, 1) * x.detach().sum(0))


@pytest.fixture(scope="module")
def texts():
    queries = [json.loads(line)["text"] for line in data_path("scifact", "queries.jsonl").open()][:96]
    corpus = data_path("scifact", "corpus.jsonl").open()
    docs = [(d := json.loads(next(corpus)))["title"] + " " + d["text"] for _ in range(24)]
    return queries + docs  # short and long (cut at 256 tokens)


@needs_amx
def test_minilm_on_real_texts_is_exact(texts):
    fp32 = encoderkit.load("all-MiniLM-L6-v2")
    enc = encoderkit.load("all-MiniLM-L6-v2", compute="bf16x3")
    assert enc.compute == "bf16x3" and "AMX" in enc.info()["compute_engine"]
    assert any(isinstance(m, amx.Bf16x3Linear) for m in enc.model.modules())
    want, got = fp32.encode(texts), enc.encode(texts)
    cos = _cos(got, want)
    assert cos.min() >= FLOOR, cos.min()
    assert np.abs(got - want).max() > 0  # it really ran the kernel, not the fp32 product
    ours = {k: v for k, v in enc.model.state_dict().items()}
    for k, v in fp32.model.state_dict().items():
        assert torch.equal(ours[k], v), k  # same fp32 weights: saving it writes the same checkpoint


@needs_amx
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_text_family(family, tmp_path):
    folder = tiny_family_folder(family, tmp_path)
    texts = sentences(24, TINY_VOCAB, seed=5, min_len=1, max_len=40)
    want = encoderkit.load(folder).encode(texts, batch_size=8)
    got = encoderkit.load(folder, compute="bf16x3").encode(texts, batch_size=8)
    assert _cos(got, want).min() >= FLOOR


@needs_amx
def test_auto_picks_bf16x3_here_and_save_round_trips(tmp_path, texts):
    enc = encoderkit.load("all-MiniLM-L6-v2", compute="auto")
    assert enc.compute == "bf16x3"
    out = enc.save(tmp_path / "saved")
    again = encoderkit.load(str(out))
    np.testing.assert_allclose(again.encode(texts[:8]), encoderkit.load("all-MiniLM-L6-v2").encode(texts[:8]),
                               atol=1e-6)


def test_unavailable_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(amx, "_load", lambda: (None, "this CPU lacks amx_bf16 (AMX-BF16: Intel Sapphire Rapids or "
                                                     "later)"))
    with pytest.raises(RuntimeError) as err:
        encoderkit.load("all-MiniLM-L6-v2", compute="bf16x3")
    assert "\n" not in str(err.value) and "lacks amx_bf16" in str(err.value) and "compute='fp32'" in str(err.value)
    from encoderkit.compute import backends

    assert backends.best_exact_backend() != "bf16x3"  # auto goes on to the exported engines / torch fp32


def test_reasons_name_what_is_missing(monkeypatch):
    amx._load.cache_clear()
    try:
        monkeypatch.setattr(amx, "cpu_flags", lambda: frozenset({"avx512f", "avx512bw"}))
        assert not amx.available() and "amx_bf16" in amx.unavailable_reason()
        amx._load.cache_clear()
        monkeypatch.setattr(amx, "cpu_flags", lambda: frozenset(amx.NEEDED_CPU))
        monkeypatch.setattr(amx, "_compiler", lambda: None)
        assert "no C compiler" in amx.unavailable_reason()
    finally:
        amx._load.cache_clear()


@needs_amx
def test_fused_gelu_is_the_exact_gelu():
    """convert_linears moves a FeedForward's erf GELU into its first layer's epilogue (kernels/ek_gelu.h); the
    block must still compute fc2(gelu(fc1(x))), also on the autograd path."""
    from encoderkit.nn.layers import FeedForward

    torch.manual_seed(1)
    ffn = FeedForward(96, 200).eval()
    x = torch.randn(3, 50, 96) * 4  # GELU's whole range: large negative, around 0, large positive
    with torch.no_grad():
        h = nn.functional.linear(x.double(), ffn.fc1.weight.double(), ffn.fc1.bias.double())
        want = nn.functional.linear(nn.functional.gelu(h), ffn.fc2.weight.double(), ffn.fc2.bias.double())
    amx.convert_linears(ffn)
    assert ffn.fc1.act == "gelu" and ffn.act is amx.identity and ffn.fc2.act is None
    with torch.inference_mode():
        got = ffn(x)
    assert _rel(got, want) < 2e-5, _rel(got, want)
    ffn.train()
    xg = x.clone().requires_grad_(True)
    out = ffn(xg)  # autograd: nn.Linear's product, GELU applied by the layer itself
    assert _rel(out.detach(), want) < 1e-6
    out.sum().backward()
    assert xg.grad is not None


def test_fused_add_layernorm_equals_torch():
    """compute modes give post-norm EncoderLayers a one-pass ln(x + y) (kernels/ek_addnorm.c); it must equal
    torch's add then LayerNorm to fp32 accuracy, for any row count and width, and leave training to torch."""
    from encoderkit.nn.layers import EncoderLayer

    lib, why = amx.load_addnorm()
    if lib is None:
        pytest.skip(f"row kernel not built here: {why}")
    fused = amx.AddLayerNorm(lib)
    for rows, d in [(1, 384), (33, 384), (300, 100), (7, 17)]:
        torch.manual_seed(rows + d)
        ln = nn.LayerNorm(d, eps=1e-12)
        with torch.no_grad():
            ln.weight.normal_(1, 0.2), ln.bias.normal_(0, 0.2)
        x, y = torch.randn(rows, d) * 3 + 1, torch.randn(rows, d)
        with torch.inference_mode():
            got, want = fused(x, y, ln), ln(x + y)
            ref = nn.functional.layer_norm((x + y).double(), (d,), ln.weight.double(), ln.bias.double(), 1e-12)
        assert got.shape == want.shape and _rel(got, ref) < 1e-6, (rows, d, _rel(got, ref))
        assert not torch.equal(got, x + y)
    layer = EncoderLayer(64, 4, 128).eval()
    x = torch.randn(2, 9, 64)
    with torch.inference_mode():
        plain = layer(x)
        amx.fuse_add_norms(layer)
        assert layer.add_norm is not None
        assert _rel(layer(x), plain.double()) < 1e-6
    layer.train()  # training: torch's own ops (autograd), dropout included
    layer(x.requires_grad_(True)).sum().backward()


@needs_amx
def test_unwritable_cache_falls_back_to_a_private_temp_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ENCODERKIT_CACHE", str(blocker / "cache"))  # mkdir under a file: NotADirectoryError
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    amx._load.cache_clear()
    try:
        assert amx.available(), amx.unavailable_reason()
        assert list((tmp_path / "tmp").glob("encoderkit-kernels-*/amx_bf16x3-*.so"))
    finally:
        amx._load.cache_clear()
