"""DeBERTa's disentangled attention (He et al. 2021): each token has a content vector H and shares a table P
of relative-position vectors; the attention logit adds content-to-position and position-to-content terms

    A_ij = ( q_i . k_j  +  q_i . Kr[d(i, j)]  +  k_j . Qr[d(j, i)] ) / sqrt(d_k * (1 + #extra terms))

with d(i, j) = i - j mapped to log-spaced buckets beyond a window (DeBERTa-v2/v3), Kr = P W_k,r, Qr = P W_q,r
(or the content projections themselves when share_att_key)."""
from __future__ import annotations

import math

import torch
from torch import nn


def log_bucket_position(rel: torch.Tensor, bucket_size: int, max_position: int) -> torch.Tensor:
    """Offsets within +-bucket_size/2 kept exactly; larger ones log-compressed so +-max_position maps to
    +-(bucket_size - 1)... the rounding follows DeBERTa-v2's reference code."""
    sign = torch.sign(rel)
    mid = bucket_size // 2
    abs_pos = torch.where((rel < mid) & (rel > -mid), torch.tensor(mid - 1).type_as(rel), torch.abs(rel))
    log_pos = torch.ceil(torch.log(abs_pos / mid) / torch.log(torch.tensor((max_position - 1) / mid)) * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, rel.type_as(log_pos), log_pos * sign).long()


def relative_positions(q_len: int, k_len: int, bucket_size: int = -1, max_position: int = -1, device=None) -> torch.Tensor:
    """(Tq, Tk) offsets i - j, bucketed when bucket_size > 0."""
    rel = torch.arange(q_len, device=device)[:, None] - torch.arange(k_len, device=device)[None, :]
    if bucket_size > 0 and max_position > 0:
        rel = log_bucket_position(rel, bucket_size, max_position)
    return rel.long()


class DisentangledSelfAttention(nn.Module):
    """Multi-head self-attention with content-to-position (c2p) and position-to-content (p2c) terms."""

    def __init__(self, d_model: int, n_heads: int, pos_att_type: tuple[str, ...] = ("c2p", "p2c"),
                 share_att_key: bool = False, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.d_k = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.o = nn.Linear(d_model, d_model)
        self.pos_att_type, self.share_att_key = tuple(pos_att_type), share_att_key
        if not share_att_key:
            self.pos_key = nn.Linear(d_model, d_model) if "c2p" in self.pos_att_type else None
            self.pos_query = nn.Linear(d_model, d_model) if "p2c" in self.pos_att_type else None
        self.drop = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.n_heads, self.d_k).transpose(-3, -2)  # (..., heads, T, d_k)

    def forward(self, x: torch.Tensor, keep: torch.Tensor, rel_pos: torch.Tensor | None = None,
                rel_emb: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D); keep (B, 1, T, T) bool; rel_pos (T, T) bucketed offsets; rel_emb (2 * span, D) shared table."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.d_k).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, T, d_k)
        factor = 1 + sum(t in self.pos_att_type for t in ("c2p", "p2c"))
        scale = math.sqrt(self.d_k * factor)
        scores = q @ (k.transpose(-1, -2) / scale)  # (B, heads, T, T)
        if rel_emb is not None and self.pos_att_type:
            span = rel_emb.shape[0] // 2
            w_q, w_k, _ = self.qkv.weight.split(D)
            b_q, b_k, _ = self.qkv.bias.split(D)
            if "c2p" in self.pos_att_type:
                pk = nn.functional.linear(rel_emb, w_k, b_k) if self.share_att_key else self.pos_key(rel_emb)
                c2p = q @ self._heads(pk).transpose(-1, -2)  # (B, heads, T, 2 span)
                idx = torch.clamp(rel_pos + span, 0, 2 * span - 1).expand(B, self.n_heads, T, T)
                scores = scores + torch.gather(c2p, -1, idx) / scale
            if "p2c" in self.pos_att_type:
                pq = nn.functional.linear(rel_emb, w_q, b_q) if self.share_att_key else self.pos_query(rel_emb)
                p2c = k @ self._heads(pq).transpose(-1, -2)  # (B, heads, T, 2 span): key j against position vectors
                idx = torch.clamp(-rel_pos + span, 0, 2 * span - 1).expand(B, self.n_heads, T, T)
                scores = scores + torch.gather(p2c, -1, idx).transpose(-1, -2) / scale
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        attn = self.drop(torch.softmax(scores, dim=-1))
        return self.o((attn @ v).transpose(1, 2).reshape(B, T, D))  # (B, T, D)
