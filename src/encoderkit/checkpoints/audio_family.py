"""Checkpoint formats of the audio encoders: Whisper (encoder half of WhisperModel), wav2vec 2.0 and HuBERT;
config parsing, tensor-name maps to models/{whisper,wav2vec2}.py, and their feature extractors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from encoderkit.checkpoints.bert_family import _qkv, _wb
from encoderkit.checkpoints.registry import Family, register
from encoderkit.checkpoints.weights import CheckpointError
from encoderkit.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
from encoderkit.models.whisper import WhisperEncoder, WhisperEncoderConfig


def _need(c: dict, *names: str) -> None:
    for n in names:
        if n not in c:
            raise CheckpointError(f"config.json for model_type {c.get('model_type')!r} lacks the field {n!r}")


# ------------------------------------------------------------------------------------------------ Whisper
def parse_whisper_config(c: dict) -> WhisperEncoderConfig:
    _need(c, "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim")
    return WhisperEncoderConfig(num_mel_bins=c.get("num_mel_bins", 80), d_model=c["d_model"],
                                encoder_layers=c["encoder_layers"], encoder_attention_heads=c["encoder_attention_heads"],
                                encoder_ffn_dim=c["encoder_ffn_dim"], activation_function=c.get("activation_function", "gelu"),
                                max_source_positions=c.get("max_source_positions", 1500), extra=dict(c))


def whisper_key_map(cfg: WhisperEncoderConfig) -> dict:
    e = "encoder"
    m: dict = {**_wb("conv1", f"{e}.conv1"), **_wb("conv2", f"{e}.conv2"), "position": f"{e}.embed_positions.weight",
               **_wb("encoder.final_norm", f"{e}.layer_norm")}
    for i in range(cfg.encoder_layers):
        t, o = f"{e}.layers.{i}", f"encoder.layers.{i}"
        a = f"{t}.self_attn"
        m[f"{o}.attn.qkv.weight"] = (f"{a}.q_proj.weight", f"{a}.k_proj.weight", f"{a}.v_proj.weight")
        m[f"{o}.attn.qkv.q_bias"] = f"{a}.q_proj.bias"
        m[f"{o}.attn.qkv.v_bias"] = f"{a}.v_proj.bias"
        m.update(_wb(f"{o}.attn.o", f"{a}.out_proj") | _wb(f"{o}.ln1", f"{t}.self_attn_layer_norm"))
        m.update(_wb(f"{o}.ln2", f"{t}.final_layer_norm") | _wb(f"{o}.ffn.fc1", f"{t}.fc1") | _wb(f"{o}.ffn.fc2", f"{t}.fc2"))
    return m


def whisper_processor(folder: Path, cfg: Any, modality: str = "audio"):
    from encoderkit.processors.audio import LogMelProcessor

    proc = LogMelProcessor.from_folder(folder)
    frames = proc.n_samples // proc.hop_length
    if frames != 2 * cfg.max_source_positions or proc.feature_size != cfg.num_mel_bins:
        raise CheckpointError(f"{folder}: preprocessor_config.json gives {proc.feature_size} x {frames} log-Mel frames, "
                              f"the model expects {cfg.num_mel_bins} x {2 * cfg.max_source_positions}")
    return proc


# ------------------------------------------------------------------------------------------------ wav2vec 2.0 / HuBERT
def parse_wav2vec2_config(c: dict) -> Wav2Vec2Config:
    _need(c, "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    if c.get("conv_pos_batch_norm"):
        raise CheckpointError("config.json: HuBERT with conv_pos_batch_norm=true is not supported")
    return Wav2Vec2Config(conv_dim=list(c.get("conv_dim", [512] * 7)), conv_kernel=list(c.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2])),
                          conv_stride=list(c.get("conv_stride", [5, 2, 2, 2, 2, 2, 2])), conv_bias=c.get("conv_bias", False),
                          feat_extract_norm=c.get("feat_extract_norm", "group"),
                          feat_extract_activation=c.get("feat_extract_activation", "gelu"),
                          feat_proj_layer_norm=c.get("feat_proj_layer_norm", True), hidden_size=c["hidden_size"],
                          num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
                          intermediate_size=c["intermediate_size"], hidden_act=c.get("hidden_act", "gelu"),
                          layer_norm_eps=c.get("layer_norm_eps", 1e-5),
                          num_conv_pos_embeddings=c.get("num_conv_pos_embeddings", 128),
                          num_conv_pos_embedding_groups=c.get("num_conv_pos_embedding_groups", 16),
                          do_stable_layer_norm=c.get("do_stable_layer_norm", False), model_type=c.get("model_type", "wav2vec2"),
                          extra=dict(c))


def wav2vec2_key_map(cfg: Wav2Vec2Config) -> dict:
    m: dict = {}
    for i in range(len(cfg.conv_dim)):
        t = f"feature_extractor.conv_layers.{i}"
        m[f"features.convs.{i}.weight"] = f"{t}.conv.weight"
        if cfg.conv_bias:
            m[f"features.convs.{i}.bias"] = f"{t}.conv.bias"
        if cfg.feat_extract_norm == "layer" or i == 0:
            m.update(_wb(f"features.norms.{i}", f"{t}.layer_norm"))
    if cfg.feat_proj_layer_norm:
        m.update(_wb("feat_norm", "feature_projection.layer_norm"))
    m.update(_wb("feat_proj", "feature_projection.projection") | _wb("norm", "encoder.layer_norm"))
    pc = "encoder.pos_conv_embed.conv"
    m.update({"pos_conv.weight_g": f"{pc}.parametrizations.weight.original0",
              "pos_conv.weight_v": f"{pc}.parametrizations.weight.original1", "pos_conv.bias": f"{pc}.bias"})
    for i in range(cfg.num_layers):
        t, o = f"encoder.layers.{i}", f"encoder.layers.{i}"
        a = f"{t}.attention"
        m.update(_qkv(f"{o}.attn.qkv", f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj") | _wb(f"{o}.attn.o", f"{a}.out_proj"))
        m.update(_wb(f"{o}.ln1", f"{t}.layer_norm") | _wb(f"{o}.ln2", f"{t}.final_layer_norm"))
        m.update(_wb(f"{o}.ffn.fc1", f"{t}.feed_forward.intermediate_dense") | _wb(f"{o}.ffn.fc2", f"{t}.feed_forward.output_dense"))
    return m


def rename_legacy_weight_norm(state: dict) -> dict:
    """Checkpoints saved before torch's parametrized weight_norm name the positional conv weight_g / weight_v."""
    out = {}
    for k, v in state.items():
        k = k.replace("pos_conv_embed.conv.weight_g", "pos_conv_embed.conv.parametrizations.weight.original0")
        out[k.replace("pos_conv_embed.conv.weight_v", "pos_conv_embed.conv.parametrizations.weight.original1")] = v
    return out


def waveform_processor(folder: Path, cfg: Any, modality: str = "audio"):
    from encoderkit.processors.audio import WaveformProcessor

    return WaveformProcessor.from_folder(folder)


def _to_hf(cfg: Any) -> dict:
    return dict(cfg.extra) or {"model_type": cfg.model_type}


register("whisper", Family("Whisper encoder", parse_whisper_config, WhisperEncoder, whisper_key_map, "encoder.conv1.weight",
                           _to_hf, modality="audio", ignore_prefixes=("decoder.", "proj_out.", "model.decoder."),
                           make_processor=whisper_processor))
for _t in ("wav2vec2", "hubert"):
    register(_t, Family("wav2vec 2.0" if _t == "wav2vec2" else "HuBERT", parse_wav2vec2_config, Wav2Vec2Model,
                        wav2vec2_key_map, "feature_projection.projection.weight", _to_hf, modality="audio",
                        ignore_prefixes=("masked_spec_embed", "quantizer.", "project_hid.", "project_q.", "lm_head.",
                                         "label_embeddings_concat", "final_proj.", "classifier.", "projector."),
                        make_processor=waveform_processor, rename_state=rename_legacy_weight_norm))
