"""Pooling: turn per-token vectors (B, T, H) and a keep-mask (B, T) into one vector per input (B, H)."""
from __future__ import annotations

import torch
from torch import nn

POOLING_MODES = ("cls", "mean", "max", "last", "weighted_mean", "mean_sqrt_len")


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Pool hidden states over the real (mask = 1) tokens.
    cls: first token (first real token when left-padded); mean: sum / count; max: elementwise max; last: last real token;
    weighted_mean: position-weighted mean (weight = position index + 1, SGPT);
    mean_sqrt_len: sum / sqrt(count)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    if mode == "cls":
        first = mask.long().argmax(1)  # (B,) 0 unless left-padded
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    if mode in ("mean", "mean_sqrt_len"):
        total = (hidden * m).sum(1)  # (B, H)
        count = m.sum(1).clamp(min=1e-9)  # (B, 1)
        return total / (count if mode == "mean" else count.sqrt())
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values
    if mode == "last":
        # index of the last real token, whichever side the padding is on
        T = mask.shape[1]
        last = T - 1 - mask.long().flip(1).argmax(1)  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if mode == "weighted_mean":
        w = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)[None, :, None] * m
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)
    raise ValueError(f"unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")


class Pooling(nn.Module):
    """`pool` as a module, so an Encoder pipeline can hold it."""

    def __init__(self, mode: str = "mean"):
        super().__init__()
        if mode not in POOLING_MODES:
            raise ValueError(f"unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")
        self.mode = mode

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pool(hidden, mask, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
