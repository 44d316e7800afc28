"""Checkpoint formats of the image backbones ViT, Swin and ResNet: config parsing, tensor-name maps between
Hugging Face files and models/{vit,swin,resnet}.py, and the image processor from preprocessor_config.json."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from encoderkit.checkpoints.bert_family import _qkv, _wb
from encoderkit.checkpoints.registry import Family, register
from encoderkit.checkpoints.weights import CheckpointError
from encoderkit.models.resnet import ResNetConfig, ResNetModel
from encoderkit.models.swin import SwinConfig, SwinModel
from encoderkit.models.vit import ViTConfig, VisionTransformer


def _need(c: dict, *names: str) -> None:
    for n in names:
        if n not in c:
            raise CheckpointError(f"config.json for model_type {c.get('model_type')!r} lacks the field {n!r}")


def image_processor(folder: Path, cfg: Any, modality: str = "image"):
    """The ImageProcessor of a model folder (preprocessor_config.json), defaulting to the model's input size."""
    from encoderkit.processors.image import ImageProcessor

    size = getattr(cfg, "image_size", None) or getattr(getattr(cfg, "vision", None), "image_size", 224)
    return ImageProcessor.from_folder(folder, default_size=size)


def _ln(ours: str, theirs: str) -> dict[str, str]:
    return _wb(ours, theirs)


def _pre_norm_layer(o: str, q: str, k: str, v: str, out: str, ln1: str, ln2: str, fc1: str, fc2: str) -> dict:
    """Key map of one pre-norm EncoderLayer (attn.qkv, attn.o, ln1, ln2, ffn.fc1, ffn.fc2)."""
    m = _qkv(f"{o}.attn.qkv", q, k, v)
    m.update(_wb(f"{o}.attn.o", out) | _wb(f"{o}.ln1", ln1) | _wb(f"{o}.ln2", ln2))
    return m | _wb(f"{o}.ffn.fc1", fc1) | _wb(f"{o}.ffn.fc2", fc2)


# ------------------------------------------------------------------------------------------------ ViT
def parse_vit_config(c: dict) -> ViTConfig:
    _need(c, "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    return ViTConfig(image_size=c.get("image_size", 224), patch_size=c.get("patch_size", 16),
                     num_channels=c.get("num_channels", 3), hidden_size=c["hidden_size"],
                     num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
                     intermediate_size=c["intermediate_size"], hidden_act=c.get("hidden_act", "gelu"),
                     layer_norm_eps=c.get("layer_norm_eps", 1e-12), qkv_bias=c.get("qkv_bias", True),
                     model_type="vit", extra=dict(c))


def vit_key_map(cfg: ViTConfig) -> dict:
    m: dict = {"cls": "embeddings.cls_token", "position": "embeddings.position_embeddings",
               **_wb("patch.proj", "embeddings.patch_embeddings.projection"), **_ln("norm", "layernorm")}
    for i in range(cfg.num_layers):
        t = f"encoder.layer.{i}"
        a = f"{t}.attention.attention"
        m.update(_pre_norm_layer(f"encoder.layers.{i}", f"{a}.query", f"{a}.key", f"{a}.value", f"{t}.attention.output.dense",
                                 f"{t}.layernorm_before", f"{t}.layernorm_after", f"{t}.intermediate.dense", f"{t}.output.dense"))
    if not cfg.qkv_bias:
        for k in [k for k in m if k.endswith("attn.qkv.bias")]:
            del m[k]
    return m


def vit_to_hf_config(cfg: ViTConfig) -> dict:
    return {**cfg.extra, "model_type": "vit", "architectures": ["ViTModel"], "image_size": cfg.image_size,
            "patch_size": cfg.patch_size, "num_channels": cfg.num_channels, "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
            "intermediate_size": cfg.intermediate_size, "hidden_act": cfg.hidden_act,
            "layer_norm_eps": cfg.layer_norm_eps, "qkv_bias": cfg.qkv_bias}


# ------------------------------------------------------------------------------------------------ Swin
def parse_swin_config(c: dict) -> SwinConfig:
    _need(c, "embed_dim", "depths", "num_heads")
    if not c.get("qkv_bias", True):
        raise CheckpointError("config.json: Swin with qkv_bias=false is not supported")
    img, patch = c.get("image_size", 224), c.get("patch_size", 4)
    if isinstance(img, (list, tuple)) or isinstance(patch, (list, tuple)):
        if len(set(img if isinstance(img, (list, tuple)) else [img])) > 1:
            raise CheckpointError("config.json: only square Swin inputs are supported")
        img = img[0] if isinstance(img, (list, tuple)) else img
        patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    return SwinConfig(image_size=img, patch_size=patch, num_channels=c.get("num_channels", 3), embed_dim=c["embed_dim"],
                      depths=list(c["depths"]), num_heads=list(c["num_heads"]), window_size=c.get("window_size", 7),
                      mlp_ratio=c.get("mlp_ratio", 4.0), hidden_act=c.get("hidden_act", "gelu"),
                      layer_norm_eps=c.get("layer_norm_eps", 1e-5),
                      use_absolute_embeddings=c.get("use_absolute_embeddings", False), extra=dict(c))


