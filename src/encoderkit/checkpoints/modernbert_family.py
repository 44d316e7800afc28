"""Checkpoint formats of ModernBERT (answerdotai/ModernBERT-base/large, gte-modernbert, modernbert-embed): config
parsing (the 2024 fields and transformers 5's layer_types / rope_parameters) and the tensor-name map to
models/modernbert.py."""
from __future__ import annotations

from encoderkit.checkpoints.registry import Family, register
from encoderkit.checkpoints.weights import CheckpointError
from encoderkit.models.modernbert import GLOBAL, LOCAL, ModernBertConfig, ModernBertModel

_HEADS = ("head.", "decoder.", "classifier.", "drop.")  # MLM / classification heads beside the backbone ("model.")


def _layer_types(c: dict, n_layers: int) -> list[str]:
    """Per-layer attention kind: config's layer_types, or every n-th layer global (2024 configs)."""
    if c.get("layer_types"):
        return list(c["layer_types"])
    every = c.get("global_attn_every_n_layers", 3)
    return [GLOBAL if i % every == 0 else LOCAL for i in range(n_layers)]


def _rope_thetas(c: dict) -> tuple[float, float]:
    """(global theta, local theta) from rope_parameters (transformers 5) or global/local_rope_theta (2024);
    a local theta of None means the global one, as in the original release."""
    params = c.get("rope_parameters") or {}
    for kind in (GLOBAL, LOCAL):
        p = params.get(kind) or {}
        if p.get("rope_type", "default") != "default":
            raise CheckpointError(f"config.json: rope_type {p['rope_type']!r} for {kind} layers is not supported "
                                  "for modernbert (only 'default')")
    if c.get("rope_scaling"):
        raise CheckpointError(f"config.json: rope_scaling {c['rope_scaling']!r} is not supported for modernbert")
    g = (params.get(GLOBAL) or {}).get("rope_theta") or c.get("global_rope_theta") or 160_000.0
    local = (params.get(LOCAL) or {}).get("rope_theta")
    if local is None:
        local = c["local_rope_theta"] if "local_rope_theta" in c else 10_000.0
    return float(g), float(g if local is None else local)


def parse_modernbert_config(c: dict) -> ModernBertConfig:
    """Hugging Face config.json (model_type modernbert) -> ModernBertConfig."""
    if c.get("head_dim") not in (None, c.get("hidden_size", 0) // max(c.get("num_attention_heads", 1), 1)):
        raise CheckpointError(f"config.json: head_dim={c['head_dim']} != hidden_size / num_attention_heads is not "
                              "supported for modernbert")
    try:
        n = c["num_hidden_layers"]
        g, local = _rope_thetas(c)
        pad = c.get("pad_token_id")
        return ModernBertConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_layers=n,
            num_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
            hidden_act=c.get("hidden_activation", "gelu"), max_position_embeddings=c.get("max_position_embeddings", 8192),
            norm_eps=c.get("norm_eps", 1e-5), norm_bias=bool(c.get("norm_bias", False)),
            attention_bias=bool(c.get("attention_bias", False)), mlp_bias=bool(c.get("mlp_bias", False)),
            layer_types=_layer_types(c, n), local_attention=c.get("local_attention", 128), global_rope_theta=g,
            local_rope_theta=local, pad_token_id=50283 if pad is None else pad,
            embedding_dropout=c.get("embedding_dropout", 0.0), attention_dropout=c.get("attention_dropout", 0.0),
            mlp_dropout=c.get("mlp_dropout", 0.0),
        )
    except KeyError as exc:
        raise CheckpointError(f"config.json for model_type 'modernbert' lacks the field {exc.args[0]!r}") from None
    except ValueError as exc:
        raise CheckpointError(f"config.json for model_type 'modernbert': {exc}") from None


