"""wav2vec 2.0 (Baevski et al. 2020) and HuBERT (Hsu et al. 2021) encoders: the same network, trained
with different objectives.

    z = ConvFeatureEncoder(wave)               (B, T, C): ~20 ms per frame
    x = W LN(z) + b                            feature projection (HuBERT may skip the LN)
    x = x + ConvPos(x)                         convolutional relative positions
    post-norm ("base"):   x = LN(x); x_l = PostNormLayer(x_{l-1})
    pre-norm ("stable"):  x_l = PreNormLayer(x_{l-1}); out = LN(x_L)

forward(input_values, attention_mask) returns (B, T, H); output_mask maps a sample mask to frames."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from encoderkit.nn import EncoderLayer, EncoderStack, attention_mask_bias
from encoderkit.nn.conv import ConvFeatureEncoder, ConvPositionalEmbedding


@dataclass
class Wav2Vec2Config:
    conv_dim: list = field(default_factory=lambda: [512] * 7)  # channels of each feature-encoder conv
    conv_kernel: list = field(default_factory=lambda: [10, 3, 3, 3, 3, 2, 2])
    conv_stride: list = field(default_factory=lambda: [5, 2, 2, 2, 2, 2, 2])  # total stride 320 = 20 ms at 16 kHz
    conv_bias: bool = False
    feat_extract_norm: str = "group"  # "group" (base) | "layer" (large)
    feat_extract_activation: str = "gelu"
    feat_proj_layer_norm: bool = True  # LayerNorm before the feature projection (HuBERT base: configurable)
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    num_conv_pos_embeddings: int = 128  # kernel of the positional convolution
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False  # pre-norm layers + final LN (large models)
    model_type: str = "wav2vec2"
    extra: dict = field(default_factory=dict)


class Wav2Vec2Model(nn.Module):
    """Convolutional feature encoder + projection + conv positions + Transformer (post- or pre-norm)."""

    def __init__(self, cfg: Wav2Vec2Config):
        super().__init__()
        self.config = cfg
        H, C = cfg.hidden_size, cfg.conv_dim[-1]
        self.features = ConvFeatureEncoder(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride, bias=cfg.conv_bias,
                                           norm=cfg.feat_extract_norm, act=cfg.feat_extract_activation,
                                           eps=cfg.layer_norm_eps)
        self.feat_norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps) if cfg.feat_proj_layer_norm else None
        self.feat_proj = nn.Linear(C, H)
        self.pos_conv = ConvPositionalEmbedding(H, cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups)
        self.norm = nn.LayerNorm(H, eps=cfg.layer_norm_eps)  # before the layers (base) or after them (stable)
        layers = [EncoderLayer(H, cfg.num_heads, cfg.intermediate_size, act=cfg.hidden_act,
                               norm_first=cfg.do_stable_layer_norm, ln_eps=cfg.layer_norm_eps) for _ in range(cfg.num_layers)]
        self.encoder = EncoderStack(layers)

    def output_mask(self, attention_mask: torch.Tensor, length: int) -> torch.Tensor:
        """Sample mask (B, N) -> frame mask (B, length): frames computed from real samples only."""
        n = self.features.output_lengths(attention_mask.sum(-1))
        return (torch.arange(length, device=attention_mask.device)[None, :] < n[:, None]).long()

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_values (B, N) normalized waveform -> (B, T, H)."""
        z = self.features(input_values)  # (B, T, C)
        x = self.feat_proj(self.feat_norm(z) if self.feat_norm is not None else z)  # (B, T, H)
        bias = None
        if attention_mask is not None:
            frames = self.output_mask(attention_mask, x.shape[1])
            x = x * frames[..., None].to(x.dtype)  # padded frames are zero before the positional conv
            bias = attention_mask_bias(frames, x.dtype) if not bool(frames.all()) else None
        x = x + self.pos_conv(x)
        if self.config.do_stable_layer_norm:
            return self.norm(self.encoder(x, bias))
        return self.encoder(self.norm(x), bias)


HubertModel = Wav2Vec2Model