def swin_key_map(cfg: SwinConfig) -> dict:
    m: dict = {**_wb("patch.proj", "embeddings.patch_embeddings.projection"), **_ln("patch_norm", "embeddings.norm"),
               **_ln("norm", "layernorm")}
    if cfg.use_absolute_embeddings:
        m["position"] = "embeddings.position_embeddings"
    for s, depth in enumerate(cfg.depths):
        for i in range(depth):
            t = f"encoder.layers.{s}.blocks.{i}"
            a = f"{t}.attention.self"
            o = f"stages.{s}.{i}"
            m.update(_pre_norm_layer(o, f"{a}.query", f"{a}.key", f"{a}.value", f"{t}.attention.output.dense",
                                     f"{t}.layernorm_before", f"{t}.layernorm_after", f"{t}.intermediate.dense",
                                     f"{t}.output.dense"))
            m[f"{o}.rel_bias.table"] = f"{a}.relative_position_bias_table"
        if s < len(cfg.depths) - 1:
            m.update(_ln(f"merges.{s}.norm", f"encoder.layers.{s}.downsample.norm"))
            m[f"merges.{s}.reduction.weight"] = f"encoder.layers.{s}.downsample.reduction.weight"
    return m


def swin_to_hf_config(cfg: SwinConfig) -> dict:
    return {**cfg.extra, "model_type": "swin", "image_size": cfg.image_size, "patch_size": cfg.patch_size,
            "embed_dim": cfg.embed_dim, "depths": cfg.depths, "num_heads": cfg.num_heads, "window_size": cfg.window_size}


# ------------------------------------------------------------------------------------------------ ResNet
def parse_resnet_config(c: dict) -> ResNetConfig:
    _need(c, "hidden_sizes", "depths")
    return ResNetConfig(num_channels=c.get("num_channels", 3), embedding_size=c.get("embedding_size", 64),
                        hidden_sizes=list(c["hidden_sizes"]), depths=list(c["depths"]),
                        layer_type=c.get("layer_type", "bottleneck"), hidden_act=c.get("hidden_act", "relu"),
                        downsample_in_first_stage=c.get("downsample_in_first_stage", False),
                        downsample_in_bottleneck=c.get("downsample_in_bottleneck", False), extra=dict(c))


def _bn(ours: str, theirs: str) -> dict[str, str]:
    return {f"{ours}.{n}": f"{theirs}.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def _convbn(ours: str, theirs: str) -> dict[str, str]:
    return {f"{ours}.conv.weight": f"{theirs}.convolution.weight", **_bn(f"{ours}.bn", f"{theirs}.normalization")}


def resnet_key_map(cfg: ResNetConfig) -> dict:
    m = _convbn("stem", "embedder.embedder")
    c_in = cfg.embedding_size
    n_convs = 3 if cfg.layer_type == "bottleneck" else 2
    for s, (c_out, depth) in enumerate(zip(cfg.hidden_sizes, cfg.depths)):
        for b in range(depth):
            t, o = f"encoder.stages.{s}.layers.{b}", f"stages.{s}.{b}"
            for j in range(n_convs):
                m.update(_convbn(f"{o}.f.{j}", f"{t}.layer.{j}"))
            stride = 2 if (b == 0 and (s > 0 or cfg.downsample_in_first_stage)) else 1
            if b == 0 and (c_in != c_out or stride != 1):
                m[f"{o}.shortcut.0.weight"] = f"{t}.shortcut.convolution.weight"
                m.update(_bn(f"{o}.shortcut.1", f"{t}.shortcut.normalization"))
        c_in = c_out
    return m


def resnet_to_hf_config(cfg: ResNetConfig) -> dict:
    return {**cfg.extra, "model_type": "resnet", "embedding_size": cfg.embedding_size, "hidden_sizes": cfg.hidden_sizes,
            "depths": cfg.depths, "layer_type": cfg.layer_type}


register("vit", Family("ViT", parse_vit_config, VisionTransformer, vit_key_map, "embeddings.cls_token",
                       vit_to_hf_config, modality="image", pooling="cls", ignore_prefixes=("pooler.", "classifier."),
                       make_processor=image_processor))
register("swin", Family("Swin", parse_swin_config, SwinModel, swin_key_map, "embeddings.patch_embeddings.projection.weight",
                        swin_to_hf_config, modality="image", ignore_prefixes=("classifier.",), make_processor=image_processor))
register("resnet", Family("ResNet", parse_resnet_config, ResNetModel, resnet_key_map,
                          "embedder.embedder.convolution.weight", resnet_to_hf_config, modality="image",
                          pooling="mean", ignore_prefixes=("classifier.",), make_processor=image_processor))
