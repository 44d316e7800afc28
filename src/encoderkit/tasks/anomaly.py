"""Anomaly detection: score how unlike the training data each input is, and pick a threshold.

- reconstruction: an autoencoder trained on normal data reconstructs normal inputs well, anomalies badly;
  score = per-example reconstruction error (for a VAE: the negative ELBO, in nats).
- knn: for any encoder, score = mean distance from an input's features to its k nearest training features.
The threshold is a quantile (default 95%) of the training examples' own scores (leave-one-out for k-NN)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class AnomalyResult:
    """Scores (higher = more anomalous), the decision threshold, and which inputs exceed it."""

    scores: np.ndarray  # (n,)
    threshold: float
    flagged: np.ndarray  # (n,) bool: scores > threshold
    method: str  # reconstruction | elbo | knn

    def to_dict(self) -> dict:
        return {"method": self.method, "threshold": self.threshold, "n": int(len(self.scores)),
                "n_flagged": int(self.flagged.sum()), "scores": self.scores.tolist()}


@torch.no_grad()
def reconstruction_scores(model: nn.Module, X: torch.Tensor, batch_size: int = 512, use_elbo: bool | None = None,
                          seed: int = 0) -> np.ndarray:
    """Per-example reconstruction error: mean squared error of model.reconstruct(x), or -ELBO for a model
    with `negative_elbo` (a VAE; pass use_elbo=False for its MSE instead)."""
    if len(X) == 0:
        raise ValueError("no inputs to score")
    if use_elbo is None:
        use_elbo = hasattr(model, "negative_elbo")
    if not use_elbo and not hasattr(model, "reconstruct"):
        raise TypeError(f"{type(model).__name__} cannot reconstruct; use knn scores on its features instead")
    model.eval()
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)  # the VAE's z sample: same scores on every call
    out = []
    try:
        for s in range(0, len(X), batch_size):
            x = X[s:s + batch_size]
            if use_elbo:
                out.append(model.negative_elbo(x))
            else:
                out.append((model.reconstruct(x) - x).pow(2).flatten(1).mean(1))
    finally:
        torch.set_rng_state(gen_state)
    return torch.cat(out).double().numpy()


def knn_distance_scores(train_feats: np.ndarray, feats: np.ndarray, k: int = 5, metric: str = "euclidean",
                        exclude_self: bool = False, batch: int = 1024) -> np.ndarray:
    """Mean distance from each row of feats to its k nearest rows of train_feats (cosine distance =
    1 - cosine similarity). exclude_self drops the nearest match: use it when feats is train_feats."""
    A = torch.as_tensor(np.asarray(train_feats, dtype=np.float32))
    B = torch.as_tensor(np.asarray(feats, dtype=np.float32))
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"features must be 2-D with equal widths, got {tuple(A.shape)} and {tuple(B.shape)}")
    if len(A) <= k + int(exclude_self):
        raise ValueError(f"need more than {k + int(exclude_self)} training examples for k={k}, got {len(A)}")
    if metric == "cosine":
        A, B = torch.nn.functional.normalize(A, dim=1), torch.nn.functional.normalize(B, dim=1)
    elif metric != "euclidean":
        raise ValueError(f"metric must be euclidean or cosine, got {metric!r}")
    kk = k + int(exclude_self)
    out = []
    for s in range(0, len(B), batch):
        b = B[s:s + batch]
        d = (1 - b @ A.T) if metric == "cosine" else torch.cdist(b, A)  # (b, n_train)
        near = d.topk(kk, dim=1, largest=False).values[:, int(exclude_self):]  # (b, k)
        out.append(near.mean(1))
    return torch.cat(out).double().numpy()


def fit_threshold(train_scores: np.ndarray, quantile: float = 0.95) -> float:
    """The score above which an input is flagged: a quantile of the normal (training) scores."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if len(train_scores) == 0:
        raise ValueError("no training scores to set a threshold from")
    return float(np.quantile(np.asarray(train_scores), quantile))


def detect(model: nn.Module | None, train_X: torch.Tensor, X: torch.Tensor, method: str = "reconstruction",
           quantile: float = 0.95, k: int = 5, encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
           batch_size: int = 512) -> AnomalyResult:
    """Score X against normal data train_X: method reconstruction (AE, VAE -> -ELBO) or knn (features from
    `encode`, default model.encode); threshold = quantile of the training scores."""
    if method == "reconstruction":
        train_s = reconstruction_scores(model, train_X, batch_size)
        scores = reconstruction_scores(model, X, batch_size)
        name = "elbo" if hasattr(model, "negative_elbo") else "reconstruction"
    elif method == "knn":
        from encoderkit.tasks.probe import extract_features

        enc = encode or getattr(model, "encode", None)
        if enc is None:
            raise TypeError("knn scoring needs an encoder: pass encode=... or a model with .encode")
        was_training = model.training if model is not None else False
        if model is not None:
            model.eval()
        f_train = extract_features(enc, train_X, batch_size)
        f = extract_features(enc, X, batch_size)
        if model is not None:
            model.train(was_training)
        train_s = knn_distance_scores(f_train, f_train, k, exclude_self=True)
        scores = knn_distance_scores(f_train, f, k)
        name = "knn"
    else:
        raise ValueError(f"unknown method {method!r}; choose reconstruction or knn")
    thr = fit_threshold(train_s, quantile)
    return AnomalyResult(scores, thr, scores > thr, name)


def auroc(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    """Area under the ROC curve of scores for the binary truth is_anomaly (1 = anomalous)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(is_anomaly).astype(int)
    if y.min() == y.max():
        raise ValueError("AUROC needs both normal and anomalous examples")
    return float(roc_auc_score(y, np.asarray(scores)))
