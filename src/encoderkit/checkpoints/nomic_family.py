"""Checkpoint formats of NomicBERT (nomic-ai/nomic-embed-text-v1 / v1.5, nomic-bert-2048): config.json with the
original GPT-2 style names (n_embd, n_layer, rotary_emb_*, written for Nomic's remote code) or transformers 5's
nomic_bert names (hidden_size, rope_parameters, ...), or both; tensors under the original names
(encoder.layers.N.attn.Wqkv, mlp.fc11 / fc12 / fc2, norm1 / norm2, emb_ln), which transformers also writes, or
under transformers' module names (layers.N.self_attn.q_proj, ...), which are renamed to the original ones."""
from __future__ import annotations

import re

import torch

from encoderkit.checkpoints.registry import Family, register
from encoderkit.checkpoints.weights import CheckpointError
from encoderkit.models.nomic_bert import NomicBertConfig, NomicBertModel
from encoderkit.nn.layers import ACTIVATIONS

_GATED_ACTS = {"swiglu": "silu", "geglu": "gelu"}  # original activation_function -> activation on the gate
_MLP_MULTIPLE = 256  # the original gated MLP rounds its width up to a multiple of this


def _first(c: dict, *names: str, default=None):
    """The value of the first of `names` the config has (original name first, then the transformers one)."""
    for n in names:
        if c.get(n) is not None:
            return c[n]
    return default


def _refuse(c: dict) -> None:
    """Original-code options that change the network in ways this model does not implement."""
    if c.get("moe_every_n_layers") or c.get("num_experts"):
        raise CheckpointError("config.json: moe_every_n_layers / num_experts: mixture-of-experts NomicBERT "
                              "(nomic-embed-text-v2-moe) is not supported; nomic-embed-text v1 / v1.5 are")
    for name in ("prenorm", "parallel_block", "causal", "use_rms_norm", "rotary_scaling_factor",
                 "rotary_emb_scale_base"):
        if c.get(name):  # published nomic-embed-text configs have false / null here
            raise CheckpointError(f"config.json: {name}={c[name]!r} is not supported for nomic_bert "
                                  "(only false / null, as in the published checkpoints)")
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default":
        raise CheckpointError(f"config.json: rope_type {rope['rope_type']!r} is not supported for nomic_bert "
                              "(only 'default')")


