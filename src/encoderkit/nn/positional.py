"""Positional encodings: sinusoidal (Vaswani et al.), learned absolute, rotary (RoPE, Su et al.),
and T5-style bucketed relative position bias (Raffel et al.)."""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_table(n_positions: int, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)). Shape (n_positions, d_model)."""
    pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)  # (P, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d/2),)
    angle = pos / torch.pow(10000.0, two_i / d_model)  # (P, ceil(d/2))
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoidal table added to token embeddings; nothing to learn."""

    def __init__(self, max_positions: int, d_model: int):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_positions, d_model), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.table[position_ids]  # (B, T, d_model)


class LearnedPositionalEmbedding(nn.Embedding):
    """One trained vector per absolute position (BERT, ViT)."""

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(position_ids)


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al.): rotate pairs of q and k features by angle pos * base^(-2i/r), so q.k depends on the
    relative offset only. `apply(q, k, position_ids)` takes (B, heads, T, d_k) tensors.
    Options that checkpoints differ in:
      base        theta (10,000 BERT-style; 1e6 Qwen3; 160,000 ModernBERT's global layers)
      rotary_dim  rotate only the first r features of each head, pass the rest through (partial rotary)
      interleaved pairs are (x_0, x_1), (x_2, x_3), ... (GPT-J layout) instead of (x_i, x_{i+r/2}) (GPT-NeoX
                  / Llama half-split layout)
      scaling     linear position interpolation: angles use pos / scaling"""

    def __init__(self, d_k: int, base: float = 10000.0, rotary_dim: int | None = None, interleaved: bool = False,
                 scaling: float = 1.0):
        super().__init__()
        r = d_k if rotary_dim is None else rotary_dim
        if r % 2 or not 0 < r <= d_k:
            raise ValueError(f"rotary embeddings need an even rotary_dim in 1..d_k={d_k}, got {r}")
        inv_freq = 1.0 / (base ** (torch.arange(0, r, 2, dtype=torch.int64).float() / r))  # (r/2,)
        self.register_buffer("inv_freq", inv_freq / scaling, persistent=False)
        self.rotary_dim, self.interleaved = r, interleaved

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    @staticmethod
    def _rotate_pairs(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((-x2, x1), dim=-1).flatten(-2)

    def cos_sin(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of every (position, feature) angle, shape (B, 1, T, rotary_dim)."""
        angles = position_ids.float()[..., None] * self.inv_freq  # (B, T, r/2)
        if self.interleaved:
            angles = angles.repeat_interleave(2, dim=-1)  # (B, T, r): theta_0, theta_0, theta_1, theta_1, ...
        else:
            angles = torch.cat((angles, angles), dim=-1)  # (B, T, r): theta_0 .. theta_{r/2-1}, twice
        angles = angles[:, None]  # (B, 1, T, r)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, heads, T, d_k) rotated in its first rotary_dim features."""
        r = self.rotary_dim
        rot, rest = (x, None) if r == x.shape[-1] else (x[..., :r], x[..., r:])
        turn = self._rotate_pairs(rot) if self.interleaved else self._rotate_half(rot)
        out = rot * cos + turn * sin
        return out if rest is None else torch.cat((out, rest), dim=-1)

    def apply(self, q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.cos_sin(position_ids, q.dtype)
        return self.rotate(q, cos, sin), self.rotate(k, cos, sin)


def t5_relative_bucket(relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
                       max_distance: int = 128) -> torch.Tensor:
    """T5's bucketing of (key - query) offsets: exact buckets for small offsets, log-spaced up to
    max_distance, one bucket beyond; half the buckets per direction when bidirectional."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        n = relative_position.abs()
    else:
        n = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    log_ratio = torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """A learned scalar per (bucket, head) added to attention logits: bias[h, i, j] = w[bucket(j - i), h]."""

    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.bias = nn.Embedding(num_buckets, n_heads)

    def forward(self, q_len: int, k_len: int) -> torch.Tensor:
        device = self.bias.weight.device
        rel = torch.arange(k_len, device=device)[None, :] - torch.arange(q_len, device=device)[:, None]  # (Tq, Tk)
        buckets = t5_relative_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)
        return self.bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, heads, Tq, Tk)
