"""Swin Transformer (Liu et al. 2021): a pyramid of pre-norm Transformer stages whose attention is local.

    x = LN(PatchEmbed_4x4(img)) [+ E_pos]
    per stage s, block i:   W-MSA in M x M windows, shifted by M/2 when i is odd (with a region mask),
                            plus a learned bias B[dy, dx] per head:   x = x + WMSA(LN(x));  x = x + MLP(LN(x))
    between stages:         patch merging (2x2 -> 1 token, C -> 2C)
    out = LN(x)             (B, N_last, C_last); mean over tokens is the pooled vector."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.nn import FeedForward, MultiHeadSelfAttention
from encoderkit.nn.patch import PatchEmbedding
from encoderkit.nn.windows import PatchMerging, WindowRelativeBias, shifted_window_mask, window_merge, window_partition


@dataclass
class SwinConfig:
    image_size: int = 224  # input resolution (square)
    patch_size: int = 4  # first patch size
    num_channels: int = 3
    embed_dim: int = 96  # C of the first stage; doubles at every merge
    depths: list = field(default_factory=lambda: [2, 2, 6, 2])  # blocks per stage
    num_heads: list = field(default_factory=lambda: [3, 6, 12, 24])  # heads per stage
    window_size: int = 7  # M
    mlp_ratio: float = 4.0  # MLP width / C
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    use_absolute_embeddings: bool = False  # learned absolute positions on the patch grid
    model_type: str = "swin"
    extra: dict = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.embed_dim * 2 ** (len(self.depths) - 1))


class SwinBlock(nn.Module):
    """x = x + W-MSA(LN(x)) (shifted windows when shift > 0);  x = x + MLP(LN(x))."""

    def __init__(self, dim: int, n_heads: int, window: int, shift: int, cfg: SwinConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attn = MultiHeadSelfAttention(dim, n_heads)
        self.rel_bias = WindowRelativeBias(window, n_heads)
        self.ln2 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(dim, int(cfg.mlp_ratio * dim), act=cfg.hidden_act)
        self.window, self.shift = window, shift

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        H, W = grid
        B, N, C = x.shape
        M, shift = self.window, self.shift
        if min(H, W) <= M:  # the map fits in one window: no shifting (as the reference does)
            if min(H, W) < M:
                raise ValueError(f"Swin: a {H}x{W} feature map is smaller than the {M}x{M} window; use larger images")
            shift = 0
        h = self.ln1(x).view(B, H, W, C)
        pad_b, pad_r = (M - H % M) % M, (M - W % M) % M
        h = F.pad(h, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        if shift:
            h = torch.roll(h, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(h, M)  # (B * nW, M*M, C)
        bias = self.rel_bias()  # (1, heads, M*M, M*M)
        if shift:
            mask = shifted_window_mask(Hp, Wp, M, shift, x.dtype, x.device)  # (nW, M*M, M*M)
            bias = bias + mask[None, :, None].expand(B, -1, -1, -1, -1).reshape(-1, 1, M * M, M * M)
        h = window_merge(self.attn(windows, bias), M, Hp, Wp)  # (B, Hp, Wp, C)
        if shift:
            h = torch.roll(h, shifts=(shift, shift), dims=(1, 2))
        x = x + h[:, :H, :W].reshape(B, N, C)
        return x + self.ffn(self.ln2(x))


class SwinModel(nn.Module):
    """Patch embedding + stages of Swin blocks with patch merging in between; forward -> (B, N, C) tokens."""

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.config = cfg
        C = cfg.embed_dim
        self.patch = PatchEmbedding(cfg.num_channels, C, cfg.patch_size, pad=True)
        self.patch_norm = nn.LayerNorm(C)
        grid = -(-cfg.image_size // cfg.patch_size)
        self.position = nn.Parameter(torch.zeros(1, grid * grid, C)) if cfg.use_absolute_embeddings else None
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for s, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
            dim = C * 2 ** s
            self.stages.append(nn.ModuleList(
                SwinBlock(dim, heads, cfg.window_size, 0 if i % 2 == 0 else cfg.window_size // 2, cfg) for i in range(depth)))
            if s < len(cfg.depths) - 1:
                self.merges.append(PatchMerging(dim))
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, C, H, W) -> last-stage tokens after LayerNorm (B, N, C_last)."""
        x, grid = self.patch(pixel_values)  # (B, N, C)
        x = self.patch_norm(x)
        if self.position is not None:
            x = x + self.position
        for s, blocks in enumerate(self.stages):
            for block in blocks:
                x = block(x, grid)
            if s < len(self.merges):
                x, grid = self.merges[s](x, grid)
        return self.norm(x)
