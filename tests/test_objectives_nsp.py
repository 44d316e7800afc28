"""Next-sentence pairs: 50% random (binomial bound), IsNext pairs are consecutive, NotNext come from
another document; the NSP loss against a direct computation."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from encoderkit.objectives.nsp import IS_NEXT, NOT_NEXT, NSPHead, make_nsp_pairs, nsp_loss


def test_pairs_are_half_random_and_well_formed():
    docs = [[f"d{d} s{s}" for s in range(2 + d % 7)] for d in range(400)]
    pairs = make_nsp_pairs(docs, 0.5, seed=0)
    assert len(pairs) == sum(len(d) - 1 for d in docs)
    n_random = sum(p.label == NOT_NEXT for p in pairs)
    assert stats.binomtest(n_random, len(pairs), 0.5).pvalue > 1e-3, n_random / len(pairs)
    for p in pairs:
        da, sa = (int(x[1:]) for x in p.a.split())
        db, sb = (int(x[1:]) for x in p.b.split())
        if p.label == IS_NEXT:
            assert (db, sb) == (da, sa + 1)
        else:
            assert db != da
    assert make_nsp_pairs(docs, 0.5, seed=3) == make_nsp_pairs(docs, 0.5, seed=3)
    assert all(p.label == IS_NEXT for p in make_nsp_pairs(docs, 0.0))
    with pytest.raises(ValueError, match="at least 2 non-empty documents"):
        make_nsp_pairs([["a", "b"]])


def test_nsp_head_and_loss_match_direct_computation():
    torch.manual_seed(0)
    head = NSPHead(4).double()
    h = torch.randn(3, 5, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    logits = head(h)
    expect = head.classifier(torch.tanh(head.pooler(h[:, 0])))
    torch.testing.assert_close(logits, expect)
    total = 0.0
    for i in range(3):
        a, b = logits[i].tolist()
        total += -(logits[i, y[i]].item() - math.log(math.exp(a) + math.exp(b)))
    assert nsp_loss(logits, y).item() == pytest.approx(total / 3, rel=1e-12)
