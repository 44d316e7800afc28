"""What a recipe writes beside the weights it saves: README.md (a model card: base model, training data, loss,
hyper-parameters, evaluation figures, how to load the folder), training_history.json and curves.png."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HYPER = ("epochs", "batch_size", "lr", "weight_decay", "warmup_steps", "schedule", "grad_clip", "grad_accum",
         "bf16", "seed", "eval_steps", "early_stopping_patience", "monitor", "restore_best")


@dataclass
class CardInfo:
    """The facts a model card states about one training run."""

    kind: str  # "bi-encoder" | "cross-encoder" | "ColBERT"
    base_model: str
    data: dict[str, int]  # training file -> examples used
    loss: str
    loss_params: dict[str, Any] = field(default_factory=dict)
    config: Any = None  # the TrainConfig
    evaluator: str = ""  # what the dev evaluation was, e.g. "IR: 50 queries, 5183 documents (scifact, test)"
    best: dict[str, Any] = field(default_factory=dict)  # monitor, value, epoch, step (when one was tracked)
    seconds: float | None = None


def eval_records(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history records that hold evaluation metrics, in order."""
    return [r for r in history if any(k.startswith("eval_") for k in r)]


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _eval_table(history: list[dict[str, Any]]) -> list[str]:
    recs = eval_records(history)
    if not recs:
        return ["No evaluation ran during training (pass a dev set: `--dev`)."]
    keys = sorted({k for r in recs for k in r if k.startswith("eval_")})
    lines = ["| epoch | step | " + " | ".join(k[5:] for k in keys) + " |", "|---|---|" + "---|" * len(keys)]
    lines += ["| " + " | ".join([f"{r['epoch']:g}", str(r["step"])] + [_fmt(r.get(k, "")) for k in keys]) + " |"
              for r in recs]
    return lines


def _usage(kind: str, folder: str) -> list[str]:
    if kind == "cross-encoder":
        return ["```python", "from encoderkit.tasks.rerank import CrossEncoder", f"ce = CrossEncoder.load({folder!r})",
                "```", "", "```python", "from sentence_transformers import CrossEncoder",
                f"ce = CrossEncoder({folder!r})", "scores = ce.predict([(\"a query\", \"a passage\")])", "```"]
    if kind == "ColBERT":
        return ["```python", "import encoderkit", f"enc = encoderkit.load({folder!r})",
                "query = enc.encode_query(\"a question\", output=\"multivector\")  # (32, d) token vectors",
                "docs = enc.encode_document([\"a passage\"], output=\"multivector\")", "```", "", "```python",
                "from pylate import models", f"model = models.ColBERT({folder!r})", "```"]
    return ["```python", "import encoderkit", f"enc = encoderkit.load({folder!r})",
            "vectors = enc.encode([\"a sentence\"])", "```", "", "```python",
            "from sentence_transformers import SentenceTransformer", f"model = SentenceTransformer({folder!r})",
            "vectors = model.encode([\"a sentence\"])", "```"]


def card_text(info: CardInfo, history: list[dict[str, Any]], folder: str, curves: str | None) -> str:
    """The model card's Markdown."""
    import encoderkit

    cfg = info.config
    hyper = {k: getattr(cfg, k) for k in HYPER if cfg is not None and hasattr(cfg, k)}
    last_train = next((r for r in reversed(history) if "train_loss" in r), {})
    lines = [f"# {Path(folder).name}", "",
             f"A {info.kind} fine-tuned from `{info.base_model}` with encoderkit {encoderkit.__version__}.", "",
             "## Training data", ""]
    lines += [f"- `{name}`: {n:,} examples" for name, n in info.data.items()]
    lines += ["", "## Loss", "", f"`{info.loss}`" + (
        " with " + ", ".join(f"{k}={v}" for k, v in info.loss_params.items() if v is not None)
        if any(v is not None for v in info.loss_params.values()) else ""), "",
        "## Hyper-parameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in hyper.items()]
    lines += ["", "## Evaluation", ""]
    if info.evaluator:
        lines += [f"Dev set: {info.evaluator}.", ""]
    lines += _eval_table(history)
    if info.best.get("value") is not None:
        lines += ["", f"Best {info.best['monitor']}: {info.best['value']:.4f} at epoch {info.best['epoch']:g}, "
                      f"step {info.best['step']}" + (" (these weights are the ones saved)."
                                                     if info.best.get("restored") else ".")]
    if "train_loss" in last_train:
        lines += ["", f"Final training loss: {last_train['train_loss']:.4f} (epoch {last_train['epoch']})."]
    if info.seconds is not None:
        lines += ["", f"Training time: {info.seconds:.0f} s."]
    lines += ["", f"![training curves]({curves})" if curves else
              "No curves.png: matplotlib was not installed when this model was saved (pip install matplotlib)."]
    lines += ["", "## Usage", ""] + _usage(info.kind, folder) + [""]
    return "\n".join(lines)


def write_training_report(folder: str | Path, info: CardInfo, history: list[dict[str, Any]],
                          steps: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """README.md, training_history.json and (when matplotlib is installed) curves.png (history plus the logged
    step losses) in folder; returns their paths by name."""
    from encoderkit.train.trainer import _jsonable

    folder = Path(folder)
    out = {"history": str(folder / "training_history.json")}
    (folder / "training_history.json").write_text(json.dumps(_jsonable(history), indent=1), encoding="utf-8")
    curves = None
    try:
        from encoderkit.train.curves import plot_curves

        plot_curves(history, steps or [], folder / "curves.png")
        curves = "curves.png"
        out["curves"] = str(folder / curves)
    except ImportError:
        log.warning("matplotlib is not installed: no curves.png (pip install matplotlib)")
    (folder / "README.md").write_text(card_text(info, history, str(folder), curves), encoding="utf-8")
    out["card"] = str(folder / "README.md")
    return out
