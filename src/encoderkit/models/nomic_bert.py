"""NomicBERT (Nussbaum et al., 2024; nomic-embed-text v1 / v1.5): a post-norm BERT with rotary positions,
SwiGLU feed-forwards and no linear biases, trained for 2,048 tokens and run up to 8,192:

    x   = LN_emb(E_word[ids] + E_type[types])               embeddings: no position table
    h   = LN_1(x + Attn(x))                                 q and k rotated by RoPE (base 1,000 in the published
                                                            checkpoints), one fused Wqkv projection
    x   = LN_2(h + W_2 (silu(h W_gate) * (h W_up)))          SwiGLU; the original code calls W_up fc11, W_gate fc12

and the model returns x_L, the last hidden states (B, T, H)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from encoderkit.nn import GatedFeedForward, MultiHeadSelfAttention, RotaryEmbedding, attention_bias


@dataclass
class NomicBertConfig:
    vocab_size: int = 30528  # number of token ids
    hidden_size: int = 768  # H, width of every layer
    num_layers: int = 12  # L, encoder layers
    num_heads: int = 12  # attention heads per layer (d_k = H / heads)
    intermediate_size: int = 3072  # d_ff, width of each SwiGLU half
    hidden_act: str = "silu"  # activation on the gate half (silu: SwiGLU; gelu: GeGLU)
    max_position_embeddings: int = 8192  # longest input (rotary: no table; trained on 2,048)
    type_vocab_size: int = 2  # segment (token type) ids; 0 = no segment embedding
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon
    pad_token_id: int = 0  # padding id
    rotary_base: float = 1000.0  # RoPE theta
    rotary_fraction: float = 1.0  # share of each head's features that are rotated (partial rotary when < 1)
    rotary_interleaved: bool = False  # rotate pairs (x0, x1), (x2, x3).. instead of (x_i, x_{i+r/2})
    qkv_bias: bool = False  # Wqkv and the attention output projection have biases
    mlp_bias: bool = False  # the feed-forward projections have biases
    dropout: float = 0.0  # residual and embedding dropout (training only)
    attention_dropout: float = 0.0  # attention-probability dropout (training only)
    original_config: bool = False  # the config.json used the original (GPT-2 style) names: n_embd, n_layer, ...
    model_type: str = "nomic_bert"  # the family name in Hugging Face configs
    extra: dict = field(default_factory=dict)  # config fields kept for writing the checkpoint back

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        r = self.head_dim * self.rotary_fraction
        if not 0 < self.rotary_fraction <= 1 or r != int(r) or int(r) % 2:
            raise ValueError(f"rotary_fraction={self.rotary_fraction} must give an even number of rotated "
                             f"features per head (d_k={self.head_dim})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dim(self) -> int:
        """How many features of each head RoPE rotates."""
        return int(self.head_dim * self.rotary_fraction)


class NomicBertEmbeddings(nn.Module):
    """Token (+ segment) embeddings and a LayerNorm; positions enter later, as rotations of q and k."""

    def __init__(self, cfg: NomicBertConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size) if cfg.type_vocab_size > 0 else None
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.word(input_ids)  # (B, T, H)
        if self.token_type is not None:
            x = x + self.token_type(token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids))
        return self.drop(self.norm(x))


class NomicBertLayer(nn.Module):
    """Post-norm layer: h = LN_1(x + Attn(x)); out = LN_2(h + SwiGLU(h))."""

    def __init__(self, cfg: NomicBertConfig, rotary: RotaryEmbedding):
        super().__init__()
        H = cfg.hidden_size
        self.attn = MultiHeadSelfAttention(H, cfg.num_heads, dropout=cfg.attention_dropout, bias=cfg.qkv_bias,
                                           rotary=rotary)
        self.ln1 = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.ffn = GatedFeedForward(H, cfg.intermediate_size, act=cfg.hidden_act, bias=cfg.mlp_bias)
        self.ln2 = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, position_ids: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x + self.drop(self.attn(x, bias, position_ids)))
        return self.ln2(h + self.drop(self.ffn(h)))


class NomicBertModel(nn.Module):
    """Embeddings + L post-norm rotary layers; forward returns the last hidden states."""

    def __init__(self, cfg: NomicBertConfig):
        super().__init__()
        self.config = cfg
        # one rotary module (no weights) shared by every layer
        rotary = RotaryEmbedding(cfg.head_dim, base=cfg.rotary_base, rotary_dim=cfg.rotary_dim,
                                 interleaved=cfg.rotary_interleaved)
        self.embeddings = NomicBertEmbeddings(cfg)
        self.layers = nn.ModuleList(NomicBertLayer(cfg, rotary) for _ in range(cfg.num_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> last hidden states (B, T, H); attention_mask 1 = token, 0 = padding (on the right:
        positions count from the first token of every row)."""
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        bias = attention_bias(attention_mask, x.dtype, T, device=x.device)  # (B, 1, 1, T) or None
        for layer in self.layers:
            x = layer(x, bias, position_ids)
        return x  # (B, T, H)
