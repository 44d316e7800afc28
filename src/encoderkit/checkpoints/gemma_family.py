"""Checkpoint formats of the Gemma text family: gemma3_text (google/embeddinggemma-300m with bidirectional
attention; causal Gemma 3 text decoders), gemma2 (causal, soft-capped logits) and gemma (Gemma 1): config
parsing (transformers 4's rope_theta / rope_local_base_freq / rope_scaling and transformers 5's per-layer-type
rope_parameters) and the tensor-name map to models/gemma.py."""
from __future__ import annotations

from encoderkit.checkpoints.registry import Family, register
from encoderkit.checkpoints.weights import CheckpointError, llama_style_layer_keys
from encoderkit.models.gemma import GLOBAL, LOCAL, GemmaConfig, GemmaModel

_HEADS = ("lm_head.", "score.", "classifier.")  # heads beside the backbone ("model." in *ForCausalLM files)


def _rope(params: dict | None, kind: str, default_theta: float) -> tuple[float, float]:
    """(theta, linear scaling factor) of one layer kind; only default and linear RoPE exist in these checkpoints."""
    p = params or {}
    rope_type = p.get("rope_type", p.get("type", "default"))
    if rope_type not in ("default", "linear"):
        raise CheckpointError(f"config.json: rope_type {rope_type!r} for {kind} layers is not supported for Gemma "
                              "(only 'default' and 'linear')")
    factor = float(p.get("factor", 1.0)) if rope_type == "linear" else 1.0
    return float(p.get("rope_theta") or default_theta), factor


def _rope_fields(c: dict, mt: str) -> dict:
    """rope_theta / rope_scaling / rope_local_theta from either config generation."""
    params = c.get("rope_parameters") or {}
    if GLOBAL in params or LOCAL in params:  # transformers 5, per layer kind
        g, gf = _rope(params.get(GLOBAL), GLOBAL, 1_000_000.0)
        local, lf = _rope(params.get(LOCAL), LOCAL, 10_000.0)
        if lf != 1.0:
            raise CheckpointError("config.json: rope scaling on sliding_attention layers is not supported for Gemma")
    else:  # transformers 4 (or a flat rope_parameters): one theta + scaling for full layers, a local base
        flat = {**(c.get("rope_scaling") or {}), **params}
        default = 1_000_000.0 if mt == "gemma3_text" else 10_000.0
        g, gf = _rope({**flat, "rope_theta": flat.get("rope_theta") or c.get("rope_theta") or default}, GLOBAL, default)
        # Gemma 1 / 2: one theta for every layer
        local = float(c.get("rope_local_base_freq") or 10_000.0) if mt == "gemma3_text" else g
    return dict(rope_theta=g, rope_scaling=gf, rope_local_theta=local)


def _layer_types(c: dict, n: int, mt: str) -> list[str]:
    if mt == "gemma":  # Gemma 1: every layer global
        return [GLOBAL] * n
    if c.get("layer_types"):
        return list(c["layer_types"])
    every = c.get("sliding_window_pattern") or (2 if mt == "gemma2" else 6)  # Gemma 2: even layers slide
    return [GLOBAL if (i + 1) % every == 0 else LOCAL for i in range(n)]


def parse_gemma_config(c: dict) -> GemmaConfig:
    """Hugging Face config.json (model_type gemma3_text, gemma2 or gemma) -> GemmaConfig."""
    mt = c.get("model_type", "gemma3_text")
    bidirectional = bool(c.get("use_bidirectional_attention"))
    if mt != "gemma3_text" and bidirectional:
        raise CheckpointError(f"config.json: use_bidirectional_attention is only defined for gemma3_text in the "
                              f"reference (a {mt} model still builds a causal mask); set it to false")
    try:
        n, H, heads = c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"]
        head_dim = c.get("head_dim") or H // heads
        act = c.get("hidden_act" if mt == "gemma" else "hidden_activation") or "gelu_pytorch_tanh"
        if mt == "gemma" and act == "gelu":  # Gemma 1's released configs say gelu and mean its tanh approximation
            act = "gelu_pytorch_tanh"
        pad = c.get("pad_token_id")
        return GemmaConfig(
            vocab_size=c["vocab_size"], hidden_size=H, num_layers=n, num_heads=heads,
            num_kv_heads=c.get("num_key_value_heads") or heads, head_dim=head_dim,
            intermediate_size=c["intermediate_size"], hidden_act=act,
            max_position_embeddings=c.get("max_position_embeddings", 8192),
            rms_norm_eps=c.get("rms_norm_eps", 1e-6), attention_bias=bool(c.get("attention_bias", False)),
            query_pre_attn_scalar=float(head_dim if mt == "gemma" else c.get("query_pre_attn_scalar", 256)),
            layer_types=_layer_types(c, n, mt), sliding_window=c.get("sliding_window") if mt != "gemma" else None,
            **_rope_fields(c, mt), bidirectional=bidirectional, qk_norm=mt == "gemma3_text",
            attn_logit_softcapping=c.get("attn_logit_softcapping", 50.0) if mt == "gemma2" else None,
            sandwich_norms=mt != "gemma", pad_token_id=0 if pad is None else pad,
            attention_dropout=c.get("attention_dropout") or 0.0, model_type=mt,
        )
    except KeyError as exc:
        raise CheckpointError(f"config.json for model_type {mt!r} lacks the field {exc.args[0]!r}") from None
    except ValueError as exc:
        raise CheckpointError(f"config.json for model_type {mt!r}: {exc}") from None


