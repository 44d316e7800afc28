"""Run folders: what `encoderkit train` writes and every later command loads.

    RUN/config.json        {"format": "encoderkit-run", "recipe", "model_type", "model_config", "train_config",
                            "data": {"input_shape", "scale"}, "summary"}
    RUN/model.safetensors  the trained weights
    RUN/metrics.jsonl, RUN/curves.png, RUN/checkpoint.pt   written by the Trainer

`load_run(RUN)` rebuilds the model from config.json and the weights; `prepare_inputs` turns raw arrays
(uint8 images, flat or not) into what that model takes, exactly as at training time."""
from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT = "encoderkit-run"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"

# model_type -> (module, config class, model class); other modules may add theirs with register_model.
_MODELS: dict[str, tuple[str, str, str]] = {
    "Autoencoder": ("encoderkit.models.autoencoder", "AEConfig", "Autoencoder"),
    "VAE": ("encoderkit.models.autoencoder", "VAEConfig", "VAE"),
    "StackedDAE": ("encoderkit.models.autoencoder", "StackedDAEConfig", "StackedDAE"),
    "MAE": ("encoderkit.models.mae", "MAEConfig", "MAE"),
    "DAN": ("encoderkit.models.dan", "DANConfig", "DAN"),
}


def register_model(model_type: str, module: str, config_class: str, model_class: str) -> None:
    """Make `load_run` able to rebuild `model_class(config_class(**model_config))` from `module`."""
    _MODELS[model_type] = (module, config_class, model_class)


@dataclass
class Run:
    """A loaded run folder: the model (eval mode) and its config.json."""

    model: nn.Module
    info: dict[str, Any]
    path: Path

    @property
    def recipe(self) -> str:
        return self.info.get("recipe", "")

    def inputs(self, x: Any) -> torch.Tensor:
        """Raw array -> model input tensor (see prepare_inputs)."""
        return prepare_inputs(x, self.info.get("data", {}))

    def encode(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Raw inputs -> the model's codes / features as float32 (n, dim): AE z, VAE mu, MAE pooled tokens."""
        t = self.inputs(x)
        out = []
        with torch.no_grad():
            for s in range(0, len(t), batch_size):
                f = self.model.encode(t[s:s + batch_size])
                out.append((f[0] if isinstance(f, tuple) else f).reshape(len(t[s:s + batch_size]), -1))
        return torch.cat(out).float().numpy()


def _config_to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples -> lists


def _config_from_dict(cls: type, d: dict[str, Any]) -> Any:
    kwargs = {}
    for f in fields(cls):
        if f.name in d:
            v = d[f.name]
            default = f.default if f.default is not dataclasses.MISSING else None
            kwargs[f.name] = tuple(v) if isinstance(v, list) and isinstance(default, tuple) else v
    return cls(**kwargs)


def save_run(out_dir: str | Path, model: nn.Module, *, recipe: str, data: dict[str, Any] | None = None,
             train_config: Any = None, summary: dict[str, Any] | None = None, model_type: str | None = None) -> Path:
    """Write config.json and model.safetensors so `load_run(out_dir)` gives this model back."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_type = model_type or type(model).__name__
    if model_type not in _MODELS:
        raise ValueError(f"model type {model_type} is not registered; call register_model({model_type!r}, ...) first")
    cfg = getattr(model, "config", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        raise ValueError(f"{model_type} has no dataclass `config`; a run folder needs one to rebuild the model")
    info = {"format": FORMAT, "version": 1, "recipe": recipe, "model_type": model_type,
            "model_config": _config_to_dict(cfg),
            "train_config": _config_to_dict(train_config) if dataclasses.is_dataclass(train_config) else train_config,
            "data": data or {}, "summary": summary or {}}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": FORMAT, "model_type": model_type})
    (out / CONFIG).write_text(json.dumps(info, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return out


def update_summary(run_dir: str | Path, summary: dict[str, Any]) -> None:
    """Merge figures into config.json's summary (e.g. after evaluation)."""
    p = Path(run_dir) / CONFIG
    info = json.loads(p.read_text(encoding="utf-8"))
    info.setdefault("summary", {}).update(summary)
    p.write_text(json.dumps(info, indent=2, default=_json_default) + "\n", encoding="utf-8")


def is_run_folder(path: str | Path) -> bool:
    """True when `path` is a folder written by `encoderkit train` (config.json with format encoderkit-run)."""
    cfg = Path(path) / CONFIG
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("format") == FORMAT
    except (ValueError, OSError, AttributeError):
        return False


def load_run(path: str | Path) -> Run:
    """Rebuild the model of a run folder; errors say what is missing."""
    from safetensors.torch import load_file

    root = Path(path)
    cfg_path = root / CONFIG
    if not cfg_path.exists():
        raise FileNotFoundError(f"{root} is not a run folder (no {CONFIG}); pass the --out folder of `encoderkit train`")
    info = json.loads(cfg_path.read_text(encoding="utf-8"))
    if info.get("format") != FORMAT:
        raise ValueError(f"{cfg_path} is not an encoderkit run config (format={info.get('format')!r})")
    mt = info.get("model_type")
    if mt not in _MODELS:
        raise ValueError(f"{cfg_path}: unknown model_type {mt!r}; known: {', '.join(sorted(_MODELS))}")
    module, cfg_cls, model_cls = _MODELS[mt]
    mod = importlib.import_module(module)
    model = getattr(mod, model_cls)(_config_from_dict(getattr(mod, cfg_cls), info["model_config"]))
    wpath = root / WEIGHTS
    if not wpath.exists():
        raise FileNotFoundError(f"{root} has no {WEIGHTS}; the training run did not finish")
    state = load_file(str(wpath))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{wpath} does not match {mt}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return Run(model.eval(), info, root)


def prepare_inputs(x: Any, data: dict[str, Any]) -> torch.Tensor:
    """Raw images / vectors -> float tensor of shape (N, *input_shape): uint8 is divided by `scale`, and
    (N, 28, 28) / (N, 784) / (N, 1, 28, 28) are reshaped when the element count matches."""
    arr = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.size == 0 or arr.ndim == 0:
        raise ValueError(f"no inputs: got an array of shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"inputs must be numeric, got dtype {arr.dtype}")
    scale = float(data.get("scale", 255.0))
    t = torch.from_numpy(np.ascontiguousarray(arr)).float()
    if arr.dtype == np.uint8:
        t = t / scale
    shape = tuple(data.get("input_shape") or t.shape[1:])
    n_feat = int(np.prod(shape))
    if arr.size == n_feat:  # a single example
        t = t.reshape(1, -1)
    if int(np.prod(t.shape[1:])) != n_feat:
        raise ValueError(f"inputs of shape {tuple(arr.shape)} do not fit this model, which takes examples of "
                         f"shape {shape} ({n_feat} values each)")
    if not torch.isfinite(t).all():
        raise ValueError("inputs hold NaN or inf values; clean them first")
    return t.reshape(len(t), *shape)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
