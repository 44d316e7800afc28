"""Dual encoders for images and text, trained to agree: CLIP (Radford et al. 2021) and SigLIP (Zhai et al. 2023).

    image:  v = W_v · LN(ViT(x)[CLS])                       (SigLIP: attention-pooled ViT tokens, no projection)
    text:   t = W_t · LN(T(ids))[eos]                       causal text transformer pooled at end-of-text
            (SigLIP: bidirectional, pooled at the last position, then a linear head)
    logits  = exp(s) · cos(v, t)                            (SigLIP: + b, read through a sigmoid, not a softmax)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.models.vit import ViTConfig, VisionTransformer
from encoderkit.nn import EncoderLayer, EncoderStack, attention_mask_bias
from encoderkit.nn.attention_pool import AttentionPooling


@dataclass
class TextTowerConfig:
    vocab_size: int = 49408  # token ids
    hidden_size: int = 512  # H
    num_layers: int = 12  # L
    num_heads: int = 8  # attention heads
    intermediate_size: int = 2048  # MLP width
    hidden_act: str = "quick_gelu"  # MLP activation
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon
    max_position_embeddings: int = 77  # longest text in tokens
    causal: bool = True  # CLIP: causal mask; SigLIP: bidirectional
    pooling: str = "eos"  # "eos": first end-of-text token (CLIP); "last": last position (SigLIP)
    eos_token_id: int = 2  # end-of-text id (2 = legacy CLIP configs: pool at the largest id instead)
    pad_token_id: int = 1  # padding id (SigLIP pads every text to max_position_embeddings)
    head_size: int = 0  # SigLIP: size of the linear head on the pooled vector; 0 = none


@dataclass
class DualEncoderConfig:
    text: TextTowerConfig
    vision: ViTConfig
    projection_dim: int = 512  # CLIP: size of the shared embedding space (projections have no bias)
    style: str = "clip"  # "clip" | "siglip"
    logit_scale_init: float = 2.6592  # log(1 / 0.07)
    model_type: str = "clip"
    extra: dict = field(default_factory=dict)  # config.json kept for writing the checkpoint back

    @property
    def hidden_size(self) -> int:
        return self.text.hidden_size


class TextTransformer(nn.Module):
    """Token + learned position embeddings, pre-norm layers, final LayerNorm, pooled at eos / last position."""

    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.config = cfg
        H = cfg.hidden_size
        self.token = nn.Embedding(cfg.vocab_size, H)
        self.position = nn.Embedding(cfg.max_position_embeddings, H)
        layers = [EncoderLayer(H, cfg.num_heads, cfg.intermediate_size, act=cfg.hidden_act, norm_first=True,
                               ln_eps=cfg.layer_norm_eps) for _ in range(cfg.num_layers)]
        self.encoder = EncoderStack(layers, final_norm=nn.LayerNorm(H, eps=cfg.layer_norm_eps))
        self.head = nn.Linear(H, cfg.head_size) if cfg.head_size else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> last hidden states (B, T, H)."""
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(f"text of {T} tokens is longer than the model's {self.config.max_position_embeddings}")
        x = self.token(input_ids) + self.position(torch.arange(T, device=input_ids.device))[None]  # (B, T, H)
        bias = attention_mask_bias(attention_mask, x.dtype) if attention_mask is not None and not bool(attention_mask.all()) else None
        return self.encoder(x, bias, causal=self.config.causal)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H) vector per text: at the end-of-text token (CLIP) or the last position (SigLIP), then the head."""
        h = self.forward(input_ids, attention_mask)
        rows = torch.arange(h.shape[0], device=h.device)
        if self.config.pooling == "last":
            v = h[:, -1]
        elif self.config.eos_token_id == 2:  # legacy CLIP configs: eos has the largest id in the vocabulary
            v = h[rows, input_ids.argmax(dim=-1)]
        else:
            v = h[rows, (input_ids == self.config.eos_token_id).int().argmax(dim=-1)]
        return self.head(v) if self.head is not None else v


class DualEncoder(nn.Module):
    """CLIP / SigLIP: an image tower and a text tower whose outputs are compared by scaled cosine similarity."""

    def __init__(self, cfg: DualEncoderConfig):
        super().__init__()
        self.config = cfg
        self.vision = VisionTransformer(cfg.vision)
        self.text = TextTransformer(cfg.text)
        v, t = cfg.vision, cfg.text
        self.logit_scale = nn.Parameter(torch.tensor(cfg.logit_scale_init) if cfg.style == "clip" else torch.zeros(1))
        if cfg.style == "clip":
            self.visual_projection = nn.Linear(v.hidden_size, cfg.projection_dim, bias=False)
            self.text_projection = nn.Linear(t.hidden_size, cfg.projection_dim, bias=False)
            self.map_head, self.logit_bias = None, None
        else:
            self.map_head = AttentionPooling(v.hidden_size, v.num_heads, v.intermediate_size, act=v.hidden_act,
                                             ln_eps=v.layer_norm_eps)
            self.logit_bias = nn.Parameter(torch.zeros(1))
            self.visual_projection = self.text_projection = None

    @property
    def embedding_dim(self) -> int:
        c = self.config
        return c.projection_dim if c.style == "clip" else c.vision.hidden_size

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, D) image embeddings (not normalized)."""
        if self.map_head is not None:
            return self.map_head(self.vision(pixel_values))
        return self.visual_projection(self.vision.pooled(pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, D) text embeddings (not normalized)."""
        v = self.text.pooled(input_ids, attention_mask)
        return self.text_projection(v) if self.text_projection is not None else v

    def logits(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """(n_images, n_texts) logits: exp(s) cos(v, t) [+ b for SigLIP]."""
        sim = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T
        out = sim * self.logit_scale.exp()
        return out + self.logit_bias if self.logit_bias is not None else out

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """logits_per_image (n_images, n_texts)."""
        return self.logits(self.get_image_features(pixel_values), self.get_text_features(input_ids, attention_mask))


class Tower(nn.Module):
    """One side of a DualEncoder as an Encoder backbone: forward(**batch) -> (B, D) pooled embeddings.
    The SigLIP text side pads every text to its full length, as it was trained."""

    def __init__(self, model: DualEncoder, modality: str):
        super().__init__()
        if modality not in ("text", "image"):
            raise ValueError(f"a dual encoder has a 'text' and an 'image' tower, not {modality!r}")
        self.model, self.modality = model, modality
        self.config = model.config.text if modality == "text" else model.config.vision

    @property
    def full_model(self) -> DualEncoder:
        """The whole dual encoder (what a checkpoint holds)."""
        return self.model

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        if self.modality == "image":
            if pixel_values is None:
                raise ValueError("the image tower needs pixel_values")
            return self.model.get_image_features(pixel_values)
        if input_ids is None:
            raise ValueError("the text tower needs input_ids")
        tc = self.model.config.text
        if self.model.config.style == "siglip":
            T = tc.max_position_embeddings
            if input_ids.shape[1] < T:
                pad = input_ids.new_full((input_ids.shape[0], T - input_ids.shape[1]), tc.pad_token_id)
                input_ids = torch.cat([input_ids, pad], dim=1)
            attention_mask = None
        return self.model.get_text_features(input_ids, attention_mask)