def parse_nomic_config(c: dict) -> NomicBertConfig:
    """Hugging Face config.json (model_type nomic_bert, either naming) -> NomicBertConfig."""
    _refuse(c)
    original = "n_embd" in c
    if original:  # Nomic's remote code: GPT2Config defaults for fields the file leaves out
        act = c.get("activation_function", "gelu_new")
        if act not in _GATED_ACTS:
            raise CheckpointError(f"config.json: activation_function={act!r} is not supported for nomic_bert "
                                  f"(supported: {', '.join(_GATED_ACTS)})")
        if c.get("mlp_fc1_bias", True) != c.get("mlp_fc2_bias", True):
            raise CheckpointError("config.json: mlp_fc1_bias != mlp_fc2_bias is not supported for nomic_bert")
        fraction = c.get("rotary_emb_fraction", 0.0)
        if not fraction or fraction <= 0:
            raise CheckpointError("config.json: rotary_emb_fraction=0 (a learned position table instead of rotary) "
                                  "is not supported for nomic_bert")
    try:
        H = _first(c, "n_embd", "hidden_size")
        heads = _first(c, "n_head", "num_attention_heads")
        if original:
            d_ff = c.get("n_inner") or int(8 * H / 3)
            d_ff = (d_ff + _MLP_MULTIPLE - 1) // _MLP_MULTIPLE * _MLP_MULTIPLE
            multiple = c.get("pad_vocab_size_multiple") or 1
            vocab = (c["vocab_size"] + multiple - 1) // multiple * multiple
        else:
            d_ff, vocab = c["intermediate_size"], c["vocab_size"]
            if c.get("head_dim") not in (None, H // heads):
                raise CheckpointError(f"config.json: head_dim={c['head_dim']} != hidden_size / num_attention_heads "
                                      "is not supported for nomic_bert")
        act = _GATED_ACTS[c["activation_function"]] if original else c.get("hidden_act", "silu")
        if act not in ACTIVATIONS:
            raise CheckpointError(f"config.json: hidden_act={act!r} is not supported for nomic_bert "
                                  f"(known: {', '.join(sorted(ACTIVATIONS))})")
        rope = c.get("rope_parameters") or {}
        pad = c.get("pad_token_id")
        return NomicBertConfig(
            vocab_size=vocab, hidden_size=H, num_layers=_first(c, "n_layer", "num_hidden_layers"), num_heads=heads,
            intermediate_size=d_ff, hidden_act=act,
            max_position_embeddings=_first(c, "n_positions", "max_position_embeddings", default=8192),
            type_vocab_size=c.get("type_vocab_size", 2),
            layer_norm_eps=_first(c, "layer_norm_epsilon", "layer_norm_eps", default=1e-5 if original else 1e-12),
            pad_token_id=0 if pad is None else pad,
            rotary_base=float(_first(c, "rotary_emb_base", default=rope.get("rope_theta") or c.get("rope_theta")
                                     or (10_000.0 if original else 1000.0))),
            rotary_fraction=float(c.get("rotary_emb_fraction", 1.0)),
            rotary_interleaved=bool(c.get("rotary_emb_interleaved", False)),
            qkv_bias=bool(c.get("qkv_proj_bias", True)) if original else False,
            mlp_bias=bool(c.get("mlp_fc1_bias", True)) if original else False,
            dropout=_first(c, "resid_pdrop", "hidden_dropout_prob", default=0.0),
            attention_dropout=_first(c, "attn_pdrop", "attention_probs_dropout_prob", default=0.0),
            original_config=original,
        )
    except CheckpointError:
        raise
    except KeyError as exc:
        raise CheckpointError(f"config.json for model_type 'nomic_bert' lacks the field {exc.args[0]!r}") from None
    except TypeError:  # a size field missing under both names
        raise CheckpointError("config.json for model_type 'nomic_bert' lacks a size field: give n_embd, n_head, "
                              "n_layer (or hidden_size, num_attention_heads, num_hidden_layers)") from None
    except ValueError as exc:
        raise CheckpointError(f"config.json for model_type 'nomic_bert': {exc}") from None


def _linear(ours: str, theirs: str, bias: bool) -> dict[str, str]:
    return {f"{ours}.weight": f"{theirs}.weight", **({f"{ours}.bias": f"{theirs}.bias"} if bias else {})}


def _ln(ours: str, theirs: str) -> dict[str, str]:
    return _linear(ours, theirs, True)


def nomic_key_map(cfg: NomicBertConfig) -> dict:
    """Our names -> the original tensor names (relative to the backbone prefix). Our fused feed-forward input is
    [W_gate; W_up] = [fc12; fc11]: the original multiplies fc11(x) by act(fc12(x))."""
    m: dict = {"embeddings.word.weight": "embeddings.word_embeddings.weight"}
    if cfg.type_vocab_size > 0:
        m["embeddings.token_type.weight"] = "embeddings.token_type_embeddings.weight"
    m.update(_ln("embeddings.norm", "emb_ln"))
    for i in range(cfg.num_layers):
        o, t = f"layers.{i}", f"encoder.layers.{i}"
        m.update(_linear(f"{o}.attn.qkv", f"{t}.attn.Wqkv", cfg.qkv_bias))
        m.update(_linear(f"{o}.attn.o", f"{t}.attn.out_proj", cfg.qkv_bias))
        m.update(_ln(f"{o}.ln1", f"{t}.norm1"))
        m[f"{o}.ffn.wi.weight"] = (f"{t}.mlp.fc12.weight", f"{t}.mlp.fc11.weight")
        if cfg.mlp_bias:
            m[f"{o}.ffn.wi.bias"] = (f"{t}.mlp.fc12.bias", f"{t}.mlp.fc11.bias")
        m.update(_linear(f"{o}.ffn.wo", f"{t}.mlp.fc2", cfg.mlp_bias))
        m.update(_ln(f"{o}.ln2", f"{t}.norm2"))
    return m


# transformers' module names -> the original names (what transformers itself writes with save_pretrained)
_MODULE_NAMES = [(r"^embeddings\.LayerNorm\.", "emb_ln."), (r"^layers\.(\d+)\.", r"encoder.layers.\1."),
                 (r"\.self_attn\.o_proj\.", ".attn.out_proj."), (r"\.mlp\.up_proj\.", ".mlp.fc11."),
                 (r"\.mlp\.gate_proj\.", ".mlp.fc12."), (r"\.mlp\.down_proj\.", ".mlp.fc2."),
                 (r"\.post_attention_layernorm\.", ".norm1."), (r"\.post_mlp_layernorm\.", ".norm2.")]
_QKV = re.compile(r"^(encoder\.layers\.\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")


def rename_module_names(state: dict) -> dict:
    """A state dict saved under transformers' module names (layers.N.self_attn.q_proj, ...) -> the original
    names, q / k / v fused into Wqkv. A state dict already under the original names passes through."""
    if not any(k.startswith("layers.") for k in state):
        return state
    out: dict = {}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        for pat, rep in _MODULE_NAMES:
            k = re.sub(pat, rep, k)
        hit = _QKV.match(k)
        if hit:
            parts.setdefault((hit[1], hit[3]), {})[hit[2]] = v
        else:
            out[k] = v
    for (layer, kind), qkv in parts.items():
        if set(qkv) == {"q", "k", "v"}:
            out[f"{layer}.attn.Wqkv.{kind}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
        else:  # leave the pieces under their names: the key map then names the missing tensor
            out.update({f"{layer}.self_attn.{p}_proj.{kind}": t for p, t in qkv.items()})
    return out


def nomic_to_hf_config(cfg: NomicBertConfig) -> dict:
    """NomicBertConfig -> config.json: transformers' nomic_bert names when transformers can build the same network
    (full half-split rotary, no biases), else the original names (which encoderkit and Nomic's code read)."""
    if cfg.rotary_fraction == 1.0 and not cfg.rotary_interleaved and not cfg.qkv_bias and not cfg.mlp_bias \
            and not cfg.original_config:
        d = {"model_type": "nomic_bert", "architectures": ["NomicBertModel"], "vocab_size": cfg.vocab_size,
             "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
             "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.intermediate_size,
             "hidden_act": cfg.hidden_act, "max_position_embeddings": cfg.max_position_embeddings,
             "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps,
             "pad_token_id": cfg.pad_token_id, "hidden_dropout_prob": cfg.dropout,
             "attention_probs_dropout_prob": cfg.attention_dropout,
             "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rotary_base}}
        return {**cfg.extra, **d}
    act = {v: k for k, v in _GATED_ACTS.items()}.get(cfg.hidden_act)
    if act is None:
        raise CheckpointError(f"nomic_bert with a {cfg.hidden_act} gate has no original-format name; "
                              f"use one of {', '.join(_GATED_ACTS.values())}")
    d = {"model_type": "nomic_bert", "architectures": ["NomicBertModel"], "vocab_size": cfg.vocab_size,
         "n_embd": cfg.hidden_size, "n_layer": cfg.num_layers, "n_head": cfg.num_heads,
         "n_inner": cfg.intermediate_size, "activation_function": act, "n_positions": cfg.max_position_embeddings,
         "type_vocab_size": cfg.type_vocab_size, "layer_norm_epsilon": cfg.layer_norm_eps,
         "pad_token_id": cfg.pad_token_id, "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout,
         "attn_pdrop": cfg.attention_dropout, "rotary_emb_base": cfg.rotary_base,
         "rotary_emb_fraction": cfg.rotary_fraction, "rotary_emb_interleaved": cfg.rotary_interleaved,
         "qkv_proj_bias": cfg.qkv_bias, "mlp_fc1_bias": cfg.mlp_bias, "mlp_fc2_bias": cfg.mlp_bias,
         "prenorm": False, "causal": False}
    return {**cfg.extra, **d}


register("nomic_bert", Family("NomicBERT", parse_nomic_config, NomicBertModel, nomic_key_map,
                              "embeddings.word_embeddings.weight", nomic_to_hf_config, pooling="mean",
                              ignore_prefixes=("pooler.",), rename_state=rename_module_names))
