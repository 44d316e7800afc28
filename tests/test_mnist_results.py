"""The reconstruction family on real MNIST (the t10k set: first 8,000 train, last 2,000 test), each figure
next to its raw-pixel baseline. Slow: the per-test budgets in the docstrings add up to ~6 minutes on a quiet
2-core CPU (an estimate: measured only on a machine shared with other jobs, at load 10-20 with one thread,
where the five took ~40 minutes). Run with `pytest -s -m slow tests/test_mnist_results.py` to see the figures."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import data_path
from encoderkit.datasets.mnist import mnist_split, random_shift
from encoderkit.models.autoencoder import AEConfig, Autoencoder, VAE, VAEConfig
from encoderkit.train import TrainConfig, Trainer

pytestmark = pytest.mark.slow


def _report(name: str, **figures) -> None:
    print(f"\n[{name}] " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))


@pytest.fixture(scope="module")
def mnist():
    return mnist_split(data_path("mnist"))


def _train_ae(X: torch.Tensor, seed: int, epochs: int, **cfg) -> Autoencoder:
    torch.manual_seed(seed)
    model = Autoencoder(AEConfig(**cfg))
    Trainer(model, lambda m, b: m.loss(b), X, config=TrainConfig(
        epochs=epochs, batch_size=128, lr=2e-3, weight_decay=0.0, warmup_steps=50, seed=seed, progress=False)).fit()
    return model.eval()


@pytest.fixture(scope="module")
def plain_ae(mnist):
    """784-512-256-30 deep AE, 25 epochs (~40 s)."""
    return _train_ae(torch.from_numpy(mnist.train_x), 0, 25, hidden=(512, 256), latent=30)


def test_deep_ae_beats_pca_with_a_30d_code(mnist, plain_ae):
    """Hinton & Salakhutdinov (2006): a deep AE's 30-d code reconstructs better than PCA's 30 components."""
    from sklearn.decomposition import PCA

    pca = PCA(30, random_state=0).fit(mnist.train_x)
    pca_mse = float(((pca.inverse_transform(pca.transform(mnist.test_x)) - mnist.test_x) ** 2).mean())
    with torch.no_grad():
        x = torch.from_numpy(mnist.test_x)
        ae_mse = float((plain_ae(x) - x).pow(2).mean())
    mean_mse = float(((mnist.train_x.mean(0) - mnist.test_x) ** 2).mean())  # raw pixels: predict the mean image
    _report("AE vs PCA, 30-d code, test MSE per pixel", deep_ae=ae_mse, pca=pca_mse, mean_image=mean_mse)
    assert ae_mse < pca_mse < mean_mse


def test_denoising_ae_removes_noise_better_than_a_plain_ae(mnist, plain_ae):
    """Gaussian noise sigma = 0.5 on the test images; error measured to the clean image (~40 s)."""
    X = torch.from_numpy(mnist.train_x)
    dae = _train_ae(X, 0, 25, hidden=(512, 256), latent=30, corruption="gaussian", noise=0.5)
    clean = torch.from_numpy(mnist.test_x)
    noisy = clean + 0.5 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dae_err = float((dae(noisy) - clean).pow(2).mean())
        ae_err = float((plain_ae(noisy) - clean).pow(2).mean())
    raw_err = float((noisy.clamp(0, 1) - clean).pow(2).mean())  # raw pixels: the noisy image, clipped to [0, 1]
    _report("DAE, noisy test (sigma 0.5) -> clean, MSE per pixel", dae=dae_err, plain_ae=ae_err, noisy_input=raw_err)
    assert dae_err < ae_err
    assert dae_err < raw_err


def test_vae_negative_elbo_and_importance_sampled_nll(mnist):
    """20-d latent MLP VAE on stochastically binarized MNIST (drawn once, seed 0), 40 epochs with a KL
    warm-up and 1-pixel shift augmentation (~90 s); then -ELBO and the k = 500 importance-sampled NLL."""
    s = mnist_split(data_path("mnist"), binarized=True, seed=0)
    X, T = torch.from_numpy(s.train_x), torch.from_numpy(s.test_x)
    torch.manual_seed(0)
    steps_per_epoch = math.ceil(len(X) / 100)
    vae = VAE(VAEConfig(hidden=(512, 256), latent=20, kl_warmup_steps=10 * steps_per_epoch))
    vae.init_output_bias(X.mean(0))
    gen = torch.Generator().manual_seed(0)
    Trainer(vae, lambda m, b: m.loss(random_shift(b, generator=gen)), X, config=TrainConfig(
        epochs=40, batch_size=100, lr=1.5e-3, weight_decay=0.0, warmup_steps=2 * steps_per_epoch, seed=0,
        progress=False)).fit()
    vae.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        neg_elbo = float(vae.negative_elbo(T).mean())
        train_neg_elbo = float(vae.negative_elbo(X[:2000]).mean())
    nll = float(vae.importance_sampled_nll(T, k=500).mean())
    p = X.mean(0).clamp(1e-3, 1 - 1e-3)  # raw pixels: independent Bernoulli per pixel
    pixel_nll = float(-(T * p.log() + (1 - T) * (1 - p).log()).sum(1).mean())
    _report("VAE 20-d, binarized test, nats", neg_elbo=neg_elbo, is_nll_k500=nll, train_neg_elbo=train_neg_elbo,
            independent_pixels_nll=pixel_nll)
    assert neg_elbo <= 110.0
    assert nll <= neg_elbo + 0.5  # the importance-sampled bound is tighter than the ELBO
    assert nll < pixel_nll


def test_one_class_anomaly_auroc(mnist):
    """For each digit: an AE (784-256-16) trained on that digit only (~800 images, 25 epochs) scores the 2,000
    test images by reconstruction error; AUROC of 'not this digit'. Baseline: 5-NN distance on raw pixels (~60 s)."""
    from encoderkit.tasks.anomaly import auroc, knn_distance_scores, reconstruction_scores

    T = torch.from_numpy(mnist.test_x)
    ae_auc, raw_auc = [], []
    for d in range(10):
        X = torch.from_numpy(mnist.train_x[mnist.train_y == d])
        torch.manual_seed(d)
        m = Autoencoder(AEConfig(hidden=(256,), latent=16))
        Trainer(m, lambda mm, b: mm.loss(b), X, config=TrainConfig(
            epochs=25, batch_size=64, lr=2e-3, weight_decay=0.0, seed=d, progress=False)).fit()
        is_anomaly = mnist.test_y != d
        ae_auc.append(auroc(reconstruction_scores(m, T), is_anomaly))
        raw_auc.append(auroc(knn_distance_scores(X.numpy(), mnist.test_x, k=5), is_anomaly))
    _report("one-class anomaly AUROC per digit (AE)", **{str(d): a for d, a in enumerate(ae_auc)})
    _report("one-class anomaly AUROC per digit (raw-pixel 5-NN)", **{str(d): a for d, a in enumerate(raw_auc)})
    _report("one-class anomaly mean AUROC", ae=float(np.mean(ae_auc)), raw_pixel_knn=float(np.mean(raw_auc)))
    assert np.mean(ae_auc) >= 0.90
    assert min(ae_auc) >= 0.80


def test_mae_frozen_encoder_linear_probe(mnist):
    """ViT-MAE (7x7 patches, 75% masked, 3 layers of width 96, 1-layer decoder), 20 epochs of pre-training
    without labels (~150 s); a linear probe on the frozen encoder's patch tokens (C picked on a split of
    the training features) vs the same probe on raw pixels."""
    from encoderkit.models.mae import MAE, MAEConfig
    from encoderkit.tasks.probe import extract_features, linear_probe

    X = torch.from_numpy(mnist.train_x).view(-1, 1, 28, 28)
    T = torch.from_numpy(mnist.test_x).view(-1, 1, 28, 28)
    torch.manual_seed(0)
    mae = MAE(MAEConfig(patch_size=7, d_model=96, depth=3, n_heads=4, mlp_ratio=2.0, dec_d_model=64, dec_depth=1,
                        pool="tokens"))
    steps = 20 * math.ceil(len(X) / 128)
    hist = Trainer(mae, lambda m, b: m.loss(b), X, config=TrainConfig(
        epochs=20, batch_size=128, lr=2e-3, weight_decay=0.05, betas=(0.9, 0.95), warmup_steps=steps // 10,
        seed=0, progress=False)).fit()
    mae.eval()
    torch.manual_seed(0)
    f_train, f_test = extract_features(mae.encode, X), extract_features(mae.encode, T)
    acc = linear_probe(f_train, mnist.train_y, f_test, mnist.test_y, C="auto", max_iter=300)
    raw = linear_probe(mnist.train_x, mnist.train_y, mnist.test_x, mnist.test_y, C="auto", max_iter=300)
    _report("MAE linear probe, test accuracy", mae_frozen_tokens=acc, raw_pixels=raw,
            masked_mse_first=hist[0]["train_loss"], masked_mse_last=hist[-1]["train_loss"])
    assert acc >= 0.95
    assert acc > raw
