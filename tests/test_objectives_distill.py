"""DINO: the loss (centering, sharpening, crop pairs) against explicit loops, the center EMA, the
teacher EMA, the schedules, the weight-normalized head and multi-crop forward."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from encoderkit.objectives.distill import (
    DINO,
    DINOHead,
    DINOLoss,
    cosine_schedule,
    ema_update,
    teacher_temperature_schedule,
)


def _softmax(v):
    m = max(v)
    e = [math.exp(x - m) for x in v]
    return [x / sum(e) for x in e]


def test_dino_loss_matches_loop_and_updates_center():
    g = torch.Generator().manual_seed(0)
    B, K, n_crops = 3, 5, 4
    student = [torch.randn(B, K, generator=g, dtype=torch.float64) for _ in range(n_crops)]
    teacher = [torch.randn(B, K, generator=g, dtype=torch.float64) for _ in range(2)]
    loss_fn = DINOLoss(K, n_global=2, student_temp=0.1, center_momentum=0.9).double()
    c0 = torch.randn(1, K, generator=g, dtype=torch.float64)
    loss_fn.center.copy_(c0)
    tau_t = 0.04
    total, pairs = 0.0, 0
    for iq in range(2):
        for v in range(n_crops):
            if v == iq:
                continue
            ce = 0.0
            for b in range(B):
                p = _softmax([(teacher[iq][b, k] - c0[0, k]).item() / tau_t for k in range(K)])
                q = _softmax([student[v][b, k].item() / 0.1 for k in range(K)])
                ce += -sum(p[k] * math.log(q[k]) for k in range(K))
            total += ce / B
            pairs += 1
    assert pairs == 2 * (n_crops - 1)  # 2 teacher views x 3 other student views
    assert loss_fn(student, teacher, tau_t).item() == pytest.approx(total / pairs, rel=1e-10)
    mean_t = torch.cat(teacher).mean(0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, 0.9 * c0 + 0.1 * mean_t)
    with pytest.raises(ValueError, match="teacher outputs"):
        loss_fn(student, teacher[:1], tau_t)


def test_ema_update_formula_and_schedules():
    s, t = nn.Linear(3, 2).double(), nn.Linear(3, 2).double()
    before = [p.clone() for p in t.parameters()]
    ema_update(t, s, 0.99)
    for pb, pt, ps in zip(before, t.parameters(), s.parameters()):
        torch.testing.assert_close(pt, 0.99 * pb + 0.01 * ps)

    sched = cosine_schedule(0.996, 1.0, total_steps=10)
    for i in range(10):
        assert sched[i].item() == pytest.approx(1.0 + 0.5 * (0.996 - 1.0) * (1 + math.cos(math.pi * i / 10)))
    warm = cosine_schedule(1e-3, 1e-6, total_steps=20, warmup_steps=5)
    assert warm[:5].tolist() == pytest.approx([0.0, 0.25e-3, 0.5e-3, 0.75e-3, 1e-3])
    assert warm[5].item() == pytest.approx(1e-3) and warm[-1].item() < 2e-5
    temps = teacher_temperature_schedule(0.04, 0.07, warmup_epochs=4, epochs=6)
    assert temps.tolist() == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07, 0.07])
    with pytest.raises(ValueError):
        cosine_schedule(1.0, 0.0, total_steps=3, warmup_steps=5)


def test_head_projects_to_weight_normalized_prototypes():
    torch.manual_seed(0)
    head = DINOHead(8, out_dim=11, hidden_dim=16, bottleneck_dim=4)
    x = torch.randn(5, 8)
    z = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    v = head.last.parametrizations.weight.original1  # direction v; weight = g * v / ||v|| with g = 1
    expect = z @ (v / v.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(head(x), expect)
    assert head(x).abs().max() <= 1 + 1e-5  # cosine to unit prototypes
    assert not head.last.parametrizations.weight.original0.requires_grad


class _Pool(nn.Module):  # a backbone that accepts any crop size
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_multicrop_forward_teacher_sees_global_crops_and_gets_no_gradient():
    torch.manual_seed(0)
    dino = DINO(_Pool(), embed_dim=6, out_dim=32, hidden_dim=16, bottleneck_dim=8)
    seen = []
    dino.teacher[0].register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    crops = [torch.randn(4, 1, 20, 20), torch.randn(4, 1, 20, 20)] + [torch.randn(4, 1, 9, 9) for _ in range(3)]
    loss = dino(crops, teacher_temp=0.04)
    assert seen == [(8, 1, 20, 20)]  # both global crops in one batch, no local crop
    loss.backward()
    assert all(p.grad is None for p in dino.teacher.parameters())
    assert dino.student[0].conv.weight.grad.abs().sum() > 0
    # one EMA step moves the teacher towards the student
    with torch.no_grad():
        dino.student[0].conv.weight.add_(1.0)
    w_t = dino.teacher[0].conv.weight.clone()
    dino.update_teacher(0.9)
    torch.testing.assert_close(dino.teacher[0].conv.weight, 0.9 * w_t + 0.1 * dino.student[0].conv.weight)
    assert dino.backbone is dino.teacher[0]
