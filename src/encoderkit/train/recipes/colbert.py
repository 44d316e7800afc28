"""ColBERT (late interaction) training, as PyLate trains one from a base encoder: a dense model gets [Q] / [D] marker
tokens, [MASK] query expansion, a punctuation skiplist for documents and a bias-free token projection hidden -> 128
(multivector.add_colbert_head); backbone and projection then learn from in-batch contrastive cross-entropy over MaxSim
scores (objectives/late_interaction.py, temperature 1 as PyLate's Contrastive). The folder written is a PyLate ColBERT
folder: `encoderkit.load` reads it as a multi-vector encoder, `pylate.models.ColBERT` and sentence-transformers'
MultiVectorEncoder read it too. A model that already is a ColBERT folder keeps its head and trains on.

    encoderkit train colbert --data BEIR_DIR --out FOLDER              # (query, positive) pairs of qrels/train.tsv
    encoderkit train colbert --data pairs.tsv --out FOLDER             # query<TAB>document lines
    encoderkit train colbert --data mined.jsonl --out FOLDER           # {"query", "positive", "negatives": [...]}
    encoderkit eval beir BEIR_DIR --model FOLDER --mode late           # exact MaxSim over the whole corpus
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from encoderkit.train.recipes import add_common_arguments, register_recipe, train_config_from_args
from encoderkit.train.recipes.text import ContrastiveTrainable, attention_dropout_while_training, read_pairs


class ColBERTTrainable(ContrastiveTrainable):
    """A ColBERT Encoder's backbone and token projection, trained on (query, positive[, negatives]) batches with
    in-batch contrastive cross-entropy over MaxSim. Queries and documents go through the same tokenization, marker
    insertion, expansion and skiplist as encode(output="multivector") (multivector.py), with gradients."""

    def __init__(self, encoder, temperature: float = 1.0):
        if getattr(encoder, "late", None) is None:
            raise ValueError(f"{encoder.name or 'this model'} has no ColBERT head; add one with "
                             "encoderkit.multivector.add_colbert_head(encoder) or load a PyLate / MultiVectorEncoder "
                             "folder")
        super().__init__(encoder, temperature)

    def tokens(self, texts: list[str], side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d) unit token vectors of texts on one side and their (B, T) scored-position mask."""
        from encoderkit.multivector import late_batch, project_tokens, side_encodings

        spec, prompt = self.enc.late, self.enc.prompts.get(side, "")
        encs = side_encodings(self.enc, spec, [prompt + t for t in texts], side)
        batch, keep = late_batch(self.enc, spec, encs, side)
        dev = next(self.backbone.parameters()).device
        hidden = self.backbone(**{k: t.to(dev) for k, t in batch.items()})
        hidden = hidden.last_hidden_state if hasattr(hidden, "last_hidden_state") else hidden  # (B, T, H)
        return project_tokens(self.enc, hidden, normalize=True), keep.to(dev)

    def loss(self, batch) -> torch.Tensor:
        from encoderkit.objectives.late_interaction import maxsim_contrastive_loss

        queries, positives, negatives = batch
        q, q_keep = self.tokens(queries, "query")
        d, d_keep = self.tokens(positives, "document")
        n, n_keep = self.tokens(negatives, "document") if negatives else (None, None)
        # expansion positions are scored: with query expansion every query position counts, as in PyLate
        return maxsim_contrastive_loss(q, d, q_keep, d_keep, self.temperature, n, n_keep)


def as_examples(data: list[Any]) -> list[tuple[str, str, list[str]]]:
    """(query, positive, negatives) from (query, document) pairs (read_pairs), JSONL records with "query",
    "positive" and optional "negatives" (retrieval.read_records) or such triples; a ValueError names the first bad
    one."""
    out = []
    for i, r in enumerate(data):
        if isinstance(r, dict):
            q, p, negs = r.get("query"), r.get("positive"), r.get("negatives") or []
        elif isinstance(r, (tuple, list)) and len(r) in (2, 3):
            q, p, negs = r[0], r[1], (list(r[2]) if len(r) == 3 else [])
        else:
            q = p = None
        if not (isinstance(q, str) and q and isinstance(p, str) and p and all(isinstance(n, str) for n in negs)):
            raise ValueError(f"example {i} is not a (query, positive document) pair of non-empty strings: "
                             f"{str(r)[:80]}")
        out.append((q, p, list(negs)))
    return out


def _collate(num_negatives: int | None):
    def collate(batch: list[tuple[str, str, list[str]]]) -> tuple[list[str], list[str], list[str]]:
        k = min(len(negs) for _, _, negs in batch)
        k = k if num_negatives is None else min(k, num_negatives)
        return [q for q, _, _ in batch], [p for _, p, _ in batch], [negs[j] for j in range(k) for _, _, negs in batch]
    return collate


