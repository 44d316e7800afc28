"""One training loop for every objective: AdamW, warmup + cosine/linear decay, gradient clipping and
accumulation, optional bf16 autocast, seeded runs, checkpoint + resume, early stopping, layer freezing,
metrics.jsonl and curves.png in the run folder.

    trainer = Trainer(model, loss_fn, train_data, config=TrainConfig(...), eval_data=..., eval_fn=...)
    history = trainer.fit()

loss_fn(model, batch) returns a loss tensor or (loss, {name: float}); eval_fn(model, eval_data) returns
{name: float} (the monitored one, "loss" by default, lower is better)."""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from encoderkit.train.freeze import freeze_by_prefix, freeze_layers  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


@dataclass
class TrainConfig:
    """Hyper-parameters of one run; saved beside the checkpoints."""

    epochs: int = 5  # passes over the training data
    batch_size: int = 128  # examples per forward pass (per micro-batch when grad_accum > 1)
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    warmup_steps: int = 0  # optimizer steps of linear warmup from 0 to lr
    schedule: str = "cosine"  # after warmup: cosine | linear (decay to 0) | constant
    grad_clip: float | None = 1.0  # max global gradient norm; None = no clipping
    grad_accum: int = 1  # micro-batches per optimizer step
    bf16: bool = False  # bfloat16 autocast for the forward pass
    seed: int = 0  # seeds torch, numpy, random and the data order
    early_stopping_patience: int | None = None  # stop after this many evaluations without improvement
    eval_steps: int | None = None  # also evaluate every N optimizer steps (None: at epoch ends only)
    monitor: str = "loss"  # metric watched for early stopping / best.pt (eval metrics, else train loss)
    monitor_mode: str = "min"  # min | max
    restore_best: bool = True  # at the end of fit, load the weights of the best evaluation (when monitored)
    freeze_layers: int = 0  # freeze the first N blocks of model.layers (and the embeddings)
    out_dir: str | None = None  # run folder: metrics.jsonl, curves.png, checkpoint.pt; None = nothing written
    log_every: int = 50  # optimizer steps between metrics.jsonl lines
    resume: str | None = None  # a checkpoint file or run folder to continue from
    shuffle: bool = True  # shuffle the training data every epoch
    drop_last: bool = False  # drop the last incomplete batch
    progress: bool = True  # show a tqdm progress bar
    check_finite_inputs: bool = True  # refuse batches holding NaN / inf


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ------------------------------------------------------------------------------------ helpers
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; CPU runs with the same seed give the same weights."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_signature(model: nn.Module) -> dict[str, Any]:
    """Class name and parameter/buffer shapes: what must match to resume from a checkpoint."""
    return {"class": type(model).__name__,
            "shapes": {k: list(v.shape) for k, v in model.state_dict().items()}}


def check_signature(expected: dict[str, Any], model: nn.Module, source: str) -> None:
    """Raise ValueError naming the first mismatch between a checkpoint's model and this model."""
    got = model_signature(model)
    if expected.get("class") != got["class"]:
        raise ValueError(f"{source} holds a {expected.get('class')} but the model is a {got['class']}; "
                         "resume with the model the checkpoint was trained with")
    e, g = expected["shapes"], got["shapes"]
    missing, extra = sorted(set(e) - set(g)), sorted(set(g) - set(e))
    if missing or extra:
        raise ValueError(f"{source} is for a different {got['class']}: parameters only in the checkpoint "
                         f"{missing[:3]}, only in the model {extra[:3]}")
    for k in e:
        if list(e[k]) != list(g[k]):
            raise ValueError(f"{source} is for a different {got['class']}: {k} has shape {tuple(e[k])} in the "
                             f"checkpoint but {tuple(g[k])} in the model (check latent/hidden sizes)")


def _to_loader(data: Any, cfg: TrainConfig, shuffle: bool) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    collate = None
    if isinstance(data, torch.Tensor):
        data = _TensorRows(data)
        collate = _collate_passthrough
    if not isinstance(data, Dataset) and not hasattr(data, "__getitem__"):
        raise TypeError(f"training data must be a torch Dataset, a tensor / numpy array or a DataLoader, "
                        f"got {type(data).__name__}")
    try:
        n = len(data)
    except TypeError:
        n = None
    if n == 0:
        raise ValueError("the training dataset is empty; pass at least one example")
    return DataLoader(data, batch_size=cfg.batch_size, shuffle=shuffle, drop_last=cfg.drop_last,
                      generator=torch.Generator().manual_seed(cfg.seed), collate_fn=collate)


