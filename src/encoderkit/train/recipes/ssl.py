"""Self-supervised image recipes: simclr and dino (`encoderkit train simclr|dino --data MNIST_DIR --out RUN`).

Both train a small all-convolutional encoder (SSLImageEncoder) without labels and save only that
encoder (DINO: the EMA teacher's backbone) as the run's model, so `encoderkit probe RUN DATA` measures
its frozen features. When the data has labels, the run's summary also holds the linear-probe and
k-NN accuracy on the held-out part, beside the same figures for raw pixels."""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from encoderkit.nn.conv import ConvBN
from encoderkit.train.recipes import add_common_arguments, register_recipe, train_config_from_args
from encoderkit.train.run import register_model

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ the encoder
@dataclass
class SSLEncoderConfig:
    in_channels: int = 1  # image channels
    width: int = 32  # channels of the first block; then 2x, 4x, 4x
    depth: int = 4  # conv blocks, each 3x3 stride 2 (28 -> 14 -> 7 -> 4 -> 2)
    image_size: int = 28  # side of the training images (crops of any size also work)


class SSLImageEncoder(nn.Module):
    """x (B, C, H, W) -> depth x [conv3x3/2 - BN - ReLU] -> global average pool -> features (B, D)."""

    def __init__(self, config: SSLEncoderConfig):
        super().__init__()
        self.config = config
        widths = [config.width * min(2 ** i, 4) for i in range(config.depth)]
        chans = [config.in_channels] + widths
        self.blocks = nn.Sequential(*[ConvBN(chans[i], chans[i + 1], 3, 2, "relu") for i in range(config.depth)])
        self.dim = widths[-1]

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"SSLImageEncoder takes images (B, {self.config.in_channels}, H, W), got shape "
                             f"{tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen-feature view: (B, C, H, W) -> (B, D)."""
        if x.dim() == 2:  # flat images from an array file
            s = self.config.image_size
            x = x.reshape(len(x), self.config.in_channels, s, s)
        return self.blocks(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)


register_model("SSLImageEncoder", __name__, "SSLEncoderConfig", "SSLImageEncoder")


