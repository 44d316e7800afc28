"""Self-supervised results on real MNIST (train: first 8,000 of the t10k images, test: last 2,000).
SimCLR and DINO train a small conv encoder (width 32) without labels; its frozen features (DINO: the
EMA teacher's backbone) are then scored by a linear probe and k-NN (k = 20), beside raw pixels and the
same encoder left at random init (raw pixels: 90.35% linear / 96.0% k-NN; random init: 89.9% / 92.85%).

Measured (seed 0): SimCLR 97.8% linear probe / 96.65% k-NN; DINO 97.65% / 95.25% with train_dino's
recipe (teacher temp 0.02 -> 0.04 over epoch 1, EMA momentum cosine 0.99 -> 1, lr 2e-3 with one epoch
of warm-up, 6 epochs of batch 64, 2 local crops); its old defaults (temp 0.02, momentum 0.9, lr 1e-3,
4 epochs) gave 92.7-94.25%.

Budget: the 3 SimCLR epochs took ~80 s on one thread of this 2-core CPU while it was shared (load ~5);
the 6 DINO epochs took ~175 s at load ~2 (test call 183 s, the whole file 4 min 8 s at load ~2); the
file took 18 min when the machine ran at load ~15 (before DINO was added). The DINO test now runs 4 epochs
(44 s of training CPU on the AVX-512 host, 3 epochs 35 s: ~62 s extrapolated for 6)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import data_path

from encoderkit.datasets.mnist import mnist_split
from encoderkit.train.recipes.ssl import (
    SSLEncoderConfig,
    SSLImageEncoder,
    evaluate_features,
    train_dino,
    train_simclr,
)
from encoderkit.train.trainer import TrainConfig


@pytest.fixture(scope="module")
def mnist():
    split = mnist_split(data_path("mnist"), n_train=8000)
    img = lambda a: torch.from_numpy(np.ascontiguousarray(a)).reshape(len(a), 1, 28, 28)  # noqa: E731
    return img(split.train_x), split.train_y, img(split.test_x), split.test_y


def _report(name: str, trained: dict, random_init: dict) -> None:
    print(f"\n{name} (8,000 train / 2,000 test): " + json.dumps(
        {"trained": trained, "random_init_linear_probe": random_init["linear_probe_accuracy"],
         "random_init_knn20": random_init["knn20_accuracy"]}, indent=1))


def _check(trained: dict, random_init: dict) -> None:
    best = max(trained["linear_probe_accuracy"], trained["knn20_accuracy"])
    assert best >= 0.95, trained
    # learning, not luck: better than raw pixels and than the untrained encoder, on the linear probe
    assert trained["linear_probe_accuracy"] > trained["raw_pixel_linear_probe_accuracy"] + 0.03, trained
    assert trained["linear_probe_accuracy"] > random_init["linear_probe_accuracy"] + 0.03, (trained, random_init)


def _random_init(x_tr, y_tr, x_te, y_te) -> dict:
    torch.manual_seed(0)
    return evaluate_features(SSLImageEncoder(SSLEncoderConfig()), x_tr, y_tr, x_te, y_te)


@pytest.mark.slow
def test_simclr_frozen_features(mnist):
    x_tr, y_tr, x_te, y_te = mnist
    cfg = TrainConfig(epochs=3, batch_size=256, lr=2e-3, weight_decay=1e-4, warmup_steps=10, drop_last=True,
                      restore_best=False, progress=False, seed=0)
    encoder, history = train_simclr(x_tr, cfg, SSLEncoderConfig(width=32), temperature=0.2)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    trained = evaluate_features(encoder, x_tr, y_tr, x_te, y_te)
    rnd = _random_init(x_tr, y_tr, x_te, y_te)
    _report("SimCLR", trained, rnd)
    _check(trained, rnd)


@pytest.mark.slow
def test_dino_frozen_features(mnist):
    """train_dino's default recipe (teacher temp 0.02 -> 0.04 over epoch 1, EMA 0.99 -> 1, lr 2e-3) for 4 of its 6
    epochs: measured (seed 0) 96.85% linear probe / 95.45% k-NN; 6 epochs (the README row) 97.65% / 95.25%;
    3 epochs 94.85% / 93.45%, which fails the 95% bar, as the untrained encoder (89.9% / 92.85%) does."""
    x_tr, y_tr, x_te, y_te = mnist
    cfg = TrainConfig(epochs=4, batch_size=64, lr=2e-3, weight_decay=1e-4, warmup_steps=125, drop_last=True,
                      restore_best=False, progress=False, seed=0)
    encoder, history = train_dino(x_tr, cfg, SSLEncoderConfig(width=32), out_dim=256, teacher_temp=0.04,
                                  momentum=0.99, warmup_teacher_temp=0.02, teacher_temp_warmup_epochs=1)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    trained = evaluate_features(encoder, x_tr, y_tr, x_te, y_te)
    rnd = _random_init(x_tr, y_tr, x_te, y_te)
    _report("DINO", trained, rnd)
    _check(trained, rnd)


@pytest.mark.parametrize("recipe", ["simclr", "dino"])
def test_recipe_writes_a_loadable_encoder_run(tmp_path, recipe):
    """The CLI recipe on a tiny labelled array file: a run folder whose model encodes images (fast)."""
    from encoderkit.cli import main
    from encoderkit.train.run import load_run

    g = np.random.default_rng(0)
    X = (g.random((96, 16, 16)) * 255).astype(np.uint8)
    np.savez(tmp_path / "tiny.npz", X=X, y=np.arange(96) % 3)
    out = tmp_path / "run"
    code = main(["train", recipe, "--data", str(tmp_path / "tiny.npz"), "--holdout", "32", "--out", str(out),
                 "--epochs", "1", "--batch-size", "16", "--width", "4", "--depth", "2", "--no-progress", "--json"])
    assert code == 0
    run = load_run(out)
    assert run.recipe == recipe and run.info["model_type"] == "SSLImageEncoder"
    feats = run.model.encode(run.inputs(X[:5]))
    assert feats.shape == (5, 8) and torch.isfinite(feats).all()
    assert 0.0 <= run.info["summary"]["linear_probe_accuracy"] <= 1.0
    assert (out / "metrics.jsonl").exists() and (out / "curves.png").exists()
