"""`encoderkit train / reconstruct / anomaly / probe` end to end on small data, and their bad-input errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from encoderkit.cli import main
from encoderkit.train.recipes import recipes
from encoderkit.train.run import load_run, prepare_inputs


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """Two classes of 8x8 uint8 'images': a bright left half or a bright right half, with noise."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    X = rng.integers(0, 60, size=(300, 8, 8))
    for i, c in enumerate(y):
        X[i, :, :4] += 180 * (c == 0)
        X[i, :, 4:] += 180 * (c == 1)
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    np.savez(path, X=X.astype(np.uint8), y=y)
    return path


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_reconstruction_recipes_are_registered():
    assert {"ae", "dae", "sae", "cae", "vae", "mae"} <= set(recipes())


def test_train_then_reconstruct_anomaly_probe(tmp_path, capsys, blobs):
    run = tmp_path / "ae"
    s = _json(capsys, ["train", "ae", "--data", str(blobs), "--holdout", "60", "--latent", "4", "--hidden", "32",
                       "--epochs", "15", "--batch-size", "16", "--lr", "3e-3", "--out", str(run), "--no-progress", "--json"])
    assert s["recipe"] == "ae" and s["epochs"] == 15 and s["train_examples"] == 240
    assert s["eval_recon"] < 0.03  # learned: two bright halves are easy to reconstruct
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "curves.png", "checkpoint.pt"):
        assert (run / name).exists(), name
    r = load_run(run)
    assert r.recipe == "ae" and r.info["data"]["input_shape"] == [64] and not r.model.training
    codes = r.encode(np.load(blobs)["X"][:7])
    assert codes.shape == (7, 4) and codes.dtype == np.float32

    rec = _json(capsys, ["reconstruct", str(run), str(blobs), "--out", str(tmp_path / "rec.npy"),
                         "--png", str(tmp_path / "grid.png"), "--json"])
    assert rec["n"] == 300 and rec["mse"] == pytest.approx(np.mean(rec["mse_per_example"]))
    assert np.load(tmp_path / "rec.npy").shape == (300, 64)
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"

    # anomalies: the same images with a bright square in the middle are reconstructed badly
    X = np.load(blobs)["X"].copy()
    X[:30, 2:6, 2:6] = 255
    odd = tmp_path / "odd.npy"
    np.save(odd, X[:60])
    an = _json(capsys, ["anomaly", str(run), str(odd), "--json"])
    assert an["method"] == "reconstruction" and len(an["scores"]) == 60
    assert np.mean(an["scores"][:30]) > 3 * np.mean(an["scores"][30:])
    assert an["n_flagged"] >= 30 and an["threshold"] > 0
    kn = _json(capsys, ["anomaly", str(run), str(odd), "--method", "knn", "--json"])
    assert kn["method"] == "knn" and np.mean(kn["scores"][:30]) > np.mean(kn["scores"][30:])

    pr = _json(capsys, ["probe", str(run), str(blobs), "--holdout", "100", "--knn", "5", "--json"])
    assert pr["linear_probe_accuracy"] >= 0.95 and pr["knn5_accuracy"] >= 0.95
    assert pr["feature_dim"] == 4 and pr["train"] == 200 and "raw_pixel_linear_probe_accuracy" in pr


@pytest.mark.parametrize("recipe,extra", [
    ("dae", ["--corruption", "salt_pepper", "--noise", "0.1"]),
    ("dae", ["--stacked", "--pretrain-epochs", "1", "--corruption", "mask"]),
    ("sae", ["--sparsity", "kl"]),
    ("cae", ["--contractive-weight", "0.01"]),
    ("vae", ["--latent", "3"]),
    ("mae", ["--patch-size", "4", "--d-model", "16", "--depth", "1", "--heads", "2"]),
])
def test_every_recipe_writes_a_loadable_run(tmp_path, capsys, blobs, recipe, extra):
    run = tmp_path / recipe
    args = ["train", recipe, "--data", str(blobs), "--holdout", "50", "--epochs", "2", "--out", str(run),
            "--no-progress", "--json"]
    if recipe != "mae":
        args += ["--hidden", "16"]
    s = _json(capsys, args + extra)
    assert (s.get("stacked") or s["epochs"] == 2) and np.isfinite(s["train_loss"])
    r = load_run(run)
    x = r.inputs(np.load(blobs)["X"][:5])
    with torch.no_grad():
        out = r.model.encode(x)
    assert (out[0] if isinstance(out, tuple) else out).shape[0] == 5
    if recipe == "vae":
        assert r.info["data"]["binarized"] is True
    assert _json(capsys, ["probe", str(run), str(blobs), "--knn", "0", "--json"])["test"] == 60