def projection_head(dim: int, hidden: int, out: int) -> nn.Sequential:
    """SimCLR's g(.): Linear - BN - ReLU - Linear (the loss is taken on its output, features before it)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


class SimCLRModel(nn.Module):
    """Encoder f + projection g; loss(x) = NT-Xent(g(f(view1)), g(f(view2)))."""

    def __init__(self, encoder: SSLImageEncoder, proj_dim: int = 64, temperature: float = 0.2, augment=None,
                 seed: int = 0):
        super().__init__()
        from encoderkit.datasets.augment import SimCLRAugment

        self.encoder = encoder
        self.projector = projection_head(encoder.dim, encoder.dim, proj_dim)
        self.temperature = temperature
        self.augment = augment or SimCLRAugment(size=encoder.config.image_size)
        self.generator = torch.Generator().manual_seed(seed)

    def check_input(self, x: torch.Tensor) -> None:
        self.encoder.check_input(x)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        from encoderkit.objectives.contrastive import nt_xent

        v1, v2 = self.augment.two_views(x, self.generator)
        z = self.projector(self.encoder(torch.cat([v1, v2])))  # one pass: BN sees both views
        n = len(x)
        return nt_xent(z[:n], z[n:], self.temperature), {}


class DINOTrainable(nn.Module):
    """DINO (student, EMA teacher, multi-crop) with its schedules, for the Trainer: every loss call first
    moves the teacher one EMA step towards the student of the previous optimizer step."""

    def __init__(self, encoder: SSLImageEncoder, total_steps: int, out_dim: int = 256, teacher_temp: float = 0.02,
                 warmup_teacher_temp: float | None = None, warmup_steps: int = 0, momentum: float = 0.99,
                 augment=None, seed: int = 0):
        super().__init__()
        from encoderkit.datasets.augment import MultiCropAugment
        from encoderkit.objectives.distill import DINO, cosine_schedule

        self.dino = DINO(encoder, encoder.dim, out_dim=out_dim, hidden_dim=256, bottleneck_dim=64, use_bn=True)
        self.augment = augment or MultiCropAugment(global_size=encoder.config.image_size,
                                                   local_size=max(8, encoder.config.image_size // 2))
        self.momentum = cosine_schedule(momentum, 1.0, max(total_steps, 1))
        warm = warmup_teacher_temp if warmup_teacher_temp is not None else teacher_temp
        self.teacher_temp = torch.cat([torch.linspace(warm, teacher_temp, warmup_steps, dtype=torch.float64),
                                       torch.full((max(total_steps - warmup_steps, 1),), teacher_temp,
                                                  dtype=torch.float64)])
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0

    def check_input(self, x: torch.Tensor) -> None:
        self.dino.student[0].check_input(x)

    def sync_teacher(self) -> None:
        """The EMA step owed for the last optimizer step (call once more after training)."""
        if self.calls > 0:
            self.dino.update_teacher(float(self.momentum[min(self.calls - 1, len(self.momentum) - 1)]))

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        self.sync_teacher()
        tt = float(self.teacher_temp[min(self.calls, len(self.teacher_temp) - 1)])
        self.calls += 1
        return self.dino(self.augment(x, self.generator), teacher_temp=tt), {"teacher_temp": tt}

    @property
    def teacher_backbone(self) -> SSLImageEncoder:
        return self.dino.backbone


# ------------------------------------------------------------------------------------ python API
def _fit(model: nn.Module, train_x: torch.Tensor, cfg) -> list[dict[str, Any]]:
    from encoderkit.train.trainer import Trainer

    if cfg.grad_accum != 1:
        raise ValueError("the SSL recipes step their schedules once per batch; use --grad-accum 1")
    return Trainer(model, lambda m, b: m.loss(b), train_x, config=cfg).fit()


def train_simclr(train_x: torch.Tensor, config=None, encoder_config: SSLEncoderConfig | None = None,
                 temperature: float = 0.2, proj_dim: int = 64) -> tuple[SSLImageEncoder, list[dict[str, Any]]]:
    """SimCLR on unlabelled images (N, C, H, W) in [0, 1]; returns the trained encoder and the history."""
    from encoderkit.train.trainer import TrainConfig

    cfg = config or TrainConfig(epochs=3, batch_size=256, lr=2e-3, weight_decay=1e-4, warmup_steps=10,
                                drop_last=True, restore_best=False)
    enc = SSLImageEncoder(encoder_config or SSLEncoderConfig(in_channels=train_x.shape[1], image_size=train_x.shape[-1]))
    model = SimCLRModel(enc, proj_dim, temperature, seed=cfg.seed)
    history = _fit(model, train_x, cfg)
    return enc.eval(), history


def train_dino(train_x: torch.Tensor, config=None, encoder_config: SSLEncoderConfig | None = None,
               out_dim: int = 256, teacher_temp: float = 0.04, momentum: float = 0.99,
               n_local: int = 2, warmup_teacher_temp: float | None = 0.02,
               teacher_temp_warmup_epochs: float = 1.0) -> tuple[SSLImageEncoder, list[dict[str, Any]]]:
    """DINO on unlabelled images; returns the teacher's backbone (the evaluated encoder) and the history.

    The default recipe is the paper's, scaled to short MNIST runs: teacher temperature warmed up linearly
    warmup_teacher_temp -> teacher_temp (0.02 -> 0.04, the paper: 0.04 -> 0.07) over the first
    teacher_temp_warmup_epochs, EMA momentum cosine 0.99 -> 1, AdamW lr 2e-3 with one epoch of warm-up
    then cosine, 6 epochs of batch 64 (8,000 MNIST images, seed 0: 97.65% linear probe, 95.25% k-NN20)."""
    from encoderkit.datasets.augment import MultiCropAugment
    from encoderkit.train.trainer import TrainConfig

    cfg = config or TrainConfig(epochs=6, batch_size=64, lr=2e-3, weight_decay=1e-4, warmup_steps=125,
                                drop_last=True, restore_best=False)
    enc = SSLImageEncoder(encoder_config or SSLEncoderConfig(in_channels=train_x.shape[1], image_size=train_x.shape[-1]))
    n_batches = len(train_x) // cfg.batch_size if cfg.drop_last else -(-len(train_x) // cfg.batch_size)
    total = n_batches * cfg.epochs
    tt_warm = min(total, max(0, round(teacher_temp_warmup_epochs * n_batches))) if warmup_teacher_temp is not None else 0
    size = enc.config.image_size
    model = DINOTrainable(enc, total, out_dim, teacher_temp, warmup_teacher_temp=warmup_teacher_temp,
                          warmup_steps=tt_warm, momentum=momentum,
                          augment=MultiCropAugment(global_size=size, local_size=max(8, size // 2), n_local=n_local),
                          seed=cfg.seed)
    history = _fit(model, train_x, cfg)
    model.sync_teacher()
    return model.teacher_backbone.eval(), history


def evaluate_features(encoder: nn.Module, train_x: torch.Tensor, train_y, test_x: torch.Tensor, test_y,
                      k: int = 20) -> dict[str, float]:
    """Linear-probe and k-NN test accuracy of the frozen encoder, and the same two on raw pixels."""
    from encoderkit.tasks.probe import extract_features, knn_accuracy, linear_probe

    encoder.eval()
    ftr = extract_features(encoder, train_x)
    fte = extract_features(encoder, test_x)
    rtr, rte = train_x.flatten(1).numpy(), test_x.flatten(1).numpy()
    return {"linear_probe_accuracy": linear_probe(ftr, train_y, fte, test_y, max_iter=2000),
            f"knn{k}_accuracy": knn_accuracy(ftr, train_y, fte, test_y, k=k),
            "raw_pixel_linear_probe_accuracy": linear_probe(rtr, train_y, rte, test_y, max_iter=2000),
            f"raw_pixel_knn{k}_accuracy": knn_accuracy(rtr, train_y, rte, test_y, k=k)}


# ------------------------------------------------------------------------------------ CLI recipes
def _common(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--holdout", type=int, help="keep the last N examples for evaluation (MNIST folder: 2000)")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv block")
    p.add_argument("--depth", type=int, default=4, help="conv blocks (each halves the resolution)")
    p.add_argument("--digits", type=int, nargs="+", help=argparse.SUPPRESS)


def _simclr_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature")
    p.add_argument("--proj-dim", type=int, default=64, help="projection head output size")


def _dino_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--prototypes", type=int, default=256, help="DINO head output size K")
    p.add_argument("--teacher-temp", type=float, default=0.04, help="teacher temperature (sharpening) after warm-up")
    p.add_argument("--warmup-teacher-temp", type=float, default=0.02, help="teacher temperature at the start "
                   "(linear warm-up to --teacher-temp)")
    p.add_argument("--teacher-temp-warmup-epochs", type=float, default=1.0, help="epochs of teacher temperature warm-up")
    p.add_argument("--momentum", type=float, default=0.99, help="teacher EMA momentum at the start (cosine -> 1)")
    p.add_argument("--local-crops", type=int, default=2, help="number of small crops per image")


def _run(args: argparse.Namespace, recipe: str) -> dict[str, Any]:
    from encoderkit.train.recipes.reconstruction import load_training_arrays
    from encoderkit.train.run import save_run

    arrays = load_training_arrays(args, images=True)
    train_x = arrays["train"]
    c, h, w = train_x.shape[1:]
    if h != w:
        raise ValueError(f"{recipe} needs square images, got {h}x{w}")
    enc_cfg = SSLEncoderConfig(in_channels=c, width=args.width, depth=args.depth, image_size=h)
    t0 = time.perf_counter()
    if recipe == "simclr":
        cfg = train_config_from_args(args, epochs=3, batch_size=256, lr=2e-3, weight_decay=1e-4, warmup_steps=10,
                                     drop_last=True, restore_best=False)
        encoder, history = train_simclr(train_x, cfg, enc_cfg, args.temperature, args.proj_dim)
    else:
        cfg = train_config_from_args(args, epochs=6, batch_size=64, lr=2e-3, weight_decay=1e-4, warmup_steps=125,
                                     drop_last=True, restore_best=False)
        encoder, history = train_dino(train_x, cfg, enc_cfg, args.prototypes, args.teacher_temp, args.momentum,
                                      args.local_crops, args.warmup_teacher_temp, args.teacher_temp_warmup_epochs)
    summary: dict[str, Any] = {"recipe": recipe, "out": str(args.out), "epochs": len(history),
                               "train_examples": len(train_x), "train_loss": history[-1].get("train_loss"),
                               "seconds": round(time.perf_counter() - t0, 1)}
    if arrays["eval"] is not None and arrays["train_y"] is not None and arrays["eval_y"] is not None:
        summary.update(evaluate_features(encoder, train_x, np.asarray(arrays["train_y"]), arrays["eval"],
                                         np.asarray(arrays["eval_y"])))
    save_run(args.out, encoder, recipe=recipe, data=arrays["data"], train_config=cfg, summary=summary)
    return summary


register_recipe("simclr", _simclr_args, lambda a: _run(a, "simclr"), "SimCLR contrastive pre-training (NT-Xent)")
register_recipe("dino", _dino_args, lambda a: _run(a, "dino"), "DINO self-distillation with multi-crop")
