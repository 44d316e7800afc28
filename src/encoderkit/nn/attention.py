"""Multi-head self-attention: softmax(Q K^T / sqrt(d_k)) V per head, heads concatenated and projected."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.nn.positional import RotaryEmbedding


def attention_mask_bias(mask: torch.Tensor | None, dtype: torch.dtype, causal_len: int | None = None) -> torch.Tensor | None:
    """Turn a (B, T) keep-mask (1 = real token, 0 = padding) into an additive (B, 1, 1, T) bias of 0 / -inf-ish,
    optionally combined with a causal (T, T) mask. None when nothing is masked."""
    bias = None
    if mask is not None:
        keep = mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        bias = torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill(~keep, torch.finfo(dtype).min)
    if causal_len is not None:
        tri = torch.ones(causal_len, causal_len, dtype=torch.bool, device=None if mask is None else mask.device).tril()
        causal = torch.zeros(tri.shape, dtype=dtype, device=tri.device).masked_fill(~tri, torch.finfo(dtype).min)
        bias = causal[None, None] if bias is None else bias + causal[None, None]  # (B|1, 1, T, T)
    return bias


class MultiHeadSelfAttention(nn.Module):
    """Bidirectional (or causal) multi-head self-attention. Q, K and V come from one fused projection
    `qkv` (one GEMM instead of three); `o` projects the concatenated heads back to d_model."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 rotary: RotaryEmbedding | None = None):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.d_k = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.o = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        self.rotary = rotary

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """x: (B, T, d_model); bias: additive logits bias broadcastable to (B, heads, T, T) (padding mask,
        relative positions); causal: also forbid attending to later positions."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.d_k).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, T, d_k)
        if self.rotary is not None:
            if position_ids is None:
                position_ids = torch.arange(T, device=x.device).expand(B, T)
            q, k = self.rotary.apply(q, k, position_ids)
        if causal and bias is not None:  # SDPA takes either a mask or is_causal: fold causality into the bias
            bias = bias + attention_mask_bias(None, q.dtype, causal_len=T).to(bias.device)
            causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0, is_causal=causal,
        )  # (B, heads, T, d_k)
        return self.o(y.transpose(1, 2).reshape(B, T, D))  # (B, T, d_model)
