"""Named training recipes for `encoderkit train NAME`. Every module in this package calls
`register_recipe(name, add_arguments, run)` at import; `recipes()` imports them all (no central list).

    add_arguments(parser)  adds the recipe's own flags (the common ones come from add_common_arguments)
    run(args) -> dict      trains, writes the run folder args.out, returns a JSON-able summary

Common flags default to None so a recipe keeps its own defaults: `train_config_from_args(args, epochs=20)`."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

from encoderkit.train.trainer import TrainConfig


@dataclass(frozen=True)
class Recipe:
    """One trainable recipe: its CLI flags and its run function."""

    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict[str, Any]]
    help: str = ""


_REGISTRY: dict[str, Recipe] = {}
_DISCOVERED = False


def register_recipe(name: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                    run: Callable[[argparse.Namespace], dict[str, Any]], help: str = "") -> Recipe:
    """Add a recipe under `name` (re-registering the same name from a reload replaces it)."""
    recipe = Recipe(name, add_arguments, run, help)
    _REGISTRY[name] = recipe
    return recipe


def recipes() -> dict[str, Recipe]:
    """All recipes, importing every module of this package once."""
    global _DISCOVERED
    if not _DISCOVERED:
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _DISCOVERED = True
    return dict(sorted(_REGISTRY.items()))


def get_recipe(name: str) -> Recipe:
    """The recipe called name, or a KeyError listing the known ones."""
    all_ = recipes()
    if name not in all_:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(all_)}")
    return all_[name]


def add_output_argument(parser: Any, help: str) -> None:
    """-o/--output DIR, the folder a recipe writes (args.out), as every other command spells its output; --out, the
    spelling before issue 17, still parses but is not shown. `encoderkit train` refuses a run without either."""
    parser.add_argument("-o", "--output", dest="out", metavar="DIR", help=help + " (required)")
    parser.add_argument("--out", dest="out", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every recipe shares (data, run folder, optimization)."""
    g = parser.add_argument_group("common training options")
    g.add_argument("--data", help="training data: a folder (e.g. MNIST's IDX files), .npy, .npz (X, y) or .pt")
    add_output_argument(g, "run folder to write (config.json, weights, metrics, curves)")
    g.add_argument("--epochs", type=int, help="passes over the data")
    g.add_argument("--batch-size", type=int, help="examples per step")
    g.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument("--warmup-steps", type=int, help="linear warmup steps")
    g.add_argument("--schedule", choices=["cosine", "linear", "constant"], help="decay after warmup")
    g.add_argument("--grad-clip", type=float, help="max gradient norm (0 = off)")
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    g.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--patience", type=int, help="early stopping: evaluations without improvement (needs held-out data)")
    g.add_argument("--freeze-layers", type=int, help="freeze the first N layers")
    g.add_argument("--resume", help="continue from this run folder or checkpoint")
    g.add_argument("--limit", type=int, help="use only the first N training examples (quick runs)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


_ARG_TO_FIELD = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
                 "warmup_steps": "warmup_steps", "schedule": "schedule", "grad_clip": "grad_clip",
                 "grad_accum": "grad_accum", "bf16": "bf16", "seed": "seed", "patience": "early_stopping_patience",
                 "freeze_layers": "freeze_layers", "resume": "resume"}


def train_config_from_args(args: argparse.Namespace, **defaults: Any) -> TrainConfig:
    """TrainConfig from the common flags; flags left unset fall back to `defaults`, then to TrainConfig's."""
    values = dict(defaults)
    for arg, fld in _ARG_TO_FIELD.items():
        v = getattr(args, arg, None)
        if v is not None:
            values[fld] = v
    if values.get("grad_clip") == 0:
        values["grad_clip"] = None
    values["out_dir"] = getattr(args, "out", None)
    if getattr(args, "no_progress", False):
        values["progress"] = False
    return TrainConfig(**values)


__all__ = ["Recipe", "register_recipe", "recipes", "get_recipe", "add_common_arguments", "train_config_from_args"]
