"""Cross-encoder reranking: a BERT-family sequence classifier reads (query, passage) together and
scores their relevance; more accurate than comparing two separately encoded vectors, and slower."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch


class CrossEncoder:
    """Scores (query, passage) pairs with a *ForSequenceClassification checkpoint."""

    def __init__(self, model, tokenizer, hf_config: dict, pad_id: int, max_length: int, name: str = ""):
        self.model, self.tokenizer, self.hf_config = model, tokenizer, hf_config
        self.pad_id, self.max_length, self.name = pad_id, max_length, name
        self.num_labels = model.head.out.out_features
        labels = {str(v).lower(): int(k) for k, v in (hf_config.get("id2label") or {}).items()}
        # which logit means "relevant" when there are several: a named label if present, else the last one
        self.positive_label = next((labels[n] for n in ("relevant", "entailment", "positive", "yes") if n in labels),
                                   self.num_labels - 1)

    @classmethod
    def load(cls, name_or_path: str | Path, max_length: int | None = None) -> "CrossEncoder":
        """A cross-encoder from a local folder or hub id (resolved like `encoderkit.load`)."""
        from encoderkit.checkpoints.classifier import load_sequence_classifier
        from encoderkit.checkpoints.hub import resolve

        folder = resolve(name_or_path)
        model, tok, hf, pad, limit = load_sequence_classifier(folder, max_length)
        return cls(model, tok, hf, pad, limit, name=str(name_or_path))

    def logits(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """Raw classifier logits (n, num_labels) for (first, second) text pairs (or single texts: a sequence
        classifier reads one text as well)."""
        for i, p in enumerate(pairs):
            if not (isinstance(p, str) or isinstance(p, (tuple, list)) and len(p) == 2
                    and all(isinstance(t, str) for t in p)):
                raise TypeError(f"pair {i} must be a (str, str) tuple or a str, got {p!r:.80}")
        out = np.zeros((len(pairs), self.num_labels), np.float32)
        if not pairs:
            return out
        encs = self.tokenizer.encode_batch([p if isinstance(p, str) else tuple(p) for p in pairs])
        order = np.argsort([-len(e.ids) for e in encs], kind="stable")
        with torch.inference_mode():
            for b in range(0, len(pairs), batch_size):
                idx = order[b:b + batch_size]
                T = max(len(encs[i].ids) for i in idx)
                ids = np.full((len(idx), T), self.pad_id, np.int64)
                mask = np.zeros((len(idx), T), np.int64)
                types = np.zeros((len(idx), T), np.int64)
                for r, i in enumerate(idx):
                    e = encs[i]
                    ids[r, :len(e.ids)], mask[r, :len(e.ids)], types[r, :len(e.ids)] = e.ids, 1, e.type_ids
                tt = torch.from_numpy(types) if self.model.config.type_vocab_size > 1 else None
                out[idx] = self.model(torch.from_numpy(ids), torch.from_numpy(mask), tt).float().numpy()
        return out

    def score(self, query: str, passages: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Relevance of each passage to the query (higher = more relevant): the logit for one-label models,
        else the softmax probability of the positive label."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        z = self.logits([(query, p) for p in passages], batch_size)
        if self.num_labels == 1:
            return z[:, 0]
        z = z - z.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        return p[:, self.positive_label]

    def rerank(self, query: str, passages: Sequence[str], top_k: int | None = None) -> list[tuple[int, float]]:
        """(index, score) of passages sorted by score, best first."""
        s = self.score(query, passages)
        order = np.argsort(-s, kind="stable")[: top_k or len(passages)]
        return [(int(i), float(s[i])) for i in order]
