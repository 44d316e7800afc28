"""Anomaly scoring and the probe metrics against brute-force / scikit-learn references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from encoderkit.models.autoencoder import AEConfig, Autoencoder, VAE, VAEConfig
from encoderkit.tasks.anomaly import auroc, detect, fit_threshold, knn_distance_scores, reconstruction_scores
from encoderkit.tasks.probe import extract_features, knn_accuracy, linear_probe


def test_knn_distance_scores_match_brute_force():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(50, 4)), rng.normal(size=(7, 4))
    d = np.linalg.norm(B[:, None] - A[None], axis=-1)
    ref = np.sort(d, axis=1)[:, :3].mean(1)
    assert np.allclose(knn_distance_scores(A, B, k=3), ref, atol=1e-5)
    d_self = np.linalg.norm(A[:, None] - A[None], axis=-1)
    ref_self = np.sort(d_self, axis=1)[:, 1:4].mean(1)  # leave-one-out: skip the point itself
    assert np.allclose(knn_distance_scores(A, A, k=3, exclude_self=True), ref_self, atol=1e-4)
    An, Bn = A / np.linalg.norm(A, axis=1, keepdims=True), B / np.linalg.norm(B, axis=1, keepdims=True)
    cos_ref = np.sort(1 - Bn @ An.T, axis=1)[:, :2].mean(1)
    assert np.allclose(knn_distance_scores(A, B, k=2, metric="cosine"), cos_ref, atol=1e-5)
    with pytest.raises(ValueError, match="equal widths"):
        knn_distance_scores(A, B[:, :3])


def test_threshold_and_auroc():
    s = np.arange(101, dtype=float)
    assert fit_threshold(s, 0.95) == pytest.approx(95.0)
    with pytest.raises(ValueError):
        fit_threshold(s, 1.5)
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    scores, y = rng.normal(size=200), rng.integers(0, 2, 200)
    assert auroc(scores, y) == pytest.approx(roc_auc_score(y, scores))
    with pytest.raises(ValueError, match="both"):
        auroc(scores, np.zeros(200))


def test_reconstruction_scores_are_per_example_mse_or_negative_elbo():
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(input_dim=10, hidden=(8,), latent=3))
    x = torch.rand(20, 10)
    ref = (ae.reconstruct(x) - x).pow(2).mean(1).detach().numpy()
    assert np.allclose(reconstruction_scores(ae, x, batch_size=7), ref, atol=1e-6)
    vae = VAE(VAEConfig(input_dim=10, hidden=(8,), latent=3))
    xb = torch.bernoulli(x)
    a, b = reconstruction_scores(vae, xb), reconstruction_scores(vae, xb)
    assert np.array_equal(a, b)  # seeded z sample: repeatable scores
    torch.manual_seed(0)
    assert np.allclose(a, vae.negative_elbo(xb).detach().numpy(), atol=1e-5)


def test_detect_flags_far_away_points():
    torch.manual_seed(0)
    normal = torch.randn(300, 5)
    test = torch.cat([torch.randn(50, 5), torch.randn(10, 5) + 8])
    identity = torch.nn.Identity()
    identity.encode = lambda b: b
    res = detect(identity, normal, test, method="knn", k=5, quantile=0.95)
    assert res.method == "knn" and res.flagged[50:].all()
    assert res.flagged[:50].mean() < 0.2
    assert auroc(res.scores, np.r_[np.zeros(50), np.ones(10)]) == 1.0
    with pytest.raises(ValueError, match="unknown method"):
        detect(identity, normal, test, method="magic")


def test_linear_probe_and_knn_accuracy():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 5
    y = rng.integers(0, 3, 300)
    X = centers[y] + rng.normal(size=(300, 8))
    assert linear_probe(X[:200], y[:200], X[200:], y[200:]) == 1.0
    assert linear_probe(X[:200], y[:200], X[200:], y[200:], C="auto") == 1.0
    from sklearn.neighbors import KNeighborsClassifier

    Xn = rng.normal(size=(300, 8))  # noisy labels: compare against scikit-learn's k-NN, not 100%
    yn = (Xn[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    ref = KNeighborsClassifier(n_neighbors=7).fit(Xn[:200], yn[:200]).score(Xn[200:], yn[200:])
    assert knn_accuracy(Xn[:200], yn[:200], Xn[200:], yn[200:], k=7, metric="euclidean") == pytest.approx(ref)
    with pytest.raises(ValueError, match="2-D"):
        linear_probe(X[:, 0], y, X, y)
    with pytest.raises(ValueError, match="labels"):
        knn_accuracy(X, y[:10], X, y)
    feats = extract_features(lambda b: b * 2, torch.ones(5, 3), batch_size=2)
    assert feats.shape == (5, 3) and np.all(feats == 2)
