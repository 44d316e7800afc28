"""ModernBERT (Warner et al., 2024): a pre-norm encoder with rotary positions, GeGLU feed-forwards, no biases,
and attention that alternates between global layers and sliding-window local layers:

    x   = LN(E_tok[ids])                                     embeddings: no position table, no segments
    h   = x + Attn_l(LN_attn(x))                             LN_attn is the identity in the first layer
    x   = h + W_o (gelu(h' W_gate) * (h' W_up)),  h' = LN_mlp(h)
    Attn_l: rotary theta_global and full attention on every n-th layer (l % n == 0), otherwise rotary theta_local
            and a band |i - j| <= local_attention / 2
    out = LN_final(x_L)                                      the last hidden states (B, T, H)"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from encoderkit.nn import GatedFeedForward, MultiHeadSelfAttention, RotaryEmbedding, attention_bias

GLOBAL, LOCAL = "full_attention", "sliding_attention"  # the layer kinds, as Hugging Face's layer_types name them


@dataclass
class ModernBertConfig:
    vocab_size: int = 50368  # number of token ids
    hidden_size: int = 768  # H, width of every layer
    num_layers: int = 22  # L, encoder layers
    num_heads: int = 12  # attention heads per layer (d_k = H / heads)
    intermediate_size: int = 1152  # d_ff, width of each GeGLU half
    hidden_act: str = "gelu"  # activation on the gate half of the feed-forward
    max_position_embeddings: int = 8192  # longest input the model was trained for (rotary: no table)
    norm_eps: float = 1e-5  # LayerNorm epsilon
    norm_bias: bool = False  # LayerNorms have a bias
    attention_bias: bool = False  # Wqkv and Wo have biases
    mlp_bias: bool = False  # Wi and Wo of the feed-forward have biases
    layer_types: list[str] = field(default_factory=list)  # per layer: "full_attention" or "sliding_attention"
    local_attention: int = 128  # total window of local layers: a query sees keys within local_attention // 2
    global_rope_theta: float = 160_000.0  # rotary base of global layers
    local_rope_theta: float = 10_000.0  # rotary base of local layers
    pad_token_id: int = 50283  # padding id
    embedding_dropout: float = 0.0  # dropout after the embedding norm (training only)
    attention_dropout: float = 0.0  # dropout on attention probabilities and output (training only)
    mlp_dropout: float = 0.0  # dropout inside the feed-forward (training only)
    model_type: str = "modernbert"  # the family name in Hugging Face configs
    extra: dict = field(default_factory=dict)  # config fields kept for writing the checkpoint back

    def __post_init__(self) -> None:
        if not self.layer_types:  # the original pattern: global on layers 0, 3, 6, ...
            self.layer_types = [GLOBAL if i % 3 == 0 else LOCAL for i in range(self.num_layers)]
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
        unknown = set(self.layer_types) - {GLOBAL, LOCAL}
        if unknown:
            raise ValueError(f"unknown layer types {sorted(unknown)}; use {GLOBAL!r} or {LOCAL!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")

    @property
    def window(self) -> int:
        """How far a query of a local layer sees on each side."""
        return self.local_attention // 2


class ModernBertLayer(nn.Module):
    """Pre-norm layer: x + Attn(LN(x)), then + GeGLU(LN(.)); the first layer has no attention norm."""

    def __init__(self, cfg: ModernBertConfig, index: int, rotary: RotaryEmbedding):
        super().__init__()
        H = cfg.hidden_size
        self.attn_norm = nn.LayerNorm(H, eps=cfg.norm_eps, bias=cfg.norm_bias) if index > 0 else nn.Identity()
        self.attn = MultiHeadSelfAttention(H, cfg.num_heads, dropout=cfg.attention_dropout, bias=cfg.attention_bias,
                                           rotary=rotary)
        self.attn_drop = nn.Dropout(cfg.attention_dropout)
        self.mlp_norm = nn.LayerNorm(H, eps=cfg.norm_eps, bias=cfg.norm_bias)
        self.mlp = GatedFeedForward(H, cfg.intermediate_size, act=cfg.hidden_act, dropout=cfg.mlp_dropout,
                                    bias=cfg.mlp_bias)
        self.kind = cfg.layer_types[index]

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, position_ids: torch.Tensor) -> torch.Tensor:
        x = x + self.attn_drop(self.attn(self.attn_norm(x), bias, position_ids))
        return x + self.mlp(self.mlp_norm(x))


class ModernBertModel(nn.Module):
    """Token embeddings + LN, L pre-norm layers (global / local attention), a final LN."""

    def __init__(self, cfg: ModernBertConfig):
        super().__init__()
        self.config = cfg
        d_k = cfg.hidden_size // cfg.num_heads
        # rotary modules hold no weights: one per layer kind, shared by the layers of that kind
        rotary = {GLOBAL: RotaryEmbedding(d_k, base=cfg.global_rope_theta),
                  LOCAL: RotaryEmbedding(d_k, base=cfg.local_rope_theta)}
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.emb_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps, bias=cfg.norm_bias)
        self.emb_drop = nn.Dropout(cfg.embedding_dropout)
        self.layers = nn.ModuleList(ModernBertLayer(cfg, i, rotary[kind]) for i, kind in enumerate(cfg.layer_types))
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps, bias=cfg.norm_bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> last hidden states (B, T, H); attention_mask 1 = token, 0 = padding;
        token_type_ids are ignored (ModernBERT has no segments)."""
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
        x = self.emb_drop(self.emb_norm(self.tok_embeddings(input_ids)))  # (B, T, H)
        w = self.config.window
        full = attention_bias(attention_mask, x.dtype, T, device=x.device)  # (B, 1, 1, T) or None
        # a window wider than the input hides nothing: local layers then attend like global ones
        local = full if T <= w + 1 else attention_bias(attention_mask, x.dtype, T, window=(w, w), device=x.device)
        bias = {GLOBAL: full, LOCAL: local}  # local: (B|1, 1, T, T)
        for layer in self.layers:
            x = layer(x, bias[layer.kind], position_ids)
        return self.final_norm(x)  # (B, T, H)
