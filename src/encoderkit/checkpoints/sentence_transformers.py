"""sentence-transformers folders: modules.json lists the pipeline (Transformer -> Pooling -> Dense -> Normalize,
or a Router whose routes are such pipelines); each module has its own small config. Both layouts read: the
current one (6.x: `sentence_transformers.base.modules.*` types, `pooling_mode`, max_seq_length in the tokenizer's
model_max_length) and the older one (`sentence_transformers.models.*`, pooling_mode_* flags, sentence_bert_config
max_seq_length / do_lower_case). Written back in the current layout."""
from __future__ import annotations

import ast
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from encoderkit.checkpoints.weights import CheckpointError, read_state_dict, save_safetensors
from encoderkit.nn.embedding_head import Dense

# sentence-transformers pooling mode -> ours, in the order sentence-transformers concatenates the old flags
_ST_POOL = {"cls": "cls", "max": "max", "mean": "mean", "mean_sqrt_len_tokens": "mean_sqrt_len",
            "weightedmean": "weighted_mean", "lasttoken": "last"}
_OLD_POOL_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
                   "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_TYPES = {"Transformer": "sentence_transformers.base.modules.transformer.Transformer",
          "Pooling": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
          "Dense": "sentence_transformers.base.modules.dense.Dense",
          "Normalize": "sentence_transformers.base.modules.normalize.Normalize",
          "Router": "sentence_transformers.base.modules.router.Router"}
_LOADABLE = "Transformer, Pooling, Dense, Normalize and Router (Asym)"
IDENTITY = "torch.nn.modules.linear.Identity"
_TRANSFORMER_CFG = {"transformer_task": "feature-extraction",
                    "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                    "module_output_name": "token_embeddings"}
_HUGE = 10 ** 8  # a tokenizer_config model_max_length above this means "no limit" (transformers writes 1e30)


@dataclass
class DenseSpec:
    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor | None
    activation: str = IDENTITY  # torch.nn class path as sentence-transformers writes it
    use_residual: bool = False  # y = act(W x + b) + x  (or + R x when in != out)
    residual: torch.Tensor | None = None  # (out, in) R, when use_residual and the widths differ


@dataclass
class PipelineSpec:
    transformer_dir: Path  # folder with config.json + weights + tokenizer
    pooling: str | tuple[str, ...] | None = None  # our mode name(s); None: not a sentence-transformers folder
    dense: list[DenseSpec] = field(default_factory=list)
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn: str | None = None
    include_prompt: bool = True  # False: prompt tokens are left out of pooling (INSTRUCTOR-style)
    routes: dict[str, "PipelineSpec"] = field(default_factory=dict)  # Router: route name -> its pipeline
    default_route: str | None = None  # Router: the route when no task matches
    route_mappings: dict[tuple, str] = field(default_factory=dict)  # Router: (task, modality) -> route


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def activation_module(path: str, where: Path) -> nn.Module:
    """The torch.nn activation a Dense config names (e.g. torch.nn.modules.activation.GELU)."""
    name = path.rsplit(".", 1)[-1]
    cls = getattr(nn, name, None)
    if not path.startswith("torch.") or not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"{where}: unsupported Dense activation {path!r}; any torch.nn module class loads "
                              "(e.g. torch.nn.modules.activation.Tanh)")
    return cls()


def activation_path(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__name__}"


def build_dense(d: DenseSpec | nn.Module) -> nn.Module:
    """Our Dense layer (nn/embedding_head.py) with a folder's weights; a module passes through."""
    if isinstance(d, nn.Module):
        return d
    layer = Dense(d.weight.shape[1], d.weight.shape[0], bias=d.bias is not None,
                  activation=activation_module(d.activation, Path("Dense")), use_residual=d.use_residual)
    with torch.no_grad():
        layer.linear.weight.copy_(d.weight)
        if d.bias is not None:
            layer.linear.bias.copy_(d.bias)
        if layer.residual is not None:
            layer.residual.weight.copy_(d.residual)
    return layer


