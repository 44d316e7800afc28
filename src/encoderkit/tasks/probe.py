"""Evaluating frozen features: a linear probe (logistic regression) and k-nearest-neighbour accuracy."""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)


def _xy(X, y, name: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64 if np.asarray(X).dtype == np.float64 else np.float32)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"{name} features must be 2-D (n, dim), got shape {X.shape}")
    if len(X) == 0:
        raise ValueError(f"{name} set is empty")
    if len(X) != len(y):
        raise ValueError(f"{name}: {len(X)} feature rows but {len(y)} labels")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} features hold NaN or inf values")
    return X, y


def linear_probe(train_X, train_y, test_X, test_y, C: float | str = 1.0, max_iter: int = 1000,
                 standardize: bool = True, C_grid: tuple[float, ...] = (0.01, 0.1, 1.0)) -> float:
    """Test accuracy of a multinomial logistic regression fit on frozen train features. C="auto" picks the
    inverse regularization strength from C_grid on the last 20% of the training features (never the test set)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train_X, train_y = _xy(train_X, train_y, "train")
    test_X, test_y = _xy(test_X, test_y, "test")
    if train_X.shape[1] != test_X.shape[1]:
        raise ValueError(f"train features have {train_X.shape[1]} dims, test features {test_X.shape[1]}")
    if len(np.unique(train_y)) < 2:
        raise ValueError("a linear probe needs at least two classes in the training labels")
    if C == "auto":
        n_fit = int(0.8 * len(train_X))
        scores = {c: linear_probe(train_X[:n_fit], train_y[:n_fit], train_X[n_fit:], train_y[n_fit:], C=c,
                                  max_iter=max_iter, standardize=standardize) for c in C_grid}
        C = max(scores, key=scores.get)
        log.info("linear probe: validation accuracy per C %s -> C=%g", scores, C)
    if standardize:
        scaler = StandardScaler().fit(train_X)
        train_X, test_X = scaler.transform(train_X), scaler.transform(test_X)
    clf = LogisticRegression(C=float(C), max_iter=max_iter)
    clf.fit(train_X, train_y)
    return float((clf.predict(test_X) == test_y).mean())


def knn_accuracy(train_X, train_y, test_X, test_y, k: int = 20, metric: str = "cosine", batch: int = 1024) -> float:
    """Accuracy of a majority vote among the k nearest train features (cosine or euclidean; ties -> nearest)."""
    train_X, train_y = _xy(train_X, train_y, "train")
    test_X, test_y = _xy(test_X, test_y, "test")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be cosine or euclidean, got {metric!r}")
    k = min(k, len(train_X))
    A, B = torch.from_numpy(train_X).float(), torch.from_numpy(test_X).float()
    if metric == "cosine":
        A, B = torch.nn.functional.normalize(A, dim=1), torch.nn.functional.normalize(B, dim=1)
    classes, y_idx = np.unique(train_y, return_inverse=True)
    y_t = torch.from_numpy(y_idx)
    correct = 0
    for s in range(0, len(B), batch):
        b = B[s:s + batch]
        sim = b @ A.T if metric == "cosine" else -torch.cdist(b, A)  # (b, n_train), larger = nearer
        idx = sim.topk(k, dim=1).indices  # (b, k), nearest first
        votes = torch.zeros(len(b), len(classes))
        # weight 1 + tiny rank bonus so ties go to the class of the nearer neighbours
        votes.scatter_add_(1, y_t[idx], 1.0 + 1e-3 * torch.linspace(1, 0, k).expand(len(b), k))
        pred = classes[votes.argmax(1).numpy()]
        correct += int((pred == test_y[s:s + batch]).sum())
    return correct / len(B)


@torch.no_grad()
def extract_features(encode: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, batch_size: int = 512,
                     progress: bool = False) -> np.ndarray:
    """Run `encode` over X in batches without gradients; returns float32 features (n, dim)."""
    out = []
    it = range(0, len(X), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="features", unit="batch", leave=False)
    for s in it:
        f = encode(X[s:s + batch_size])
        out.append(f.float().reshape(len(f), -1).cpu())
    return torch.cat(out).numpy()
