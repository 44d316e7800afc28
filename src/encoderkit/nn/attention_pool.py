"""Multi-head attention pooling (Lee et al.'s PMA; SigLIP's "MAP" head): a learned probe vector attends over
all tokens, then a pre-norm residual MLP: pooled = a + MLP(LN(a)), a = MHA(probe, X, X)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.nn.layers import FeedForward


class AttentionPooling(nn.Module):
    """(B, T, D) tokens -> (B, D): one learned query attends over the tokens (Q from the probe, K/V from X)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, act: str = "gelu", ln_eps: float = 1e-6):
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, d_model))
        self.in_proj = nn.Linear(d_model, 3 * d_model)  # rows: W_q; W_k; W_v (torch.nn.MultiheadAttention layout)
        self.out_proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model, eps=ln_eps)
        self.mlp = FeedForward(d_model, d_ff, act=act)
        self.n_heads = n_heads

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = x.shape
        h, d_k = self.n_heads, D // self.n_heads
        w_q, w_kv = self.in_proj.weight.split([D, 2 * D])
        b_q, b_kv = self.in_proj.bias.split([D, 2 * D])
        q = F.linear(self.probe, w_q, b_q).view(1, 1, h, d_k).transpose(1, 2).expand(B, -1, -1, -1)  # (B, h, 1, d_k)
        k, v = F.linear(x, w_kv, b_kv).view(B, T, 2, h, d_k).permute(2, 0, 3, 1, 4)  # 2 x (B, h, T, d_k)
        bias = None
        if mask is not None:
            bias = torch.zeros(B, 1, 1, T, dtype=x.dtype, device=x.device).masked_fill(~mask.bool()[:, None, None, :],
                                                                                        torch.finfo(x.dtype).min)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, h, 1, d_k)
        a = self.out_proj(a.transpose(1, 2).reshape(B, 1, D))  # (B, 1, D)
        return (a + self.mlp(self.norm(a)))[:, 0]  # (B, D)
