"""What a collection returns and where it lives: `Hit` (a search result or fetched document), the content hash
that spots exact duplicates, and the default folder of a collection name."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

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
