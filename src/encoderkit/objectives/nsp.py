"""Next-sentence prediction (BERT, Devlin et al. 2019, section 3.1, task #2).

For a sentence A, sentence B is the sentence that actually follows A with probability 1/2
(label 0, IsNext) and a sentence drawn from another document otherwise (label 1, NotNext);
a binary classifier on the [CLS] state is trained with cross-entropy:

    L_NSP = - log softmax(W tanh(W_p h_[CLS] + b_p) + b)[y]"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IS_NEXT, NOT_NEXT = 0, 1


@dataclass
class SentencePair:
    a: str
    b: str
    label: int  # 0 = B follows A (IsNext), 1 = B is a random sentence (NotNext)


def make_nsp_pairs(documents: list[list[str]], random_probability: float = 0.5, seed: int = 0) -> list[SentencePair]:
    """One pair per consecutive sentence pair (A = s_i) of every document: B = s_{i+1} or, with
    probability `random_probability`, a random sentence of a different document."""
    if not 0.0 <= random_probability <= 1.0:
        raise ValueError(f"random_probability must be in [0, 1], got {random_probability}")
    docs = [d for d in documents if d]
    if len(docs) < 2:
        raise ValueError(f"next-sentence pairs need at least 2 non-empty documents (random B comes from another "
                         f"document), got {len(docs)}")
    rng = random.Random(seed)
    pairs: list[SentencePair] = []
    for di, doc in enumerate(docs):
        for i in range(len(doc) - 1):
            if rng.random() < random_probability:
                dj = rng.randrange(len(docs) - 1)
                dj = dj + 1 if dj >= di else dj  # any document but this one
                pairs.append(SentencePair(doc[i], rng.choice(docs[dj]), NOT_NEXT))
            else:
                pairs.append(SentencePair(doc[i], doc[i + 1], IS_NEXT))
    return pairs


class NSPHead(nn.Module):
    """BERT pooler + binary classifier on the [CLS] state: logits = W tanh(W_p h_0 + b_p) + b, shape (B, 2)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.pooler = nn.Linear(hidden_size, hidden_size)
        self.classifier = nn.Linear(hidden_size, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.pooler(hidden[:, 0])))


def nsp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the (B, 2) NSP logits against labels (0 = IsNext, 1 = NotNext)."""
    return F.cross_entropy(logits, labels)
