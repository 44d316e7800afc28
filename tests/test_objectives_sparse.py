"""objectives/sparse.py: each SPLADE training loss equals a direct recomputation of its formula (loops over the
batch and the vocabulary), and the memory-lean SPLADE-max pooling equals nn.splade.splade_pool on the full logits,
values and gradients."""
from __future__ import annotations

import math

import pytest
import torch

from encoderkit.models.mlm_head import MLMHead
from encoderkit.nn.splade import splade_pool
from encoderkit.objectives.sparse import (flops, l0, sparse_contrastive_loss, splade_loss, splade_max_vectors,
                                          warm_lambda)


def _weights(n, v=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.relu(torch.randn(n, v, generator=g, dtype=torch.float64))  # non-negative, about half zero
    return torch.log1p(w)


def test_splade_max_vectors_equal_splade_pool_values_and_gradients():
    torch.manual_seed(0)
    head = MLMHead(16, 50).double()
    hidden = torch.randn(3, 11, 16, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1] * 11, [1] * 5 + [0] * 6, [1] * 2 + [0] * 9])
    ours = splade_max_vectors(head, hidden, mask, chunk=4)  # 3 chunks, the last two all padding in rows 1 and 2
    ref = splade_pool(head(hidden), mask, "max", "relu")
    assert ours.shape == (3, 50) and torch.allclose(ours, ref, atol=1e-12)
    z = head(hidden).detach()
    for b in range(3):
        for v in (0, 7, 49):
            want = max(math.log1p(max(float(z[b, t, v]), 0.0)) for t in range(11) if mask[b, t])
            assert abs(float(ours[b, v]) - want) < 1e-12
    g = torch.randn(3, 50, dtype=torch.float64)
    (ga,) = torch.autograd.grad((ours * g).sum(), hidden)
    (gb,) = torch.autograd.grad((ref * g).sum(), hidden)
    assert torch.allclose(ga, gb, atol=1e-10)
    assert ga[1, 5:].abs().max() == 0  # padding gets no gradient


def test_contrastive_loss_is_infonce_over_dot_products():
    q, d, n = _weights(4, seed=1), _weights(4, seed=2), _weights(3, seed=3)
    for negatives, tau in ((None, 1.0), (n, 1.0), (n, 2.5)):
        cands = [d[c] for c in range(4)] + ([] if negatives is None else [negatives[m] for m in range(3)])
        want = 0.0
        for b in range(4):
            s = [sum(float(q[b, v]) * float(c[v]) for v in range(q.shape[1])) / tau for c in cands]
            want -= s[b] - math.log(sum(math.exp(x) for x in s))
        want /= 4
        got = float(sparse_contrastive_loss(q, d, negatives, tau))
        assert abs(got - want) < 1e-5, (negatives is None, tau, got, want)
    with pytest.raises(ValueError, match="one positive"):
        sparse_contrastive_loss(q, d[:3])
    with pytest.raises(ValueError, match="temperature"):
        sparse_contrastive_loss(q, d, temperature=0)


def test_flops_is_the_sum_of_squared_mean_activations():
    w = _weights(5, v=30, seed=4)
    want = sum((sum(float(w[i, v]) for i in range(5)) / 5) ** 2 for v in range(30))
    assert abs(float(flops(w)) - want) < 1e-6  # computed in float32
    assert float(l0(w)) == pytest.approx(sum(int((w[i] != 0).sum()) for i in range(5)) / 5)
    # the same mass spread over rare terms costs less than on one term every text uses
    common = torch.zeros(4, 8)
    common[:, 0] = 1.0
    rare = torch.eye(4, 8)
    assert float(flops(rare)) < float(flops(common))


def test_lambda_warms_up_quadratically():
    assert warm_lambda(1e-3, 0, 100) == 0.0
    assert warm_lambda(1e-3, 50, 100) == pytest.approx(1e-3 * 0.25)
    assert warm_lambda(1e-3, 100, 100) == pytest.approx(1e-3)
    assert warm_lambda(1e-3, 400, 100) == pytest.approx(1e-3)
    assert warm_lambda(1e-3, 0, 0) == 1e-3


def test_splade_loss_is_rank_plus_warmed_flops_of_each_side():
    q, d, n = _weights(4, seed=5), _weights(4, seed=6), _weights(4, seed=7)
    loss, parts = splade_loss(q, d, n, lambda_q=0.3, lambda_d=0.1, step=5, warmup_steps=10)
    lq, ld = 0.3 * 0.25, 0.1 * 0.25
    want = (float(sparse_contrastive_loss(q, d, n)) + lq * float(flops(q))
            + ld * float(flops(torch.cat([d, n]))))  # documents: positives and hard negatives together
    assert abs(float(loss) - want) < 1e-6
    assert parts["lambda_q"] == pytest.approx(lq) and parts["lambda_d"] == pytest.approx(ld)
    assert parts["flops_d"] == pytest.approx(float(flops(torch.cat([d, n]))))
    assert parts["active_q"] == pytest.approx(float(l0(q)))
