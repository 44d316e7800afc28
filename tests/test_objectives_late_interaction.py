"""The late-interaction (ColBERT) training loss: in-batch contrastive cross-entropy over MaxSim scores, checked
against the formula computed by hand (loops over queries, documents and tokens) and against PyLate's Contrastive loss
on random token vectors (within 1e-5), with and without query expansion and with hard negatives."""
from __future__ import annotations

import math

import pytest
import torch

from encoderkit.objectives.late_interaction import MaxSimContrastiveLoss, maxsim_contrastive_loss, maxsim_scores


def _tokens(B, L, d, seed, nonneg=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, d, generator=g)
    x = x.abs() if nonneg else x
    return torch.nn.functional.normalize(x, dim=-1)


def _mask(B, L, lengths):
    return torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]  # (B, L)


def _by_hand(q, qm, docs, dms, temperature):
    """-1/B sum_b log softmax_c(s(q_b, d_c) / T)[b], s = sum over kept query tokens of the max over kept doc tokens."""
    B = q.shape[0]
    total = 0.0
    for b in range(B):
        logits = []
        for d, dm in zip(docs, dms):
            s = 0.0
            for i in range(q.shape[1]):
                if qm is not None and not qm[b, i]:
                    continue
                kept = [float(q[b, i] @ d[j]) for j in range(d.shape[0]) if dm[j]]
                s += max(kept) if kept else 0.0
            logits.append(s / temperature)
        top = max(logits)
        total -= logits[b] - (top + math.log(sum(math.exp(v - top) for v in logits)))
    return total / B


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_loss_is_the_formula(temperature):
    B, Lq, Ld, d = 5, 6, 9, 8
    q, docs, negs = _tokens(B, Lq, d, 0), _tokens(B, Ld, d, 1), _tokens(3, Ld, d, 2)
    qm, dm, nm = _mask(B, Lq, [6, 4, 6, 2, 5]), _mask(B, Ld, [9, 3, 1, 7, 5]), _mask(3, Ld, [2, 9, 4])
    got = maxsim_contrastive_loss(q, docs, qm, dm, temperature)
    want = _by_hand(q, qm, list(docs), list(dm), temperature)
    assert abs(float(got) - want) <= 1e-5, (float(got), want)
    got = MaxSimContrastiveLoss(temperature)(q, docs, qm, dm, negs, nm)  # hard negatives join every query's candidates
    want = _by_hand(q, qm, list(docs) + list(negs), list(dm) + list(nm), temperature)
    assert abs(float(got) - want) <= 1e-5, (float(got), want)


def test_maxsim_ignores_masked_tokens_even_when_every_similarity_is_negative():
    q = torch.tensor([[[1.0, 0.0]]])  # (1, 1, 2)
    d = torch.tensor([[[-1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])  # (2, 2, 2)
    m = torch.tensor([[True, False], [False, False]])  # doc 0: one kept token at similarity -1; doc 1: none
    s = maxsim_scores(q, d, doc_mask=m)
    assert s.tolist() == [[-1.0, 0.0]]  # the exact MaxSim (not 0 from the masked token); an empty document scores 0


def test_loss_gives_gradients_to_queries_and_documents():
    q, docs = _tokens(4, 5, 8, 3).requires_grad_(), _tokens(4, 7, 8, 4).requires_grad_()
    maxsim_contrastive_loss(q, docs, None, _mask(4, 7, [7, 2, 5, 6])).backward()
    assert q.grad.abs().sum() > 0 and docs.grad.abs().sum() > 0
    assert docs.grad[1, 2:].abs().sum() == 0  # masked document tokens take no part


def test_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="one positive document per query"):
        maxsim_contrastive_loss(_tokens(3, 4, 8, 0), _tokens(2, 4, 8, 1))
    with pytest.raises(ValueError, match="share d"):
        maxsim_scores(_tokens(3, 4, 8, 0), _tokens(3, 4, 6, 1))
    with pytest.raises(ValueError, match="temperature"):
        maxsim_contrastive_loss(_tokens(2, 4, 8, 0), _tokens(2, 4, 8, 1), temperature=0)


# ------------------------------------------------------------------ PyLate's Contrastive as the oracle
class _Given(torch.nn.Module):
    """Stands for a PyLate ColBERT inside its loss: returns the token vectors a feature dict carries."""

    def __init__(self, do_query_expansion: bool):
        super().__init__()
        self.skiplist = []  # skiplist masking is the caller's (ours: in the masks; theirs: input ids)
        self.do_query_expansion = do_query_expansion

    def forward(self, features):
        return {"token_embeddings": features["emb"]}


def _features(x, mask):
    return {"emb": x, "input_ids": torch.ones(x.shape[:2], dtype=torch.long), "attention_mask": mask.long()}


@pytest.mark.parametrize("expansion", [True, False], ids=["query_expansion", "query_mask"])
@pytest.mark.parametrize("negatives", [False, True], ids=["pairs", "hard_negatives"])
def test_loss_matches_pylate_contrastive(expansion, negatives):
    losses = pytest.importorskip("pylate.losses")
    B, Lq, Ld, d = 6, 8, 11, 16
    # non-negative vectors: PyLate zeroes masked similarities where we take the max over kept tokens only; the two
    # agree whenever some kept token has a similarity >= 0 (always, here)
    q, docs = _tokens(B, Lq, d, 5, nonneg=True), _tokens(B, Ld, d, 6, nonneg=True)
    negs = _tokens(B, Ld, d, 7, nonneg=True)
    qm = torch.ones(B, Lq, dtype=torch.bool) if expansion else _mask(B, Lq, [8, 3, 5, 8, 1, 6])
    dm, nm = _mask(B, Ld, [11, 4, 1, 9, 6, 2]), _mask(B, Ld, [3, 11, 7, 5, 8, 10])
    feats = [_features(q, qm), _features(docs, dm)] + ([_features(negs, nm)] if negatives else [])
    theirs = losses.Contrastive(_Given(expansion))(feats)
    ours = maxsim_contrastive_loss(q, docs, qm, dm, 1.0, negs if negatives else None, nm if negatives else None)
    assert abs(float(ours) - float(theirs)) <= 1e-5, (float(ours), float(theirs))
    # signed vectors with every document token kept: no masking convention involved
    q, docs = _tokens(B, Lq, d, 8), _tokens(B, Ld, d, 9)
    full = torch.ones(B, Ld, dtype=torch.bool)
    theirs = losses.Contrastive(_Given(expansion), temperature=0.7)([_features(q, qm), _features(docs, full)])
    ours = maxsim_contrastive_loss(q, docs, qm, full, 0.7)
    assert abs(float(ours) - float(theirs)) <= 1e-5, (float(ours), float(theirs))
