"""Tiny checkpoints for parity tests: a word-level tokenizer.json that `transformers` and `tokenizers` both
read, sentences over its vocabulary, and sentence-transformers folders in the current (6.x) layout, written by
sentence-transformers itself, and in the older layout (pooling_mode_* flags, `sentence_transformers.models.*`
module names), rewritten from the current one the way older releases wrote it."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>", "<pad>", "<bos>", "<eos>",
            "<|endoftext|>", "<unk>"]
N_SPECIAL = len(SPECIALS)

# how each family's tokenizer frames a text: (tokens before, tokens after)
TEMPLATES = {
    "bert": (["[CLS]"], ["[SEP]"]),  # BERT, MPNet-style encoders (MPNet uses <s> .. </s>: "roberta")
    "roberta": (["<s>"], ["</s>"]),  # RoBERTa, MPNet, XLM-R
    "t5": ([], ["</s>"]),  # T5: EOS appended, no BOS
    "eos": ([], ["<|endoftext|>"]),  # Qwen3-Embedding: EOS appended for last-token pooling
    "bos_eos": (["<bos>"], ["<eos>"]),  # Gemma / embeddinggemma
    "bos": (["<bos>"], []),  # Llama / Mistral style: BOS only
    "none": ([], []),
}


def word(i: int) -> str:
    return f"w{i}"


def write_tokenizer(folder: Path, vocab_size: int, template: str = "bert", *, pad: str = "[PAD]",
                    unk: str = "[UNK]", padding_side: str = "right", model_max_length: int = 512,
                    extra_config: dict | None = None) -> dict[str, int]:
    """A word-level tokenizer over SPECIALS + w0, w1, ... (vocab_size ids in all), framed by TEMPLATES[template];
    writes tokenizer.json and tokenizer_config.json into folder; returns the vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    if vocab_size <= N_SPECIAL + 10:
        raise ValueError(f"vocab_size must exceed {N_SPECIAL + 10}")
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({word(i): N_SPECIAL + i for i in range(vocab_size - N_SPECIAL)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    before, after = TEMPLATES[template]
    if before or after:
        single = " ".join(before + ["$A"] + after)
        pair = " ".join(before + ["$A"] + after + ["$B:1"] + after[-1:])
        tok.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(t, vocab[t]) for t in dict.fromkeys(before + after)])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": pad, "unk_token": unk,
           "padding_side": padding_side, "model_max_length": model_max_length}
    for role, t in (("bos_token", before[0] if before else None), ("eos_token", after[-1] if after else None)):
        if t:
            cfg[role] = t
    if template in ("bert",):
        cfg.update(cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    cfg.update(extra_config or {})
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    return vocab


def sentences(n: int, vocab_size: int, *, seed: int = 0, min_len: int = 1, max_len: int = 20) -> list[str]:
    """n texts of random words from the tokenizer's vocabulary, lengths min_len..max_len words."""
    rng = random.Random(seed)
    n_words = vocab_size - N_SPECIAL
    return [" ".join(word(rng.randrange(n_words)) for _ in range(rng.randint(min_len, max_len))) for _ in range(n)]


def st_folder(model_dir: Path, out: Path, *, pooling: str = "mean", dense: list[dict] | None = None,
              normalize: bool = True, prompts: dict | None = None, default_prompt_name: str | None = None,
              max_seq_length: int | None = None, layout: str = "current") -> Path:
    """A sentence-transformers folder around a transformers model folder (with its tokenizer), saved by the
    installed sentence-transformers (layout="current") or rewritten in the older layout (layout="old").
    dense: [{"in_features", "out_features", "bias", "activation_function": a torch.nn module or None}];
    pooling: a sentence-transformers 6 pooling mode ("mean", "cls", "max", "lasttoken", "weightedmean", ...)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    tr = Transformer(str(model_dir), max_seq_length=max_seq_length)
    mods = [tr, Pooling(tr.get_embedding_dimension(), pooling_mode=pooling)]
    for d in dense or []:
        mods.append(Dense(**d))
    if normalize:
        mods.append(Normalize())
    st = SentenceTransformer(modules=mods, prompts=prompts, default_prompt_name=default_prompt_name, device="cpu")
    out = Path(out)
    st.save(str(out))
    if layout == "old":
        to_old_layout(out)
    elif layout != "current":
        raise ValueError(f"layout must be 'current' or 'old', got {layout!r}")
    return out


_OLD_TYPES = {"Transformer": "sentence_transformers.models.Transformer", "Pooling": "sentence_transformers.models.Pooling",
              "Dense": "sentence_transformers.models.Dense", "Normalize": "sentence_transformers.models.Normalize"}
_OLD_POOL_KEYS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
                  "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
                  "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}


def to_old_layout(folder: Path) -> None:
    """Rewrite a sentence-transformers 6 folder in place as sentence-transformers 2.x-4.x wrote it:
    `sentence_transformers.models.X` module types, pooling_mode_* flags and word_embedding_dimension,
    sentence_bert_config.json with max_seq_length and do_lower_case."""
    folder = Path(folder)
    modules = json.loads((folder / "modules.json").read_text())
    for m in modules:
        kind = m["type"].rsplit(".", 1)[-1]
        m["type"] = _OLD_TYPES[kind]
        path = folder / m["path"]
        if kind == "Pooling":
            c = json.loads((path / "config.json").read_text())
            mode = c["pooling_mode"]
            old = {"word_embedding_dimension": c["embedding_dimension"]}
            old.update({k: k == _OLD_POOL_KEYS[mode] for k in _OLD_POOL_KEYS.values()})
            old["include_prompt"] = c.get("include_prompt", True)
            (path / "config.json").write_text(json.dumps(old, indent=2))
        elif kind == "Transformer":
            tcfg = json.loads((path / "tokenizer_config.json").read_text()) if (path / "tokenizer_config.json").is_file() else {}
            (path / "sentence_bert_config.json").write_text(json.dumps(
                {"max_seq_length": tcfg.get("model_max_length", 512), "do_lower_case": False}, indent=2))
        elif kind == "Dense":
            c = json.loads((path / "config.json").read_text())
            c.pop("module_input_name", None)
            c.pop("module_output_name", None)
            (path / "config.json").write_text(json.dumps(c, indent=2))
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


# One tiny random checkpoint per text family, as the cross-family tests build them: family -> (transformers config
# class, model class, config fields, tokenizer template, pad token, sentence-transformers pooling mode)
TINY_VOCAB = 120
_COMMON = dict(vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)
_DECODER = dict(_COMMON, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=7)
TINY_FAMILIES = {
    "bert": ("BertConfig", "BertModel", dict(_COMMON, max_position_embeddings=64, pad_token_id=0), "bert", "[PAD]",
             "mean"),
    "mpnet": ("MPNetConfig", "MPNetModel", dict(_COMMON, max_position_embeddings=66, pad_token_id=1),
              "roberta", "<s>", "mean"),
    "modernbert": ("ModernBertConfig", "ModernBertModel",
                   dict(_COMMON, max_position_embeddings=64, local_attention=8, pad_token_id=0), "bert", "[PAD]", "cls"),
    "nomic_bert": ("NomicBertConfig", "NomicBertModel", dict(_COMMON, max_position_embeddings=64, pad_token_id=0),
                   "bert", "[PAD]", "mean"),
    "t5": ("T5Config", "T5EncoderModel", dict(vocab_size=TINY_VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                              num_heads=4, feed_forward_proj="gated-gelu", pad_token_id=0),
           "t5", "[PAD]", "mean"),
    "qwen3": ("Qwen3Config", "Qwen3Model", dict(_DECODER, head_dim=16), "eos", "<pad>", "lasttoken"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3TextModel",
                    dict(_DECODER, head_dim=8, sliding_window=4, use_bidirectional_attention=True, pad_token_id=7),
                    "bos_eos", "<pad>", "mean"),
}


def tiny_family_folder(family: str, base: Path, **st_kw) -> Path:
    """A random checkpoint of TINY_FAMILIES[family] saved by transformers under base/hf (max length 48), wrapped
    as a sentence-transformers 6 folder base/st (its pooling, Normalize, and st_kw such as prompts)."""
    import torch
    import transformers

    cfg_name, model_name, kw, template, pad, pooling = TINY_FAMILIES[family]
    torch.manual_seed(0)
    getattr(transformers, model_name)(getattr(transformers, cfg_name)(**kw)).eval().save_pretrained(base / "hf")
    write_tokenizer(base / "hf", TINY_VOCAB, template, pad=pad, model_max_length=48)
    return st_folder(base / "hf", base / "st", pooling=pooling, normalize=True, **st_kw)
