"""Recipes of the reconstruction family: ae, dae, sae, cae, vae, mae (`encoderkit train NAME`).

Data: an MNIST folder (its first 8,000 images train, the last 2,000 are held out) or an array file
(.npy / .npz / .pt; --holdout N keeps the last N for evaluation). uint8 pixels are scaled to [0, 1]."""
from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoderkit.train.recipes import add_common_arguments, register_recipe, train_config_from_args

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ data
def load_training_arrays(args: argparse.Namespace, images: bool, binarize: bool = False) -> dict[str, Any]:
    """Read --data into float tensors: train / eval inputs (flat, or (N, C, H, W) when images), labels and
    the `data` block of the run's config.json."""
    from encoderkit.datasets import load_array
    from encoderkit.datasets.mnist import binarize as bernoulli

    if not getattr(args, "data", None):
        raise ValueError("--data is required: an MNIST folder or a .npy/.npz/.pt array file")
    X, y = load_array(args.data)
    if X.dtype == object or not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"{args.data}: expected numeric arrays, got dtype {X.dtype}")
    if X.ndim < 2 or len(X) == 0:
        raise ValueError(f"{args.data}: expected a batch of examples (N, ...), got shape {X.shape}")
    scale = 255.0 if X.dtype == np.uint8 else 1.0
    Xf = X.astype(np.float32) / scale
    if not np.isfinite(Xf).all():
        raise ValueError(f"{args.data}: {int((~np.isfinite(Xf)).sum())} values are NaN or inf; clean the data first")
    holdout = getattr(args, "holdout", None)
    holdout = holdout if holdout is not None else (2000 if Path(args.data).is_dir() else 0)
    if holdout >= len(Xf):
        raise ValueError(f"--holdout {holdout} leaves no training data ({len(Xf)} examples)")
    if binarize:
        if Xf.min() < 0 or Xf.max() > 1:
            raise ValueError("--binarize needs data in [0, 1]")
        Xf = bernoulli(Xf, getattr(args, "seed", None) or 0)
    n_train = len(Xf) - holdout
    tr_x, te_x = Xf[:n_train], Xf[n_train:]
    tr_y = y[:n_train] if y is not None else None
    te_y = y[n_train:] if y is not None else None
    digits, limit = getattr(args, "digits", None), getattr(args, "limit", None)
    if digits:
        if tr_y is None:
            raise ValueError("--digits needs labelled data (an MNIST folder or an .npz with y)")
        keep = np.isin(tr_y, digits)
        tr_x, tr_y = tr_x[keep], tr_y[keep]
    if limit:
        tr_x = tr_x[:limit]
        tr_y = tr_y[:limit] if tr_y is not None else None
    if len(tr_x) == 0:
        raise ValueError("no training examples left after --digits / --limit")
    shape = _image_shape(X.shape[1:]) if images else (int(np.prod(X.shape[1:])),)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).reshape(len(a), *shape)  # noqa: E731
    return {"train": to_t(tr_x), "eval": to_t(te_x) if len(te_x) else None, "train_y": tr_y, "eval_y": te_y,
            "data": {"input_shape": list(shape), "scale": scale, "source": str(args.data), "holdout": holdout,
                     "binarized": binarize, "digits": digits}}


def _image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return tuple(shape)  # (C, H, W)
    if len(shape) == 2:
        return (1, *shape)
    side = math.isqrt(shape[0])
    if side * side != shape[0]:
        raise ValueError(f"cannot read examples of shape {shape} as square images; pass (N, H, W) arrays")
    return (1, side, side)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


# ------------------------------------------------------------------------------------ shared run
def _fit(args: argparse.Namespace, model: torch.nn.Module, arrays: dict[str, Any], recipe: str,
         defaults: dict[str, Any], eval_metric: str) -> dict[str, Any]:
    from encoderkit.train.run import save_run
    from encoderkit.train.trainer import Trainer

    cfg = train_config_from_args(args, **defaults)
    eval_fn = None
    if arrays["eval"] is not None:
        def eval_fn(m, x):  # noqa: E306 - the model's own loss (or its eval_metric part) over held-out data
            torch.manual_seed(cfg.seed)
            total = 0.0
            for s in range(0, len(x), 1000):
                loss, parts = m.loss(x[s:s + 1000])
                total += parts.get(eval_metric, float(loss)) * len(x[s:s + 1000])
            return {"loss": total / len(x)}
    t0 = time.perf_counter()
    if getattr(args, "shift_augment", False):
        from encoderkit.datasets.mnist import random_shift

        loss_fn = lambda m, b: m.loss(random_shift(b))  # noqa: E731
    else:
        loss_fn = lambda m, b: m.loss(b)  # noqa: E731
    trainer = Trainer(model, loss_fn, arrays["train"], config=cfg, eval_data=arrays["eval"], eval_fn=eval_fn)
    history = trainer.fit()
    last = history[-1] if history else {}
    summary = {"recipe": recipe, "out": str(args.out), "epochs": trainer.epoch, "train_examples": len(arrays["train"]),
               "train_loss": last.get("train_loss"), "seconds": round(time.perf_counter() - t0, 1)}
    if "eval_loss" in last:
        summary[f"eval_{eval_metric}"] = trainer.best if trainer.best is not None else last["eval_loss"]
    if trainer.stop_reason:
        summary["stopped"] = trainer.stop_reason
    save_run(args.out, model, recipe=recipe, data=arrays["data"], train_config=cfg, summary=summary)
    return summary


