"""Linear encoders, the baselines every learned encoder is compared with:

    PCA:        z = (x - mu) W_k^T          W_k = top-k right singular vectors of the centred data
    one-hot:    z = e_id                     one dimension per category
    lookup:     z = E[id]                    a learned (or given) embedding table

Each is a torch module whose forward returns pooled vectors (B, D), so `Encoder` batches them like any model
(wrapped in KeyedInput; encoderkit/baselines.py builds those Encoders)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LinearConfig:
    hidden_size: int  # output dimension
    model_type: str = "linear"


class PCA(nn.Module):
    """Principal component analysis fitted by SVD (same components, signs and variances as scikit-learn's
    PCA(svd_solver="full"), whiten=False)."""

    def __init__(self, n_features: int, n_components: int):
        super().__init__()
        if not 0 < n_components <= n_features:
            raise ValueError(f"n_components must be in 1..{n_features}, got {n_components}")
        self.register_buffer("mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("components", torch.zeros(n_components, n_features, dtype=torch.float64))
        self.register_buffer("explained_variance", torch.zeros(n_components, dtype=torch.float64))
        self.config = LinearConfig(n_components, "pca")
        self.fitted = False

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> "PCA":
        """Fit on (N, F) data (computed in float64)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.dim() != 2 or x.shape[1] != self.mean.shape[0] or x.shape[0] < 2:
            raise ValueError(f"PCA.fit needs (N >= 2, {self.mean.shape[0]}) data, got {tuple(x.shape)}")
        mu = x.mean(0)
        u, s, vt = torch.linalg.svd(x - mu, full_matrices=False)  # (N, r), (r,), (r, F)
        # deterministic signs: the largest-magnitude entry of each component is positive (sklearn's svd_flip on V)
        signs = torch.sign(vt[torch.arange(vt.shape[0]), vt.abs().argmax(1)])
        vt = vt * signs[:, None]
        k = self.components.shape[0]
        self.mean.copy_(mu)
        self.components.copy_(vt[:k])
        self.explained_variance.copy_((s[:k] ** 2) / (x.shape[0] - 1))
        self.fitted = True
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError("PCA is not fitted: call .fit(data) first")
        return ((x.to(torch.float64) - self.mean) @ self.components.T).to(torch.float32)  # (B, k)


class OneHot(nn.Module):
    """Category id -> one-hot vector (B, n_categories)."""

    def __init__(self, n_categories: int):
        super().__init__()
        self.n = n_categories
        self.config = LinearConfig(n_categories, "one-hot")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.one_hot(ids, self.n).to(torch.float32)


class EmbeddingLookup(nn.Module):
    """Category id -> row of an embedding table (B, D); the table may be given (e.g. word vectors) or learned."""

    def __init__(self, n_categories: int, dim: int, weight: torch.Tensor | None = None):
        super().__init__()
        self.table = nn.Embedding(n_categories, dim)
        if weight is not None:
            if tuple(weight.shape) != (n_categories, dim):
                raise ValueError(f"weight must be ({n_categories}, {dim}), got {tuple(weight.shape)}")
            with torch.no_grad():
                self.table.weight.copy_(torch.as_tensor(weight))
        self.config = LinearConfig(dim, "embedding")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)


class KeyedInput(nn.Module):
    """Adapter: Encoder calls model(**batch); the modules above take one tensor, batch[key]."""

    def __init__(self, inner: nn.Module, key: str):
        super().__init__()
        self.inner, self.key = inner, key
        self.config = inner.config

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.inner(batch[self.key])