def dense_spec(layer: Dense) -> DenseSpec:
    """The DenseSpec that writes a Dense layer back."""
    def t(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.detach().cpu().clone()

    return DenseSpec(t(layer.linear.weight), t(layer.linear.bias), activation_path(layer.activation), layer.use_residual,
                     None if layer.residual is None else t(layer.residual.weight))


def _max_length(tdir: Path, cfg: dict) -> int | None:
    """max_seq_length: the old sentence_bert_config key, a processing_kwargs max_length, else the tokenizer's
    model_max_length (where sentence-transformers 6 keeps it)."""
    if cfg.get("max_seq_length"):
        return int(cfg["max_seq_length"])
    pk = cfg.get("processing_kwargs") or {}
    for bucket in ("text", "common"):
        if (pk.get(bucket) or {}).get("max_length"):
            return int(pk[bucket]["max_length"])
    tc = tdir / "tokenizer_config.json"
    n = _json(tc).get("model_max_length") if tc.is_file() else None
    return int(n) if isinstance(n, (int, float)) and 0 < n < _HUGE else None


def _transformer(spec: PipelineSpec, path: Path) -> None:
    spec.transformer_dir = path
    cfg_file = next((path / n for n in ("sentence_bert_config.json", "sentence_roberta_config.json",
                                        "sentence_distilbert_config.json", "sentence_xlm-roberta_config.json",
                                        "sentence_albert_config.json", "sentence_camembert_config.json",
                                        "sentence_xlnet_config.json") if (path / n).is_file()), None)
    c = _json(cfg_file) if cfg_file else {}
    task = c.get("transformer_task", "feature-extraction")
    out = c.get("module_output_name", "token_embeddings")
    if task != "feature-extraction" or out != "token_embeddings" or "text" not in c.get("modality_config", {"text": 0}):
        raise CheckpointError(f"{cfg_file}: a Transformer with transformer_task={task!r}, module_output_name={out!r} "
                              "does not load; encoderkit runs feature-extraction text transformers (token_embeddings)")
    spec.max_seq_length = _max_length(path, c)
    spec.do_lower_case = bool(c.get("do_lower_case", False))


def _pooling(spec: PipelineSpec, path: Path) -> None:
    c = _json(path / "config.json")
    mode = c.get("pooling_mode")
    if mode is None:
        mode = [m for k, m in _OLD_POOL_FLAGS.items() if c.get(k)] or ["mean"]
    modes = [mode] if isinstance(mode, str) else list(mode)
    bad = [m for m in modes if m not in _ST_POOL]
    if bad:
        raise CheckpointError(f"{path / 'config.json'}: unknown pooling mode {bad[0]!r}; known: {', '.join(_ST_POOL)}")
    ours = tuple(_ST_POOL[m] for m in modes)
    spec.pooling = ours[0] if len(ours) == 1 else ours
    spec.include_prompt = bool(c.get("include_prompt", True))


def _dense(spec: PipelineSpec, path: Path) -> None:
    c = _json(path / "config.json")
    if c.get("module_input_name", "sentence_embedding") != "sentence_embedding" or \
            c.get("module_output_name", "sentence_embedding") != "sentence_embedding":
        raise CheckpointError(f"{path / 'config.json'}: a Dense module on {c.get('module_input_name')!r} does not load; "
                              "encoderkit runs Dense layers on the pooled sentence_embedding")
    wfile = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
    if wfile is None:
        raise CheckpointError(f"Dense module at {path} has no model.safetensors or pytorch_model.bin")
    st = read_state_dict(wfile)
    act = c.get("activation_function") or "torch.nn.modules.activation.Tanh"  # sentence-transformers' default
    activation_module(act, path / "config.json")  # validate now
    w = st.get("linear.weight")
    if w is None or tuple(w.shape) != (c.get("out_features", w.shape[0]), c.get("in_features", w.shape[1])):
        raise CheckpointError(f"{wfile}: linear.weight missing or not (out_features, in_features) as config.json says")
    res = bool(c.get("use_residual", False))
    if res and w.shape[0] != w.shape[1] and "residual.weight" not in st:
        raise CheckpointError(f"{wfile}: use_residual with in_features != out_features needs residual.weight")
    if spec.normalize:
        raise CheckpointError(f"{path}: a Dense module after Normalize does not load; encoderkit normalizes last")
    spec.dense.append(DenseSpec(w, st.get("linear.bias") if c.get("bias", True) else None, act, res,
                                st.get("residual.weight") if res and w.shape[0] != w.shape[1] else None))


def _router(path: Path) -> tuple[dict[str, PipelineSpec], str | None, dict]:
    cfg_file = path / "router_config.json" if (path / "router_config.json").is_file() else path / "config.json"
    c = _json(cfg_file)
    types, structure = c.get("types") or {}, c.get("structure") or {}
    params = c.get("parameters") or {}
    routes: dict[str, PipelineSpec] = {}
    for route, ids in structure.items():
        spec = PipelineSpec(transformer_dir=Path())
        for i, mid in enumerate(ids):
            if "/" in mid or "\\" in mid or mid.startswith(".."):
                raise CheckpointError(f"{cfg_file}: bad module id {mid!r}")
            _apply(spec, types.get(mid, "?"), path / mid, first=(i == 0), where=f"{cfg_file} route {route!r}")
        routes[route] = spec
    if not routes:
        raise CheckpointError(f"{cfg_file}: a Router with no routes")
    default = params.get("default_route")
    if default is None and params.get("allow_empty_key", True):
        default = next(iter(routes))
    mappings = {}
    for k, v in (params.get("route_mappings") or {}).items():
        key = ast.literal_eval(k) if isinstance(k, str) else k
        mappings[(key[0], tuple(sorted(key[1])) if isinstance(key[1], (list, tuple)) else key[1])] = v
    return routes, default, mappings


def _apply(spec: PipelineSpec, type_name: str, path: Path, *, first: bool, where: str) -> None:
    """Add one module (matched by its class name, whatever the package path) to a pipeline spec."""
    kind = type_name.rsplit(".", 1)[-1]
    if kind == "Transformer" and first:
        _transformer(spec, path)
    elif kind == "Pooling" and not first and spec.pooling is None:
        _pooling(spec, path)
    elif kind == "Dense" and spec.pooling is not None:
        _dense(spec, path)
    elif kind == "Normalize" and spec.pooling is not None:
        spec.normalize = True
    elif kind in ("Transformer", "Pooling", "Dense", "Normalize"):
        raise CheckpointError(f"{where}: module {type_name!r} at {path} is out of place; encoderkit loads the pipeline "
                              "Transformer -> Pooling -> Dense* -> Normalize")
    else:
        raise CheckpointError(f"{where}: module {type_name!r} ({path.name or path}) does not load in encoderkit; "
                              f"it loads {_LOADABLE}")


def read_pipeline(folder: Path) -> PipelineSpec:
    """Read a sentence-transformers folder, or treat a plain Hugging Face folder as a bare transformer.
    A Router's routes come back in `routes` (each with the modules after the Router appended); the top-level
    fields then describe the default route."""
    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        return PipelineSpec(transformer_dir=folder)
    where = str(folder / "modules.json")
    mods = _json(folder / "modules.json")
    spec = PipelineSpec(transformer_dir=folder)
    routes: dict[str, PipelineSpec] = {}
    default, mappings = None, {}
    for i, mod in enumerate(sorted(mods, key=lambda m: m.get("idx", 0))):
        type_name, path = mod.get("type", "?"), folder / mod.get("path", "")
        if type_name.rsplit(".", 1)[-1] in ("Router", "Asym") and i == 0:
            routes, default, mappings = _router(path)
        elif routes:
            for r in routes.values():
                _apply(r, type_name, path, first=False, where=where)
        else:
            _apply(spec, type_name, path, first=(i == 0), where=where)
    if routes:
        spec = copy.copy(routes[default] if default in routes else next(iter(routes.values())))
        spec.routes, spec.default_route, spec.route_mappings = routes, default, mappings
    st_cfg = folder / "config_sentence_transformers.json"
    if st_cfg.is_file():
        c = _json(st_cfg)
        spec.prompts = {k: v or "" for k, v in (c.get("prompts") or {}).items()}
        spec.default_prompt_name = c.get("default_prompt_name")
        spec.similarity_fn = c.get("similarity_fn_name")
    return spec


# ---------------------------------------------------------------------------------------------- writing
def write_transformer_config(folder: Path, max_seq_length: int | None, do_lower_case: bool) -> None:
    """sentence_bert_config.json as sentence-transformers 6 writes it; max_seq_length goes into the tokenizer's
    model_max_length and lower-casing into its normalizer, where 6.x keeps them."""
    folder = Path(folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps(_TRANSFORMER_CFG, indent=4))
    tc, tj = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if max_seq_length and (tc.is_file() or tj.is_file()):
        cfg = _json(tc) if tc.is_file() else {}
        cfg["model_max_length"] = int(max_seq_length)
        tc.write_text(json.dumps(cfg, indent=2))
    norm = json.dumps(_json(tj).get("normalizer")) if do_lower_case and tj.is_file() else ""
    if do_lower_case and tj.is_file() and '"Lowercase"' not in norm and '"lowercase": true' not in norm:
        from tokenizers import Tokenizer, normalizers

        tok = Tokenizer.from_file(str(tj))
        old = tok.normalizer
        tok.normalizer = normalizers.Sequence([normalizers.Lowercase()] + ([old] if old is not None else []))
        tok.save(str(tj))


def _write_head(folder: Path, spec: PipelineSpec, hidden_size: int, name: Callable[[int, str], str]) -> list[tuple[str, str]]:
    """Pooling, Dense and Normalize module folders; returns [(folder name, type)] in pipeline order."""
    out = []
    d = folder / name(len(out) + 1, "Pooling")
    d.mkdir(parents=True, exist_ok=True)
    modes = (spec.pooling,) if isinstance(spec.pooling, str) else tuple(spec.pooling or ("mean",))
    st_modes = [next(k for k, v in _ST_POOL.items() if v == m) for m in modes]
    (d / "config.json").write_text(json.dumps({"embedding_dimension": hidden_size, "pooling_mode":
                                               st_modes[0] if len(st_modes) == 1 else st_modes,
                                               "include_prompt": spec.include_prompt}, indent=4))
    out.append((d.name, _TYPES["Pooling"]))
    for ds in spec.dense:
        d = folder / name(len(out) + 1, "Dense")
        d.mkdir(exist_ok=True)
        cfg = {"in_features": ds.weight.shape[1], "out_features": ds.weight.shape[0], "bias": ds.bias is not None,
               "activation_function": ds.activation, "module_input_name": "sentence_embedding",
               "module_output_name": "sentence_embedding"}
        if ds.use_residual:
            cfg["use_residual"] = True
        (d / "config.json").write_text(json.dumps(cfg, indent=4))
        tensors = {"linear.weight": ds.weight, **({"linear.bias": ds.bias} if ds.bias is not None else {}),
                   **({"residual.weight": ds.residual} if ds.residual is not None else {})}
        save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, d / "model.safetensors")
        out.append((d.name, _TYPES["Dense"]))
    if spec.normalize:
        d = folder / name(len(out) + 1, "Normalize")
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps({"module_input_name": "sentence_embedding",
                                                   "module_output_name": "sentence_embedding"}, indent=4))
        out.append((d.name, _TYPES["Normalize"]))
    return out


