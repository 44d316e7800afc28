"""Checkpoint formats of the decoder embedders in models/decoder.py: llama, mistral (e5-mistral-7b-instruct),
qwen2 (gte-Qwen2-*-instruct, whose config says is_causal: false) and qwen3 (Qwen3-Embedding-*). Config parsing
(transformers 4's rope_theta / rope_scaling and transformers 5's rope_parameters; Qwen's use_sliding_window /
max_window_layers) and the tensor-name map; the default pooling is the last token."""
from __future__ import annotations

from encoderkit.checkpoints.registry import Family, register
from encoderkit.checkpoints.weights import CheckpointError, llama_style_layer_keys
from encoderkit.models.decoder import FULL, SLIDING, DecoderConfig, DecoderModel

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_ARCH = {"llama": "LlamaModel", "mistral": "MistralModel", "qwen2": "Qwen2Model", "qwen3": "Qwen3Model"}
_HEADS = ("lm_head.", "score.", "classifier.")  # heads beside the backbone ("model." in *ForCausalLM files)


def _rope(c: dict) -> dict:
    """RoPE fields of DecoderConfig from rope_parameters (transformers 5) or rope_theta + rope_scaling (4.x)."""
    p = {**(c.get("rope_scaling") or {}), **(c.get("rope_parameters") or {})}
    rope_type = p.get("rope_type", p.get("type", "default"))
    out = dict(rope_theta=float(p.get("rope_theta") or c.get("rope_theta") or 10_000.0), rope_type=rope_type)
    if rope_type == "linear":
        out["rope_scaling"] = float(p["factor"])
    elif rope_type == "llama3":
        out.update(rope_scaling=float(p["factor"]), rope_low_freq_factor=float(p["low_freq_factor"]),
                   rope_high_freq_factor=float(p["high_freq_factor"]),
                   rope_original_max_positions=int(p["original_max_position_embeddings"]))
    elif rope_type != "default":
        raise CheckpointError(f"config.json: rope_type {rope_type!r} is not supported for {c.get('model_type')} "
                              "(only 'default', 'linear' and 'llama3')")
    return out


def _layer_types(c: dict, mt: str, n: int) -> tuple[list[str], int | None]:
    """Which layers attend through a sliding window, and its size, as each model_type's reference decides."""
    window = c.get("sliding_window")
    if mt == "llama":
        return [FULL] * n, None
    if mt == "mistral":  # every layer, whenever sliding_window is set
        return [SLIDING if window else FULL] * n, window
    if not c.get("use_sliding_window", False):  # qwen2 / qwen3: the window is off unless switched on
        window = None
    if c.get("layer_types"):
        return list(c["layer_types"]), window
    start = c.get("max_window_layers", 28)
    return [SLIDING if window is not None and i >= start else FULL for i in range(n)], window


def parse_decoder_config(c: dict) -> DecoderConfig:
    """Hugging Face config.json (model_type llama, mistral, qwen2 or qwen3) -> DecoderConfig."""
    mt = c.get("model_type", "llama")
    try:
        n, H, heads = c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"]
        layer_types, window = _layer_types(c, mt, n)
        bias = True if mt == "qwen2" else bool(c.get("attention_bias", False)) and mt != "mistral"
        pad = c.get("pad_token_id")
        return DecoderConfig(
            vocab_size=c["vocab_size"], hidden_size=H, num_layers=n, num_heads=heads,
            num_kv_heads=c.get("num_key_value_heads") or heads, head_dim=c.get("head_dim") or H // heads,
            intermediate_size=c["intermediate_size"], hidden_act=c.get("hidden_act", "silu"),
            max_position_embeddings=c.get("max_position_embeddings", 4096), rms_norm_eps=c.get("rms_norm_eps", 1e-6),
            **_rope(c), attention_bias=bias, o_bias=bias and mt != "qwen2",
            mlp_bias=mt == "llama" and bool(c.get("mlp_bias", False)), qk_norm=mt == "qwen3",
            causal=c.get("is_causal", True) is not False, sliding_window=window, layer_types=layer_types,
            pad_token_id=0 if pad is None else pad, attention_dropout=c.get("attention_dropout") or 0.0, model_type=mt,
            extra={k: c[k] for k in ("bos_token_id", "eos_token_id", "tie_word_embeddings") if k in c},
        )
    except KeyError as exc:
        raise CheckpointError(f"config.json for model_type {mt!r} lacks the field {exc.args[0]!r}") from None
    except ValueError as exc:
        raise CheckpointError(f"config.json for model_type {mt!r}: {exc}") from None


