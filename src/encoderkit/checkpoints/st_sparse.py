"""sentence-transformers SparseEncoder folders: Transformer(transformer_task="fill-mask") (or the older
MLMTransformer) -> SpladePooling, or a Router whose sides are such pipelines or an inference-free
SparseStaticEmbedding (a per-token weight table, e.g. IDF). Read into Encoders with a `sparse` spec, and written back
in the 6.x layout."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from encoderkit.checkpoints.loader import load_backbone
from encoderkit.checkpoints.mlm_heads import (backbone_prefix, build_mlm_head, export_head, mlm_architecture,
                                              mlm_head_key_map)
from encoderkit.checkpoints.sentence_transformers import _json, _max_length, write_transformer_config
from encoderkit.checkpoints.tokenizer import TOKENIZER_FILES, load_tokenizer
from encoderkit.checkpoints.weights import CheckpointError, load_mapped, read_state_dict, save_safetensors
from encoderkit.models.mlm_head import MaskedLM, StaticSparse
from encoderkit.sparse import SparseSpec

_T = "sentence_transformers.base.modules.transformer.Transformer"
_TYPES = {"Transformer": _T, "SpladePooling": "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling",
          "SparseStaticEmbedding": "sentence_transformers.sparse_encoder.modules.sparse_static_embedding.SparseStaticEmbedding",
          "Router": "sentence_transformers.base.modules.router.Router"}
_FILL_MASK = {"transformer_task": "fill-mask", "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
              "module_output_name": "token_embeddings"}


def _kind(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def _modules(folder: Path) -> list[tuple[str, Path]]:
    mods = _json(folder / "modules.json")
    return [(_kind(m.get("type", "?")), folder / m.get("path", "")) for m in sorted(mods, key=lambda m: m.get("idx", 0))]


def _router_routes(path: Path) -> tuple[dict[str, list[tuple[str, Path]]], dict]:
    cfg_file = path / "router_config.json" if (path / "router_config.json").is_file() else path / "config.json"
    c = _json(cfg_file)
    types = c.get("types") or {}
    return ({r: [(_kind(types.get(m, "?")), path / m) for m in ids] for r, ids in (c.get("structure") or {}).items()},
            c.get("parameters") or {})


def is_sparse_folder(folder: Path) -> bool:
    """A SparseEncoder folder: its config says so, or a module is one only sparse encoders have."""
    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        return False
    st = folder / "config_sentence_transformers.json"
    if st.is_file() and _json(st).get("model_type") == "SparseEncoder":
        return True
    mods = _modules(folder)
    kinds = {k for k, _ in mods}
    if mods and mods[0][0] in ("Router", "Asym"):
        kinds |= {k for r in _router_routes(mods[0][1])[0].values() for k, _ in r}
    if kinds & {"SpladePooling", "MLMTransformer", "SparseAutoEncoder"}:
        return True
    # a static side next to dense modules is a dense pipeline with a module that does not load: its loader says so
    return "SparseStaticEmbedding" in kinds and not kinds & {"Pooling", "Dense", "Normalize"}


def _build_route(mods: list[tuple[str, Path]], where: str, common: dict, max_length: int | None) -> Any:
    from encoderkit.encoder import Encoder

    kinds = [k for k, _ in mods]
    if kinds == ["SparseStaticEmbedding"]:
        path = mods[0][1]
        w = read_state_dict(path / "model.safetensors" if (path / "model.safetensors").is_file()
                            else path / "pytorch_model.bin").get("weight")
        if w is None or w.dim() != 1:
            raise CheckpointError(f"{path}: a SparseStaticEmbedding needs a 1-D 'weight' tensor (one weight per token)")
        limit = max_length or _max_length(path, {}) or 512
        tok = load_tokenizer(path, limit)
        if tok is None:
            raise CheckpointError(f"{path}: a SparseStaticEmbedding folder needs its tokenizer files")
        model = StaticSparse(w.shape[0])
        model.weight.data.copy_(w)
        enc = Encoder(model, tok, max_length=limit, config=SimpleNamespace(hidden_size=w.shape[0], vocab_size=w.shape[0],
                                                                          model_type="sparse_static"),
                      embedding_dim=w.shape[0], source=path, **common)
        enc.sparse = SparseSpec(kind="static")
        return enc
    if len(kinds) == 2 and kinds[0] in ("Transformer", "MLMTransformer") and kinds[1] == "SpladePooling":
        tdir, pdir = mods[0][1], mods[1][1]
        c = _json(tdir / "sentence_bert_config.json") if (tdir / "sentence_bert_config.json").is_file() else {}
        task = c.get("transformer_task", "fill-mask" if kinds[0] == "MLMTransformer" else "feature-extraction")
        if task != "fill-mask":
            raise CheckpointError(f"{where}: SpladePooling needs a Transformer with transformer_task='fill-mask', "
                                  f"this one is {task!r}")
        pc = _json(pdir / "config.json") if (pdir / "config.json").is_file() else {}
        bb = load_backbone(tdir, max_length or _max_length(tdir, c))
        mt = bb.hf_config.get("model_type")
        head = build_mlm_head(bb.hf_config, bb.config)
        load_mapped(head, bb.state, mlm_head_key_map(mt, bb.state, bb.hf_config), tdir)
        bb.state = {}  # the tensors live in the modules now
        enc = Encoder(MaskedLM(bb.model, head.eval()), bb.tokenizer, max_length=bb.max_length, pad_id=bb.pad_id,
                      do_lower_case=bool(c.get("do_lower_case", False)), family=bb.family, config=bb.config,
                      hf_config=bb.hf_config, source=tdir, embedding_dim=bb.config.vocab_size, **common)
        enc.sparse = SparseSpec("splade", pc.get("pooling_strategy", "max"), pc.get("activation_function", "relu"))
        return enc
    raise CheckpointError(f"{where}: the sparse pipeline {' -> '.join(kinds)} does not load; encoderkit loads "
                          "Transformer(fill-mask) -> SpladePooling and SparseStaticEmbedding (SparseAutoEncoder / CSR "
                          "models do not load yet)")


def load_sparse_folder(folder: Path, name: str, max_length: int | None = None) -> Any:
    """An Encoder (with routes for a Router) from a SparseEncoder folder."""
    folder = Path(folder)
    st = _json(folder / "config_sentence_transformers.json") if (folder / "config_sentence_transformers.json").is_file() else {}
    common = {"prompts": {k: v or "" for k, v in (st.get("prompts") or {}).items()},
              "default_prompt_name": st.get("default_prompt_name"), "name": name,
              "similarity_fn": st.get("similarity_fn_name")}
    k = st.get("max_active_dims")
    mods = _modules(folder)
    if mods and mods[0][0] in ("Router", "Asym"):
        routes, params = _router_routes(mods[0][1])
        if len(mods) > 1:
            raise CheckpointError(f"{folder / 'modules.json'}: modules after a sparse Router do not load")
        encs = {r: _build_route(m, f"{folder} route {r!r}", common, max_length) for r, m in routes.items()}
        default = params.get("default_route") or next(iter(encs))
        enc = encs[default]
        enc.routes, enc.default_route = encs, default
        for e in encs.values():
            e.sparse.max_active_dims = k
        return enc
    enc = _build_route(mods, str(folder / "modules.json"), common, max_length)
    enc.sparse.max_active_dims = k
    return enc


# ---------------------------------------------------------------------------------------------- writing
def _write_tokenizer(enc: Any, folder: Path) -> None:
    src = Path(enc.source) if enc.source is not None else None
    copied = False
    if src is not None and src.resolve() != folder.resolve():
        import shutil

        for n in TOKENIZER_FILES:
            if (src / n).is_file():
                shutil.copyfile(src / n, folder / n)
                copied = True
    if not copied and not (folder / "tokenizer.json").is_file():
        enc.tokenizer.save(str(folder / "tokenizer.json"))


def _write_route(enc: Any, folder: Path, prefix: str) -> list[tuple[str, str]]:
    """Write one sparse pipeline's module folders inside `folder` ("" prefix: the transformer at the root)."""
    if enc.sparse.kind == "static":
        d = folder / f"{prefix}0_SparseStaticEmbedding"
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"frozen": False}, indent=4))
        save_safetensors({"weight": enc.model.weight.detach().cpu().float().contiguous()}, d / "model.safetensors")
        _write_tokenizer(enc, d)
        return [(d.name, _TYPES["SparseStaticEmbedding"])]
    tdir = folder / f"{prefix}0_Transformer" if prefix else folder
    from encoderkit.checkpoints.loader import save_transformer

    mt = enc.hf_config.get("model_type")
    hf = {**enc.hf_config, "architectures": [mlm_architecture(mt)]}
    save_transformer(tdir, enc.model.backbone, enc.family, enc.config, hf, enc.tokenizer, enc.source)
    state = read_state_dict(tdir / "model.safetensors")
    p = backbone_prefix(mt)
    save_safetensors({**{p + k: v for k, v in state.items()}, **export_head(mt, enc.model.head, hf)},
                     tdir / "model.safetensors")
    write_transformer_config(tdir, enc.max_length, enc.do_lower_case)
    (tdir / "sentence_bert_config.json").write_text(json.dumps(_FILL_MASK, indent=4))
    d = folder / f"{prefix}1_SpladePooling"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"pooling_strategy": enc.sparse.pooling, "activation_function":
                                               enc.sparse.activation, "embedding_dimension": enc.dim}, indent=4))
    return [("" if not prefix else tdir.name, _TYPES["Transformer"]), (d.name, _TYPES["SpladePooling"])]


def save_sparse(enc: Any, path: Path) -> Path:
    """Write `enc` (and its routes) as a sentence-transformers 6 SparseEncoder folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not enc.routes:
        mods = _write_route(enc, path, "")
    else:
        types, structure = {}, {}
        for r, e in enc.routes.items():
            written = _write_route(e, path, f"{r}_")
            types.update(dict(written))
            structure[r] = [n for n, _ in written]
        (path / "router_config.json").write_text(json.dumps({"types": types, "structure": structure, "parameters": {
            "default_route": enc.default_route, "allow_empty_key": True, "route_mappings": {}}}, indent=4))
        mods = [("", _TYPES["Router"])]
    (path / "modules.json").write_text(json.dumps([{"idx": i, "name": str(i), "path": p, "type": t}
                                                   for i, (p, t) in enumerate(mods)], indent=2))
    cfg = {"model_type": "SparseEncoder", "prompts": enc.prompts, "default_prompt_name": enc.default_prompt_name,
           "similarity_fn_name": enc.similarity_fn or "dot"}
    if enc.sparse.max_active_dims is not None:
        cfg["max_active_dims"] = enc.sparse.max_active_dims
    (path / "config_sentence_transformers.json").write_text(json.dumps(cfg, indent=2))
    return path
