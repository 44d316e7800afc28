"""Bi-encoder training the way sentence-transformers users do it, on JSONL records:

    loss         records                                                  objective (objectives/retrieval.py)
    mnrl         {"query", "positive", "negatives": [...]}                in-batch + hard negatives (InfoNCE)
    cached-mnrl  same                                                     the same loss through GradCache chunks
    gist         same                                                     guide model masks false negatives
    margin-mse   same + "scores": [teacher positive, teacher negatives]   distillation (e.g. from a cross-encoder)
    kl           same + "scores"                                          distillation, KL over the candidates
    cosent       {"sentence1", "sentence2", "score"}                      scored pairs (STS)
    angle        same                                                     scored pairs, angle similarity

--matryoshka-dims 384,256,128,64 wraps any of them in the Matryoshka loss. `encoderkit mine` writes the first
kind of record (with --scores and --cross-encoder: the teacher scores of the distillation losses).

    encoderkit train retrieval --data mined.jsonl --loss cached-mnrl --chunk-size 16 --batch-size 64 --out FOLDER
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from encoderkit.train.recipes import add_common_arguments, register_recipe, train_config_from_args
from encoderkit.train.recipes._evaluation import add_eval_arguments, configure_evaluation
from encoderkit.train.recipes.text import ContrastiveTrainable, attention_dropout_while_training

LOSSES = ("mnrl", "cached-mnrl", "gist", "margin-mse", "kl", "cosent", "angle")
_PAIR_LOSSES = ("cosent", "angle")


class RetrievalTrainable(ContrastiveTrainable):
    """A loaded Encoder's backbone (and Dense head) trained with one of LOSSES on a batch of records."""

    def __init__(self, encoder, loss: str = "mnrl", *, scale: float = 20.0, chunk_size: int = 32,
                 matryoshka_dims: list[int] | None = None, matryoshka_weights: list[float] | None = None,
                 guide=None, gist_margin: float = 0.0, num_negatives: int | None = None, temperature: float = 1.0,
                 margin_scale: float = 1.0):
        super().__init__(encoder, temperature=1.0 / scale)
        from encoderkit.objectives.retrieval import (AnglELoss, CoSENTLoss, MatryoshkaLoss, kl_distill_loss,
                                                     margin_mse_loss, mnrl_loss)

        if loss not in LOSSES:
            raise ValueError(f"unknown retrieval loss {loss!r}; choose one of {', '.join(LOSSES)}")
        if loss == "gist" and guide is None:
            raise ValueError("the gist loss needs a guide encoder (--guide MODEL)")
        self.kind, self.scale, self.num_negatives = loss, scale, num_negatives
        self.guide = guide  # not trained: an Encoder, called without gradients
        base = {"mnrl": lambda *e: mnrl_loss(*e, scale=scale), "cached-mnrl": lambda *e: mnrl_loss(*e, scale=scale),
                "margin-mse": lambda q, p, n, teacher: margin_mse_loss(q, p, n, teacher, scale=margin_scale),
                "cosent": CoSENTLoss(scale), "angle": AnglELoss(scale),
                "kl": lambda q, p, n, teacher: kl_distill_loss(q, p, n, teacher, temperature=temperature),
                "gist": None}[loss]
        if matryoshka_dims:
            if loss == "gist":
                raise ValueError("Matryoshka training wraps mnrl, cached-mnrl, margin-mse, kl, cosent or angle, not gist")
            base = MatryoshkaLoss(base, matryoshka_dims, matryoshka_weights)
        self.criterion = base
        self.gist_margin, self.chunk_size = gist_margin, chunk_size

    def _guide(self, texts: list[str]) -> torch.Tensor:
        return torch.from_numpy(self.guide.encode(texts, normalize=True, progress=False))

    def loss(self, batch: list[dict]) -> torch.Tensor:
        from encoderkit.objectives.retrieval import CachedMultipleNegativesRankingLoss, GISTEmbedLoss

        if self.kind in _PAIR_LOSSES:
            a = self.embed([r["sentence1"] for r in batch])
            b = self.embed([r["sentence2"] for r in batch])
            return self.criterion(a, b, labels=torch.tensor([float(r["score"]) for r in batch]))
        k = min(len(r.get("negatives", [])) for r in batch)
        if self.num_negatives is not None:
            k = min(k, self.num_negatives)
        cols = [[r["query"] for r in batch], [r["positive"] for r in batch]]
        cols += [[r["negatives"][j] for r in batch] for j in range(k)]
        if self.kind == "cached-mnrl":
            return CachedMultipleNegativesRankingLoss(self.embed, self.chunk_size, loss=self.criterion)(*cols)
        if self.kind == "gist":
            emb = [self.embed(c) for c in cols[:3]]
            return GISTEmbedLoss(self._guide, margin=self.gist_margin)(*emb, texts=cols[:3])
        emb = [self.embed(c) for c in cols]
        if self.kind in ("margin-mse", "kl"):
            if k < 1 or any("scores" not in r for r in batch):
                raise ValueError(f"the {self.kind} loss needs records with negatives and teacher \"scores\" "
                                 "(encoderkit mine --scores --cross-encoder TEACHER)")
            teacher = torch.tensor([r["scores"][: k + 1] for r in batch], dtype=torch.float32)
            if teacher.shape[1] != k + 1:
                raise ValueError(f"each record needs {k + 1} teacher scores (positive, then its negatives)")
            return self.criterion(emb[0], emb[1], torch.stack(emb[2:], 1), teacher=teacher)
        return self.criterion(*emb)


