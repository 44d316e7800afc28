"""Evaluation during training for the retrieval and cross-encoder recipes: the --dev / --eval-steps / --monitor
flags, the TrainConfig fields they set, and the report (best metric, step losses) a run hands its model card."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from encoderkit.train.trainer import Trainer, TrainConfig


def add_eval_arguments(p: argparse.ArgumentParser, dev_help: str) -> None:
    """--dev, --dev-split, --dev-max, --eval-steps, --monitor, --keep-last."""
    g = p.add_argument_group("evaluation during training")
    g.add_argument("--dev", help=dev_help)
    g.add_argument("--dev-split", default="dev", help="qrels split of a BEIR --dev folder (default dev)")
    g.add_argument("--dev-max", type=int, help="evaluate on the first N dev queries / pairs only")
    g.add_argument("--eval-steps", type=int, help="evaluate every N optimizer steps too (default: each epoch end)")
    g.add_argument("--monitor", help="dev metric that picks the best weights and drives --patience "
                                     "(default: ndcg@10 for retrieval and reranking, spearman for STS)")
    g.add_argument("--keep-last", action="store_true",
                   help="save the last weights instead of restoring the best evaluation's")


def configure_evaluation(cfg: TrainConfig, evaluator: Any, args: argparse.Namespace | None = None) -> TrainConfig:
    """Point cfg at the evaluator: monitor its primary metric (or --monitor), maximized; restore the best
    weights unless --keep-last; --eval-steps. Without an evaluator, --eval-steps / --monitor are refused."""
    monitor = getattr(args, "monitor", None)
    eval_steps = getattr(args, "eval_steps", None)
    if evaluator is None:
        if eval_steps or monitor:
            raise ValueError("--eval-steps and --monitor need a dev set: pass --dev")
        return cfg
    if eval_steps is not None and eval_steps < 1:
        raise ValueError(f"--eval-steps must be >= 1, got {eval_steps}")
    cfg.monitor, cfg.monitor_mode = monitor or evaluator.primary, "max"
    check_monitor(cfg, evaluator)
    cfg.restore_best = not getattr(args, "keep_last", False)
    cfg.eval_steps = eval_steps if eval_steps is not None else cfg.eval_steps
    return cfg


def check_monitor(cfg: TrainConfig, evaluator: Any) -> None:
    """A ValueError, before any training, when the monitored metric is not one the evaluator gives."""
    if cfg.monitor not in evaluator.names():
        raise ValueError(f"--monitor {cfg.monitor!r} is not a metric of the dev evaluation; it gives "
                         f"{', '.join(evaluator.names())}")


def fit(trainable: Any, loader: Any, cfg: TrainConfig, evaluator: Any = None, target: Any = None,
        report: dict | None = None, optimizer: Any = None) -> list[dict[str, Any]]:
    """Trainer(trainable, its .loss, loader) with the evaluator (called on target) as eval_fn; fills report with
    the step losses and the best evaluation; returns the history. optimizer: the Trainer's AdamW over every
    parameter at cfg.lr unless given (e.g. parameter groups with their own rates)."""
    eval_fn: Callable | None = None
    if evaluator is not None:
        if cfg.monitor == "loss":  # called from Python without a monitor: the evaluator's primary metric
            cfg.monitor, cfg.monitor_mode = evaluator.primary, "max"
        check_monitor(cfg, evaluator)
        eval_fn = lambda _model, _data: {k: float(v) for k, v in evaluator(target).items()}  # noqa: E731
    total = len(loader) * cfg.epochs // cfg.grad_accum
    cfg.log_every = max(1, min(cfg.log_every, total // 50))  # ~50 step losses or more for curves.png
    trainer = Trainer(trainable, lambda m, b: m.loss(b), loader, config=cfg, eval_fn=eval_fn, optimizer=optimizer)
    history = trainer.fit()
    if report is not None:
        report["steps"] = trainer.step_log
        report["best"] = {"monitor": cfg.monitor, "value": trainer.best if evaluator is not None else None,
                          "epoch": trainer.best_epoch, "step": trainer.best_step,
                          "restored": bool(evaluator is not None and cfg.restore_best)}
        report["stop_reason"] = trainer.stop_reason
    return history
