"""Encoders of the linear baselines (models/linear.py): PCA over numeric vectors, one-hot and embedding lookup
over categories. Each is an `Encoder` with a tabular processor, so encode() batches them like any model."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from encoderkit.encoder import Encoder
from encoderkit.models.linear import PCA, EmbeddingLookup, KeyedInput, OneHot
from encoderkit.processors.tabular import CategoryProcessor, VectorProcessor


def pca_encoder(data: Any, n_components: int) -> Encoder:
    """An Encoder whose encode(rows) returns the PCA projection fitted on `data` (N, F)."""
    x = torch.as_tensor(data, dtype=torch.float64).reshape(len(data), -1)
    model = PCA(x.shape[1], n_components).fit(x)
    return Encoder(KeyedInput(model, "x"), processor=VectorProcessor(x.shape[1]), embedding_dim=n_components, name="pca")


def one_hot_encoder(vocabulary: Sequence[str], unknown: str | None = None) -> Encoder:
    """An Encoder mapping category names to one-hot vectors."""
    proc = CategoryProcessor(vocabulary, unknown)
    return Encoder(KeyedInput(OneHot(len(proc.vocabulary)), "ids"), processor=proc, embedding_dim=len(proc.vocabulary),
                   name="one-hot")


def embedding_encoder(vocabulary: Sequence[str], dim: int, weight: Any = None, unknown: str | None = None) -> Encoder:
    """An Encoder mapping category names to rows of an embedding table (given, or randomly initialised to train)."""
    proc = CategoryProcessor(vocabulary, unknown)
    model = EmbeddingLookup(len(proc.vocabulary), dim, None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
    return Encoder(KeyedInput(model, "ids"), processor=proc, embedding_dim=dim, name="embedding")
