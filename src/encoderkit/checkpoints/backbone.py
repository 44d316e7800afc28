"""Load one transformer folder (config.json + weights + tokenizer) into our backbone, keeping the whole state dict
so a head beside the backbone (an MLM head for SPLADE) can be read from the same file."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoderkit.checkpoints.loader import read_config
from encoderkit.checkpoints.registry import Family, family_for
from encoderkit.checkpoints.tokenizer import load_tokenizer, pad_token_id
from encoderkit.checkpoints.weights import CheckpointError, detect_prefix, find_weights, load_mapped, read_state_dict


@dataclass
class Backbone:
    model: nn.Module
    config: Any
    hf_config: dict
    family: Family
    tokenizer: Any
    pad_id: int
    max_length: int
    prefix: str  # where the backbone sits in the file ("" AutoModel, "bert." BertForMaskedLM, ...)
    state: dict[str, torch.Tensor]  # every tensor of the file (heads included)
    folder: Path


def tokenizer_config(folder: Path) -> dict:
    p = Path(folder) / "tokenizer_config.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except ValueError as exc:
        raise CheckpointError(f"cannot parse {p}: {exc}") from exc


def special_token(folder: Path, role: str) -> str | None:
    """A tokenizer_config role's token text (mask_token, eos_token, ...), None when absent."""
    t = tokenizer_config(folder).get(role)
    return t.get("content") if isinstance(t, dict) else t


def load_backbone(folder: Path, max_length: int | None = None) -> Backbone:
    folder = Path(folder)
    hf = read_config(folder)
    fam = family_for(hf.get("model_type"), where=str(folder / "config.json"), config=hf)
    cfg = fam.parse_config(hf)
    model = fam.build(cfg)
    wfile = find_weights(folder)
    if wfile is None:
        raise CheckpointError(f"no weights in {folder}: expected one of model.safetensors or pytorch_model.bin")
    state = read_state_dict(wfile)
    prefix = detect_prefix(state, fam.anchor, wfile)
    rel = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if fam.rename_state is not None:
        rel = fam.rename_state(rel)
    load_mapped(model, rel, fam.key_map(cfg), wfile, fam.ignore_prefixes)
    limit = min(max_length or getattr(cfg, "max_position_embeddings", 512), getattr(cfg, "max_position_embeddings", 10 ** 9))
    if getattr(cfg, "roberta_positions", False):
        limit = min(limit, cfg.max_position_embeddings - cfg.pad_token_id - 1)
    tok = load_tokenizer(folder, limit)
    pad = pad_token_id(folder, tok, getattr(cfg, "pad_token_id", 0)) if tok is not None else getattr(cfg, "pad_token_id", 0)
    return Backbone(model.eval(), cfg, hf, fam, tok, pad, limit, prefix, state, folder)
