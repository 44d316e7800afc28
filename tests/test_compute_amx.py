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
def test_a_row_gets_the_same_bits_in_any_block_and_share():
    """A call of 48 rows ends in a 16-row block; the 160 rows of a small call are shared between 2 threads in
    blocks smaller than ROWS_PER_TASK (96 + 64); a lane set to one thread does not share them: every row comes
    out bit-equal to the same row computed in any other of these ways."""
    torch.manual_seed(1)
    m = amx.Bf16x3Linear(nn.Linear(384, 1536))
    m.act = "gelu"  # the fused GELU runs over each finished block too
    x = torch.randn(160, 384) * 2
    threads = torch.get_num_threads()
    try:
        with torch.inference_mode():
            torch.set_num_threads(2)
            full = m(x)
            tail = m(x[16:64])  # 48 rows: a 32-row block, then a 16-row one
            short = m(x[40:56])  # 16 rows alone
            amx.set_lane_threads(1)
            try:
                lane = m(x[3:51])  # on this thread only, whatever torch's count
            finally:
                amx.set_lane_threads(None)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(tail, full[16:64]) and torch.equal(short, full[40:56]) and torch.equal(lane, full[3:51])
    want = torch.nn.functional.gelu(x.double() @ m.weight.double().t() + m.bias.double())
    assert _rel(full, want) < 2e-5
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        amx.set_lane_threads(0)


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


