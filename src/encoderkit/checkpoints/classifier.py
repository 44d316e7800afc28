"""Load BERT-family *ForSequenceClassification checkpoints (cross-encoders, NLI models) into
models/bert.BertForSequenceClassification through the same explicit key maps."""
from __future__ import annotations

from pathlib import Path

from encoderkit.checkpoints.bert_family import bert_key_map, classifier_key_map
from encoderkit.checkpoints.loader import read_config
from encoderkit.checkpoints.registry import family_for
from encoderkit.checkpoints.tokenizer import load_tokenizer, pad_token_id
from encoderkit.checkpoints.weights import CheckpointError, detect_prefix, find_weights, load_mapped, read_state_dict
from encoderkit.models.bert import BertForSequenceClassification


def load_sequence_classifier(folder: Path, max_length: int | None = None):
    """(model, tokenizer, hf_config, pad_id) for a sequence-classification folder."""
    folder = Path(folder)
    hf = read_config(folder)
    archs = hf.get("architectures") or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise CheckpointError(f"{folder / 'config.json'}: architectures {archs} is not a *ForSequenceClassification "
                              "model; a cross-encoder needs a classification head")
    fam = family_for(hf.get("model_type"), where=str(folder / "config.json"))
    if fam.build.__name__ != "BertModel":
        raise CheckpointError(f"cross-encoders are supported for the BERT family only, not {hf.get('model_type')!r}")
    cfg = fam.parse_config(hf)
    num_labels = len(hf.get("id2label") or {}) or int(hf.get("num_labels", 2))
    wfile = find_weights(folder)
    if wfile is None:
        raise CheckpointError(f"no weights in {folder}: expected model.safetensors or pytorch_model.bin")
    state = read_state_dict(wfile)
    prefix = detect_prefix(state, fam.anchor, wfile)
    head_map, style = classifier_key_map(cfg, prefix)
    key_map = {f"encoder.{k}": (prefix + v if isinstance(v, str) else tuple(prefix + x for x in v))
               for k, v in bert_key_map(cfg).items()}
    key_map.update(head_map)
    model = BertForSequenceClassification(cfg, num_labels, style)
    load_mapped(model, state, key_map, wfile)
    model.eval()
    limit = min(max_length or cfg.max_position_embeddings, cfg.max_position_embeddings -
                (cfg.pad_token_id + 1 if cfg.roberta_positions else 0))
    tok = load_tokenizer(folder, limit)
    if tok is None:
        raise CheckpointError(f"no tokenizer files in {folder}: a cross-encoder needs tokenizer.json or vocab.txt")
    return model, tok, hf, pad_token_id(folder, tok, cfg.pad_token_id), limit
