"""SPLADE training objectives (Formal et al., SPLADE v2, 2021): in-batch contrastive ranking over sparse dot products
plus the FLOPS regularizer (Paria et al., 2020), with its own lambda for queries and for documents, each warmed up
quadratically.

    w_v(x)   = max_t log(1 + relu(logit_{t,v}))                   SPLADE-max pooling over the text's real tokens t
    s(q, d)  = sum_v w_v(q) w_v(d)                                 the sparse dot product
    L_rank   = -(1/B) sum_b log [ exp(s_bb / tau) / sum_c exp(s_bc / tau) ]   c over the batch's documents
                                                                              (positives, then hard negatives)
    FLOPS(W) = sum_v ( (1/N) sum_i w_v(x_i) )^2                    W (N, V): a batch of one side's vectors
    lambda(t) = lambda * min(1, (t / T)^2)                         quadratic warm-up over the first T steps
    L        = L_rank + lambda_q(t) FLOPS(Q) + lambda_d(t) FLOPS(D)

FLOPS is a smooth proxy of the expected number of floating-point operations of a sparse dot product: the squared
mean activation of each vocabulary entry, so a term that fires in every text costs most. tau = 1 as in SPLADE."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def splade_max_vectors(head: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor,
                       chunk: int = 32) -> torch.Tensor:
    """(B, T, H) hidden states + (B, T) attention mask -> (B, V) SPLADE-max weights, differentiable.

    log(1 + relu(.)) is non-decreasing, so max_t log(1 + relu(z_t)) = log(1 + relu(max_t z_t)): the max runs on the
    logits, `chunk` positions at a time, each chunk's head recomputed in the backward pass (activation
    checkpointing), so training never holds the (B, T, V) logits of a long batch, only (B, V) ones."""
    B, T, _ = hidden.shape
    keep = mask.bool()

    def chunk_max(h: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        z = head(h)  # (B, t, V)
        return z.masked_fill(~k[:, :, None], float("-inf")).amax(1)  # (B, V)

    best = None
    for s in range(0, T, chunk):
        h, k = hidden[:, s:s + chunk], keep[:, s:s + chunk]
        if not bool(k.any()):
            continue
        m = checkpoint(chunk_max, h, k, use_reentrant=False) if torch.is_grad_enabled() else chunk_max(h, k)
        best = m if best is None else torch.maximum(best, m)
    if best is None:
        raise ValueError("every position is masked: a text needs at least one token")
    return torch.log1p(torch.relu(best))  # (B, V); a row with no kept token would be -inf -> relu -> 0


def sparse_scores(queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """(Q, V) x (D, V) -> (Q, D) dot products of SPLADE vectors."""
    return queries @ docs.T


def sparse_contrastive_loss(queries: torch.Tensor, docs: torch.Tensor, negatives: torch.Tensor | None = None,
                            temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE over dot products: query b's positive is docs[b]; every other document of the batch and every row of
    negatives (M, V) (mined hard negatives) is a negative for every query."""
    if queries.shape[0] != docs.shape[0] or queries.shape[0] == 0:
        raise ValueError(f"one positive document per query: got {queries.shape[0]} queries, {docs.shape[0]} documents")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    cands = docs if negatives is None else torch.cat([docs, negatives], 0)  # (B + M, V)
    scores = sparse_scores(queries.float(), cands.float()) / temperature  # (B, B + M)
    return F.cross_entropy(scores, torch.arange(queries.shape[0], device=queries.device))


def flops(weights: torch.Tensor) -> torch.Tensor:
    """FLOPS regularizer of a batch (N, V) of non-negative weights: sum_v (mean_i w_iv)^2."""
    return weights.float().mean(0).pow(2).sum()


def l0(weights: torch.Tensor) -> torch.Tensor:
    """Mean number of active (non-zero) dimensions per vector of (N, V): what FLOPS stands in for."""
    return (weights != 0).float().sum(-1).mean()


def warm_lambda(lam: float, step: int, warmup_steps: int) -> float:
    """lambda * min(1, (step / warmup_steps)^2): SPLADE's quadratic warm-up of the regularization weight
    (warmup_steps <= 0: the full lambda from the start)."""
    if warmup_steps <= 0:
        return float(lam)
    return float(lam) * min(1.0, (step / warmup_steps) ** 2)


def splade_loss(queries: torch.Tensor, docs: torch.Tensor, negatives: torch.Tensor | None = None, *,
                lambda_q: float = 3e-4, lambda_d: float = 1e-4, step: int = 0, warmup_steps: int = 0,
                temperature: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """L_rank + lambda_q(step) FLOPS(queries) + lambda_d(step) FLOPS(documents: positives and negatives), and its
    parts as floats (contrastive, flops_q, flops_d, lambda_q, lambda_d, active_q, active_d) for the training log.
    The default lambdas are SPLADE v2's (SPLADE-max: 3e-4 for queries, 1e-4 for documents)."""
    rank = sparse_contrastive_loss(queries, docs, negatives, temperature)
    all_docs = docs if negatives is None else torch.cat([docs, negatives], 0)
    lq, ld = warm_lambda(lambda_q, step, warmup_steps), warm_lambda(lambda_d, step, warmup_steps)
    fq, fd = flops(queries), flops(all_docs)
    loss = rank + lq * fq + ld * fd
    parts = {"contrastive": float(rank.detach()), "flops_q": float(fq.detach()), "flops_d": float(fd.detach()),
             "lambda_q": lq, "lambda_d": ld, "active_q": float(l0(queries.detach())),
             "active_d": float(l0(all_docs.detach()))}
    return loss, parts
