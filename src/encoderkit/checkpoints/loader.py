"""Load a Hugging Face / sentence-transformers folder into our modules, and write one back."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from encoderkit.checkpoints.registry import Family, family_for
from encoderkit.checkpoints.sentence_transformers import PipelineSpec, read_pipeline
from encoderkit.checkpoints.tokenizer import TOKENIZER_FILES, load_tokenizer, pad_token_id
from encoderkit.checkpoints.weights import (CheckpointError, detect_prefix, export_mapped, find_weights, load_mapped,
                                            read_state_dict, save_safetensors)


@dataclass
class LoadedCheckpoint:
    model: nn.Module  # the backbone, weights loaded, eval mode
    config: Any  # our config dataclass
    hf_config: dict  # the config.json as read (written back on save)
    family: Family
    pipeline: PipelineSpec
    tokenizer: Any  # tokenizers.Tokenizer or None
    pad_id: int
    folder: Path
    extra_tensors: dict  # backbone-file tensors the model does not use (e.g. BERT's pooler), written back on save


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"no config.json in {folder}: not a Hugging Face model folder")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"cannot parse {path}: {exc}") from exc


@dataclass
class Backbone:
    model: nn.Module  # the backbone, weights loaded, eval mode
    config: Any  # our config dataclass
    hf_config: dict  # the config.json as read
    family: Family
    tokenizer: Any  # tokenizers.Tokenizer or None
    pad_id: int
    max_length: int  # tokens, special ones included
    prefix: str  # where the backbone sits in the file ("" AutoModel, "bert." BertForMaskedLM, ...)
    state: dict  # every tensor of the file (heads included), for heads read beside the backbone (SPLADE's MLM head)
    folder: Path


def load_backbone(folder: Path, max_length: int | None = None) -> Backbone:
    """Config, weights (through the family's key map) and tokenizer of one transformer folder."""
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
    if fam.rename_state is not None:  # older names of the same tensors (e.g. wav2vec2 weight_g / weight_v)
        rel = fam.rename_state(rel)
    load_mapped(model, rel, fam.key_map(cfg), wfile, fam.ignore_prefixes)
    n_pos = getattr(cfg, "max_position_embeddings", None)
    limit = max_length or n_pos or 512
    if getattr(cfg, "roberta_positions", False):  # positions start at pad + 1
        limit = min(limit, cfg.max_position_embeddings - cfg.pad_token_id - 1)
    limit = min(limit, n_pos or limit)
    tok = load_tokenizer(folder, limit)
    pad = pad_token_id(folder, tok, getattr(cfg, "pad_token_id", 0)) if tok is not None else getattr(cfg, "pad_token_id", 0)
    return Backbone(model.eval(), cfg, hf, fam, tok, pad, limit, prefix, state, folder)


def load_folder(folder: Path, max_length: int | None = None) -> LoadedCheckpoint:
    """Read config, weights (through the family's key map) and tokenizer of a local model folder."""
    pipeline = read_pipeline(Path(folder))
    bb = load_backbone(pipeline.transformer_dir, max_length or pipeline.max_seq_length)
    pipeline.max_seq_length = bb.max_length
    extra: dict = {}
    if not bb.prefix:  # keep what sits beside the encoder in an AutoModel-style file, e.g. the pooler
        state = bb.family.rename_state(bb.state) if bb.family.rename_state is not None else bb.state
        used = {n for src in bb.family.key_map(bb.config).values() for n in ((src,) if isinstance(src, str) else src)}
        extra = {k: v for k, v in state.items() if k not in used and not k.endswith("position_ids")}
    return LoadedCheckpoint(bb.model, bb.config, bb.hf_config, bb.family, pipeline, bb.tokenizer, bb.pad_id,
                            Path(folder), extra)


def save_transformer(folder: Path, model: nn.Module, family: Family, config: Any, hf_config: dict | None,
                     tokenizer: Any, source: Path | None, extra_tensors: dict | None = None) -> None:
    """Write config.json, model.safetensors (checkpoint names) and tokenizer files into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    hf = dict(hf_config) if hf_config else family.to_hf_config(config)
    (folder / "config.json").write_text(json.dumps(hf, indent=2))
    save_safetensors({**(extra_tensors or {}), **export_mapped(model, family.key_map(config))}, folder / "model.safetensors")
    copied = False
    if source is not None and source.resolve() != folder.resolve():
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, folder / name)
                copied = True
    if not copied and tokenizer is not None and not (folder / "tokenizer.json").is_file():
        tokenizer.save(str(folder / "tokenizer.json"))
