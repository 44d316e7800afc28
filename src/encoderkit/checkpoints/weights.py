"""Read and write weight files, and move tensors between a checkpoint's names and ours through an
explicit key map that must line up name for name and shape for shape."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Union

import torch

log = logging.getLogger(__name__)

# our parameter name -> checkpoint name, or a tuple of names concatenated along dim 0 (fused Q, K, V)
KeyMap = Mapping[str, Union[str, tuple]]


class Fused(tuple):
    """A key-map entry: checkpoint tensors concatenated along dim 0 into one of ours, with their row counts, so a
    save splits them back when they differ in size (grouped-query attention: q has more rows than k and v)."""

    def __new__(cls, names: tuple[str, ...], sizes: tuple[int, ...]):
        obj = super().__new__(cls, names)
        obj.sizes = tuple(sizes)
        return obj


def llama_style_layer_keys(ours: str, theirs: str, *, q_rows: int, kv_rows: int, d_ff: int, qkv_bias: bool = False,
                           o_bias: bool = False, mlp_bias: bool = False, qk_norm: bool = False) -> dict:
    """Key map of one Llama-style decoder layer (Llama, Mistral, Qwen2/3, Gemma): `self_attn.{q,k,v}_proj` fused
    into our `attn.qkv`, `o_proj` -> `attn.o`, optional per-head `q_norm` / `k_norm`, `input_layernorm` ->
    `attn_norm`, and `mlp.{gate,up}_proj` fused into our `ffn.wi`, `down_proj` -> `ffn.wo`. The norms after
    attention differ per family and are left to the caller."""
    a, f = f"{theirs}.self_attn", f"{theirs}.mlp"
    m: dict = {f"{ours}.attn_norm.weight": f"{theirs}.input_layernorm.weight"}
    for p in ("weight", "bias") if qkv_bias else ("weight",):
        m[f"{ours}.attn.qkv.{p}"] = Fused(tuple(f"{a}.{x}_proj.{p}" for x in "qkv"), (q_rows, kv_rows, kv_rows))
    for p in ("weight", "bias") if o_bias else ("weight",):
        m[f"{ours}.attn.o.{p}"] = f"{a}.o_proj.{p}"
    if qk_norm:
        m[f"{ours}.attn.q_norm.weight"], m[f"{ours}.attn.k_norm.weight"] = f"{a}.q_norm.weight", f"{a}.k_norm.weight"
    for p in ("weight", "bias") if mlp_bias else ("weight",):
        m[f"{ours}.ffn.wi.{p}"] = Fused((f"{f}.gate_proj.{p}", f"{f}.up_proj.{p}"), (d_ff, d_ff))
        m[f"{ours}.ffn.wo.{p}"] = f"{f}.down_proj.{p}"
    return m


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be loaded as asked; the message names the file and tensor."""


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def find_weights(folder: Path) -> Path | None:
    """The weights file of a folder, preferring safetensors; None when there is none."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _read_one(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        # Pickle files are only ever read with weights_only=True: plain tensors, no code execution.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or a pickle with code in it
        raise CheckpointError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"weights file {path} holds a {type(state).__name__}, not a dict of tensors")
    return state


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a weights file (sharded checkpoints through their index file), as float tensors on CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"cannot read shard index {path}: {exc}") from exc
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(_read_one(path.parent / shard))
    else:
        state = _read_one(path)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def detect_prefix(state: Mapping[str, torch.Tensor], anchor: str, path: Path | str = "checkpoint") -> str:
    """The prefix under which a backbone's weights sit (``""`` for AutoModel files, ``"bert."`` for task
    models): found from a key that must exist, e.g. "embeddings.word_embeddings.weight"."""
    hits = sorted((k[: -len(anchor)] for k in state if k.endswith(anchor)), key=len)
    if not hits:
        sample = ", ".join(list(state)[:5])
        raise CheckpointError(f"{path}: no tensor named '*{anchor}' — not a checkpoint of this family (first keys: {sample})")
    return hits[0]


def load_mapped(model: torch.nn.Module, state: Mapping[str, torch.Tensor], key_map: KeyMap, path: Path | str,
                ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Copy checkpoint tensors into `model` through `key_map`. Every parameter of the model must be mapped,
    every mapped tensor must exist with the right shape; anything else is an error naming it."""
    ours = dict(model.state_dict())
    unmapped = sorted(set(ours) - set(key_map))
    if unmapped:
        raise CheckpointError(f"internal: key map leaves model parameters unmapped: {unmapped[:5]}")
    new_state, used = {}, set()
    for name, src in key_map.items():
        srcs = (src,) if isinstance(src, str) else tuple(src)
        missing = [s for s in srcs if s not in state]
        if missing:
            raise CheckpointError(f"{path}: tensor '{missing[0]}' is missing (needed for {name})")
        tensor = torch.cat([state[s] for s in srcs], dim=0) if len(srcs) > 1 else state[srcs[0]]
        if tuple(tensor.shape) != tuple(ours[name].shape):
            raise CheckpointError(
                f"{path}: tensor '{' + '.join(srcs)}' has shape {tuple(tensor.shape)}, "
                f"the config expects {tuple(ours[name].shape)} (for {name})")
        new_state[name] = tensor
        used.update(srcs)
    model.load_state_dict(new_state, strict=True)
    left = [k for k in state if k not in used and not k.endswith("position_ids") and not k.startswith(ignore_prefixes)]
    if left:
        log.info("%s: %d tensors not used by this model (e.g. %s)", path, len(left), ", ".join(left[:3]))


def export_mapped(model: torch.nn.Module, key_map: KeyMap) -> dict[str, torch.Tensor]:
    """The inverse of load_mapped: the model's tensors under checkpoint names (fused tensors split back)."""
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, dst in key_map.items():
        t = ours[name].detach().to("cpu", torch.float32) if ours[name].is_floating_point() else ours[name]
        if isinstance(dst, str):
            out[dst] = t.contiguous()
        else:
            pieces = torch.split(t, dst.sizes) if isinstance(dst, Fused) else torch.chunk(t, len(dst), dim=0)
            for part, piece in zip(dst, pieces):
                out[part] = piece.contiguous()
    return out


def save_safetensors(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write tensors to a .safetensors file (atomically: a temp file renamed into place)."""
    from safetensors.torch import save_file

    tmp = Path(str(path) + ".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
