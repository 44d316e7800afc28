"""Multi-head self-attention: softmax(Q K^T / sqrt(d_k)) V per head, heads concatenated and projected."""
from __future__ import annotations

from typing import Callable

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


def allowed_bias(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean "may attend" tensor -> additive bias of 0 / the dtype's most negative value."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def attention_bias(mask: torch.Tensor | None, dtype: torch.dtype, T: int, *, causal: bool = False,
                   window: tuple[int, int] | None = None, device: torch.device | None = None) -> torch.Tensor | None:
    """One additive bias for everything a query may not see: padding keys (mask: (B, T), 1 = token), later
    positions (causal), and keys outside a band window = (left, right): query i sees keys i-left .. i+right
    (sliding-window local attention). Combined as booleans first, so no row sums two "-inf" values.
    Returns (B|1, 1, T|1, T), or None when every query sees every key."""
    keep = None
    if mask is not None and not bool(mask.all()):
        keep = mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        device = mask.device
    if causal or window is not None:
        i = torch.arange(T, device=device)[:, None]
        j = torch.arange(T, device=device)[None, :]
        band = torch.ones(T, T, dtype=torch.bool, device=device)
        if causal:
            band &= j <= i
        if window is not None:
            band &= (j >= i - window[0]) & (j <= i + window[1])
        keep = band[None, None] if keep is None else keep & band[None, None]  # (B|1, 1, T, T)
    return None if keep is None else allowed_bias(keep, dtype)


class MultiHeadSelfAttention(nn.Module):
    """Bidirectional (or causal) multi-head self-attention. Q, K and V come from one fused projection
    `qkv` (one GEMM instead of three); `o` projects the concatenated heads back to d_model.
    Options for today's checkpoints:
      n_kv_heads  grouped-query attention (Ainslie et al.): fewer K/V heads, each shared by n_heads / n_kv_heads
                  query heads
      head_dim    d_k when it is not d_model / n_heads (Qwen3, Gemma3)
      qk_norm     a norm factory applied to each head's q and k before rotary (Qwen3, Gemma3)
      scale       logits scale when it is not 1 / sqrt(d_k) (Gemma3: query_pre_attn_scalar^-1/2)
      o_bias      bias on the output projection when it differs from the q/k/v bias (Qwen2: qkv yes, o no)"""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 rotary: RotaryEmbedding | None = None, *, n_kv_heads: int | None = None, head_dim: int | None = None,
                 qk_norm: Callable[[int], nn.Module] | None = None, scale: float | None = None,
                 o_bias: bool | None = None):
        super().__init__()
        if head_dim is None and d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.n_kv = n_heads, n_kv_heads or n_heads
        if self.n_heads % self.n_kv:
            raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={self.n_kv}")
        self.d_k = head_dim or d_model // n_heads
        self.qkv = nn.Linear(d_model, (self.n_heads + 2 * self.n_kv) * self.d_k, bias=bias)
        self.o = nn.Linear(self.n_heads * self.d_k, d_model, bias=bias if o_bias is None else o_bias)
        self.q_norm = qk_norm(self.d_k) if qk_norm is not None else None
        self.k_norm = qk_norm(self.d_k) if qk_norm is not None else None
        self.dropout = dropout
        self.rotary = rotary
        self.scale = scale
        # an exact softmax(q k^T) v for inference set by compute modes (compute.amx.AmxAttention): called as
        # fused_sdpa(q, k, v, bias, scale) and returns (B, T, heads * d_k), or None where it does not apply
        self.fused_sdpa: Callable | None = None

    def _split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        H, Hkv, d = self.n_heads, self.n_kv, self.d_k
        if Hkv == H:
            q, k, v = self.qkv(x).view(B, T, 3, H, d).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, T, d_k)
            return q, k, v
        q, k, v = self.qkv(x).split([H * d, Hkv * d, Hkv * d], dim=-1)
        q = q.view(B, T, H, d).transpose(1, 2)  # (B, heads, T, d_k)
        k = k.view(B, T, Hkv, d).transpose(1, 2)  # (B, kv_heads, T, d_k)
        v = v.view(B, T, Hkv, d).transpose(1, 2)  # (B, kv_heads, T, d_k)
        return q, k, v

    def heads(self, x: torch.Tensor, position_ids: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v per head, ready for the scores: q/k norm, then rotary, then K/V heads repeated for GQA."""
        B, T, _ = x.shape
        q, k, v = self._split_heads(x)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary is not None:
            if position_ids is None:
                position_ids = torch.arange(T, device=x.device).expand(B, T)
            q, k = self.rotary.apply(q, k, position_ids)
        if self.n_kv != self.n_heads:  # query head h reads K/V head h // (heads / kv_heads)
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)  # (B, heads, T, d_k)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        return q, k, v

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """x: (B, T, d_model); bias: additive logits bias broadcastable to (B, heads, T, T) (padding mask,
        relative positions, windows); causal: also forbid attending to later positions."""
        B, T, _ = x.shape
        q, k, v = self.heads(x, position_ids)  # 3 x (B, heads, T, d_k)
        if self.fused_sdpa is not None and not causal and not (self.training and self.dropout):
            y = self.fused_sdpa(q, k, v, bias, self.scale)
            if y is not None:
                return self.o(y)
        if causal and bias is not None:  # SDPA takes either a mask or is_causal: fold causality into the bias
            bias = bias + attention_mask_bias(None, q.dtype, causal_len=T).to(bias.device)
            causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0, is_causal=causal,
            scale=self.scale,
        )  # (B, heads, T, d_k)
        return self.o(y.transpose(1, 2).reshape(B, T, self.n_heads * self.d_k))  # (B, T, d_model)
