"""The masked-language-model head of BERT-family encoders, as SPLADE uses it (logits over the vocabulary per token):
    logits = W_dec LayerNorm(act(W h + b)) + b_dec          (BERT, RoBERTa, DistilBERT: same equation, other names)
W_dec is usually tied to the word embeddings; here it is its own tensor, filled from them when tied."""
from __future__ import annotations

import torch
from torch import nn

from encoderkit.nn.layers import activation


class MLMHead(nn.Module):
    """(B, T, H) hidden states -> (B, T, V) vocabulary logits."""

    def __init__(self, hidden_size: int, vocab_size: int, act: str = "gelu", eps: float = 1e-12, embedding_size: int | None = None):
        super().__init__()
        e = embedding_size or hidden_size  # ELECTRA-style factorised embeddings project back to E first
        self.dense = nn.Linear(hidden_size, e)
        self.act_name = act
        self.act = activation(act)
        self.norm = nn.LayerNorm(e, eps=eps)
        self.decoder = nn.Linear(e, vocab_size)  # weight (V, E): the word embeddings when tied

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden))))  # (B, T, V)


class MaskedLM(nn.Module):
    """A backbone with its MLM head: forward returns vocabulary logits (B, T, V) instead of hidden states."""

    def __init__(self, backbone: nn.Module, head: MLMHead):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config = getattr(backbone, "config", None)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        out = self.backbone(**batch)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out  # (B, T, H)
        return self.head(hidden)


class StaticSparse(nn.Module):
    """An inference-free sparse encoder side (sentence-transformers' SparseStaticEmbedding): a text's vector is
    w[v] for each vocabulary entry v it contains (no network; w is e.g. an IDF table)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(vocab_size), requires_grad=False)  # (V,)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
        present = torch.zeros(input_ids.shape[0], self.weight.shape[0], dtype=self.weight.dtype, device=input_ids.device)
        present.scatter_(1, input_ids, attention_mask.to(self.weight.dtype))  # (B, V) 1 where the token occurs
        return present * self.weight  # (B, V)
