"""sentence-transformers folders: modules.json lists the pipeline (Transformer -> Pooling -> Dense ->
Normalize); each module has its own small config. Read them into a PipelineSpec, and write one back."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from encoderkit.checkpoints.weights import CheckpointError, read_state_dict, save_safetensors

_POOL_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
              "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len", "pooling_mode_weightedmean_tokens": "weighted_mean",
              "pooling_mode_lasttoken": "last"}
_ACTS = {"torch.nn.modules.linear.Identity": "identity", "torch.nn.modules.activation.Tanh": "tanh",
         "torch.nn.modules.activation.ReLU": "relu", "torch.nn.modules.activation.GELU": "gelu"}


@dataclass
class DenseSpec:
    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor | None
    activation: str = "identity"  # identity | tanh | relu | gelu


@dataclass
class PipelineSpec:
    transformer_dir: Path  # folder with config.json + weights + tokenizer
    pooling: str | None = None  # None: not a sentence-transformers folder (caller picks a default)
    dense: list[DenseSpec] = field(default_factory=list)
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn: str | None = None


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def read_pipeline(folder: Path) -> PipelineSpec:
    """Read a sentence-transformers folder, or treat a plain Hugging Face folder as a bare transformer."""
    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        return PipelineSpec(transformer_dir=folder)
    spec = PipelineSpec(transformer_dir=folder)
    for mod in _json(folder / "modules.json"):
        kind = mod.get("type", "").rsplit(".", 1)[-1]
        path = folder / mod.get("path", "")
        if kind == "Transformer":
            spec.transformer_dir = path
            cfg_file = next((path / n for n in ("sentence_bert_config.json", "sentence_xlnet_config.json")
                             if (path / n).is_file()), None)
            if cfg_file:
                c = _json(cfg_file)
                spec.max_seq_length = c.get("max_seq_length")
                spec.do_lower_case = bool(c.get("do_lower_case", False))
        elif kind == "Pooling":
            c = _json(path / "config.json")
            modes = [m for k, m in _POOL_KEYS.items() if c.get(k)]
            if len(modes) != 1:
                raise CheckpointError(f"{path / 'config.json'}: exactly one pooling mode must be on, found {modes or 'none'}")
            spec.pooling = modes[0]
        elif kind == "Dense":
            c = _json(path / "config.json")
            wfile = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
            if wfile is None:
                raise CheckpointError(f"Dense module at {path} has no model.safetensors or pytorch_model.bin")
            st = read_state_dict(wfile)
            act = _ACTS.get(c.get("activation_function", "torch.nn.modules.linear.Identity"))
            if act is None:
                raise CheckpointError(f"{path / 'config.json'}: unsupported Dense activation {c.get('activation_function')!r}")
            spec.dense.append(DenseSpec(st["linear.weight"], st.get("linear.bias"), act))
        elif kind == "Normalize":
            spec.normalize = True
        else:
            raise CheckpointError(f"{folder / 'modules.json'}: unsupported sentence-transformers module {mod.get('type')!r}")
    st_cfg = folder / "config_sentence_transformers.json"
    if st_cfg.is_file():
        c = _json(st_cfg)
        spec.prompts = dict(c.get("prompts") or {})
        spec.default_prompt_name = c.get("default_prompt_name")
        spec.similarity_fn = c.get("similarity_fn_name")
    return spec


def write_pipeline(folder: Path, spec: PipelineSpec, hidden_size: int) -> None:
    """Write modules.json and each module's config so `SentenceTransformer(folder)` rebuilds the pipeline.
    The transformer itself (config.json, weights, tokenizer) sits at the folder's root."""
    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    (folder / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": spec.max_seq_length, "do_lower_case": spec.do_lower_case}, indent=2))
    pool_dir = folder / "1_Pooling"
    pool_dir.mkdir(exist_ok=True)
    dim = hidden_size  # what the Pooling module receives: the transformer's width
    pool_cfg = {k: spec.pooling == m for k, m in _POOL_KEYS.items()}
    pool_cfg["include_prompt"] = True
    (pool_dir / "config.json").write_text(json.dumps({"word_embedding_dimension": dim, **pool_cfg}, indent=2))
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    inv_acts = {v: k for k, v in _ACTS.items()}
    for d in spec.dense:
        idx = len(modules)
        ddir = folder / f"{idx}_Dense"
        ddir.mkdir(exist_ok=True)
        (ddir / "config.json").write_text(json.dumps({
            "in_features": d.weight.shape[1], "out_features": d.weight.shape[0], "bias": d.bias is not None,
            "activation_function": inv_acts[d.activation]}, indent=2))
        tensors = {"linear.weight": d.weight}
        if d.bias is not None:
            tensors["linear.bias"] = d.bias
        save_safetensors(tensors, ddir / "model.safetensors")
        modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Dense", "type": "sentence_transformers.models.Dense"})
    if spec.normalize:
        idx = len(modules)
        (folder / f"{idx}_Normalize").mkdir(exist_ok=True)
        modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    st_cfg = {"prompts": spec.prompts, "default_prompt_name": spec.default_prompt_name,
              "similarity_fn_name": spec.similarity_fn or "cosine"}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_cfg, indent=2))
