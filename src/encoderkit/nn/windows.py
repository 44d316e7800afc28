"""Swin's local attention (Liu et al. 2021): attention inside M x M windows, windows shifted by M/2 in
every other block (with a mask so tokens wrapped around by the cyclic shift do not see each other), a
learned bias per relative (dy, dx) offset, and 2x2 patch merging between stages."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def window_partition(x: torch.Tensor, M: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/M * W/M, M*M, C): the tokens of each window, windows in raster order."""
    B, H, W, C = x.shape
    x = x.view(B, H // M, M, W // M, M, C).transpose(2, 3)  # (B, H/M, W/M, M, M, C)
    return x.reshape(-1, M * M, C)


def window_merge(windows: torch.Tensor, M: int, H: int, W: int) -> torch.Tensor:
    """Inverse of window_partition: (B * H/M * W/M, M*M, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // M, W // M, M, M, C).transpose(2, 3)  # (B, H/M, M, W/M, M, C)
    return x.reshape(-1, H, W, C)


def relative_position_index(M: int) -> torch.Tensor:
    """(M*M, M*M) index into a ((2M-1)^2, heads) bias table: row-major code of (dy + M-1, dx + M-1)."""
    ys, xs = torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, M*M)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, M*M, M*M)
    return (rel[0] + M - 1) * (2 * M - 1) + (rel[1] + M - 1)


def shifted_window_mask(H: int, W: int, M: int, shift: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """(num_windows, M*M, M*M) additive mask for the shifted windows: -100 between tokens that came from
    different regions of the un-shifted map (the value Swin uses), 0 elsewhere."""
    def regions(n: int) -> torch.Tensor:
        i = torch.arange(n, device=device)
        return (i >= n - M).long() + (i >= n - shift).long()  # 0, 1, 2 along the axis

    label = (regions(H)[:, None] * 3 + regions(W)[None, :]).to(dtype)  # (H, W)
    win = window_partition(label[None, :, :, None], M).squeeze(-1)  # (nW, M*M)
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowRelativeBias(nn.Module):
    """A learned scalar per (relative offset, head) inside an M x M window: returns (1, heads, M*M, M*M)."""

    def __init__(self, window: int, n_heads: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, n_heads))
        self.register_buffer("index", relative_position_index(window), persistent=False)
        self.window = window

    def forward(self) -> torch.Tensor:
        return self.table[self.index].permute(2, 0, 1).unsqueeze(0)  # (1, heads, M*M, M*M)


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood (4C), LayerNorm, project to 2C: halves the grid, doubles the width."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        H, W = grid
        B, _, C = x.shape
        x = x.view(B, H, W, C)
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)  # (B, H/2, W/2, 4C)
        h, w = x.shape[1:3]
        return self.reduction(self.norm(x.view(B, h * w, 4 * C))), (h, w)  # (B, N/4, 2C)