def _norm(cfg: ModernBertConfig, ours: str, theirs: str) -> dict[str, str]:
    m = {f"{ours}.weight": f"{theirs}.weight"}
    if cfg.norm_bias:
        m[f"{ours}.bias"] = f"{theirs}.bias"
    return m


def _linear(ours: str, theirs: str, bias: bool) -> dict[str, str]:
    m = {f"{ours}.weight": f"{theirs}.weight"}
    if bias:
        m[f"{ours}.bias"] = f"{theirs}.bias"
    return m


def modernbert_key_map(cfg: ModernBertConfig) -> dict:
    """Our names -> Hugging Face names (relative to the backbone prefix, "model." in ModernBertForMaskedLM).
    Wqkv already stacks q, k, v heads as our qkv does; Wi = [W_act; W_up] puts the activated half first, as our
    GatedFeedForward's wi does, so both copy over unchanged."""
    m = {"tok_embeddings.weight": "embeddings.tok_embeddings.weight"}
    m.update(_norm(cfg, "emb_norm", "embeddings.norm"))
    for i in range(cfg.num_layers):
        o, t = f"layers.{i}", f"layers.{i}"
        if i > 0:
            m.update(_norm(cfg, f"{o}.attn_norm", f"{t}.attn_norm"))
        m.update(_linear(f"{o}.attn.qkv", f"{t}.attn.Wqkv", cfg.attention_bias))
        m.update(_linear(f"{o}.attn.o", f"{t}.attn.Wo", cfg.attention_bias))
        m.update(_norm(cfg, f"{o}.mlp_norm", f"{t}.mlp_norm"))
        m.update(_linear(f"{o}.mlp.wi", f"{t}.mlp.Wi", cfg.mlp_bias))
        m.update(_linear(f"{o}.mlp.wo", f"{t}.mlp.Wo", cfg.mlp_bias))
    m.update(_norm(cfg, "final_norm", "final_norm"))
    return m


def modernbert_to_hf_config(cfg: ModernBertConfig) -> dict:
    """ModernBertConfig -> a config.json that transformers' AutoModel builds the same network from."""
    d = {"model_type": "modernbert", "architectures": ["ModernBertModel"], "vocab_size": cfg.vocab_size,
         "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
         "intermediate_size": cfg.intermediate_size, "hidden_activation": cfg.hidden_act,
         "max_position_embeddings": cfg.max_position_embeddings, "norm_eps": cfg.norm_eps, "norm_bias": cfg.norm_bias,
         "attention_bias": cfg.attention_bias, "mlp_bias": cfg.mlp_bias, "layer_types": list(cfg.layer_types),
         "local_attention": cfg.local_attention, "pad_token_id": cfg.pad_token_id,
         "rope_parameters": {GLOBAL: {"rope_type": "default", "rope_theta": cfg.global_rope_theta},
                             LOCAL: {"rope_type": "default", "rope_theta": cfg.local_rope_theta}},
         # the 2024 names, for transformers releases before layer_types / rope_parameters
         "global_rope_theta": cfg.global_rope_theta, "local_rope_theta": cfg.local_rope_theta,
         "embedding_dropout": cfg.embedding_dropout, "attention_dropout": cfg.attention_dropout,
         "mlp_dropout": cfg.mlp_dropout}
    every = _every_n(cfg.layer_types)
    if every is not None:
        d["global_attn_every_n_layers"] = every
    return {**cfg.extra, **d}


def _every_n(layer_types: list[str]) -> int | None:
    """n when the layers follow the 2024 pattern (global exactly on layers 0, n, 2n, ...), else None."""
    for n in range(1, len(layer_types) + 1):
        if layer_types == [GLOBAL if i % n == 0 else LOCAL for i in range(len(layer_types))]:
            return n
    return None


register("modernbert", Family("ModernBERT", parse_modernbert_config, ModernBertModel, modernbert_key_map,
                              "embeddings.tok_embeddings.weight", modernbert_to_hf_config, pooling="mean",
                              ignore_prefixes=_HEADS))