def train_colbert(encoder, data: list[Any], config=None, *, temperature: float = 1.0,
                  attention_dropout: float | None = 0.0, num_negatives: int | None = None,
                  report: dict | None = None) -> list[dict[str, Any]]:
    """Train a ColBERT Encoder (an `add_colbert_head` model or a loaded ColBERT folder) in place on (query,
    positive) pairs or {"query", "positive", "negatives"} records; every query is scored against every document of
    its batch (and the batch's hard negatives, the fewest any record has, at most num_negatives). Returns the
    Trainer's history; the encoder is left in eval mode, ready to encode or `save`. attention_dropout as in
    train_contrastive (0: the fused attention kernel; None keeps the checkpoint's)."""
    from encoderkit.train.recipes._evaluation import fit
    from encoderkit.train.trainer import TrainConfig

    examples = as_examples(data)
    cfg = config or TrainConfig(epochs=1, batch_size=32, lr=3e-5, warmup_steps=2, restore_best=False)
    if len(examples) < cfg.batch_size:
        raise ValueError(f"{len(examples)} examples give no full batch of {cfg.batch_size}; lower the batch size")
    model = ColBERTTrainable(encoder, temperature)
    loader = torch.utils.data.DataLoader(examples, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(cfg.seed),
                                         collate_fn=_collate(num_negatives))
    with attention_dropout_while_training(encoder, attention_dropout):
        return fit(model, loader, cfg, None, encoder, report)


def load_colbert(model: str, *, dim: int = 128, query_length: int = 32, document_length: int = 256,
                 seed: int = 0) -> Any:
    """The model to train: a ColBERT / multi-vector folder as it is, or a dense model with a new ColBERT head (its
    projection initialized from torch's generator seeded with `seed`)."""
    import encoderkit
    from encoderkit.multivector import add_colbert_head

    enc = encoderkit.load(model)
    if enc.late is not None:
        return enc
    if enc.max_length < document_length:
        enc = encoderkit.load(model, max_length=document_length)
    torch.manual_seed(seed)
    return add_colbert_head(enc, dim, query_length=query_length, document_length=document_length)


def _args(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="a dense model to give a ColBERT head, or a ColBERT / multi-vector folder to train on")
    p.add_argument("--split", default="train", help="qrels split of a BEIR --data folder (default train)")
    p.add_argument("--dim", type=int, default=128, help="token vector width of a new head (default 128)")
    p.add_argument("--query-length", type=int, default=32,
                   help="query tokens of a new head, markers included; queries are expanded with [MASK] to it")
    p.add_argument("--document-length", type=int, default=256, help="document token limit of a new head")
    p.add_argument("--temperature", type=float, default=1.0, help="MaxSim scores are divided by it (default 1)")
    p.add_argument("--num-negatives", type=int, help="hard negatives used per JSONL record (default: all)")
    p.add_argument("--attention-dropout", type=float, default=0.0,
                   help="dropout on attention probabilities while training (default 0: the fused attention kernel; "
                        "-1 keeps the checkpoint's own)")


def pair_examples(args: argparse.Namespace, flag: str) -> list:
    """The training examples of a pair recipe (colbert, splade): --data/--pairs as a BEIR folder (qrels/SPLIT.tsv),
    a query<TAB>document TSV or a JSONL of {"query", "positive", "negatives"} records, cut to --limit."""
    from encoderkit.train.recipes.retrieval import read_records

    if not args.data:
        raise ValueError(f"{flag} is required: a BEIR folder (qrels/SPLIT.tsv), a query<TAB>document TSV or a JSONL "
                         "of {\"query\", \"positive\", \"negatives\"} records")
    data = read_records(args.data) if Path(args.data).suffix == ".jsonl" else read_pairs(args.data, args.split)
    return as_examples(data[: args.limit] if args.limit else data)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from encoderkit.train.model_card import CardInfo, write_training_report

    examples = pair_examples(args, "--data")
    cfg = train_config_from_args(args, epochs=1, batch_size=32, lr=3e-5, warmup_steps=2, restore_best=False)
    cfg.out_dir = None  # the output folder is the ColBERT checkpoint written below
    enc = load_colbert(args.model, dim=args.dim, query_length=args.query_length,
                       document_length=args.document_length, seed=cfg.seed)
    t0 = time.perf_counter()
    report: dict = {}
    history = train_colbert(enc, examples, cfg, temperature=args.temperature, num_negatives=args.num_negatives,
                            attention_dropout=None if args.attention_dropout < 0 else args.attention_dropout,
                            report=report)
    seconds = round(time.perf_counter() - t0, 1)
    enc.save(args.out)
    spec = enc.late
    params = {"temperature": args.temperature, "dim": enc.dim, "query_length": spec.query_length,
              "document_length": spec.document_length, "num_negatives": args.num_negatives}
    info = CardInfo("ColBERT", args.model, {Path(args.data).name: len(examples)}, "maxsim-contrastive", params, cfg,
                    "", {}, seconds)
    files = write_training_report(args.out, info, history, report.get("steps"))
    last = history[-1]
    return {"recipe": "colbert", "out": str(args.out), "examples": len(examples), "dim": enc.dim,
            "epochs": sum(1 for r in history if "train_loss" in r), "train_loss": last.get("train_loss"),
            "seconds": seconds, **files}


register_recipe("colbert", _args, _run,
                "train a ColBERT (late-interaction) model: a dense model + [Q]/[D] markers + 128-d token projection, "
                "in-batch contrastive over MaxSim")