def decoder_key_map(cfg: DecoderConfig) -> dict:
    """Our names -> Hugging Face names (relative to the backbone prefix, "model." in *ForCausalLM files)."""
    m: dict = {"embed.weight": "embed_tokens.weight", "norm.weight": "norm.weight"}
    for i in range(cfg.num_layers):
        m |= llama_style_layer_keys(f"layers.{i}", f"layers.{i}", q_rows=cfg.num_heads * cfg.head_dim,
                                    kv_rows=cfg.num_kv_heads * cfg.head_dim, d_ff=cfg.intermediate_size,
                                    qkv_bias=cfg.attention_bias, o_bias=cfg.o_bias, mlp_bias=cfg.mlp_bias,
                                    qk_norm=cfg.qk_norm)
        m[f"layers.{i}.ffn_norm.weight"] = f"layers.{i}.post_attention_layernorm.weight"
    return m


def decoder_to_hf_config(cfg: DecoderConfig) -> dict:
    """DecoderConfig -> a config.json (transformers 5 field names) that AutoModel builds the same network from."""
    mt = cfg.model_type
    biases = (cfg.attention_bias, cfg.o_bias, cfg.mlp_bias)
    expressible = {"llama": cfg.o_bias == cfg.attention_bias, "mistral": biases == (False,) * 3,
                   "qwen2": biases == (True, False, False),
                   "qwen3": cfg.o_bias == cfg.attention_bias and not cfg.mlp_bias}
    if not expressible[mt]:
        raise CheckpointError(f"a {mt} config.json cannot express attention_bias={cfg.attention_bias}, "
                              f"o_bias={cfg.o_bias}, mlp_bias={cfg.mlp_bias}")
    if cfg.qk_norm != (mt == "qwen3"):
        raise CheckpointError(f"q/k norms exist in qwen3 checkpoints only, not in {mt}")
    rope = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta}
    if cfg.rope_type != "default":
        rope["factor"] = cfg.rope_scaling
    if cfg.rope_type == "llama3":
        rope.update(low_freq_factor=cfg.rope_low_freq_factor, high_freq_factor=cfg.rope_high_freq_factor,
                    original_max_position_embeddings=cfg.rope_original_max_positions)
    d = {"model_type": mt, "architectures": [_ARCH[mt]], "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
         "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
         "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim, "intermediate_size": cfg.intermediate_size,
         "hidden_act": cfg.hidden_act, "max_position_embeddings": cfg.max_position_embeddings,
         "rms_norm_eps": cfg.rms_norm_eps, "rope_parameters": rope, "attention_dropout": cfg.attention_dropout,
         "pad_token_id": cfg.pad_token_id}
    if not cfg.causal:
        d["is_causal"] = False
    sliding = SLIDING in cfg.layer_types
    if mt == "llama":
        if sliding:
            raise CheckpointError("a llama config.json has no sliding window")
        d.update(attention_bias=cfg.attention_bias, mlp_bias=cfg.mlp_bias)
    elif mt == "mistral":
        if sliding and FULL in cfg.layer_types:
            raise CheckpointError("a mistral config.json slides the window on every layer or on none")
        d["sliding_window"] = cfg.sliding_window if sliding else None
    else:
        if mt == "qwen3":
            d["attention_bias"] = cfg.attention_bias
        d.update(use_sliding_window=sliding, sliding_window=cfg.sliding_window if sliding else None,
                 layer_types=list(cfg.layer_types), max_window_layers=cfg.layer_types.index(SLIDING) if sliding
                 else cfg.num_layers)
    return {**cfg.extra, **d}


register(MODEL_TYPES, Family("Decoder embedders (Llama / Mistral / Qwen2 / Qwen3)", parse_decoder_config, DecoderModel,
                             decoder_key_map, "embed_tokens.weight", decoder_to_hf_config, pooling="last",
                             ignore_prefixes=_HEADS))
