"""Images as token sequences: non-overlapping P x P patches, each linearly projected (a stride-P convolution),
as in ViT (Dosovitskiy et al.) and Swin (Liu et al.)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbedding(nn.Module):
    """x (B, C, H, W) -> (B, N, D) with N = (H / P) * (W / P): one vector per patch, rows in raster order.
    pad=True zero-pads H and W up to a multiple of P first (Swin); otherwise they must divide evenly."""

    def __init__(self, in_channels: int, d_model: int, patch_size: int, bias: bool = True, pad: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.patch_size, self.pad = patch_size, pad

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Returns the patch vectors and the patch grid size (rows, cols)."""
        P = self.patch_size
        H, W = x.shape[-2:]
        if self.pad and (H % P or W % P):
            x = F.pad(x, (0, (P - W % P) % P, 0, (P - H % P) % P))
        elif H % P or W % P:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {P}; resize it first")
        y = self.proj(x)  # (B, D, H/P, W/P)
        grid = (y.shape[-2], y.shape[-1])
        return y.flatten(2).transpose(1, 2), grid  # (B, N, D)
