"""The family registry: a checkpoint's `model_type` -> how to parse its config, build our model, and map
its tensor names to ours. One `create_model` door for every family."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from encoderkit.checkpoints.weights import CheckpointError, KeyMap


@dataclass(frozen=True)
class Family:
    name: str  # family label shown by `encoderkit info`
    parse_config: Callable[[dict], Any]  # Hugging Face config.json dict -> our config dataclass
    build: Callable[[Any], nn.Module]  # our config -> backbone module
    key_map: Callable[[Any], KeyMap]  # our config -> {our name: checkpoint name (relative to the prefix)}
    anchor: str  # a checkpoint tensor every file of the family has, to find the prefix
    to_hf_config: Callable[[Any], dict]  # our config -> config.json dict (for writing back)
    modality: str = "text"  # what encode() takes: text | image | audio
    pooling: str = "mean"  # default pooling of hidden states when the folder does not say (ViT: cls)
    ignore_prefixes: tuple[str, ...] = ()  # checkpoint tensors that are heads, not backbone (not an error)
    # Non-text families: (model folder, our config, modality) -> a preprocessing object for Encoder(processor=...)
    make_processor: Callable[[Any, Any, str], Any] | None = None
    # Dual encoders (CLIP, SigLIP): the modalities they embed, and (model, modality) -> that tower as a backbone
    towers: tuple[str, ...] = ()
    tower: Callable[[nn.Module, str], nn.Module] | None = None
    # Old tensor names -> current ones (e.g. wav2vec2's weight_g / weight_v); applied before the key map
    rename_state: Callable[[dict], dict] | None = None


FAMILIES: dict[str, Family] = {}


def register(model_types: tuple[str, ...] | str, family: Family) -> None:
    """Make a family loadable under one or more Hugging Face model_type names."""
    for t in (model_types,) if isinstance(model_types, str) else model_types:
        FAMILIES[t] = family


def _ensure_registered() -> None:
    """Import every checkpoints/*_family.py module; each registers its families on import."""
    import importlib
    import pkgutil

    import encoderkit.checkpoints as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.endswith("_family"):
            importlib.import_module(f"encoderkit.checkpoints.{mod.name}")


def family_for(model_type: str | None, where: str = "config.json", config: dict | None = None) -> Family:
    """The family of a model_type, or an error listing the supported ones (saying so when the checkpoint's
    architecture is custom code it ships itself: config.json with an auto_map)."""
    _ensure_registered()
    if model_type not in FAMILIES:
        families = ", ".join(sorted(FAMILIES))
        auto_map = (config or {}).get("auto_map")
        if auto_map:
            code = sorted({str(v[0] if isinstance(v, (list, tuple)) else v).split(".", 1)[0] for v in auto_map.values()})
            raise CheckpointError(
                f"{where}: model_type {model_type!r} is custom code shipped with the checkpoint ({', '.join(code)}.py "
                f"via auto_map), not an architecture in transformers, so encoderkit cannot build it; families that "
                f"load: {families}")
        raise CheckpointError(f"{where}: unsupported model_type {model_type!r}; supported families: {families}")
    return FAMILIES[model_type]


def supported_model_types() -> list[str]:
    _ensure_registered()
    return sorted(FAMILIES)


def create_model(model_type: str, **config: Any) -> nn.Module:
    """Build a randomly initialised backbone of a family from Hugging Face style config fields."""
    fam = family_for(model_type, where="create_model")
    return fam.build(fam.parse_config({"model_type": model_type, **config}))
