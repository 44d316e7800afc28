"""Tokenizers through the `tokenizers` library (no hand-written WordPiece/BPE): tokenizer.json when the
folder has one, else a tokenizer built by the library from vocab.txt (WordPiece) or vocab.json + merges.txt (BPE)."""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from encoderkit.checkpoints.weights import CheckpointError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "added_tokens.json", "sentencepiece.bpe.model", "spiece.model")


def tokenizer_config(folder: Path) -> dict:
    """tokenizer_config.json of a folder as a dict ({} when absent)."""
    p = Path(folder) / "tokenizer_config.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except ValueError as exc:
        raise CheckpointError(f"cannot parse {p}: {exc}") from exc


def load_tokenizer(folder: Path, max_length: int) -> Tokenizer | None:
    """The folder's tokenizer with truncation at max_length (special tokens included) and no padding
    (the Encoder pads each batch itself). None when the folder has no tokenizer files."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        try:
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:
            raise CheckpointError(f"cannot read {folder / 'tokenizer.json'}: {exc}") from exc
    elif (folder / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        lower = tokenizer_config(folder).get("do_lower_case", True)
        tok = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=lower)._tokenizer
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        from tokenizers import processors
        from tokenizers.implementations import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
        tok = bpe._tokenizer
        cls_id, sep_id = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        if cls_id is not None and sep_id is not None:
            tok.post_processor = processors.RobertaProcessing(("</s>", sep_id), ("<s>", cls_id))
    else:
        return None
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def pad_token_id(folder: Path, tok: Tokenizer, default: int) -> int:
    """The padding id: tokenizer_config's pad token when it names one the vocabulary knows, else the config's."""
    pad = tokenizer_config(Path(folder)).get("pad_token")
    if isinstance(pad, dict):
        pad = pad.get("content")
    if isinstance(pad, str) and tok.token_to_id(pad) is not None:
        return tok.token_to_id(pad)
    return default


def special_token(folder: Path, role: str) -> str | None:
    """A tokenizer_config role's token text (mask_token, eos_token, ...), None when absent."""
    t = tokenizer_config(folder).get(role)
    return t.get("content") if isinstance(t, dict) else t
