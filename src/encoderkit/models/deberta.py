"""DeBERTa-v2 / v3 (He et al.): a post-norm BERT-style encoder whose attention is disentangled (content and
relative position scored separately, nn/disentangled.py), with relative-position buckets shared by all layers:

    x   = LN(E_word[ids] [+ E_pos] [+ E_type]) * mask     (v3: no absolute positions)
    P   = LN(E_rel)                                         shared relative-position table (v3 normalises it)
    x_l = LN(h + FFN(h)),  h = LN(x + DisentangledAttn(x, P))
    x_1 = LN(x_1 + tanh(conv(x_0)))                         optional convolution branch after layer 1 (v2-xlarge)

forward returns the last hidden states (B, T, H)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from encoderkit.nn import FeedForward, activation
from encoderkit.nn.disentangled import DisentangledSelfAttention, relative_positions


@dataclass
class DebertaV2Config:
    vocab_size: int = 128100
    hidden_size: int = 768  # H
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 0  # 0 = no segment embedding
    layer_norm_eps: float = 1e-7
    pad_token_id: int = 0
    embedding_size: int | None = None  # E (None = H); projected to H without bias when different
    position_biased_input: bool = True  # add absolute position embeddings (v3: False)
    relative_attention: bool = False  # disentangled attention on (v2 / v3 checkpoints: True)
    pos_att_type: tuple = ()  # ("c2p", "p2c")
    max_relative_positions: int = -1  # < 1: max_position_embeddings
    position_buckets: int = -1  # > 0: log buckets (v3: 256)
    share_att_key: bool = False  # position projections reuse the content Q / K weights (v3)
    norm_rel_ebd: bool = False  # LayerNorm on the relative embedding table (v3)
    conv_kernel_size: int = 0  # > 0: convolution branch after the first layer
    conv_groups: int = 1
    conv_act: str = "tanh"
    model_type: str = "deberta-v2"
    extra: dict = field(default_factory=dict)

    @property
    def max_relative(self) -> int:
        return self.max_relative_positions if self.max_relative_positions >= 1 else self.max_position_embeddings

    @property
    def span(self) -> int:
        """Rows per direction of the relative table (2 * span rows in all)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative


class DebertaLayer(nn.Module):
    """Post-norm layer with disentangled attention: h = LN(x + Attn(x)); out = LN(h + FFN(h))."""

    def __init__(self, cfg: DebertaV2Config):
        super().__init__()
        H = cfg.hidden_size
        self.attn = DisentangledSelfAttention(H, cfg.num_heads, cfg.pos_att_type if cfg.relative_attention else (),
                                              cfg.share_att_key)
        self.ln1 = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(H, cfg.intermediate_size, act=cfg.hidden_act)
        self.ln2 = nn.LayerNorm(H, eps=cfg.layer_norm_eps)

    def forward(self, x, keep, rel_pos, rel_emb):
        h = self.ln1(x + self.attn(x, keep, rel_pos, rel_emb))
        return self.ln2(h + self.ffn(h))


class DebertaV2Model(nn.Module):
    def __init__(self, cfg: DebertaV2Config):
        super().__init__()
        self.config = cfg
        H, E = cfg.hidden_size, cfg.embedding_size or cfg.hidden_size
        self.word = nn.Embedding(cfg.vocab_size, E)
        self.position = nn.Embedding(cfg.max_position_embeddings, E) if cfg.position_biased_input else None
        self.token_type = nn.Embedding(cfg.type_vocab_size, E) if cfg.type_vocab_size > 0 else None
        self.project = nn.Linear(E, H, bias=False) if E != H else None
        self.emb_norm = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(DebertaLayer(cfg) for _ in range(cfg.num_layers))
        self.rel_embeddings = nn.Embedding(2 * cfg.span, H) if cfg.relative_attention else None
        self.rel_norm = nn.LayerNorm(H, eps=cfg.layer_norm_eps) if cfg.relative_attention and cfg.norm_rel_ebd else None
        if cfg.conv_kernel_size > 0:
            k = cfg.conv_kernel_size
            self.conv = nn.Conv1d(H, H, k, padding=(k - 1) // 2, groups=cfg.conv_groups)
            self.conv_norm = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
            self.conv_act = activation(cfg.conv_act)
        else:
            self.conv = None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> last hidden states (B, T, H)."""
        B, T = input_ids.shape
        cfg = self.config
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        x = self.word(input_ids)
        if self.position is not None:
            pos = torch.arange(T, device=input_ids.device)[None] if position_ids is None else position_ids
            x = x + self.position(pos)
        if self.token_type is not None:
            x = x + self.token_type(torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        if self.project is not None:
            x = self.project(x)
        x = self.emb_norm(x) * mask[..., None].to(x.dtype)  # (B, T, H)
        m = mask.bool()
        keep = (m[:, None, None, :] & m[:, None, :, None])  # (B, 1, T, T): both tokens real
        rel_pos = rel_emb = None
        if self.rel_embeddings is not None:
            rel_pos = relative_positions(T, T, cfg.position_buckets, cfg.max_relative, device=x.device)
            rel_emb = self.rel_embeddings.weight
            if self.rel_norm is not None:
                rel_emb = self.rel_norm(rel_emb)
        emb = x
        for i, layer in enumerate(self.layers):
            x = layer(x, keep, rel_pos, rel_emb)
            if i == 0 and self.conv is not None:
                c = self.conv(emb.transpose(1, 2)).transpose(1, 2).masked_fill(~m[..., None], 0.0)
                x = self.conv_norm(x + self.conv_act(c)) * mask[..., None].to(x.dtype)
        return x
