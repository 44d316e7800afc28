"""ResNet (He et al. 2016) as in `transformers`' ResNetModel:

    stem:   x = maxpool_3x3/2(ReLU(BN(conv_7x7/2(x))))
    block:  y = ReLU(F(x) + shortcut(x))      F = conv3x3-BN-ReLU-conv3x3-BN (basic)
                                              or conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1-BN (bottleneck, width / 4)
    stages: the first block of each stage (but the first) halves the resolution; shortcut = conv1x1-BN when
            the shape changes.

forward(pixel_values) returns the last feature map as hidden states (B, h*w, C), one token per position, like
every backbone; the Encoder's mean pooling over them is the global average pool (transformers' pooler_output).
`features()` gives the map itself (B, C, h, w)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from encoderkit.nn.conv import ConvBN
from encoderkit.nn.layers import activation


@dataclass
class ResNetConfig:
    num_channels: int = 3  # input channels
    embedding_size: int = 64  # channels after the stem
    hidden_sizes: list = field(default_factory=lambda: [256, 512, 1024, 2048])  # output channels per stage
    depths: list = field(default_factory=lambda: [3, 4, 6, 3])  # blocks per stage
    layer_type: str = "bottleneck"  # "basic" | "bottleneck"
    hidden_act: str = "relu"
    downsample_in_first_stage: bool = False  # stride 2 in the first stage too
    downsample_in_bottleneck: bool = False  # stride on the first 1x1 conv instead of the 3x3 (ResNet v1 / "v1.5")
    model_type: str = "resnet"
    extra: dict = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return self.hidden_sizes[-1]


class ResidualBlock(nn.Module):
    """One basic or bottleneck block with its (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, cfg: ResNetConfig):
        super().__init__()
        act = cfg.hidden_act
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)) \
            if (c_in != c_out or stride != 1) else None
        if cfg.layer_type == "bottleneck":
            mid = c_out // 4
            s1, s3 = (stride, 1) if cfg.downsample_in_bottleneck else (1, stride)
            self.f = nn.Sequential(ConvBN(c_in, mid, 1, s1, act), ConvBN(mid, mid, 3, s3, act), ConvBN(mid, c_out, 1, 1, None))
        elif cfg.layer_type == "basic":
            self.f = nn.Sequential(ConvBN(c_in, c_out, 3, stride, act), ConvBN(c_out, c_out, 3, 1, None))
        else:
            raise ValueError(f"unknown ResNet layer_type {cfg.layer_type!r}; use 'basic' or 'bottleneck'")
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.f(x) + (self.shortcut(x) if self.shortcut is not None else x))


class ResNetModel(nn.Module):
    """Stem + stages of residual blocks; forward -> hidden states (B, h*w, C), features -> (B, C, h, w)."""

    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        self.config = cfg
        self.stem = ConvBN(cfg.num_channels, cfg.embedding_size, 7, 2, cfg.hidden_act)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, c_in = [], cfg.embedding_size
        for i, (c_out, depth) in enumerate(zip(cfg.hidden_sizes, cfg.depths)):
            stride = 2 if (i > 0 or cfg.downsample_in_first_stage) else 1
            blocks = [ResidualBlock(c_in, c_out, stride, cfg)] + [ResidualBlock(c_out, c_out, 1, cfg) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> last feature map (B, C, H/32, W/32)."""
        x = self.pool(self.stem(pixel_values))
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> the last map's positions as tokens (B, h*w, C); pool them with pooling="mean"."""
        return self.features(pixel_values).flatten(2).transpose(1, 2)  # (B, h*w, C)
