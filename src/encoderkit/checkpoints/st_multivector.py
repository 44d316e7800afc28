"""Multi-vector (ColBERT) folders: sentence-transformers 6 MultiVectorEncoder (Transformer with query_length /
document_length / query_expansion -> token-level Dense -> MultiVectorMask -> Normalize, markers as prompts) and PyLate
ColBERT (Transformer -> pylate Dense, with query_prefix / document_prefix markers inserted as tokens, query_length,
do_query_expansion, attend_to_expansion_tokens and skiplist_words in config_sentence_transformers.json). Read into an
Encoder with a `late` spec; written back in the layout read."""
from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from encoderkit.checkpoints.loader import load_backbone
from encoderkit.checkpoints.tokenizer import special_token
from encoderkit.checkpoints.sentence_transformers import DenseSpec, _json, _max_length, activation_module, \
    write_transformer_config
from encoderkit.checkpoints.weights import CheckpointError, read_state_dict, save_safetensors
from encoderkit.multivector import LateSpec

_PYLATE_KEYS = ("query_prefix", "document_prefix", "do_query_expansion", "attend_to_expansion_tokens", "skiplist_words")
_T = {"Transformer": "sentence_transformers.base.modules.transformer.Transformer",
      "Dense": "sentence_transformers.base.modules.dense.Dense", "PyLateDense": "pylate.models.Dense.Dense",
      "MultiVectorMask": "sentence_transformers.multi_vector_encoder.modules.multi_vector_mask.MultiVectorMask",
      "Normalize": "sentence_transformers.base.modules.normalize.Normalize"}
_IDENTITY = "torch.nn.modules.linear.Identity"


def _st_config(folder: Path) -> dict:
    p = Path(folder) / "config_sentence_transformers.json"
    return _json(p) if p.is_file() else {}


def is_multivector_folder(folder: Path) -> bool:
    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        return False
    c = _st_config(folder)
    if c.get("model_type") in ("MultiVectorEncoder", "ColBERT") or any(k in c for k in _PYLATE_KEYS):
        return True
    types = [m.get("type", "") for m in _json(folder / "modules.json")]
    return any(t.startswith("pylate.") or t.endswith("MultiVectorMask") for t in types)


def _dense(path: Path, pylate: bool) -> DenseSpec:
    c = _json(path / "config.json")
    wfile = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
    if wfile is None:
        raise CheckpointError(f"Dense module at {path} has no model.safetensors or pytorch_model.bin")
    st = read_state_dict(wfile)
    act = c.get("activation_function") or (_IDENTITY if pylate else "torch.nn.modules.activation.Tanh")
    activation_module(act, path / "config.json")
    w = st.get("linear.weight")
    if w is None:
        raise CheckpointError(f"{wfile}: no linear.weight")
    res = bool(c.get("use_residual", False))
    return DenseSpec(w, st.get("linear.bias") if c.get("bias", True) else None, act, res,
                     st.get("residual.weight") if res and w.shape[0] != w.shape[1] else None)


