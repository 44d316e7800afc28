"""Checkpoint formats of the T5 encoder family (T5, T5 v1.1, mT5, UMT5; sentence-T5, GTR): config parsing and
the tensor-name map between Hugging Face files and models/t5.py. Only the encoder is read: a full T5Model /
T5ForConditionalGeneration file loads too, its decoder and LM head are ignored."""
from __future__ import annotations

from encoderkit.checkpoints.registry import Family, register
from encoderkit.checkpoints.weights import CheckpointError
from encoderkit.models.t5 import T5Config, T5EncoderModel

# tensors of a full seq2seq or task checkpoint that the encoder does not use (not an error)
_NOT_ENCODER = ("decoder.", "lm_head.", "encoder.embed_tokens.", "classification_head.", "qa_outputs.", "classifier.")

_ARCHITECTURES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


def parse_t5_config(c: dict) -> T5Config:
    """Hugging Face config.json (t5 / mt5 / umt5) -> T5Config."""
    mt = c.get("model_type", "t5")
    try:
        return T5Config(
            vocab_size=c["vocab_size"], hidden_size=c["d_model"], num_layers=c["num_layers"],
            num_heads=c["num_heads"], head_dim=c["d_kv"], intermediate_size=c["d_ff"],
            feed_forward_proj=c.get("feed_forward_proj", "relu" if mt == "t5" else "gated-gelu"),
            relative_attention_num_buckets=c.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=c.get("relative_attention_max_distance", 128),
            per_layer_position_bias=mt == "umt5", layer_norm_eps=c.get("layer_norm_epsilon", 1e-6),
            dropout=c.get("dropout_rate", 0.1), max_position_embeddings=c.get("n_positions") or 512,
            pad_token_id=c.get("pad_token_id") if c.get("pad_token_id") is not None else 0, model_type=mt,
        )
    except KeyError as exc:
        raise CheckpointError(f"config.json for model_type {mt!r} lacks the field {exc.args[0]!r}") from None
    except ValueError as exc:
        raise CheckpointError(f"config.json: {exc}") from None


def t5_key_map(cfg: T5Config) -> dict:
    """Our names -> Hugging Face names (relative to the backbone prefix) of the encoder half."""
    m: dict = {"embed.weight": "shared.weight", "final_norm.weight": "encoder.final_layer_norm.weight"}
    for i in range(cfg.num_layers):
        o, t = f"layers.{i}", f"encoder.block.{i}.layer"
        a = f"{t}.0.SelfAttention"
        m[f"{o}.ln1.weight"] = f"{t}.0.layer_norm.weight"
        m[f"{o}.attn.qkv.weight"] = (f"{a}.q.weight", f"{a}.k.weight", f"{a}.v.weight")
        m[f"{o}.attn.o.weight"] = f"{a}.o.weight"
        m[f"{o}.ln2.weight"] = f"{t}.1.layer_norm.weight"
        f = f"{t}.1.DenseReluDense"
        if cfg.gated:  # our fused wi = [W_gate; W_up] = [wi_0; wi_1] (act on wi_0)
            m[f"{o}.ffn.wi.weight"] = (f"{f}.wi_0.weight", f"{f}.wi_1.weight")
            m[f"{o}.ffn.wo.weight"] = f"{f}.wo.weight"
        else:
            m[f"{o}.ffn.fc1.weight"] = f"{f}.wi.weight"
            m[f"{o}.ffn.fc2.weight"] = f"{f}.wo.weight"
    for i in range(cfg.num_layers if cfg.per_layer_position_bias else 1):
        m[f"position_bias.{i}.bias.weight"] = f"encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"
    return m


def t5_rename_state(state: dict) -> dict:
    """Older files (and some exports) keep the token table as encoder.embed_tokens.weight, not shared.weight."""
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in state:
        state = {**state, "shared.weight": state["encoder.embed_tokens.weight"]}
    return state


def t5_to_hf_config(cfg: T5Config) -> dict:
    """T5Config -> a config.json that transformers' T5EncoderModel (MT5 / UMT5 likewise) builds the same encoder from."""
    d = {"model_type": cfg.model_type, "architectures": [_ARCHITECTURES[cfg.model_type]], "vocab_size": cfg.vocab_size,
         "d_model": cfg.hidden_size, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads, "d_kv": cfg.head_dim,
         "d_ff": cfg.intermediate_size, "feed_forward_proj": cfg.feed_forward_proj,
         "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
         "relative_attention_max_distance": cfg.relative_attention_max_distance,
         "layer_norm_epsilon": cfg.layer_norm_eps, "dropout_rate": cfg.dropout, "n_positions": cfg.max_position_embeddings,
         "pad_token_id": cfg.pad_token_id, "eos_token_id": cfg.extra.get("eos_token_id", 1),
         "is_encoder_decoder": False, "use_cache": False}
    return {**cfg.extra, **d}


register(tuple(_ARCHITECTURES), Family(
    "T5 encoder family", parse_t5_config, T5EncoderModel, t5_key_map, "encoder.final_layer_norm.weight",
    t5_to_hf_config, pooling="mean", ignore_prefixes=_NOT_ENCODER, rename_state=t5_rename_state))
