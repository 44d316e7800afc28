"""Inputs of the linear encoders: fixed-length numeric vectors (PCA) and categories (one-hot, lookup),
with the Encoder processor protocol (.prepare / .length / .collate) and errors naming the input index."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


class VectorProcessor:
    """Rows of numbers of a fixed width (flattened when given as images / matrices)."""
    modality = "vector"

    def __init__(self, n_features: int):
        self.n_features = n_features

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, np.ndarray) and inputs.ndim == 1

    def prepare(self, inputs: list) -> list[np.ndarray]:
        out = []
        for i, x in enumerate(inputs):
            if isinstance(x, str):
                raise TypeError(f"input {i} is a string; this encoder takes numeric vectors of {self.n_features} values")
            a = np.asarray(x, dtype=np.float64).reshape(-1)
            if a.size != self.n_features:
                raise ValueError(f"input {i} has {a.size} values, expected {self.n_features}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"input {i} contains NaN or infinite values")
            out.append(a)
        return out

    def length(self, item: np.ndarray) -> int:
        return 1

    def collate(self, items: list[np.ndarray]) -> dict[str, torch.Tensor]:
        return {"x": torch.from_numpy(np.stack(items))}


class CategoryProcessor:
    """Category names -> ids by a fixed vocabulary; unknown names map to `unknown` when given, else are errors."""
    modality = "category"

    def __init__(self, vocabulary: Sequence[str], unknown: str | None = None):
        self.vocabulary = list(vocabulary)
        self.index = {v: i for i, v in enumerate(self.vocabulary)}
        if len(self.index) != len(self.vocabulary):
            raise ValueError("vocabulary entries must be distinct")
        if unknown is not None and unknown not in self.index:
            raise ValueError(f"unknown={unknown!r} is not in the vocabulary")
        self.unknown = unknown

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, str)

    def prepare(self, inputs: list) -> list[int]:
        ids = []
        for i, x in enumerate(inputs):
            if not isinstance(x, str):
                raise TypeError(f"input {i} is a {type(x).__name__}, expected a category name (str)")
            if x in self.index:
                ids.append(self.index[x])
            elif self.unknown is not None:
                ids.append(self.index[self.unknown])
            else:
                raise ValueError(f"input {i}: unknown category {x!r} ({len(self.vocabulary)} known)")
        return ids

    def length(self, item: int) -> int:
        return 1

    def collate(self, items: list[int]) -> dict[str, torch.Tensor]:
        return {"ids": torch.tensor(items, dtype=torch.long)}