class _TensorRows(Dataset):
    """A tensor seen as a dataset of its rows; batches come out as one tensor (not a 1-tuple)."""

    def __init__(self, t: torch.Tensor):
        self.t = t

    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, i):
        return self.t[i]

    def __getitems__(self, idx):  # fast path: one gather instead of collate over rows
        return self.t[idx]


def _collate_passthrough(batch):
    return batch


def _check_finite(batch: Any, where: str) -> None:
    tensors = [batch] if isinstance(batch, torch.Tensor) else (
        list(batch.values()) if isinstance(batch, dict) else list(batch) if isinstance(batch, (list, tuple)) else [])
    for i, t in enumerate(tensors):
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{where}: input tensor {i} holds {bad} NaN/inf values; clean the data "
                             "(e.g. np.nan_to_num) or drop those rows before training")


def _first_tensor(batch: Any) -> Any:
    if isinstance(batch, (list, tuple)) and batch:
        return batch[0]
    return batch


def _lr_lambda(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    if cfg.schedule not in ("cosine", "linear", "constant"):
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose cosine, linear or constant")

    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1.0 - progress
    return f


def _better(a: float, b: float | None, mode: str) -> bool:
    return b is None or (a < b if mode == "min" else a > b)


# ------------------------------------------------------------------------------------ Trainer
class Trainer:
    """Fits `model` by minimizing loss_fn(model, batch) over train_data; see the module docstring."""

    def __init__(self, model: nn.Module, loss_fn: Callable, train_data: Any, config: TrainConfig | None = None,
                 eval_data: Any = None, eval_fn: Callable | None = None, optimizer: torch.optim.Optimizer | None = None,
                 callbacks: Iterable[Callable] = ()):
        self.model, self.loss_fn, self.config = model, loss_fn, config or TrainConfig()
        self.eval_data, self.eval_fn = eval_data, eval_fn
        cfg = self.config
        if cfg.eval_steps is not None and cfg.eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1 (or None for epoch ends only), got {cfg.eval_steps}")
        if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.grad_accum < 1:
            raise ValueError(f"epochs ({cfg.epochs}), batch_size ({cfg.batch_size}) and grad_accum "
                             f"({cfg.grad_accum}) must all be >= 1")
        if cfg.monitor_mode not in ("min", "max"):
            raise ValueError(f"monitor_mode must be min or max, got {cfg.monitor_mode!r}")
        seed_everything(cfg.seed)
        self.loader = _to_loader(train_data, cfg, cfg.shuffle)
        if cfg.freeze_layers:
            frozen = freeze_layers(model, cfg.freeze_layers)
            log.info("froze %d parameter tensors (first %d layers)", len(frozen), cfg.freeze_layers)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable parameters (everything is frozen)")
        self.optimizer = optimizer or torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                                        betas=tuple(cfg.betas))
        try:
            n_batches = len(self.loader)
        except TypeError:
            n_batches = 1
        if n_batches == 0:
            raise ValueError(f"the training data gives no batches (batch_size={cfg.batch_size}, drop_last="
                             f"{cfg.drop_last}); lower batch_size or add data")
        self.steps_per_epoch = math.ceil(n_batches / cfg.grad_accum)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg, self.total_steps))
        self.callbacks = list(callbacks)  # called as cb(trainer, record) after every epoch
        self.out = Path(cfg.out_dir) if cfg.out_dir else None
        self.epoch, self.step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.step_log: list[dict[str, Any]] = []
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_step: int | None = None  # optimizer step of the best evaluation
        self._best_state: dict[str, torch.Tensor] | None = None  # the best weights, in memory when there is no out_dir
        self._bad_epochs = 0  # evaluations since the best one
        self._last_eval: tuple[int, dict[str, float]] | None = None  # (step, metrics) of the latest evaluation
        self._early_stop = False
        self.stop_reason = ""
        self.should_stop = False  # a callback may set this to end fit() after the current epoch
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
        if cfg.resume:
            self.load_checkpoint(cfg.resume)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "step": self.step,
                "history": self.history, "best": self.best, "best_epoch": self.best_epoch, "best_step": self.best_step,
                "bad_epochs": self._bad_epochs, "signature": model_signature(self.model),
                "config": _jsonable(asdict(self.config)), "torch_rng": torch.get_rng_state(),
                "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write the full training state atomically (tmp file + rename)."""
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a run; refuses a checkpoint of a different model, naming the mismatch."""
        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}; pass a run folder holding {CHECKPOINT} or the file")
        state = torch.load(path, map_location="cpu", weights_only=False)
        check_signature(state["signature"], self.model, str(path))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step, self.history = state["epoch"], state["step"], list(state["history"])
        self.best, self.best_epoch, self._bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        self.best_step = state.get("best_step")
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        log.info("resumed from %s at epoch %d (step %d)", path, self.epoch, self.step)

    # ------------------------------------------------------------------ loop
    def _epoch_batches(self):
        gen = getattr(self.loader, "generator", None)
        if isinstance(gen, torch.Generator):  # the data order depends only on (seed, epoch): resumable
            gen.manual_seed(self.config.seed * 100_003 + self.epoch)
        return iter(self.loader)

    def _loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.config.bf16):
            out = self.loss_fn(self.model, batch)
        loss, parts = (out if isinstance(out, tuple) else (out, {}))
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise TypeError(f"loss_fn must return a scalar tensor (or (loss, metrics)), got "
                            f"{type(loss).__name__}{'' if not isinstance(loss, torch.Tensor) else tuple(loss.shape)}")
        return loss.float(), dict(parts)

    def _diverged(self, what: str) -> None:
        ck = self.out / CHECKPOINT if self.out and (self.out / CHECKPOINT).exists() else None
        where = f"the last good checkpoint is {ck} (epoch {self.epoch})" if ck else "no checkpoint was written yet"
        self._write_curves()
        raise TrainingDiverged(f"training diverged at epoch {self.epoch + 1}, step {self.step}: {what}; {where}. "
                               "Lower the learning rate, add warmup or gradient clipping, or check the data")

    def train_epoch(self, bar=None) -> dict[str, float]:
        """One pass over the training data; returns the epoch's mean loss and metrics."""
        cfg, model = self.config, self.model
        model.train()
        sums: dict[str, float] = {}
        n = 0
        self.optimizer.zero_grad(set_to_none=True)
        micro = 0
        for i, batch in enumerate(self._epoch_batches()):
            if cfg.check_finite_inputs:
                _check_finite(batch, f"epoch {self.epoch + 1}, batch {i}")
            if self.step == 0 and i == 0 and hasattr(model, "check_input"):
                model.check_input(_first_tensor(batch))
            loss, parts = self._loss(batch)
            if not torch.isfinite(loss):
                self._diverged(f"loss is {float(loss.detach())}")
            (loss / cfg.grad_accum).backward()
            micro += 1
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
            if micro == cfg.grad_accum:
                self._optimizer_step()
                micro = 0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{sums['loss'] / n:.4g}")
                if cfg.log_every and self.step % cfg.log_every == 0:
                    rec = {"step": self.step, "epoch": self.epoch + 1, "loss": float(loss.detach()),
                           "lr": self.scheduler.get_last_lr()[0], **{k: float(v) for k, v in parts.items()}}
                    self.step_log.append(rec)
                    self._append_metrics(rec)
                if self._step_evaluation(i + 1):
                    break
        if micro:  # leftover micro-batches at the end of the epoch
            self._optimizer_step()
            if bar is not None:
                bar.update(1)
        if n == 0:
            raise ValueError("the training data produced no batches this epoch; is the dataset empty?")
        return {k: v / n for k, v in sums.items()}

    def _optimizer_step(self) -> None:
        cfg = self.config
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if cfg.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        else:
            norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params)) if params else torch.tensor(0.0)
        if not torch.isfinite(norm):
            self._diverged(f"gradient norm is {float(norm)}")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def evaluate(self) -> dict[str, float]:
        """eval_fn(model, eval_data) in eval mode without gradients; {} when there is no eval_fn."""
        if self.eval_fn is None:
            return {}
        self.model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.config.bf16):
            out = self.eval_fn(self.model, self.eval_data)
        return {k: float(v) for k, v in out.items()}

    def _step_evaluation(self, batches_done: int) -> bool:
        """Every eval_steps optimizer steps: evaluate, log a history record, track the best; True = stop early."""
        cfg = self.config
        if self.eval_fn is None or not cfg.eval_steps or self.step % cfg.eval_steps:
            return False
        ev = self._evaluate_now()
        self.model.train()
        try:
            frac = batches_done / len(self.loader)
        except TypeError:
            frac = 0.0
        rec = {"epoch": round(self.epoch + frac, 4), "step": self.step, **{f"eval_{k}": v for k, v in ev.items()},
               "lr": self.scheduler.get_last_lr()[0]}
        self.history.append(rec)
        self._append_metrics(rec)
        log.info("step %d: %s", self.step, {k: round(v, 5) for k, v in ev.items()})
        self._early_stop = self._track_best(rec)
        return self._early_stop

    def _evaluate_now(self) -> dict[str, float]:
        """evaluate(), refusing non-finite metrics; remembered with its step so an epoch end at the same step reuses it."""
        ev = self.evaluate()
        if not all(math.isfinite(v) for v in ev.values()):
            self._diverged(f"evaluation metrics are not finite: {ev}")
        self._last_eval = (self.step, ev)
        return ev

    def fit(self) -> list[dict[str, Any]]:
        """Train for config.epochs (or until early stopping); returns one record per epoch and one per evaluation
        every eval_steps steps (an evaluation on an epoch's last step is in that epoch's record)."""
        cfg = self.config
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", leave=False)
        try:
            while self.epoch < cfg.epochs:
                t0 = time.perf_counter()
                train = self.train_epoch(bar)
                fresh = self._last_eval is None or self._last_eval[0] != self.step
                ev = self._evaluate_now() if fresh else self._last_eval[1]
                self.epoch += 1
                rec = {"epoch": self.epoch, "step": self.step, **{f"train_{k}": v for k, v in train.items()},
                       **{f"eval_{k}": v for k, v in ev.items()}, "lr": self.scheduler.get_last_lr()[0],
                       "seconds": round(time.perf_counter() - t0, 3)}
                if not fresh and self.history and self.history[-1]["step"] == self.step:
                    # this step's evaluation record: the epoch record holds its metrics (and, when early stopping
                    # cut the epoch short, its fractional epoch)
                    popped = self.history.pop()
                    rec["epoch"] = popped["epoch"] if self._early_stop else self.epoch
                self.history.append(rec)
                self._append_metrics(rec)
                stop = self._track_best(rec) if fresh or self.eval_fn is None else self._early_stop
                if self.out:
                    self.save_checkpoint(self.out / CHECKPOINT)
                for cb in self.callbacks:
                    cb(self, rec)
                log.info("epoch %d: %s", self.epoch, {k: round(v, 5) for k, v in rec.items() if isinstance(v, float)})
                if self.should_stop:
                    self.stop_reason = self.stop_reason or f"stopped by a callback after epoch {self.epoch}"
                    break
                if stop:
                    self.stop_reason = (f"early stopping: {cfg.monitor} did not improve for "
                                        f"{cfg.early_stopping_patience} evaluations (best at epoch "
                                        f"{self.best_epoch}, step {self.best_step})")
                    log.info(self.stop_reason)
                    break
        finally:
            if bar is not None:
                bar.close()
        self._restore_best()
        self._write_curves()
        return self.history

    def _monitored(self, rec: dict[str, Any]) -> float | None:
        m = self.config.monitor
        for key in (f"eval_{m}", f"train_{m}", m):
            if key in rec:
                return float(rec[key])
        return None

    def _track_best(self, rec: dict[str, Any]) -> bool:
        value = self._monitored(rec)
        if value is None:
            return False
        if _better(value, self.best, self.config.monitor_mode):
            self.best, self.best_epoch, self.best_step, self._bad_epochs = value, rec["epoch"], self.step, 0
            if self.out:
                torch.save(self.model.state_dict(), self.out / BEST)
            elif self.config.restore_best and self.eval_fn is not None:  # no run folder: keep them in memory
                self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return False
        self._bad_epochs += 1
        p = self.config.early_stopping_patience
        return p is not None and self._bad_epochs >= p

    def _restore_best(self) -> None:
        """With restore_best, load the weights of the best evaluation unless they are the current ones."""
        if self.best_step is None or not self.config.restore_best or self.best_step == self.step:
            return
        if self.out and (self.out / BEST).exists():
            state = torch.load(self.out / BEST, map_location="cpu", weights_only=True)
        elif self._best_state is not None:
            state = self._best_state
        else:
            return
        self.model.load_state_dict(state)
        log.info("restored the best weights: %s = %.5g at epoch %s, step %d", self.config.monitor, self.best,
                 self.best_epoch, self.best_step)

    # ------------------------------------------------------------------ outputs
    def _append_metrics(self, rec: dict[str, Any]) -> None:
        if self.out:
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(_jsonable(rec)) + "\n")

    def _write_curves(self) -> None:
        if not self.out or not (self.history or self.step_log):
            return
        from encoderkit.train.curves import plot_curves

        plot_curves(self.history, self.step_log, self.out / "curves.png")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a (JSON) dict, ignoring unknown keys."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: (tuple(v) if k == "betas" else v) for k, v in d.items() if k in names})
