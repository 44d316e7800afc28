"""SPLADE pooling (Formal et al., 2021): a vocabulary-sized sparse vector from MLM logits (B, T, V):
    w_v = pool_t log(1 + relu(logit_{t,v}))         pool = max (SPLADE v2+) or sum (SPLADE v1)
with activation "log1p_relu" applying log(1 + .) once more (OpenSearch's inference-free models)."""
from __future__ import annotations

import torch

SPLADE_POOLING = ("max", "sum")
SPLADE_ACTIVATIONS = ("relu", "log1p_relu")


def splade_pool(logits: torch.Tensor, mask: torch.Tensor, pooling: str = "max", activation: str = "relu",
                chunk: int = 64) -> torch.Tensor:
    """(B, T, V) logits + (B, T) keep-mask -> (B, V) non-negative weights; padding contributes nothing.
    Runs over `chunk` positions at a time so the (B, T, V) transform never doubles in memory."""
    if pooling not in SPLADE_POOLING or activation not in SPLADE_ACTIVATIONS:
        raise ValueError(f"SPLADE pooling must be one of {SPLADE_POOLING} and activation one of {SPLADE_ACTIVATIONS}, "
                         f"got {pooling!r}, {activation!r}")
    B, T, V = logits.shape
    out = torch.zeros(B, V, dtype=logits.dtype, device=logits.device)
    m = mask.to(logits.dtype).unsqueeze(-1)  # (B, T, 1)
    for s in range(0, T, chunk):
        w = torch.log1p(torch.relu(logits[:, s:s + chunk] * m[:, s:s + chunk]))  # (B, t, V)
        if activation == "log1p_relu":
            w = torch.log1p(w)
        out = torch.maximum(out, w.amax(1)) if pooling == "max" else out + w.sum(1)
    return out


def top_k_active(weights: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k largest-magnitude entries of each row (B, V), zero the rest (sentence-transformers' max_active_dims)."""
    if k is None or k >= weights.shape[-1]:
        return weights
    if k < 1:
        raise ValueError(f"max_active_dims must be a positive integer, got {k}")
    idx = weights.abs().topk(k, dim=-1).indices  # (B, k)
    return torch.zeros_like(weights).scatter_(-1, idx, weights.gather(-1, idx))