def load_multivector_folder(folder: Path, name: str, max_length: int | None = None) -> Any:
    from encoderkit.encoder import Encoder

    folder = Path(folder)
    c = _st_config(folder)
    mods = sorted(_json(folder / "modules.json"), key=lambda m: m.get("idx", 0))
    kinds = [(m.get("type", "?"), folder / m.get("path", "")) for m in mods]
    if not kinds or kinds[0][0].rsplit(".", 1)[-1] != "Transformer":
        raise CheckpointError(f"{folder / 'modules.json'}: a multi-vector folder must start with a Transformer")
    tdir = kinds[0][1]
    tc = _json(tdir / "sentence_bert_config.json") if (tdir / "sentence_bert_config.json").is_file() else {}
    pylate = c.get("model_type") == "ColBERT" or any(k in c for k in _PYLATE_KEYS) or \
        any(t.startswith("pylate.") for t, _ in kinds)
    dense, normalize, spec = [], pylate, LateSpec(layout="pylate" if pylate else "st")
    for t, p in kinds[1:]:
        k = t.rsplit(".", 1)[-1]
        if k == "Dense":
            dense.append(_dense(p, pylate or t.startswith("pylate.")))
        elif k == "Normalize":
            normalize = True
        elif k == "MultiVectorMask":
            mc = _json(p / "config.json") if (p / "config.json").is_file() else {}
            spec.skiplist_words = list(mc.get("skiplist_words") or [])
            st_tasks = mc.get("skiplist_tasks") or ["document"]
            spec.skiplist_tasks = [st_tasks] if isinstance(st_tasks, str) else list(st_tasks)
            if mc.get("keep_only_token_ids"):
                raise CheckpointError(f"{p}: keep_only_token_ids (image-patch documents) does not load")
        else:
            raise CheckpointError(f"{folder / 'modules.json'}: module {t!r} does not load in a multi-vector model; "
                                  "encoderkit loads Transformer -> Dense* -> MultiVectorMask -> Normalize (and PyLate's)")
    bb = load_backbone(tdir, max_length or _max_length(tdir, tc))
    tok = bb.tokenizer
    spec.normalize = normalize
    mask_tok = special_token(tdir, "mask_token") or "[MASK]"
    if pylate:  # PyLate: markers inserted as tokens, lengths and expansion flags in config_sentence_transformers.json
        spec.query_length, spec.document_length = int(c.get("query_length") or 32), int(c.get("document_length") or 180)
        for side in ("query", "document"):
            marker = c.get(f"{side}_prefix", "[Q] " if side == "query" else "[D] ")
            spec.extra[f"{side}_prefix"] = marker
            if marker:
                tid = tok.token_to_id(marker)
                if tid is None:
                    raise CheckpointError(f"{folder}: the {side} marker {marker!r} is not a token of its tokenizer")
                spec.insert_ids[side] = tid
        if c.get("do_query_expansion", True):
            spec.expansion = {"strategy": "fixed", "attend": bool(c.get("attend_to_expansion_tokens", False)),
                              "token": None, "length": spec.query_length}
        words = c.get("skiplist_words")
        spec.skiplist_words = list(string.punctuation) if words is None else list(words)
        unk = tok.token_to_id(special_token(tdir, "unk_token") or "[UNK]")  # PyLate keeps unknown words as [UNK]
        ids = [tok.token_to_id(w) for w in spec.skiplist_words]
        spec.skiplist_ids = sorted({unk if i is None else i for i in ids} - {None})
        spec.expansion_id = tok.token_to_id(mask_tok)
    else:
        spec.query_length, spec.document_length = tc.get("query_length"), tc.get("document_length")
        spec.expansion = tc.get("query_expansion")
        if spec.expansion is not None:
            spec.expansion = {"attend": False, "token": None, **spec.expansion}
        ids = [tok.token_to_id(w) for w in spec.skiplist_words]  # words the vocabulary lacks are dropped, as ST does
        spec.skiplist_ids = [i for i in ids if i is not None]
        etok = (spec.expansion or {}).get("token") or mask_tok
        spec.expansion_id = tok.token_to_id(etok)
        if spec.expansion_id is None and spec.expansion is not None:
            spec.expansion_id = tok.token_to_id(special_token(tdir, "eos_token") or "")
    enc = Encoder(bb.model, tok, pooling="mean", dense=dense, normalize=False, max_length=bb.max_length, pad_id=bb.pad_id,
                  prompts={k: v or "" for k, v in (c.get("prompts") or {}).items()},
                  default_prompt_name=c.get("default_prompt_name"), do_lower_case=bool(tc.get("do_lower_case", False)),
                  name=name, family=bb.family, config=bb.config, hf_config=bb.hf_config, source=tdir,
                  similarity_fn=c.get("similarity_fn_name") or "maxsim")
    enc.late = spec
    return enc


def _write_added_tokens(tok: Any, folder: Path) -> None:
    """Give the tokenizer files copied into `folder` the tokens added to `tok` since it was read (a ColBERT head's
    [Q] / [D] markers): tokenizer.json through `tokenizers`, tokenizer_config.json's added_tokens_decoder when it
    has one. The copied file keeps its own truncation and padding settings."""
    from tokenizers import AddedToken, Tokenizer

    f = folder / "tokenizer.json"
    if tok is None or not f.is_file():
        return
    disk = Tokenizer.from_file(str(f))
    have = disk.get_vocab(with_added_tokens=True)
    missing = sorted((i, t) for i, t in tok.get_added_tokens_decoder().items() if t.content not in have)
    if not missing:
        return
    for i, t in missing:
        if disk.get_vocab_size(with_added_tokens=True) != i:
            raise CheckpointError(f"{f}: cannot give {t.content!r} its id {i} (the file holds "
                                  f"{disk.get_vocab_size(with_added_tokens=True)} tokens)")
        added = AddedToken(t.content, single_word=t.single_word, lstrip=t.lstrip, rstrip=t.rstrip,
                           normalized=t.normalized, special=t.special)
        (disk.add_special_tokens if t.special else disk.add_tokens)([added])
    disk.save(str(f))
    cfg_file = folder / "tokenizer_config.json"
    cfg = _json(cfg_file) if cfg_file.is_file() else {}
    if "added_tokens_decoder" in cfg:
        for i, t in missing:
            cfg["added_tokens_decoder"][str(i)] = {
                "content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                "single_word": t.single_word, "special": t.special}
        cfg_file.write_text(json.dumps(cfg, indent=2))


def save_multivector(enc: Any, path: Path) -> Path:
    """Write `enc` as the multi-vector folder it was read from (6.x MultiVectorEncoder or PyLate layout)."""
    from encoderkit.checkpoints.sentence_transformers import dense_spec

    path = Path(path)
    spec: LateSpec = enc.late
    enc._save_backbone(path)
    _write_added_tokens(enc.tokenizer, path)
    write_transformer_config(path, enc.max_length, enc.do_lower_case)
    mods = [("", _T["Transformer"])]
    for d in enc.head.dense:
        ds = dense_spec(d)
        folder = path / f"{len(mods)}_Dense"
        folder.mkdir(exist_ok=True)
        cfg = {"in_features": ds.weight.shape[1], "out_features": ds.weight.shape[0], "bias": ds.bias is not None,
               "activation_function": ds.activation}
        if spec.layout == "st":
            cfg.update(module_input_name="token_embeddings", module_output_name="token_embeddings")
        if ds.use_residual:
            cfg["use_residual"] = True
        (folder / "config.json").write_text(json.dumps(cfg, indent=4))
        t = {"linear.weight": ds.weight, **({"linear.bias": ds.bias} if ds.bias is not None else {}),
             **({"residual.weight": ds.residual} if ds.residual is not None else {})}
        save_safetensors({k: v.contiguous() for k, v in t.items()}, folder / "model.safetensors")
        mods.append((folder.name, _T["PyLateDense"] if spec.layout == "pylate" else _T["Dense"]))
    st_cfg = {"prompts": enc.prompts, "default_prompt_name": enc.default_prompt_name}
    if spec.layout == "pylate":
        st_cfg.update(model_type="ColBERT", similarity_fn_name="MaxSim", query_prefix=spec.extra.get("query_prefix", ""),
                      document_prefix=spec.extra.get("document_prefix", ""), query_length=spec.query_length,
                      document_length=spec.document_length, do_query_expansion=spec.expansion is not None,
                      attend_to_expansion_tokens=bool((spec.expansion or {}).get("attend")),
                      skiplist_words=spec.skiplist_words)
    else:
        tc = json.loads((path / "sentence_bert_config.json").read_text())
        tc.update(query_length=spec.query_length, document_length=spec.document_length, query_expansion=spec.expansion)
        (path / "sentence_bert_config.json").write_text(json.dumps(tc, indent=4))
        for kind, cfg in (("MultiVectorMask", {"skiplist_words": spec.skiplist_words, "skiplist_tasks": spec.skiplist_tasks,
                                               "keep_only_token_ids": None}),
                          ("Normalize", {"module_input_name": "token_embeddings", "module_output_name": "token_embeddings"})):
            if kind == "Normalize" and not spec.normalize:
                continue
            folder = path / f"{len(mods)}_{kind}"
            folder.mkdir(exist_ok=True)
            (folder / "config.json").write_text(json.dumps(cfg, indent=4))
            mods.append((folder.name, _T[kind]))
        st_cfg.update(model_type="MultiVectorEncoder", similarity_fn_name=enc.similarity_fn or "maxsim")
    (path / "modules.json").write_text(json.dumps([{"idx": i, "name": str(i), "path": p, "type": t}
                                                   for i, (p, t) in enumerate(mods)], indent=2))
    (path / "config_sentence_transformers.json").write_text(json.dumps(st_cfg, indent=2))
    return path
