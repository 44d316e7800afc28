"""Freezing parameters before training: the first N blocks of a model's `layers` (and its embeddings), or every
parameter under given name prefixes."""
from __future__ import annotations

from typing import Iterable

from torch import nn


def _find_layers(model: nn.Module) -> nn.ModuleList | None:
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and name.split(".")[-1] == "layers":
            return mod
    return None


def freeze_by_prefix(model: nn.Module, prefixes: Iterable[str]) -> list[str]:
    """Set requires_grad=False on every parameter whose name starts with one of prefixes; returns the names."""
    prefixes = tuple(prefixes)
    frozen = []
    for name, p in model.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def freeze_layers(model: nn.Module, n: int, embeddings: bool = True) -> list[str]:
    """Freeze the first n blocks of the model's `layers` ModuleList (and, when embeddings, every parameter
    outside the layers whose name mentions 'embed'); returns the frozen parameter names."""
    if n <= 0:
        return []
    layers = _find_layers(model)
    if layers is None:
        raise ValueError(f"freeze_layers={n}: {type(model).__name__} has no `layers` ModuleList; "
                         "use freeze_by_prefix(model, [...]) with parameter names instead")
    if n > len(layers):
        raise ValueError(f"freeze_layers={n} but the model has only {len(layers)} layers")
    ids = {id(p) for block in list(layers)[:n] for p in block.parameters()}
    frozen = []
    for name, p in model.named_parameters():
        if id(p) in ids or (embeddings and "embed" in name.split(".")[0]):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen
