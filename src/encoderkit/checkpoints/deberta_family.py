"""Checkpoint format of DeBERTa-v2 / v3: config parsing and the tensor-name map to models/deberta.py."""
from __future__ import annotations

from encoderkit.checkpoints.bert_family import _COMMON_HEADS, _qkv, _wb
from encoderkit.checkpoints.registry import Family, register
from encoderkit.checkpoints.weights import CheckpointError
from encoderkit.models.deberta import DebertaV2Config, DebertaV2Model


def parse_deberta_v2_config(c: dict) -> DebertaV2Config:
    try:
        pat = c.get("pos_att_type") or []
        if isinstance(pat, str):
            pat = [p.strip() for p in pat.lower().split("|") if p.strip()]
        norm = c.get("norm_rel_ebd", "none")
        H = c["hidden_size"]
        cfg = DebertaV2Config(
            vocab_size=c["vocab_size"], hidden_size=H, num_layers=c["num_hidden_layers"],
            num_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
            hidden_act=c.get("hidden_act", "gelu"), max_position_embeddings=c.get("max_position_embeddings", 512),
            type_vocab_size=c.get("type_vocab_size", 0), layer_norm_eps=c.get("layer_norm_eps", 1e-7),
            pad_token_id=c.get("pad_token_id", 0) or 0,
            embedding_size=c.get("embedding_size") if c.get("embedding_size", H) != H else None,
            position_biased_input=c.get("position_biased_input", True), relative_attention=c.get("relative_attention", False),
            pos_att_type=tuple(pat), max_relative_positions=c.get("max_relative_positions", -1),
            position_buckets=c.get("position_buckets", -1), share_att_key=c.get("share_att_key", False),
            norm_rel_ebd="layer_norm" in [x.strip() for x in str(norm).lower().split("|")],
            conv_kernel_size=c.get("conv_kernel_size", 0), conv_groups=c.get("conv_groups", 1),
            conv_act=c.get("conv_act", "tanh"), extra=dict(c))
    except KeyError as exc:
        raise CheckpointError(f"config.json for model_type 'deberta-v2' lacks the field {exc.args[0]!r}") from None
    bad = set(cfg.pos_att_type) - {"c2p", "p2c"}
    if bad:
        raise CheckpointError(f"config.json: unsupported pos_att_type {sorted(bad)}; DeBERTa-v2 knows c2p and p2c")
    return cfg


def deberta_key_map(cfg: DebertaV2Config) -> dict:
    m: dict = {"word.weight": "embeddings.word_embeddings.weight", **_wb("emb_norm", "embeddings.LayerNorm")}
    if cfg.position_biased_input:
        m["position.weight"] = "embeddings.position_embeddings.weight"
    if cfg.type_vocab_size > 0:
        m["token_type.weight"] = "embeddings.token_type_embeddings.weight"
    if cfg.embedding_size:
        m["project.weight"] = "embeddings.embed_proj.weight"
    if cfg.relative_attention:
        m["rel_embeddings.weight"] = "encoder.rel_embeddings.weight"
        if cfg.norm_rel_ebd:
            m.update(_wb("rel_norm", "encoder.LayerNorm"))
    if cfg.conv_kernel_size > 0:
        m.update(_wb("conv", "encoder.conv.conv") | _wb("conv_norm", "encoder.conv.LayerNorm"))
    for i in range(cfg.num_layers):
        t, o = f"encoder.layer.{i}", f"layers.{i}"
        a = f"{t}.attention.self"
        m.update(_qkv(f"{o}.attn.qkv", f"{a}.query_proj", f"{a}.key_proj", f"{a}.value_proj"))
        m.update(_wb(f"{o}.attn.o", f"{t}.attention.output.dense") | _wb(f"{o}.ln1", f"{t}.attention.output.LayerNorm"))
        m.update(_wb(f"{o}.ffn.fc1", f"{t}.intermediate.dense") | _wb(f"{o}.ffn.fc2", f"{t}.output.dense"))
        m.update(_wb(f"{o}.ln2", f"{t}.output.LayerNorm"))
        if cfg.relative_attention and not cfg.share_att_key:
            if "c2p" in cfg.pos_att_type:
                m.update(_wb(f"{o}.attn.pos_key", f"{a}.pos_key_proj"))
            if "p2c" in cfg.pos_att_type:
                m.update(_wb(f"{o}.attn.pos_query", f"{a}.pos_query_proj"))
    return m


def deberta_to_hf_config(cfg: DebertaV2Config) -> dict:
    return {**cfg.extra, "model_type": "deberta-v2"}


register("deberta-v2", Family("DeBERTa-v2", parse_deberta_v2_config, DebertaV2Model, deberta_key_map,
                              "embeddings.word_embeddings.weight", deberta_to_hf_config,
                              ignore_prefixes=_COMMON_HEADS + ("mask_predictions.", "lm_predictions.")))