def _common(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--holdout", type=int, help="keep the last N examples for evaluation (MNIST folder: 2000)")
    p.add_argument("--digits", type=int, nargs="+", help="train on these classes only (one-class anomaly models)")
    p.add_argument("--shift-augment", action="store_true", help="randomly shift image batches by up to 1 pixel")


# ------------------------------------------------------------------------------------ AE family
def _ae_args(kind: str):
    def add(p: argparse.ArgumentParser) -> None:
        _common(p)
        p.add_argument("--latent", type=int, default=30, help="code size")
        p.add_argument("--hidden", default="512,256", help="encoder hidden widths, comma-separated")
        p.add_argument("--activation", default="relu", help="hidden activation")
        p.add_argument("--conv", action="store_true", help="convolutional encoder/decoder")
        p.add_argument("--loss", choices=["mse", "bce"], default="mse", help="reconstruction loss")
        if kind == "dae":
            p.add_argument("--corruption", choices=["gaussian", "mask", "salt_pepper"], default="gaussian",
                           help="how inputs are corrupted before reconstruction (default gaussian)")
            p.add_argument("--noise", type=float, default=0.3, help="sigma / drop or flip fraction")
            p.add_argument("--stacked", action="store_true",
                           help="stacked DAE: greedy layer-wise pre-training, then end-to-end fine-tuning")
            p.add_argument("--pretrain-epochs", type=int, default=5, help="epochs per greedy layer (--stacked)")
        if kind == "sae":
            p.add_argument("--sparsity", choices=["l1", "kl"], default="kl",
                           help="sparsity penalty on the code: l1 or KL to a target rate (default kl)")
            p.add_argument("--sparsity-weight", type=float, default=0.1, help="weight of the sparsity penalty (default 0.1)")
            p.add_argument("--rho", type=float, default=0.05, help="KL target mean activation")
        if kind == "cae":
            p.add_argument("--contractive-weight", type=float, default=0.01,
                           help="weight of the Jacobian (contractive) penalty (default 0.01)")
    return add


def _ae_run(kind: str):
    def run(args: argparse.Namespace) -> dict[str, Any]:
        from encoderkit.models.autoencoder import AEConfig, Autoencoder

        if kind == "dae" and args.stacked:
            return _stacked_run(args)
        arrays = load_training_arrays(args, images=args.conv)
        shape = arrays["data"]["input_shape"]
        cfg = AEConfig(input_dim=int(np.prod(shape)), hidden=_ints(args.hidden), latent=args.latent,
                       activation=args.activation, recon_loss=args.loss, conv=args.conv,
                       image_shape=tuple(shape) if args.conv else (1, 28, 28))
        if kind == "dae":
            cfg.corruption, cfg.noise = args.corruption, args.noise
        if kind == "sae":
            cfg.sparsity, cfg.sparsity_weight, cfg.rho = args.sparsity, args.sparsity_weight, args.rho
            if args.sparsity == "kl":
                cfg.code_activation = "sigmoid"
        if kind == "cae":
            cfg.contractive_weight = args.contractive_weight
        model = Autoencoder(cfg)
        return _fit(args, model, arrays, kind, {"epochs": 20, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 128},
                    "recon")
    return run


def _stacked_run(args: argparse.Namespace) -> dict[str, Any]:
    from encoderkit.models.autoencoder import StackedDAE, StackedDAEConfig
    from encoderkit.train.greedy import greedy_pretrain
    from encoderkit.train.run import save_run

    if args.conv:
        raise ValueError("--stacked builds an MLP stack; drop --conv")
    arrays = load_training_arrays(args, images=False)
    model = StackedDAE(StackedDAEConfig(input_dim=arrays["data"]["input_shape"][0],
                                        hidden=(*_ints(args.hidden), args.latent), corruption=args.corruption,
                                        noise=args.noise))
    cfg = train_config_from_args(args, epochs=10, lr=1e-3, weight_decay=0.0, batch_size=128)
    t0 = time.perf_counter()
    hist = greedy_pretrain(model, arrays["train"], cfg, pretrain_epochs=args.pretrain_epochs,
                           eval_data=arrays["eval"])
    summary = {"recipe": "dae", "stacked": True, "out": str(args.out), "stages": len(model.layers) + 1,
               "train_loss": hist[-1]["train_loss"], "seconds": round(time.perf_counter() - t0, 1)}
    if "eval_loss" in hist[-1]:
        summary["eval_recon"] = hist[-1]["eval_loss"]
    save_run(args.out, model, recipe="dae", data=arrays["data"], train_config=cfg, summary=summary)
    return summary


# ------------------------------------------------------------------------------------ VAE
def _vae_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--latent", type=int, default=20, help="z size")
    p.add_argument("--hidden", default="512,256", help="encoder hidden widths, comma-separated")
    p.add_argument("--conv", action="store_true", help="convolutional encoder/decoder")
    p.add_argument("--likelihood", choices=["bernoulli", "gaussian"], default="bernoulli",
                   help="decoder likelihood of a pixel (default bernoulli)")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight")
    p.add_argument("--kl-warmup-steps", type=int, default=0, help="ramp the KL weight from 0 over this many steps")
    p.add_argument("--no-binarize", action="store_true",
                   help="keep grey levels (default for bernoulli: binarize stochastically once, seeded)")


def _vae_run(args: argparse.Namespace) -> dict[str, Any]:
    from encoderkit.models.autoencoder import VAE, VAEConfig

    binar = args.likelihood == "bernoulli" and not args.no_binarize
    arrays = load_training_arrays(args, images=args.conv, binarize=binar)
    shape = arrays["data"]["input_shape"]
    model = VAE(VAEConfig(input_dim=int(np.prod(shape)), hidden=_ints(args.hidden), latent=args.latent,
                          likelihood=args.likelihood, beta=args.beta, conv=args.conv,
                          kl_warmup_steps=args.kl_warmup_steps, image_shape=tuple(shape) if args.conv else (1, 28, 28)))
    model.init_output_bias(arrays["train"].mean(0))
    return _fit(args, model, arrays, "vae", {"epochs": 30, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 128},
                "neg_elbo")


# ------------------------------------------------------------------------------------ MAE
def _mae_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--patch-size", type=int, default=4, help="ViT patch side in pixels (default 4)")
    p.add_argument("--d-model", type=int, default=128, help="encoder width (default 128)")
    p.add_argument("--depth", type=int, default=4, help="encoder layers (default 4)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--mask-ratio", type=float, default=0.75, help="share of patches masked (default 0.75)")
    p.add_argument("--norm-pix-loss", action="store_true", help="normalize each target patch")


def _mae_run(args: argparse.Namespace) -> dict[str, Any]:
    from encoderkit.models.mae import MAE, MAEConfig

    arrays = load_training_arrays(args, images=True)
    c, h, w = arrays["data"]["input_shape"]
    if h != w:
        raise ValueError(f"MAE needs square images, got {h}x{w}")
    model = MAE(MAEConfig(image_size=h, in_chans=c, patch_size=args.patch_size, d_model=args.d_model,
                          depth=args.depth, n_heads=args.heads, mask_ratio=args.mask_ratio,
                          norm_pix_loss=args.norm_pix_loss))
    return _fit(args, model, arrays, "mae", {"epochs": 30, "lr": 1.5e-3, "weight_decay": 0.05, "batch_size": 128,
                                             "betas": (0.9, 0.95), "warmup_steps": 100}, "masked_mse")


register_recipe("ae", _ae_args("ae"), _ae_run("ae"), "autoencoder (MLP or --conv)")
register_recipe("dae", _ae_args("dae"), _ae_run("dae"), "denoising autoencoder (gaussian / mask / salt_pepper)")
register_recipe("sae", _ae_args("sae"), _ae_run("sae"), "sparse autoencoder (L1 or KL-to-rho)")
register_recipe("cae", _ae_args("cae"), _ae_run("cae"), "contractive autoencoder (Jacobian penalty)")
register_recipe("vae", _vae_args, _vae_run, "variational autoencoder (Bernoulli or Gaussian likelihood)")
register_recipe("mae", _mae_args, _mae_run, "ViT masked autoencoder")