def write_pipeline(folder: Path, spec: PipelineSpec, hidden_size: int | dict[str, int],
                   route_dirs: dict[str, str] | None = None) -> None:
    """Write modules.json, each module's config and config_sentence_transformers.json (sentence-transformers 6
    layout) so `SentenceTransformer(folder)` rebuilds the pipeline. Without routes the transformer sits at the
    folder's root; with routes, route_dirs names each route's transformer folder (inside `folder`, shared ones
    named once) and hidden_size is per route."""
    folder = Path(folder)
    if not spec.routes:
        write_transformer_config(folder, spec.max_seq_length, spec.do_lower_case)
        head = _write_head(folder, spec, int(hidden_size), lambda i, kind: f"{i}_{kind}")
        modules = [{"idx": 0, "name": "0", "path": "", "type": _TYPES["Transformer"]}]
        modules += [{"idx": i, "name": str(i), "path": p, "type": t} for i, (p, t) in enumerate(head, 1)]
    else:
        types, structure = {}, {}
        for route, rspec in spec.routes.items():
            tdir = route_dirs[route]
            if tdir not in types:
                write_transformer_config(folder / tdir, rspec.max_seq_length, rspec.do_lower_case)
                types[tdir] = _TYPES["Transformer"]
            head = _write_head(folder, rspec, hidden_size[route], lambda i, kind, r=route: f"{r}_{i}_{kind}")
            types.update(dict(head))
            structure[route] = [tdir] + [p for p, _ in head]
        params = {"default_route": spec.default_route, "allow_empty_key": spec.default_route is not None,
                  "route_mappings": {str(k): v for k, v in spec.route_mappings.items()}}
        (folder / "router_config.json").write_text(json.dumps(
            {"types": types, "structure": structure, "parameters": params}, indent=4))
        modules = [{"idx": 0, "name": "0", "path": "", "type": _TYPES["Router"]}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    st_cfg = {"model_type": "SentenceTransformer", "prompts": spec.prompts, "default_prompt_name": spec.default_prompt_name,
              "similarity_fn_name": spec.similarity_fn or "cosine"}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_cfg, indent=2))
