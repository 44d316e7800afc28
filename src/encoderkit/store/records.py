"""What a collection returns and where it lives: `Hit` (a search result or fetched document), the order of reranked
hits, the content hash that spots exact duplicates, and the default folder of a collection name."""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from encoderkit.store.validate import check_collection_name


@dataclass
class Hit:
    """One search result (or a fetched document, score None)."""
    id: str
    text: str
    metadata: dict = field(default_factory=dict)
    score: float | None = None
    scores: dict = field(default_factory=dict)  # per-stage scores: vector, keyword, fused, rerank
    chunk_id: str | None = None  # a document grouped from chunks: the chunk whose text and score it shows
    matched_chunks: int = 1  # a grouped document: how many of its chunks were among the candidates

    def to_dict(self) -> dict:
        return {"id": self.id, "score": self.score, "text": self.text, "metadata": self.metadata,
                "scores": self.scores, "chunk_id": self.chunk_id, "matched_chunks": self.matched_chunks}


def content_hash(text: str) -> str:
    """sha256 of the text with whitespace runs collapsed (the exact-duplicate key)."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def collection_path(name: str | os.PathLike, store: str | os.PathLike | None = None) -> Path:
    """Where a collection lives: `store/NAME` if store is given; a path-like NAME as is; else
    `$ENCODERKIT_HOME/collections/NAME` (default ~/.encoderkit/collections/NAME)."""
    name = str(name)
    if name.startswith(("postgresql://", "postgres://")):
        raise ValueError("a postgresql:// collection is not a directory: open it with Collection.open(url), or "
                         "on the command line pass the database URL as --store and the collection's NAME")
    if store is not None:
        return Path(store).expanduser() / check_collection_name(name)
    if os.sep in name or name.startswith(".") or name.startswith("~") or Path(name).is_absolute():
        return Path(name).expanduser()
    check_collection_name(name)
    home = Path(os.environ.get("ENCODERKIT_HOME", "~/.encoderkit")).expanduser()
    return home / "collections" / name


def check_rerank_weight(weight: float) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise ValueError(f"rerank_weight must be a number from 0 to 1 (1: the cross-encoder's score alone), "
                         f"got {weight!r}")
    return float(weight)


def rerank_hits(hits: list[Hit], scores: Sequence[float], weight: float = 1.0) -> list[Hit]:
    """`hits` ordered by the reranker's `scores` (weight 1), or by weight * z(rerank) + (1 - weight) * z(first
    stage) — score interpolation, with each score z-normalized over these hits (mean 0, standard deviation 1;
    a list whose scores are all equal contributes 0). Each hit keeps both in `scores` ("first_stage", "rerank") and
    its `score` becomes what orders it. Ties keep the first-stage order."""
    weight = check_rerank_weight(weight)
    if len(scores) != len(hits):
        raise ValueError(f"the reranker returned {len(scores)} scores for {len(hits)} passages")
    first = [h.score for h in hits]
    if weight < 1.0 and any(f is None for f in first):
        raise ValueError("rerank_weight < 1 fuses the first-stage scores, and these hits have none")

    def z(values: list[float]) -> list[float]:
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return [(v - mean) / sd if sd > 0 else 0.0 for v in values]

    rer = [float(v) for v in scores]
    order_by = rer if weight == 1.0 else [weight * a + (1.0 - weight) * b for a, b in zip(z(rer), z(first))]
    for h, f, r, o in zip(hits, first, rer, order_by):
        h.scores["first_stage"] = f
        h.scores["rerank"] = r
        h.score = o
    return [hits[i] for i in sorted(range(len(hits)), key=lambda i: -order_by[i])]
