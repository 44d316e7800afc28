"""The sentence-embedding head: pool the token vectors (one mode, or several concatenated), optionally leaving
the prompt's tokens out, then project through Dense layers  y = act(W x + b) (+ x or + R x)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from encoderkit.nn.pooling import POOLING_MODES, pool


class Dense(nn.Module):
    """y = act(W x + b); with use_residual, y + x (same width) or y + R x (R a bias-free projection)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: nn.Module | None = None,
                 use_residual: bool = False):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = activation if activation is not None else nn.Identity()
        self.use_residual = use_residual
        self.residual = nn.Linear(in_features, out_features, bias=False) if use_residual and in_features != out_features else None

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.activation(self.linear(x))  # (B, out)
        if self.use_residual:
            y = y + (x if self.residual is None else self.residual(x))
        return y


def drop_leading(mask: torch.Tensor, n: int | torch.Tensor) -> torch.Tensor:
    """A copy of the (B, T) keep-mask without the first n real tokens of each row (n: int or (B,)), whichever
    side the padding is on: how a prompt is left out of pooling."""
    first = mask.long().argmax(1, keepdim=True)  # (B, 1) first real position
    offset = torch.arange(mask.shape[1], device=mask.device)[None, :] - first  # (B, T) position within the text
    n = torch.as_tensor(n, device=mask.device).reshape(-1, 1)  # (B or 1, 1)
    return mask * (offset >= n).to(mask.dtype)


class EmbeddingHead(nn.Module):
    """(B, T, H) token vectors + (B, T) mask -> (B, D) sentence vector: pool, concatenate the modes, project."""

    def __init__(self, pooling: str | Sequence[str] = "mean", dense: Sequence[nn.Module] = (), include_prompt: bool = True):
        super().__init__()
        modes = (pooling,) if isinstance(pooling, str) else tuple(pooling)
        bad = [m for m in modes if m not in POOLING_MODES]
        if not modes or bad:
            raise ValueError(f"unknown pooling {bad or pooling!r}; choose one or more of {', '.join(POOLING_MODES)}")
        self.modes = modes
        self.include_prompt = include_prompt
        self.dense = nn.ModuleList(dense)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, prompt_length: int | torch.Tensor | None = None) -> torch.Tensor:
        """hidden is (B, T, H), or (B, H) when the backbone pooled itself (then only the projections apply)."""
        if hidden.dim() == 2:
            v = hidden
        else:
            if not self.include_prompt and prompt_length is not None:
                mask = drop_leading(mask, prompt_length)
            v = torch.cat([pool(hidden, mask, m) for m in self.modes], dim=-1)  # (B, modes * H)
        for layer in self.dense:
            v = layer(v)
        return v

    def extra_repr(self) -> str:
        return f"pooling={'+'.join(self.modes)}, include_prompt={self.include_prompt}"
