"""Whisper's audio encoder (Radford et al. 2022): log-Mel frames -> two 1-D convolutions (the second with
stride 2) -> + fixed sinusoidal positions -> pre-norm Transformer layers -> final LayerNorm.

    x = GELU(conv1_k3(mel));  x = GELU(conv2_k3,s2(x))       (B, frames / 2, D)
    x = x + PE;   x_l = x + MSA(LN(x)),  x_l = x_l + MLP(LN(x_l));   out = LN(x_L)

Whisper's key projection has no bias; the fused Q|K|V projection below keeps the K bias at zero (a key
bias shifts every logit of a query by the same amount, so it would change nothing anyway)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.nn import EncoderLayer, EncoderStack


@dataclass
class WhisperEncoderConfig:
    num_mel_bins: int = 80  # input channels (Mel bands)
    d_model: int = 384  # H
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    activation_function: str = "gelu"
    max_source_positions: int = 1500  # output frames (= input frames / 2: 30 s at 10 ms hop)
    layer_norm_eps: float = 1e-5
    model_type: str = "whisper"
    extra: dict = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return self.d_model


class QKVNoKeyBias(nn.Module):
    """Fused Q|K|V projection with biases on Q and V only: y = x W^T + [b_q; 0; b_v]."""

    def __init__(self, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        nn.init.normal_(self.weight, std=0.02)
        self.q_bias = nn.Parameter(torch.zeros(d_model))
        self.v_bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias]))


class WhisperEncoder(nn.Module):
    """forward(input_features (B, n_mels, 2 * max_source_positions)) -> (B, max_source_positions, H)."""

    def __init__(self, cfg: WhisperEncoderConfig):
        super().__init__()
        self.config = cfg
        D = cfg.d_model
        self.conv1 = nn.Conv1d(cfg.num_mel_bins, D, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(D, D, kernel_size=3, stride=2, padding=1)
        self.position = nn.Parameter(torch.zeros(cfg.max_source_positions, D))  # sinusoidal in the checkpoint
        layers = [EncoderLayer(D, cfg.encoder_attention_heads, cfg.encoder_ffn_dim, act=cfg.activation_function,
                               norm_first=True, ln_eps=cfg.layer_norm_eps) for _ in range(cfg.encoder_layers)]
        for layer in layers:
            layer.attn.qkv = QKVNoKeyBias(D)
        self.encoder = EncoderStack(layers, final_norm=nn.LayerNorm(D, eps=cfg.layer_norm_eps))

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Whisper attends over the whole (silence-padded) window; attention_mask is only used for pooling."""
        want = 2 * self.config.max_source_positions
        if input_features.shape[-1] != want:
            raise ValueError(f"Whisper expects {want} log-Mel frames (the feature extractor pads every input to its "
                             f"window), got {input_features.shape[-1]}")
        x = F.gelu(self.conv1(input_features))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, T, D)
        return self.encoder(x + self.position)

    def output_mask(self, attention_mask: torch.Tensor, length: int) -> torch.Tensor:
        """Frame mask (B, frames) -> mask of the encoder outputs (B, frames / 2): the frames holding audio."""
        return attention_mask[:, ::2][:, :length]
