"""Contrastive losses against explicit loops over the formulas (float64, small tensors)."""
from __future__ import annotations

import math

import pytest
import torch

from encoderkit.objectives.contrastive import (
    CLIPLoss,
    MultipleNegativesRankingLoss,
    NTXentLoss,
    SigLIPLoss,
    info_nce,
    nt_xent,
    triplet_loss,
)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _cos(a, b) -> float:
    a, b = a.tolist(), b.tolist()
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a)) / math.sqrt(sum(y * y for y in b))


def _lse(vals) -> float:
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals))


def test_info_nce_matches_loop_with_hard_negatives_and_symmetric():
    q, d, h = _rand(4, 6, seed=1), _rand(4, 6, seed=2), _rand(3, 6, seed=3)
    tau = 0.1
    loss = 0.0
    for i in range(4):
        scores = [_cos(q[i], d[j]) / tau for j in range(4)] + [_cos(q[i], h[m]) / tau for m in range(3)]
        loss += -(scores[i] - _lse(scores))
    assert info_nce(q, d, tau, hard_negatives=h).item() == pytest.approx(loss / 4, rel=1e-10)

    fwd = bwd = 0.0
    for i in range(4):
        s_q = [_cos(q[i], d[j]) / tau for j in range(4)]
        s_d = [_cos(d[i], q[j]) / tau for j in range(4)]
        fwd += -(s_q[i] - _lse(s_q))
        bwd += -(s_d[i] - _lse(s_d))
    assert info_nce(q, d, tau, symmetric=True).item() == pytest.approx((fwd + bwd) / 8, rel=1e-10)
    assert MultipleNegativesRankingLoss(tau)(q, d).item() == pytest.approx(fwd / 4, rel=1e-10)
    # matched pairs give a far lower loss than unrelated ones
    assert info_nce(q, q + 0.01 * d, 0.05).item() < 0.05 < info_nce(q, d, 0.05).item()
    with pytest.raises(ValueError, match="same shape"):
        info_nce(q, d[:3])
    with pytest.raises(ValueError, match="temperature"):
        info_nce(q, d, 0.0)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triplet_matches_loop(distance):
    a, p, n = _rand(5, 4, seed=4), _rand(5, 4, seed=5), _rand(5, 4, seed=6)
    margin = 0.7
    total = 0.0
    for i in range(5):
        if distance == "euclidean":
            dap = math.dist(a[i].tolist(), p[i].tolist())
            dan = math.dist(a[i].tolist(), n[i].tolist())
        else:
            dap, dan = 1 - _cos(a[i], p[i]), 1 - _cos(a[i], n[i])
        total += max(0.0, dap - dan + margin)
    assert triplet_loss(a, p, n, margin, distance).item() == pytest.approx(total / 5, rel=1e-10)
    with pytest.raises(ValueError, match="unknown triplet distance"):
        triplet_loss(a, p, n, distance="manhattan")


def test_clip_matches_loop_and_scale_is_learnable_and_clamped():
    x, y = _rand(4, 5, seed=7), _rand(4, 5, seed=8)
    clip = CLIPLoss().double()
    s = math.exp(clip.logit_scale.item())
    assert s == pytest.approx(1 / 0.07)
    i2t = t2i = 0.0
    for i in range(4):
        row = [s * _cos(x[i], y[j]) for j in range(4)]
        col = [s * _cos(y[i], x[j]) for j in range(4)]
        i2t += -(row[i] - _lse(row))
        t2i += -(col[i] - _lse(col))
    loss = clip(x, y)
    assert loss.item() == pytest.approx((i2t / 4 + t2i / 4) / 2, rel=1e-10)
    loss.backward()
    assert clip.logit_scale.grad is not None and clip.logit_scale.grad.abs() > 0
    with torch.no_grad():
        clip.logit_scale.fill_(10.0)  # exp(10) >> 100: clamped
    assert clip.logits(x, y).abs().max().item() <= 100.0 + 1e-9


def test_siglip_matches_double_loop():
    x, y = _rand(3, 4, seed=9), _rand(3, 4, seed=10)
    sig = SigLIPLoss(init_log_scale=math.log(5.0), init_bias=-2.0).double()
    scale, bias = math.exp(sig.log_scale.item()), sig.bias.item()  # the float32 init, read back
    assert scale == pytest.approx(5.0, rel=1e-6) and bias == -2.0
    total = 0.0
    for i in range(3):
        for j in range(3):
            z = 1.0 if i == j else -1.0
            logit = scale * _cos(x[i], y[j]) + bias
            total += -math.log(1 / (1 + math.exp(-z * logit)))
    loss = sig(x, y)
    assert loss.item() == pytest.approx(total / 3, rel=1e-10)
    loss.backward()
    assert sig.log_scale.grad.abs() > 0 and sig.bias.grad.abs() > 0
    default = SigLIPLoss()
    assert math.exp(default.log_scale.item()) == pytest.approx(10.0) and default.bias.item() == -10.0


def test_nt_xent_matches_loop_over_2n_views():
    z1, z2 = _rand(3, 4, seed=11), _rand(3, 4, seed=12)
    tau = 0.5
    views = [z1[i] for i in range(3)] + [z2[i] for i in range(3)]
    total = 0.0
    for k in range(6):
        pos = k + 3 if k < 3 else k - 3
        others = [_cos(views[k], views[m]) / tau for m in range(6) if m != k]
        total += -(_cos(views[k], views[pos]) / tau - _lse(others))
    assert nt_xent(z1, z2, tau).item() == pytest.approx(total / 6, rel=1e-10)
    assert NTXentLoss(tau)(z1, z2).item() == pytest.approx(total / 6, rel=1e-10)
    with pytest.raises(ValueError, match="empty batch"):
        nt_xent(z1[:0], z2[:0])