def test_resume_with_a_different_model_names_the_mismatch(tmp_path, capsys, blobs):
    run = tmp_path / "r"
    base = ["train", "ae", "--data", str(blobs), "--hidden", "16", "--no-progress", "--out", str(run)]
    assert main(base + ["--latent", "4", "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(base + ["--latent", "6", "--epochs", "2", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "different Autoencoder" in err and "shape" in err
    assert main(base + ["--latent", "4", "--epochs", "2", "--resume", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2


def test_bad_data_gives_clear_errors(tmp_path, capsys, blobs):
    nan = tmp_path / "nan.npy"
    a = np.random.rand(20, 16).astype(np.float32)
    a[3, 3] = np.nan
    np.save(nan, a)
    assert main(["train", "ae", "--data", str(nan), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "NaN" in capsys.readouterr().err
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 16), np.float32))
    assert main(["train", "ae", "--data", str(empty), "--out", str(tmp_path / "y"), "--no-progress"]) == 2
    assert "expected a batch" in capsys.readouterr().err
    words = tmp_path / "words.npy"
    np.save(words, np.array([["a", "b"]]))
    assert main(["train", "ae", "--data", str(words), "--out", str(tmp_path / "z"), "--no-progress"]) == 2
    assert "numeric" in capsys.readouterr().err
    assert main(["train", "ae", "--data", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "w")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["probe", str(tmp_path / "no-run"), str(blobs)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_prepare_inputs_checks_shape():
    d = {"input_shape": [1, 4, 4], "scale": 255.0}
    t = prepare_inputs(np.full((2, 16), 255, np.uint8), d)
    assert t.shape == (2, 1, 4, 4) and torch.all(t == 1)
    assert prepare_inputs(np.zeros((4, 4), np.float32), d).shape == (1, 1, 4, 4)  # one example
    with pytest.raises(ValueError, match=r"do not fit this model.*\(1, 4, 4\)"):
        prepare_inputs(np.zeros((2, 5, 5), np.float32), d)


def test_mnist_folder_and_idx_reader(tmp_path, capsys):
    from conftest import data_path

    root = data_path("mnist")
    from encoderkit.datasets.mnist import load_mnist, mnist_split, read_idx

    images, labels = load_mnist(root)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    s = mnist_split(root, binarized=True, seed=0)
    assert s.train_x.shape == (8000, 784) and s.test_x.shape == (2000, 784)
    assert set(np.unique(s.train_x).tolist()) == {0.0, 1.0}
    assert np.array_equal(s.train_x, mnist_split(root, binarized=True, seed=0).train_x)  # drawn once, seeded
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad)
    s = _json(capsys, ["train", "ae", "--data", str(root), "--limit", "300", "--epochs", "1", "--hidden", "32",
                       "--latent", "8", "--out", str(tmp_path / "m"), "--no-progress", "--json"])
    assert s["train_examples"] == 300 and "eval_recon" in s  # the last 2,000 images are held out


def test_the_plain_training_summary_is_readable(capsys):
    """(issue 17) `train clip` printed raw dicts and `None`: nested figures are indented lines, None is left out,
    floats have 4 significant digits and counts separators."""
    import argparse

    from encoderkit.cli.train import _train

    summary = {"model_type": "clip", "train_examples": 8000, "seconds": 41.23456789, "loss": 0.123456789,
               "max_seconds": None, "zero_shot_accuracy": {"0": 0.98765, "1": 1.0},
               "retrieval": {"recall@1": 0.5, "precision@5": None}, "templates": ["a {}", "the {}"],
               "image_size": [28, 28], "bf16": False}
    args = argparse.Namespace(json=False, out="run", recipe_run=lambda a: summary)
    assert _train(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "model_type: clip", "train_examples: 8,000", "seconds: 41.23", "loss: 0.1235",
        "zero_shot_accuracy:", "  0: 0.9877", "  1: 1", "retrieval:", "  recall@1: 0.5",
        "templates: a {}, the {}", "image_size: 28, 28", "bf16: false"]
    assert "None" not in out and "{" not in out.replace("a {}", "").replace("the {}", "")

