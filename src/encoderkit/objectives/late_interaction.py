"""Late-interaction (ColBERT) training: in-batch contrastive cross-entropy over MaxSim scores (Khattab & Zaharia 2020;
the Contrastive loss of PyLate).

    s(q, d) = sum_i max_j <q_i, d_j>          q_i the query's token vectors (expansion [MASK]s included),
                                              d_j the document's kept tokens (no padding, no skiplist punctuation)
    L = - (1/B) sum_b log [ exp(s(q_b, d_b) / tau) / sum_c exp(s(q_b, d_c) / tau) ]

Every query is scored against every document of the batch (its positive, the other queries' positives and any hard
negatives); tau = 1 by default, as PyLate's Contrastive: with unit token vectors and 32 query tokens s is in
[-32, 32], already a logit's range. The max runs over kept document tokens only (masked with -inf, the exact MaxSim
that inference and the store compute); PyLate multiplies masked similarities by 0 instead, which differs only
when every kept token of a document has a negative similarity to some query token."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def maxsim_scores(queries: torch.Tensor, docs: torch.Tensor, query_mask: torch.Tensor | None = None,
                  doc_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(Q, D) MaxSim of every query (Q, Lq, d) against every document (D, Ld, d), differentiable. query_mask (Q, Lq)
    drops query positions from the sum; doc_mask (D, Ld) keeps document tokens for the max (a document with no kept
    token scores 0)."""
    if queries.dim() != 3 or docs.dim() != 3 or queries.shape[-1] != docs.shape[-1]:
        raise ValueError(f"queries (Q, Lq, d) and docs (D, Ld, d) must share d, got {tuple(queries.shape)} and "
                         f"{tuple(docs.shape)}")
    sim = torch.einsum("qid,njd->qnij", queries, docs)  # (Q, D, Lq, Ld)
    if doc_mask is not None:
        sim = sim.masked_fill(~doc_mask.bool()[None, :, None, :], float("-inf"))
    best = sim.amax(-1)  # (Q, D, Lq)
    if doc_mask is not None:
        best = best.masked_fill(~doc_mask.bool().any(-1)[None, :, None], 0.0)  # empty documents: 0, not -inf
    if query_mask is not None:
        best = best * query_mask.to(best.dtype)[:, None, :]
    return best.sum(-1)  # (Q, D)


def maxsim_contrastive_loss(queries: torch.Tensor, docs: torch.Tensor, query_mask: torch.Tensor | None = None,
                            doc_mask: torch.Tensor | None = None, temperature: float = 1.0,
                            negatives: torch.Tensor | None = None, negative_mask: torch.Tensor | None = None,
                            ) -> torch.Tensor:
    """Cross-entropy of each query b over its MaxSim scores / temperature against every document: docs (B, Ld, d)
    (docs[b] is query b's positive) then the rows of negatives (M, Ln, d) (hard negatives, if any)."""
    if queries.shape[0] != docs.shape[0] or queries.shape[0] == 0:
        raise ValueError(f"one positive document per query: got {queries.shape[0]} queries, {docs.shape[0]} documents")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scores = maxsim_scores(queries, docs, query_mask, doc_mask)  # (B, B)
    if negatives is not None:
        scores = torch.cat([scores, maxsim_scores(queries, negatives, query_mask, negative_mask)], dim=1)  # (B, B + M)
    target = torch.arange(queries.shape[0], device=queries.device)
    return F.cross_entropy(scores.float() / temperature, target)


class MaxSimContrastiveLoss(nn.Module):
    """maxsim_contrastive_loss as a module (temperature 1, PyLate's default)."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, queries: torch.Tensor, docs: torch.Tensor, query_mask: torch.Tensor | None = None,
                doc_mask: torch.Tensor | None = None, negatives: torch.Tensor | None = None,
                negative_mask: torch.Tensor | None = None) -> torch.Tensor:
        return maxsim_contrastive_loss(queries, docs, query_mask, doc_mask, self.temperature, negatives, negative_mask)
