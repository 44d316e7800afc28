"""Checkpoint format of MPNet (microsoft/mpnet-base, sentence-transformers/all-mpnet-base-v2,
multi-qa-mpnet-base-*): config parsing and the tensor-name map between Hugging Face files and models/mpnet.py."""
from __future__ import annotations

from encoderkit.checkpoints.registry import Family, register
from encoderkit.checkpoints.weights import CheckpointError
from encoderkit.models.mpnet import NUM_BUCKETS, MPNetConfig, MPNetModel

# tensors of task models beside the encoder (MPNetModel's pooler, MPNetForMaskedLM's lm_head, classifiers)
_HEADS = ("pooler.", "lm_head.", "classifier.", "qa_outputs.")


def parse_mpnet_config(c: dict) -> MPNetConfig:
    """Hugging Face config.json (model_type "mpnet") -> MPNetConfig."""
    buckets = c.get("relative_attention_num_buckets", NUM_BUCKETS)
    if buckets != NUM_BUCKETS:
        raise CheckpointError(f"config.json: relative_attention_num_buckets={buckets} is not supported for mpnet: "
                              f"the reference model always buckets relative positions into {NUM_BUCKETS}")
    try:
        return MPNetConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
            num_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
            hidden_act=c.get("hidden_act", "gelu"), max_position_embeddings=c.get("max_position_embeddings", 512),
            layer_norm_eps=c.get("layer_norm_eps", 1e-12), relative_attention_num_buckets=buckets,
            pad_token_id=1 if c.get("pad_token_id") is None else c["pad_token_id"],
            dropout=c.get("hidden_dropout_prob", 0.1), attention_dropout=c.get("attention_probs_dropout_prob", 0.1),
            extra={k: c[k] for k in ("bos_token_id", "eos_token_id", "initializer_range") if k in c},
        )
    except KeyError as exc:
        raise CheckpointError(f"config.json for model_type 'mpnet' lacks the field {exc.args[0]!r}") from None


def _wb(ours: str, theirs: str) -> dict[str, str]:
    return {f"{ours}.weight": f"{theirs}.weight", f"{ours}.bias": f"{theirs}.bias"}


def mpnet_key_map(cfg: MPNetConfig) -> dict:
    """Our names -> Hugging Face MPNetModel names (relative to the backbone prefix, "" or "mpnet.")."""
    m: dict = {"embeddings.word.weight": "embeddings.word_embeddings.weight",
               "embeddings.position.weight": "embeddings.position_embeddings.weight",
               "relative_bias.bias.weight": "encoder.relative_attention_bias.weight"}
    m.update(_wb("embeddings.norm", "embeddings.LayerNorm"))
    for i in range(cfg.num_layers):
        o, t = f"encoder.layers.{i}", f"encoder.layer.{i}"
        a = f"{t}.attention.attn"
        m.update({f"{o}.attn.qkv.{p}": (f"{a}.q.{p}", f"{a}.k.{p}", f"{a}.v.{p}") for p in ("weight", "bias")})
        m.update(_wb(f"{o}.attn.o", f"{a}.o") | _wb(f"{o}.ln1", f"{t}.attention.LayerNorm"))
        m.update(_wb(f"{o}.ffn.fc1", f"{t}.intermediate.dense") | _wb(f"{o}.ffn.fc2", f"{t}.output.dense"))
        m.update(_wb(f"{o}.ln2", f"{t}.output.LayerNorm"))
    return m


def mpnet_to_hf_config(cfg: MPNetConfig) -> dict:
    """MPNetConfig -> a config.json that transformers' AutoModel builds the same network from."""
    d = {"model_type": "mpnet", "architectures": ["MPNetModel"], "vocab_size": cfg.vocab_size,
         "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
         "intermediate_size": cfg.intermediate_size, "hidden_act": cfg.hidden_act,
         "max_position_embeddings": cfg.max_position_embeddings, "layer_norm_eps": cfg.layer_norm_eps,
         "relative_attention_num_buckets": cfg.relative_attention_num_buckets, "pad_token_id": cfg.pad_token_id,
         "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.attention_dropout}
    return {**cfg.extra, **d}


register("mpnet", Family("MPNet", parse_mpnet_config, MPNetModel, mpnet_key_map, "embeddings.word_embeddings.weight",
                         mpnet_to_hf_config, ignore_prefixes=_HEADS))
