"""Convolutional building blocks: conv + BatchNorm (+ activation) for ResNets; wav2vec 2.0's convolutional
feature encoder (raw waveform -> one vector per ~20 ms) and its convolutional relative position embedding
(a grouped, weight-normalised 1-D convolution over the sequence, Baevski et al. 2020)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.nn.layers import activation


class ConvBN(nn.Module):
    """y = act(BN(conv_kxk(x))), 'same' padding k // 2; act None = identity."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1, act: str | None = "relu"):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = activation(act) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return self.act(y) if self.act is not None else y


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, T) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvFeatureEncoder(nn.Module):
    """Waveform (B, N) -> features (B, T, C): a stack of strided 1-D convolutions, each followed by a norm
    and GELU. norm="group": GroupNorm (one group per channel) after the first conv only (wav2vec 2.0 base);
    norm="layer": LayerNorm over channels after every conv (large / "stable" models)."""

    def __init__(self, dims: list[int], kernels: list[int], strides: list[int], bias: bool = False,
                 norm: str = "group", act: str = "gelu", eps: float = 1e-5):
        super().__init__()
        if norm not in ("group", "layer"):
            raise ValueError(f"feature encoder norm must be 'group' or 'layer', got {norm!r}")
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        c_in = 1
        for i, (c, k, s) in enumerate(zip(dims, kernels, strides)):
            self.convs.append(nn.Conv1d(c_in, c, k, stride=s, bias=bias))
            if norm == "layer":
                self.norms.append(_ChannelLayerNorm(c, eps=eps))
            elif i == 0:
                self.norms.append(nn.GroupNorm(c, c, eps=eps))
            else:
                self.norms.append(nn.Identity())
            c_in = c
        self.kernels, self.strides = list(kernels), list(strides)
        self.act = activation(act)

    def output_lengths(self, n: torch.Tensor) -> torch.Tensor:
        """Number of output frames for inputs of n samples: floor((n - k) / s) + 1 per layer."""
        for k, s in zip(self.kernels, self.strides):
            n = torch.div(n - k, s, rounding_mode="floor") + 1
        return n

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave[:, None]  # (B, 1, N)
        for conv, norm in zip(self.convs, self.norms):
            x = self.act(norm(conv(x)))  # (B, C, T)
        return x.transpose(1, 2)  # (B, T, C)


class ConvPositionalEmbedding(nn.Module):
    """Relative positions by convolution: pos = GELU(conv_K(x)) with a grouped conv whose weight is
    weight-normalised along the kernel axis: W = g * V / ||V|| (norm over all dims but the kernel position)."""

    def __init__(self, d_model: int, kernel: int, groups: int):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(d_model, d_model // groups, kernel) * 0.02)
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.kernel, self.groups = kernel, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v
        w = self.weight_g * v / v.norm(dim=(0, 1), keepdim=True)  # (D, D/groups, K)
        y = F.conv1d(x.transpose(1, 2), w, self.bias, padding=self.kernel // 2, groups=self.groups)  # (B, D, T + 1?)
        if self.kernel % 2 == 0:  # an even kernel with padding K/2 yields one extra frame: drop it
            y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2)  # (B, T, D)
