"""Key maps of the masked-language-model heads (BertForMaskedLM, RobertaForMaskedLM, DistilBertForMaskedLM, ...)
onto models/mlm_head.MLMHead, and where each family's backbone sits in such a file."""
from __future__ import annotations

from typing import Any

import torch

from encoderkit.checkpoints.weights import CheckpointError
from encoderkit.models.mlm_head import MLMHead

# model_type -> (backbone prefix, head names: dense, norm, decoder weight, decoder bias, architecture)
_HEADS = {
    "bert": ("bert.", "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
             "cls.predictions.decoder.weight", "cls.predictions.bias", "BertForMaskedLM"),
    "roberta": ("roberta.", "lm_head.dense", "lm_head.layer_norm", "lm_head.decoder.weight", "lm_head.bias",
                "RobertaForMaskedLM"),
    "xlm-roberta": ("roberta.", "lm_head.dense", "lm_head.layer_norm", "lm_head.decoder.weight", "lm_head.bias",
                    "XLMRobertaForMaskedLM"),
    "camembert": ("roberta.", "lm_head.dense", "lm_head.layer_norm", "lm_head.decoder.weight", "lm_head.bias",
                  "CamembertForMaskedLM"),
    "distilbert": ("distilbert.", "vocab_transform", "vocab_layer_norm", "vocab_projector.weight",
                   "vocab_projector.bias", "DistilBertForMaskedLM"),
}
_WORD = {"distilbert": "embeddings.word_embeddings.weight"}


def has_mlm_head(model_type: str) -> bool:
    return model_type in _HEADS


def backbone_prefix(model_type: str) -> str:
    return _HEADS[model_type][0]


def mlm_architecture(model_type: str) -> str:
    return _HEADS[model_type][5]


def build_mlm_head(hf_config: dict, cfg: Any) -> MLMHead:
    """An MLMHead sized and activated as the checkpoint's config says."""
    mt = hf_config.get("model_type")
    if mt not in _HEADS:
        raise CheckpointError(f"config.json: no masked-language-model head is known for model_type {mt!r}; "
                              f"SPLADE loads for {', '.join(sorted(_HEADS))}")
    if mt == "distilbert":
        act, eps = hf_config.get("activation", "gelu"), 1e-12
    elif mt == "bert":
        act, eps = hf_config.get("hidden_act", "gelu"), hf_config.get("layer_norm_eps", 1e-12)
    else:  # RobertaLMHead: gelu whatever hidden_act says
        act, eps = "gelu", hf_config.get("layer_norm_eps", 1e-5)
    return MLMHead(cfg.hidden_size, cfg.vocab_size, act, eps)


def tied(hf_config: dict) -> bool:
    return bool(hf_config.get("tie_word_embeddings", True))


def mlm_head_key_map(model_type: str, state: dict[str, torch.Tensor], hf_config: dict) -> dict:
    """Our MLMHead names -> names in the checkpoint file (absolute). A tied decoder reads the word embeddings when
    the file has no decoder weight of its own."""
    prefix, dense, norm, dec_w, dec_b, _ = _HEADS[model_type]
    m = {"dense.weight": f"{dense}.weight", "dense.bias": f"{dense}.bias", "norm.weight": f"{norm}.weight",
         "norm.bias": f"{norm}.bias", "decoder.bias": dec_b}
    dec_own_b = dec_w[: -len("weight")] + "bias"  # an untied decoder has its own bias (transformers 5)
    if dec_own_b in state and (dec_b not in state or not tied(hf_config)):
        m["decoder.bias"] = dec_own_b
    word = prefix + _WORD.get(model_type, "embeddings.word_embeddings.weight")
    m["decoder.weight"] = dec_w if dec_w in state and not tied(hf_config) else (dec_w if word not in state else word)
    return m


def export_head(model_type: str, head: MLMHead, hf_config: dict) -> dict[str, torch.Tensor]:
    """The head's tensors under checkpoint names (the decoder weight only when untied: transformers ties it)."""
    _, dense, norm, dec_w, dec_b, _ = _HEADS[model_type]
    sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in head.state_dict().items()}
    out = {f"{dense}.weight": sd["dense.weight"], f"{dense}.bias": sd["dense.bias"], f"{norm}.weight": sd["norm.weight"],
           f"{norm}.bias": sd["norm.bias"], dec_b: sd["decoder.bias"]}
    if not tied(hf_config):
        out[dec_w] = sd["decoder.weight"]
        out[dec_w[: -len("weight")] + "bias"] = sd["decoder.bias"].clone()
    return out