def check_records(records: list[dict], loss: str) -> None:
    """A ValueError naming the first record that does not fit the loss."""
    if not records:
        raise ValueError("no training records")
    need = ("sentence1", "sentence2", "score") if loss in _PAIR_LOSSES else ("query", "positive")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or any(k not in r for k in need):
            raise ValueError(f"record {i} lacks {', '.join(need)} (the {loss} loss reads them): {str(r)[:80]}")
        if loss in ("gist", "margin-mse", "kl") and not r.get("negatives"):
            raise ValueError(f"record {i} has no negatives; the {loss} loss needs at least one (encoderkit mine)")


def train_retrieval(encoder, records: list[dict], loss: str = "mnrl", config=None, *, evaluator=None,
                    report: dict | None = None, attention_dropout: float | None = 0.0,
                    **loss_kw) -> list[dict[str, Any]]:
    """Fine-tune a loaded text Encoder in place on records (see the module docstring); returns the Trainer's
    history, the encoder left in eval mode, ready to encode or `save`. evaluator (encoderkit.evaluate.evaluators,
    called on the encoder) runs at each epoch end and every config.eval_steps steps; report receives the step
    losses and the best evaluation. attention_dropout: dropout on the attention probabilities while training, as
    in train_contrastive: 0 (default) runs the fused attention kernel, a faster step; None keeps the checkpoint's
    own; the checkpoint's value comes back afterwards and the saved config is unchanged."""
    from encoderkit.train.recipes._evaluation import fit
    from encoderkit.train.trainer import TrainConfig

    check_records(records, loss)
    cfg = config or TrainConfig(epochs=1, batch_size=32, lr=2e-5, warmup_steps=10, restore_best=False)
    model = RetrievalTrainable(encoder, loss, **loss_kw)
    if len(records) < cfg.batch_size:
        raise ValueError(f"{len(records)} records give no full batch of {cfg.batch_size}; lower the batch size")
    loader = torch.utils.data.DataLoader(records, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(cfg.seed), collate_fn=list)
    with attention_dropout_while_training(encoder, attention_dropout):
        return fit(model, loader, cfg, evaluator, encoder, report)


def numbered_records(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line of a JSONL training file; errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"training data {p} not found; pass a JSONL file (see `encoderkit mine`)")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append((n, json.loads(line)))
            except ValueError as exc:
                raise ValueError(f"{p}:{n} is not valid JSON ({exc})") from None
    return out


def read_records(path: str | Path) -> list[Any]:
    """The parsed JSON of each non-blank line of a JSONL training file."""
    return [d for _, d in numbered_records(path)]


def _args(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="encoder to fine-tune")
    p.add_argument("--loss", choices=LOSSES, default="mnrl", help="objective: mnrl, cached-mnrl, gist, margin-mse, kl (query/positive/negatives records), cosent, angle (scored pairs)")
    p.add_argument("--scale", type=float, default=20.0, help="similarity scale = 1 / temperature (default 20)")
    p.add_argument("--chunk-size", type=int, default=32, help="cached-mnrl: texts embedded per chunk")
    p.add_argument("--margin-scale", type=float, default=1.0,
                   help="margin-mse: the student's similarities times this before their margins meet the teacher's "
                        "(default 1, as sentence-transformers; a normalized student under a cross-encoder's logits "
                        "needs ~10-20)")
    p.add_argument("--matryoshka-dims", help="comma-separated widths, e.g. 384,256,128,64")
    p.add_argument("--matryoshka-weights", help="comma-separated weights (default all 1)")
    p.add_argument("--guide", help="gist: the guide encoder (default: the starting model)")
    p.add_argument("--num-negatives", type=int, help="hard negatives used per record (default: all)")
    p.add_argument("--max-length", type=int, default=256, help="token limit while training")
    p.add_argument("--attention-dropout", type=float, default=0.0,
                   help="dropout on attention probabilities while training (default 0: the fused attention kernel, "
                        "a faster step; -1 keeps the checkpoint's own, e.g. 0.1)")
    add_eval_arguments(p, "dev set evaluated during training: a BEIR folder (IR metrics on --dev-split) for the "
                          "query losses, an STS Benchmark file or folder (Spearman) for cosent / angle")


