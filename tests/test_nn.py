"""The equations in nn/: each module against a direct, independent computation of its formula."""
from __future__ import annotations

import math

import pytest
import torch

from encoderkit.nn import (EncoderLayer, MultiHeadSelfAttention, Pooling, RelativePositionBias, RotaryEmbedding,
                           SinusoidalPositionalEncoding, attention_mask_bias, pool, sinusoidal_table,
                           t5_relative_bucket)


def test_sinusoidal_equals_formula():
    P, d = 50, 16
    pe = sinusoidal_table(P, d)
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / d)), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / d)), abs=1e-6)
    odd = sinusoidal_table(10, 7)  # odd widths: last column is a sine
    assert odd.shape == (10, 7) and odd[3, 6].item() == pytest.approx(math.sin(3 / 10000 ** (6 / 7)), abs=1e-6)
    mod = SinusoidalPositionalEncoding(20, 8)
    assert torch.equal(mod(torch.tensor([[0, 5]])), sinusoidal_table(20, 8)[[0, 5]].unsqueeze(0))


def _explicit_attention(attn: MultiHeadSelfAttention, x, mask=None, causal=False):
    """softmax(Q K^T / sqrt(d_k)) V written out with loops over heads."""
    B, T, D = x.shape
    H, dk = attn.n_heads, attn.d_k
    Wq, Wk, Wv = attn.qkv.weight.chunk(3, 0)
    bq, bk, bv = attn.qkv.bias.chunk(3, 0)
    q, k, v = x @ Wq.T + bq, x @ Wk.T + bk, x @ Wv.T + bv
    heads = []
    for h in range(H):
        sl = slice(h * dk, (h + 1) * dk)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(dk)  # (B, T, T)
        if mask is not None:
            scores = scores.masked_fill(mask[:, None, :] == 0, float("-inf"))
        if causal:
            scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        heads.append(torch.softmax(scores, -1) @ v[..., sl])
    return torch.cat(heads, -1) @ attn.o.weight.T + attn.o.bias


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_explicit_softmax(causal):
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(32, 4).eval()
    x = torch.randn(3, 9, 32)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    got = attn(x, attention_mask_bias(mask, x.dtype), causal=causal)
    want = _explicit_attention(attn, x, mask, causal)
    real = mask.bool()
    assert (got - want)[real].abs().max() < 1e-5
    assert (attn(x, causal=causal) - _explicit_attention(attn, x, None, causal)).abs().max() < 1e-5


def test_attention_is_bidirectional_and_permutation_equivariant():
    torch.manual_seed(1)
    attn = MultiHeadSelfAttention(16, 2).eval()
    x = torch.randn(1, 6, 16)
    perm = torch.randperm(6)
    assert torch.allclose(attn(x)[:, perm], attn(x[:, perm]), atol=1e-6)
    y = attn(x)
    x2 = x.clone()
    x2[0, 5] += 1.0  # changing the LAST token changes the FIRST output: bidirectional
    assert not torch.allclose(attn(x2)[0, 0], y[0, 0])


def test_rotary_scores_depend_only_on_offset():
    torch.manual_seed(2)
    rope = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(pq, pk):
        qq, _ = rope.apply(q, q, torch.tensor([[pq]]))
        _, kk = rope.apply(k, k, torch.tensor([[pk]]))
        return (qq * kk).sum().item()

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-5)
    assert score(0, 0) == pytest.approx((q * k).sum().item(), abs=1e-6)  # position 0: no rotation
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
    rq, _ = rope.apply(q, k, torch.tensor([[5]]))
    assert rq.norm().item() == pytest.approx(q.norm().item(), rel=1e-5)  # rotation keeps length


def test_t5_buckets_match_transformers():
    transformers = pytest.importorskip("transformers")
    ref = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    rel = torch.arange(-200, 201)[None, :].expand(3, -1)
    for bidirectional in (True, False):
        want = ref(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
        assert torch.equal(t5_relative_bucket(rel, bidirectional, 32, 128), want)
    bias = RelativePositionBias(n_heads=4)
    b = bias(5, 5)
    assert b.shape == (1, 4, 5, 5)
    assert torch.equal(b[0, :, 0, 1], b[0, :, 2, 3])  # same offset, same bias


def test_pooling_modes():
    h = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    m = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(h, m, "cls"), h[:, 0])
    assert torch.allclose(pool(h, m, "mean")[0], h[0, :2].mean(0))
    assert torch.allclose(pool(h, m, "mean")[1], h[1].mean(0))
    assert torch.equal(pool(h, m, "max")[0], h[0, 1])  # padding (larger values) ignored
    assert torch.equal(pool(h, m, "last")[0], h[0, 1]) and torch.equal(pool(h, m, "last")[1], h[1, 2])
    assert torch.allclose(pool(h, m, "weighted_mean")[0], (h[0, 0] * 1 + h[0, 1] * 2) / 3)
    assert torch.allclose(pool(h, m, "mean_sqrt_len")[0], h[0, :2].sum(0) / math.sqrt(2))
    with pytest.raises(ValueError, match="pooling mode"):
        Pooling("median")


def test_encoder_layer_post_and_pre_norm_equations():
    torch.manual_seed(3)
    x = torch.randn(2, 5, 16)
    post = EncoderLayer(16, 2, 32, norm_first=False, ln_eps=1e-5).eval()
    H = post.ln1(x + post.attn(x))
    assert torch.allclose(post(x), post.ln2(H + post.ffn(H)), atol=1e-6)
    pre = EncoderLayer(16, 2, 32, norm_first=True, ln_eps=1e-5).eval()
    H = x + pre.attn(pre.ln1(x))
    assert torch.allclose(pre(x), H + pre.ffn(pre.ln2(H)), atol=1e-6)
