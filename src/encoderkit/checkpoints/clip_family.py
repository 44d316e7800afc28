"""Checkpoint formats of the image-text dual encoders CLIP and SigLIP: config parsing (text_config /
vision_config), the tensor-name map to models/clip.py, and the choice of tower for an Encoder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from encoderkit.checkpoints.bert_family import _wb
from encoderkit.checkpoints.registry import Family, register
from encoderkit.checkpoints.vision_family import _pre_norm_layer
from encoderkit.checkpoints.weights import CheckpointError
from encoderkit.models.clip import DualEncoder, DualEncoderConfig, TextTowerConfig, Tower
from encoderkit.models.vit import ViTConfig

# transformers' defaults for fields a config.json may leave out
_DEFAULTS = {
    "clip": dict(text=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                           num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                           layer_norm_eps=1e-5, eos_token_id=2, pad_token_id=1),
                 vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                             image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5, num_channels=3)),
    "siglip": dict(text=dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                             num_attention_heads=12, max_position_embeddings=64, hidden_act="gelu_pytorch_tanh",
                             layer_norm_eps=1e-6, eos_token_id=2, pad_token_id=1),
                   vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                               num_channels=3)),
}


def parse_dual_config(c: dict) -> DualEncoderConfig:
    """CLIP / SigLIP config.json -> DualEncoderConfig."""
    style = c.get("model_type", "clip")
    if style not in _DEFAULTS:
        raise CheckpointError(f"config.json: model_type {style!r} is not a CLIP-style dual encoder")
    t = {**_DEFAULTS[style]["text"], **{k: v for k, v in (c.get("text_config") or {}).items() if v is not None}}
    v = {**_DEFAULTS[style]["vision"], **{k: v for k, v in (c.get("vision_config") or {}).items() if v is not None}}
    if style == "siglip" and not v.get("vision_use_head", True):
        raise CheckpointError("config.json: SigLIP without the attention-pooling head (vision_use_head=false) is not supported")
    text = TextTowerConfig(vocab_size=t["vocab_size"], hidden_size=t["hidden_size"], num_layers=t["num_hidden_layers"],
                           num_heads=t["num_attention_heads"], intermediate_size=t["intermediate_size"],
                           hidden_act=t["hidden_act"], layer_norm_eps=t["layer_norm_eps"],
                           max_position_embeddings=t["max_position_embeddings"], causal=style == "clip",
                           pooling="eos" if style == "clip" else "last", eos_token_id=t["eos_token_id"],
                           pad_token_id=t["pad_token_id"],
                           head_size=t.get("projection_size", t["hidden_size"]) if style == "siglip" else 0)
    vision = ViTConfig(image_size=v["image_size"], patch_size=v["patch_size"], num_channels=v["num_channels"],
                       hidden_size=v["hidden_size"], num_layers=v["num_hidden_layers"], num_heads=v["num_attention_heads"],
                       intermediate_size=v["intermediate_size"], hidden_act=v["hidden_act"],
                       layer_norm_eps=v["layer_norm_eps"], patch_bias=style == "siglip", cls_token=style == "clip",
                       pre_norm=style == "clip", final_norm="cls" if style == "clip" else "all", flat_embeddings=True,
                       model_type=style)
    return DualEncoderConfig(text=text, vision=vision, projection_dim=c.get("projection_dim", 512), style=style,
                             logit_scale_init=c.get("logit_scale_init_value", 2.6592), model_type=style, extra=dict(c))


def _encoder_layers(ours: str, theirs: str, n: int) -> dict:
    m: dict = {}
    for i in range(n):
        t = f"{theirs}.encoder.layers.{i}"
        a = f"{t}.self_attn"
        m.update(_pre_norm_layer(f"{ours}.encoder.layers.{i}", f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj", f"{a}.out_proj",
                                 f"{t}.layer_norm1", f"{t}.layer_norm2", f"{t}.mlp.fc1", f"{t}.mlp.fc2"))
    return m


def dual_key_map(cfg: DualEncoderConfig) -> dict:
    clip = cfg.style == "clip"
    m: dict = {"text.token.weight": "text_model.embeddings.token_embedding.weight",
               "text.position.weight": "text_model.embeddings.position_embedding.weight",
               **_wb("text.encoder.final_norm", "text_model.final_layer_norm"),
               "vision.position": "vision_model.embeddings.position_embedding.weight",
               "vision.patch.proj.weight": "vision_model.embeddings.patch_embedding.weight",
               **_wb("vision.norm", "vision_model.post_layernorm"), "logit_scale": "logit_scale"}
    m.update(_encoder_layers("text", "text_model", cfg.text.num_layers))
    m.update(_encoder_layers("vision", "vision_model", cfg.vision.num_layers))
    if clip:
        m.update({"vision.cls": "vision_model.embeddings.class_embedding", **_wb("vision.pre_norm", "vision_model.pre_layrnorm"),
                  "visual_projection.weight": "visual_projection.weight", "text_projection.weight": "text_projection.weight"})
    else:
        h = "vision_model.head"
        m.update({"vision.patch.proj.bias": "vision_model.embeddings.patch_embedding.bias", **_wb("text.head", "text_model.head"),
                  "map_head.probe": f"{h}.probe", "map_head.in_proj.weight": f"{h}.attention.in_proj_weight",
                  "map_head.in_proj.bias": f"{h}.attention.in_proj_bias", **_wb("map_head.out_proj", f"{h}.attention.out_proj"),
                  **_wb("map_head.norm", f"{h}.layernorm"), **_wb("map_head.mlp.fc1", f"{h}.mlp.fc1"),
                  **_wb("map_head.mlp.fc2", f"{h}.mlp.fc2"), "logit_bias": "logit_bias"})
    return m



def dual_to_hf_config(cfg: DualEncoderConfig) -> dict:
    """DualEncoderConfig -> a CLIP / SigLIP config.json (for models trained here; loaded ones keep their own)."""
    if cfg.extra:
        return dict(cfg.extra)
    t, v, clip = cfg.text, cfg.vision, cfg.style == "clip"
    text = {"vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_layers, "num_attention_heads": t.num_heads,
            "max_position_embeddings": t.max_position_embeddings, "hidden_act": t.hidden_act,
            "layer_norm_eps": t.layer_norm_eps, "eos_token_id": t.eos_token_id, "pad_token_id": t.pad_token_id,
            "bos_token_id": None}
    if not clip:
        text["projection_size"] = t.head_size
    vision = {"hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size, "num_hidden_layers": v.num_layers,
              "num_attention_heads": v.num_heads, "image_size": v.image_size, "patch_size": v.patch_size,
              "num_channels": v.num_channels, "hidden_act": v.hidden_act, "layer_norm_eps": v.layer_norm_eps}
    d = {"model_type": cfg.style, "architectures": ["CLIPModel" if clip else "SiglipModel"], "text_config": text,
         "vision_config": vision}
    if clip:
        d.update(projection_dim=cfg.projection_dim, logit_scale_init_value=cfg.logit_scale_init)
    return d


def dual_processor(folder: Path, cfg: DualEncoderConfig, modality: str = "image") -> Any:
    """Images: the folder's preprocessor_config.json; text goes through the tokenizer (no processor)."""
    if modality != "image":
        return None
    from encoderkit.processors.image import ImageProcessor

    return ImageProcessor.from_folder(folder, default_size=cfg.vision.image_size)


for _style in ("clip", "siglip"):
    register(_style, Family("CLIP" if _style == "clip" else "SigLIP", parse_dual_config, DualEncoder, dual_key_map,
                            "vision_model.embeddings.patch_embedding.weight", dual_to_hf_config, modality="text",
                            make_processor=dual_processor, towers=("text", "image"), tower=Tower))