def gemma_key_map(cfg: GemmaConfig) -> dict:
    """Our names -> Hugging Face names (relative to the backbone prefix, "model." in *ForCausalLM files)."""
    m: dict = {"embed.weight": "embed_tokens.weight", "norm.weight": "norm.weight"}
    for i in range(cfg.num_layers):
        o = t = f"layers.{i}"
        m |= llama_style_layer_keys(o, t, q_rows=cfg.num_heads * cfg.head_dim, kv_rows=cfg.num_kv_heads * cfg.head_dim,
                                    d_ff=cfg.intermediate_size, qkv_bias=cfg.attention_bias, o_bias=cfg.attention_bias,
                                    qk_norm=cfg.qk_norm)
        if cfg.sandwich_norms:
            m[f"{o}.post_attn_norm.weight"] = f"{t}.post_attention_layernorm.weight"
            m[f"{o}.ffn_norm.weight"] = f"{t}.pre_feedforward_layernorm.weight"
            m[f"{o}.post_ffn_norm.weight"] = f"{t}.post_feedforward_layernorm.weight"
        else:  # Gemma 1: the norm after attention is the feed-forward's input norm
            m[f"{o}.ffn_norm.weight"] = f"{t}.post_attention_layernorm.weight"
    return m


def _rope_entry(theta: float, factor: float = 1.0) -> dict:
    return {"rope_type": "linear", "rope_theta": theta, "factor": factor} if factor != 1.0 else {
        "rope_type": "default", "rope_theta": theta}


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def gemma_to_hf_config(cfg: GemmaConfig) -> dict:
    """GemmaConfig -> a config.json (transformers 5 field names) that AutoModel builds the same network from."""
    d = {"model_type": cfg.model_type, "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
         "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
         "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim, "intermediate_size": cfg.intermediate_size,
         "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.rms_norm_eps,
         "attention_bias": cfg.attention_bias, "attention_dropout": cfg.attention_dropout,
         "pad_token_id": cfg.pad_token_id}
    if cfg.model_type == "gemma":
        d.update(architectures=["GemmaModel"], hidden_act=cfg.hidden_act,
                 rope_parameters=_rope_entry(cfg.rope_theta, cfg.rope_scaling))
    elif cfg.model_type == "gemma2":
        d.update(architectures=["Gemma2Model"], hidden_activation=cfg.hidden_act,
                 query_pre_attn_scalar=_number(cfg.query_pre_attn_scalar), layer_types=list(cfg.layer_types),
                 sliding_window=cfg.sliding_window, attn_logit_softcapping=cfg.attn_logit_softcapping,
                 rope_parameters=_rope_entry(cfg.rope_theta, cfg.rope_scaling))
    else:
        d.update(architectures=["Gemma3TextModel"], hidden_activation=cfg.hidden_act,
                 query_pre_attn_scalar=_number(cfg.query_pre_attn_scalar), layer_types=list(cfg.layer_types),
                 sliding_window=cfg.sliding_window, use_bidirectional_attention=cfg.bidirectional,
                 rope_parameters={GLOBAL: _rope_entry(cfg.rope_theta, cfg.rope_scaling),
                                  LOCAL: _rope_entry(cfg.rope_local_theta)})
    return {**cfg.extra, **d}


register("gemma3_text", Family("Gemma 3 text", parse_gemma_config, GemmaModel, gemma_key_map, "embed_tokens.weight",
                               gemma_to_hf_config, pooling="mean", ignore_prefixes=_HEADS))
register("gemma2", Family("Gemma 2", parse_gemma_config, GemmaModel, gemma_key_map, "embed_tokens.weight",
                          gemma_to_hf_config, pooling="last", ignore_prefixes=_HEADS))
register("gemma", Family("Gemma", parse_gemma_config, GemmaModel, gemma_key_map, "embed_tokens.weight",
                         gemma_to_hf_config, pooling="last", ignore_prefixes=_HEADS))
