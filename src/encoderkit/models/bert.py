"""The BERT family as one config-driven model: BERT, MiniLM, RoBERTa / XLM-RoBERTa, DistilBERT,
ELECTRA (discriminator as encoder) and ALBERT. Differences are config fields, not copied classes:

    x   = LN(E_word[ids] + E_pos[pos] + E_type[types])      embeddings (size E); with rotary positions
                                                             (RoFormer) no E_pos: q and k are rotated instead
    x   = x W_proj + b                                       only when E != H (ALBERT, small ELECTRA)
    x_l = post-norm encoder layer(x_{l-1}, padding mask)     l = 1..L (ALBERT: layers reuse shared weights)

and the model returns x_L, the last hidden states (B, T, H)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from encoderkit.nn import EncoderLayer, EncoderStack, LearnedPositionalEmbedding, RotaryEmbedding, attention_mask_bias


@dataclass
class BertConfig:
    vocab_size: int = 30522  # number of token ids
    hidden_size: int = 768  # H, width of every layer
    num_layers: int = 12  # L, encoder layers applied
    num_heads: int = 12  # attention heads per layer (d_k = H / heads)
    intermediate_size: int = 3072  # width of the feed-forward block
    hidden_act: str = "gelu"  # feed-forward activation
    max_position_embeddings: int = 512  # rows of the learned position table
    type_vocab_size: int = 2  # segment (token type) ids; 0 = no segment embedding (DistilBERT)
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon
    pad_token_id: int = 0  # padding id (RoBERTa derives position ids from it)
    embedding_size: int | None = None  # E; None = H. ALBERT / small ELECTRA factorize E < H
    roberta_positions: bool = False  # position ids = padding_idx + 1 + index of real tokens (RoBERTa)
    num_hidden_groups: int = 1  # ALBERT: groups of shared layers
    inner_group_num: int = 1  # ALBERT: layers inside a group
    share_layers: bool = False  # ALBERT: cross-layer parameter sharing
    position_embedding_type: str = "absolute"  # "absolute" (learned table) or "rotary" (RoFormer: RoPE on q, k)
    dropout: float = 0.1  # hidden dropout (training only)
    attention_dropout: float = 0.1  # attention-probability dropout (training only)
    model_type: str = "bert"  # the family name in Hugging Face configs
    extra: dict = field(default_factory=dict)  # config fields kept for writing the checkpoint back

    def __post_init__(self) -> None:
        if self.position_embedding_type not in ("absolute", "rotary"):
            raise ValueError(f"unknown position_embedding_type {self.position_embedding_type!r}; "
                             "use absolute or rotary")

    @property
    def emb_size(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def rotary(self) -> bool:
        """Positions enter as RoPE rotations of q and k (no learned position table)."""
        return self.position_embedding_type == "rotary"


class BertEmbeddings(nn.Module):
    """Token + position (+ segment) embeddings, LayerNorm, dropout, then an optional E->H projection."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        E = cfg.emb_size
        self.word = nn.Embedding(cfg.vocab_size, E, padding_idx=None)
        self.position = None if cfg.rotary else LearnedPositionalEmbedding(cfg.max_position_embeddings, E)
        self.token_type = nn.Embedding(cfg.type_vocab_size, E) if cfg.type_vocab_size > 0 else None
        self.norm = nn.LayerNorm(E, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.project = nn.Linear(E, cfg.hidden_size) if E != cfg.hidden_size else None
        self.cfg = cfg

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        B, T = input_ids.shape
        if self.cfg.roberta_positions:  # pad + 1 + cumulative count of real tokens; padding keeps pad id
            real = input_ids.ne(self.cfg.pad_token_id).long()
            return torch.cumsum(real, dim=1) * real + self.cfg.pad_token_id  # (B, T)
        return torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            position_ids = self.position_ids(input_ids, attention_mask)
        x = self.word(input_ids)  # (B, T, E)
        if self.position is not None:
            x = x + self.position(position_ids)
        if self.token_type is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_type(token_type_ids)
        x = self.drop(self.norm(x))
        return self.project(x) if self.project is not None else x  # (B, T, H)


class BertModel(nn.Module):
    """Embeddings + a post-norm Transformer encoder stack; forward returns the last hidden states."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        n_distinct = cfg.num_hidden_groups * cfg.inner_group_num if cfg.share_layers else cfg.num_layers
        # one rotary module (no weights) shared by every layer when positions are rotary
        rotary = RotaryEmbedding(cfg.hidden_size // cfg.num_heads) if cfg.rotary else None
        layers = [
            EncoderLayer(cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, act=cfg.hidden_act, norm_first=False,
                         ln_eps=cfg.layer_norm_eps, dropout=cfg.dropout, attn_dropout=cfg.attention_dropout,
                         rotary=rotary)
            for _ in range(n_distinct)
        ]
        self.encoder = EncoderStack(layers, schedule=self._schedule(cfg))

    @staticmethod
    def _schedule(cfg: BertConfig) -> list[int]:
        """Which distinct layer runs at each depth. ALBERT: depth i uses group int(i * groups / L), and a
        group runs all its inner layers."""
        if not cfg.share_layers:
            return list(range(cfg.num_layers))
        order = []
        for i in range(cfg.num_layers):
            g = int(i / (cfg.num_layers / cfg.num_hidden_groups))
            order.extend(g * cfg.inner_group_num + j for j in range(cfg.inner_group_num))
        return order

    @property
    def layers(self) -> nn.ModuleList:
        """The distinct encoder layers (for freezing the first N, inspection)."""
        return self.encoder.layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> last hidden states (B, T, H); attention_mask 1 = token, 0 = padding."""
        if position_ids is None:
            position_ids = self.embeddings.position_ids(input_ids, attention_mask)  # (B, T)
        x = self.embeddings(input_ids, token_type_ids, position_ids, attention_mask)  # (B, T, H)
        bias = attention_mask_bias(attention_mask, x.dtype) if attention_mask is not None and not bool(attention_mask.all()) else None
        return self.encoder(x, bias, position_ids if self.config.rotary else None)


class SequenceClassificationHead(nn.Module):
    """The classifier on top of a BERT-family encoder (cross-encoders, NLI):
    style "bert":       logits = W_c tanh(W_p h_cls + b_p) + b_c       (pooler + classifier)
    style "roberta":    logits = W_o tanh(W_d h_cls + b_d) + b_o        (ELECTRA: gelu instead of tanh)
    style "distilbert": logits = W_c relu(W_p h_cls + b_p) + b_c"""

    def __init__(self, hidden_size: int, num_labels: int, style: str = "bert"):
        super().__init__()
        acts = {"bert": torch.tanh, "roberta": torch.tanh, "electra": nn.functional.gelu, "distilbert": torch.relu}
        if style not in acts:
            raise ValueError(f"unknown classification head style {style!r}; known: {', '.join(acts)}")
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, num_labels)
        self.act = acts[style]
        self.style = style

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.dense(hidden[:, 0])))  # (B, num_labels)


class BertForSequenceClassification(nn.Module):
    """Encoder + classification head; forward returns logits (B, num_labels)."""

    def __init__(self, cfg: BertConfig, num_labels: int, style: str = "bert"):
        super().__init__()
        self.encoder = BertModel(cfg)
        self.head = SequenceClassificationHead(cfg.hidden_size, num_labels, style)
        self.config = cfg

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encoder(input_ids, attention_mask, token_type_ids))
