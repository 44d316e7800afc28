"""Attention with soft-capped logits (Gemma 2): s = c * tanh((Q K^T * scale) / c) keeps every logit in (-c, c).
The fused SDPA kernels cannot apply a function to the logits, so the softmax is written out."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from encoderkit.nn.attention import MultiHeadSelfAttention


def softcapped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float,
                         cap: float, dropout: float = 0.0) -> torch.Tensor:
    """softmax(cap * tanh(q k^T * scale / cap) + bias) v for (B, heads, T, d_k) tensors; softmax in fp32."""
    s = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, heads, T, T)
    s = torch.tanh(s / cap) * cap
    if bias is not None:
        s = s + bias
    p = F.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
    p = F.dropout(p, dropout) if dropout else p
    return torch.matmul(p, v)  # (B, heads, T, d_k)


class SoftcappedSelfAttention(MultiHeadSelfAttention):
    """MultiHeadSelfAttention (same parameters, same options) whose logits are soft-capped at `softcap`."""

    def __init__(self, *args, softcap: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.softcap = float(softcap)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """x: (B, T, d_model); bias: additive mask broadcastable to (B, heads, T, T) (fold causality into it)."""
        if causal:
            raise ValueError("SoftcappedSelfAttention takes causality in the bias (attention_bias(..., causal=True))")
        B, T, _ = x.shape
        q, k, v = self.heads(x, position_ids)  # 3 x (B, heads, T, d_k)
        scale = self.scale if self.scale is not None else self.d_k ** -0.5
        y = softcapped_attention(q, k, v, bias, scale, self.softcap, self.dropout if self.training else 0.0)
        return self.o(y.transpose(1, 2).reshape(B, T, self.n_heads * self.d_k))  # (B, T, d_model)
