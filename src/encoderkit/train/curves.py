"""curves.png: the training loss per logged step and the metrics of each evaluation of a run (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curves(history: list[dict[str, Any]], step_log: list[dict[str, Any]], path: str | Path) -> Path:
    """Training loss per logged step and per-epoch train/eval metrics, one PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    keys = sorted({k for r in history for k in r if k.startswith(("train_", "eval_"))})
    if any(k.startswith("eval_") for k in keys):  # the loss has its own panel: keep the metrics' scale readable
        keys = [k for k in keys if k != "train_loss"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if step_log:
        axes[0].plot([r["step"] for r in step_log], [r["loss"] for r in step_log], lw=1)
    elif history:
        epochs = [r for r in history if "train_loss" in r]
        axes[0].plot([r["step"] for r in epochs], [r["train_loss"] for r in epochs], marker="o")
    axes[0].set(xlabel="optimizer step", ylabel="loss", title="training loss")
    by_step = any(not float(r["epoch"]).is_integer() for r in history)  # evaluations every N steps as well
    x = "step" if by_step else "epoch"
    for k in keys:
        pts = [(r[x], r[k]) for r in history if k in r]
        axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=k)
    axes[1].set(xlabel="optimizer step" if by_step else "epoch", title="evaluations" if by_step else "per-epoch metrics")
    if keys:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
