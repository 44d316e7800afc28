"""curves.png: the training loss per logged step and the per-epoch metrics of a run (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curves(history: list[dict[str, Any]], step_log: list[dict[str, Any]], path: str | Path) -> Path:
    """Training loss per logged step and per-epoch train/eval metrics, one PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    keys = sorted({k for r in history for k in r if k.startswith(("train_", "eval_"))})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if step_log:
        axes[0].plot([r["step"] for r in step_log], [r["loss"] for r in step_log], lw=1)
    elif history:
        axes[0].plot([r["step"] for r in history], [r.get("train_loss", float("nan")) for r in history], marker="o")
    axes[0].set(xlabel="optimizer step", ylabel="loss", title="training loss")
    for k in keys:
        axes[1].plot([r["epoch"] for r in history], [r.get(k, float("nan")) for r in history], marker="o", label=k)
    axes[1].set(xlabel="epoch", title="per-epoch metrics")
    if keys:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
