"""Vision Transformer (Dosovitskiy et al. 2021), one config-driven class for ViT and the image towers of
CLIP and SigLIP:

    x   = [x_cls; P_1 E; ...; P_N E] + E_pos        patches projected, a learned CLS token prepended (ViT, CLIP)
    x   = LN_pre(x)                                  CLIP only
    x_l = x + MSA(LN(x));  x_l = x_l + MLP(LN(x_l))  pre-norm encoder layers, l = 1..L
    out = LN_final(x_L)                              all tokens (ViT, SigLIP) or only the pooled CLS (CLIP)

forward(pixel_values) returns the last hidden states (B, 1 + N, H) (no CLS for SigLIP)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from encoderkit.nn import EncoderLayer, EncoderStack
from encoderkit.nn.patch import PatchEmbedding


@dataclass
class ViTConfig:
    image_size: int = 224  # input images are image_size x image_size
    patch_size: int = 16  # P: each P x P patch becomes one token
    num_channels: int = 3  # input channels
    hidden_size: int = 768  # H
    num_layers: int = 12  # L
    num_heads: int = 12  # attention heads
    intermediate_size: int = 3072  # MLP width
    hidden_act: str = "gelu"  # MLP activation (CLIP: quick_gelu, SigLIP: gelu_pytorch_tanh)
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon (CLIP / SigLIP: 1e-5)
    qkv_bias: bool = True  # biases on the Q, K, V projections
    patch_bias: bool = True  # bias on the patch projection (CLIP has none)
    cls_token: bool = True  # prepend a learned [CLS] token (SigLIP has none)
    pre_norm: bool = False  # LayerNorm on the embeddings before the first layer (CLIP)
    final_norm: str = "all"  # "all": LN on every output token; "cls": only on the pooled CLS (CLIP); "none"
    flat_embeddings: bool = False  # store CLS as (H,) and positions as (1 + N, H) (CLIP / SigLIP files) not (1, ., H)
    model_type: str = "vit"
    extra: dict = field(default_factory=dict)  # config.json fields kept for writing the checkpoint back

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class VisionTransformer(nn.Module):
    """Patch embedding + CLS + learned positions + pre-norm encoder stack (ViT, CLIP and SigLIP image towers)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.config = cfg
        H = cfg.hidden_size
        self.patch = PatchEmbedding(cfg.num_channels, H, cfg.patch_size, bias=cfg.patch_bias)
        n_pos = cfg.num_patches + int(cfg.cls_token)
        self.cls = nn.Parameter(torch.zeros((H,) if cfg.flat_embeddings else (1, 1, H))) if cfg.cls_token else None
        self.position = nn.Parameter(torch.zeros((n_pos, H) if cfg.flat_embeddings else (1, n_pos, H)))
        self.pre_norm = nn.LayerNorm(H, eps=cfg.layer_norm_eps) if cfg.pre_norm else None
        layers = [EncoderLayer(H, cfg.num_heads, cfg.intermediate_size, act=cfg.hidden_act, norm_first=True,
                               ln_eps=cfg.layer_norm_eps, bias=cfg.qkv_bias) for _ in range(cfg.num_layers)]
        self.encoder = EncoderStack(layers)
        self.norm = nn.LayerNorm(H, eps=cfg.layer_norm_eps) if cfg.final_norm != "none" else None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, C, S, S), normalized -> hidden states (B, [1 +] N, H)."""
        cfg = self.config
        if pixel_values.shape[-1] != cfg.image_size or pixel_values.shape[-2] != cfg.image_size:
            raise ValueError(f"expected {cfg.image_size}x{cfg.image_size} images, got {tuple(pixel_values.shape[-2:])}: "
                             "preprocess them with the model's image processor")
        x, _ = self.patch(pixel_values)  # (B, N, H)
        if self.cls is not None:
            x = torch.cat([self.cls.view(1, 1, -1).expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, H)
        x = x + self.position.view(1, -1, x.shape[-1])
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        x = self.encoder(x)
        return self.norm(x) if cfg.final_norm == "all" else x

    def pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The CLS vector (B, H), with CLIP's post-LayerNorm when final_norm == "cls"."""
        h = self.forward(pixel_values)[:, 0]
        return self.norm(h) if self.config.final_norm == "cls" else h


ViTModel = VisionTransformer