def _ints(s: str | None, what: str, cast=int) -> list | None:
    if not s:
        return None
    try:
        return [cast(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {s!r}") from None


def _run(args: argparse.Namespace) -> dict[str, Any]:
    import encoderkit

    if not args.data:
        raise ValueError("--data is required: a JSONL of training records (see `encoderkit train retrieval -h`)")
    records = read_records(args.data)
    if args.limit:
        records = records[: args.limit]
    check_records(records, args.loss)
    evaluator = dev_evaluator(args)
    cfg = configure_evaluation(train_config_from_args(args, epochs=1, batch_size=32, lr=2e-5, warmup_steps=10,
                                                      restore_best=False), evaluator, args)
    cfg.out_dir = None  # the output folder is the sentence-transformers checkpoint written below
    enc = encoderkit.load(args.model, max_length=args.max_length)
    guide = encoderkit.load(args.guide or args.model, max_length=args.max_length) if args.loss == "gist" else None
    loss_kw = dict(scale=args.scale, chunk_size=args.chunk_size, margin_scale=args.margin_scale,
                   matryoshka_dims=_ints(args.matryoshka_dims, "--matryoshka-dims"),
                   matryoshka_weights=_ints(args.matryoshka_weights, "--matryoshka-weights", float),
                   num_negatives=args.num_negatives)
    t0 = time.perf_counter()
    report: dict = {}
    attention_dropout = None if args.attention_dropout < 0 else args.attention_dropout
    history = train_retrieval(enc, records, args.loss, cfg, evaluator=evaluator, report=report, guide=guide,
                              attention_dropout=attention_dropout, **loss_kw)
    seconds = round(time.perf_counter() - t0, 1)
    enc.save(args.out)
    return _summary(args, records, cfg, evaluator, history, report, loss_kw, seconds)


def dev_evaluator(args: argparse.Namespace):
    """The --dev evaluator: STS (Spearman) for the pair losses, IR (NDCG@10, MRR@10, recall) for the others."""
    if not args.dev:
        return None
    from encoderkit.evaluate.evaluators import ir_evaluator_from_beir, sts_evaluator_from_file

    if args.loss in _PAIR_LOSSES:
        if Path(args.dev).is_dir() and (Path(args.dev) / "corpus.jsonl").is_file():
            raise ValueError(f"--dev {args.dev} is a BEIR folder; the {args.loss} loss is evaluated on scored pairs "
                             "(an STS Benchmark file such as sts-dev.csv)")
        return sts_evaluator_from_file(args.dev, args.dev_max)
    if not Path(args.dev).is_dir():
        raise ValueError(f"--dev {args.dev} is not a BEIR folder (corpus.jsonl, queries.jsonl, qrels/"
                         f"{args.dev_split}.tsv), which the {args.loss} loss is evaluated on")
    return ir_evaluator_from_beir(args.dev, args.dev_split, args.dev_max)


def _summary(args, records, cfg, evaluator, history, report, loss_kw, seconds) -> dict[str, Any]:
    """Write the model card, history and curves into the saved folder; the CLI's JSON summary."""
    from encoderkit.train.model_card import CardInfo, write_training_report

    desc = ""
    if evaluator is not None:
        desc = f"{evaluator.describe()} ({args.dev}{'' if args.loss in _PAIR_LOSSES else ', ' + args.dev_split})"
    params = {k: v for k, v in loss_kw.items() if k != "chunk_size" or args.loss == "cached-mnrl"}
    if args.loss == "gist":
        params["guide"] = args.guide or args.model
    info = CardInfo("bi-encoder", args.model, {Path(args.data).name: len(records)}, args.loss,
                    {**params, "max_length": args.max_length,
                     "attention_dropout": "checkpoint's" if args.attention_dropout < 0 else args.attention_dropout},
                    cfg, desc, report.get("best", {}), seconds)
    files = write_training_report(args.out, info, history, report.get("steps"))
    last = history[-1]
    out = {"recipe": "retrieval", "loss": args.loss, "out": str(args.out), "records": len(records),
           "epochs": sum(1 for r in history if "train_loss" in r), "train_loss": last.get("train_loss"),
           "seconds": seconds, **files}
    if evaluator is not None:
        out.update({"best": report["best"], "last_dev": {k[5:]: v for k, v in last.items() if k.startswith("eval_")}})
    return out


register_recipe("retrieval", _args, _run,
                "fine-tune a bi-encoder: (cached) MNRL with hard negatives, GISTEmbed, MarginMSE/KL, CoSENT/AnglE, Matryoshka")