def _attention_case(B, H, T, D, seed, lengths=None, shared_bias=False):
    """q, k, v as the views the layer passes (permuted out of one (B, T, 3, H, D) projection), a padding bias."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, 3, H, D, generator=g) * 2).permute(2, 0, 3, 1, 4)
    bias = None
    if lengths is not None:
        keep = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
        bias = torch.zeros(B, 1, 1, T).masked_fill(~keep[:, None, None, :], torch.finfo(torch.float32).min)
        if shared_bias:
            bias = bias[:1]
    return q, k, v, bias


@needs_amx
@pytest.mark.parametrize("B, H, T, D, lengths, scale", [
    (2, 3, 5, 32, None, None),  # shorter than one 32-row block, no mask
    (3, 12, 77, 32, [77, 40, 1], None),  # padding, a one-token text, T not a multiple of 32 or 2
    (2, 4, 256, 64, [256, 131], 0.3),  # D of two chunks, an explicit scale
    (1, 2, 40, 20, [33], None),  # D not a multiple of 16
    (2, 5, 65, 80, [65, 64], None),  # D of three chunks, the last one partial
])
def test_attention_matches_float64(B, H, T, D, lengths, scale):
    """AmxAttention (kernels/amx_bf16x3.c, ek_attention_rows): softmax(scale q k^T + key bias) v with both products
    split three ways must stay near fp32 SDPA against a float64 reference, padded keys getting no weight."""
    lib, _ = amx._load()
    q, k, v, bias = _attention_case(B, H, T, D, seed=T + D, lengths=lengths)
    att = amx.AmxAttention(lib)
    with torch.inference_mode():
        got = att(q, k, v, bias, scale)
        want = nn.functional.scaled_dot_product_attention(
            q.double(), k.double(), v.double(), attn_mask=None if bias is None else bias.double(), scale=scale)
        bf16 = nn.functional.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(),
                                                          attn_mask=None if bias is None else bias.bfloat16(),
                                                          scale=scale)
    want = want.transpose(1, 2).reshape(B, T, H * D)
    assert got.shape == (B, T, H * D) and got.dtype == torch.float32
    assert _rel(got, want) < 2e-5, _rel(got, want)
    assert _rel(bf16.float().transpose(1, 2).reshape(B, T, H * D), want) > 1e-3
    if lengths is not None:  # a padded key's value must not leak: changing it changes nothing for real queries
        v2 = v.clone()
        v2[-1, :, lengths[-1]:] = 1e6
        with torch.inference_mode():
            again = att(q, k, v2, bias, scale)
        assert torch.equal(again[:, :lengths[-1]], got[:, :lengths[-1]]) if B == 1 else \
            torch.equal(again[-1, :lengths[-1]], got[-1, :lengths[-1]])


@needs_amx
def test_attention_threads_groups_and_what_it_declines(monkeypatch):
    """The heads are split between threads and packed in groups (a group never spans two texts): every split gives
    the same bits. It declines (None: the layer runs torch's SDPA) what it does not compute: per-query biases,
    autograd, autocast, other dtypes."""
    lib, _ = amx._load()
    att = amx.AmxAttention(lib)
    q, k, v, bias = _attention_case(3, 12, 70, 32, seed=5, lengths=[70, 50, 9])
    threads = torch.get_num_threads()
    outs = []
    try:
        for n_threads, group_bytes in [(1, 1 << 30), (2, 1 << 30), (1, 1), (2, 200_000)]:
            torch.set_num_threads(n_threads)
            monkeypatch.setattr(amx, "ATTENTION_GROUP_BYTES", group_bytes)  # 1: one head at a time
            with torch.inference_mode():
                outs.append(att(q, k, v, bias, None))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(o, outs[0]) for o in outs[1:])
    _, _, _, shared = _attention_case(3, 12, 70, 32, seed=5, lengths=[60], shared_bias=True)
    with torch.inference_mode():
        one_row = att(q, k, v, shared, None)  # a (1, 1, 1, T) bias shared by the batch
        want = nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=shared.double())
    assert _rel(one_row, want.transpose(1, 2).reshape(3, 70, 384)) < 2e-5
    per_query = torch.zeros(3, 1, 70, 70)
    with torch.inference_mode():
        assert att(q, k, v, per_query, None) is None
        assert att(q.double(), k.double(), v.double(), None, None) is None
        assert att(q, k, v, torch.ones(3, 1, 1, 70, dtype=torch.bool), None) is None  # SDPA's "may attend" mask
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert att(q, k, v, None, None) is None
    qg = q.detach().clone().requires_grad_(True)
    assert att(qg, k, v, None, None) is None


@needs_amx
def test_attention_layer_uses_it_only_where_it_applies():
    """fuse_attention sets MultiHeadSelfAttention.fused_sdpa; the layer's output stays fp32-exact, causal attention
    and training still take torch's path and can backpropagate."""
    from encoderkit.nn.attention import MultiHeadSelfAttention

    torch.manual_seed(3)
    layer = MultiHeadSelfAttention(96, 4).eval()
    x = torch.randn(2, 37, 96)
    keep = torch.ones(2, 37, dtype=torch.bool)
    keep[1, 20:] = False
    bias = torch.zeros(2, 1, 1, 37).masked_fill(~keep[:, None, None, :], torch.finfo(torch.float32).min)
    with torch.inference_mode():
        plain, plain_causal = layer(x, bias), layer(x, None, causal=True)
    amx.fuse_attention(layer)
    assert isinstance(layer.fused_sdpa, amx.AmxAttention)
    calls = []
    real = layer.fused_sdpa.__call__

    class Spy(amx.AmxAttention):
        def __call__(self, *a):
            out = real(*a)
            calls.append(out is not None)
            return out
    layer.fused_sdpa = Spy(layer.fused_sdpa.lib)
    with torch.inference_mode():
        fused = layer(x, bias)
        causal = layer(x, None, causal=True)
    assert calls == [True]  # the causal call never reached the kernel
    assert _rel(fused, plain.double()) < 2e-5 and torch.equal(causal, plain_causal)
    layer.train()
    layer(x.requires_grad_(True), bias).sum().backward()  # training: torch's SDPA under autograd
    assert x.grad is not None and calls == [True, False]


@needs_amx
@pytest.mark.parametrize("compute", ["bf16x3", "int8"])
def test_models_on_the_kernels_copy_and_pickle(compute, tmp_path):
    """A model whose layers run encoderkit's kernels deep-copies and pickles (training recipes copy models; users
    torch.save whole modules): the kernel library is loaded again in the copy instead of failing on the ctypes
    handle, and the copy computes the same numbers."""
    import copy
    import io
    import pickle

    enc = encoderkit.load(tiny_family_folder("bert", tmp_path), compute=compute)
    ids = torch.randint(5, TINY_VOCAB, (3, 40))
    mask = torch.ones_like(ids)
    mask[2, 25:] = 0
    with torch.inference_mode():
        want = enc.model(input_ids=ids, attention_mask=mask)
    for clone in (copy.deepcopy(enc.model), pickle.loads(pickle.dumps(enc.model))):
        buf = io.BytesIO()
        torch.save(clone, buf)
        with torch.inference_mode():
            got = clone(input_ids=ids, attention_mask=mask)
        assert torch.equal(got, want)


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
