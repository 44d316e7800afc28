"""Cross-encoder training: a BERT-family encoder (a bi-encoder checkpoint such as all-MiniLM-L6-v2, or an existing
cross-encoder) becomes a *ForSequenceClassification model with one relevance logit, trained on (query, passage)
pairs, and saved in the transformers format that encoderkit's CrossEncoder, the /rerank route and
sentence-transformers' CrossEncoder all read with the same scores.

Losses, for a query q with passages d_1..d_m and logits z_j = f(q, d_j):
- "bce" (pointwise, Nogueira & Cho 2019): L = mean_j BCE(sigmoid(z_j), y_j), y = 1 for positives, 0 for negatives
- "listwise" (softmax cross-entropy over each query's list = ListNet with a one-hot target, Cao et al. 2007):
      L = - mean_q log [ exp(z_pos) / sum_j exp(z_j) ]       (the list is [positive, negative_1, ..., negative_k])

    encoderkit train cross-encoder --data mined.jsonl --out CE_FOLDER     # {"query", "positive", "negatives"} lines
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.train.recipes import add_common_arguments, register_recipe, train_config_from_args
from encoderkit.train.recipes._evaluation import add_eval_arguments, configure_evaluation

log = logging.getLogger(__name__)

# the attribute under which transformers' *ForSequenceClassification keeps the encoder, per model_type
_PREFIX = {"bert": "bert.", "roberta": "roberta.", "xlm-roberta": "roberta.", "camembert": "roberta.",
           "electra": "electra.", "distilbert": "distilbert.", "albert": "albert."}
_ARCH = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "camembert": "Camembert",
         "electra": "Electra", "distilbert": "DistilBert", "albert": "Albert"}
HEAD_LR_SCALE = 50.0  # the new head's learning rate over the encoder's, unless told (see head_optimizer)
IDENTITY = "torch.nn.modules.linear.Identity"  # the activation sentence-transformers' CrossEncoder applies on load


class CrossEncoderModel(nn.Module):
    """A BertForSequenceClassification with what it needs to tokenize pairs and be saved."""

    def __init__(self, clf: nn.Module, tokenizer: Any, hf_config: dict, pad_id: int, source: Path | None,
                 max_length: int):
        super().__init__()
        self.clf = clf
        self.tokenizer, self.hf_config, self.pad_id, self.source, self.max_length = tokenizer, hf_config, pad_id, source, max_length

    @property
    def config(self):
        return self.clf.config

    def batch(self, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """Token ids, attention mask and segment ids of (first, second) pairs, right-padded."""
        encs = self.tokenizer.encode_batch([tuple(p) for p in pairs])
        T = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), T), self.pad_id, np.int64)
        mask = np.zeros((len(encs), T), np.int64)
        types = np.zeros((len(encs), T), np.int64)
        for r, e in enumerate(encs):
            ids[r, :len(e.ids)], mask[r, :len(e.ids)], types[r, :len(e.ids)] = e.ids, 1, e.type_ids
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                "token_type_ids": torch.from_numpy(types) if self.config.type_vocab_size > 1 else None}

    def forward(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        b = self.batch(pairs)
        return self.clf(b["input_ids"], b["attention_mask"], b["token_type_ids"])  # (B, num_labels)

    def save(self, path: str | Path) -> Path:
        """config.json (architectures *ForSequenceClassification, the identity activation for
        sentence-transformers), model.safetensors under transformers' names, and the tokenizer files."""
        from encoderkit.checkpoints.bert_family import bert_key_map, bert_to_hf_config, classifier_key_map
        from encoderkit.checkpoints.tokenizer import TOKENIZER_FILES
        from encoderkit.checkpoints.weights import export_mapped, save_safetensors

        cfg = self.config
        mt = cfg.model_type
        if mt not in _PREFIX:
            raise ValueError(f"cannot save a {mt!r} cross-encoder; BERT-family types: {', '.join(_PREFIX)}")
        prefix = _PREFIX[mt]
        key_map = {f"encoder.{k}": (prefix + v if isinstance(v, str) else tuple(prefix + x for x in v))
                   for k, v in bert_key_map(cfg).items()}
        key_map.update(classifier_key_map(cfg, prefix)[0])
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        n = self.clf.head.out.out_features
        hf = dict(self.hf_config) if self.hf_config else bert_to_hf_config(cfg)
        hf.update(architectures=[f"{_ARCH[mt]}ForSequenceClassification"],
                  id2label={str(i): f"LABEL_{i}" for i in range(n)}, label2id={f"LABEL_{i}": i for i in range(n)},
                  sentence_transformers={"activation_fn": IDENTITY})
        hf.pop("num_labels", None)
        (path / "config.json").write_text(json.dumps(hf, indent=2))
        save_safetensors(export_mapped(self.clf, key_map), path / "model.safetensors")
        copied = False
        if self.source is not None and Path(self.source).resolve() != path.resolve():
            for name in TOKENIZER_FILES:
                if (Path(self.source) / name).is_file():
                    shutil.copyfile(Path(self.source) / name, path / name)
                    copied = True
        if not copied:
            self.tokenizer.save(str(path / "tokenizer.json"))
        return path


def cross_encoder_from(name_or_path: str | Path, num_labels: int = 1, max_length: int | None = None,
                       seed: int = 0) -> CrossEncoderModel:
    """A cross-encoder to train: an existing *ForSequenceClassification folder as it is, or a BERT-family
    encoder (folder, known name or hub id) with a new head: the pooler's weights when the checkpoint has them
    (as transformers does), the output layer drawn N(0, 0.02) with zero bias. max_length: the token limit of a
    pair here (default the model's position limit, which is what the saved folder's readers use)."""
    import encoderkit
    from encoderkit.checkpoints.bert_family import classifier_key_map
    from encoderkit.checkpoints.hub import resolve
    from encoderkit.checkpoints.loader import read_config
    from encoderkit.models.bert import BertForSequenceClassification, BertModel

    folder = resolve(name_or_path)
    hf = read_config(folder) if (Path(folder) / "config.json").is_file() else {}
    if any(a.endswith("ForSequenceClassification") for a in hf.get("architectures") or []):
        from encoderkit.checkpoints.classifier import load_sequence_classifier

        clf, tok, hf, pad, limit = load_sequence_classifier(folder, max_length)
        return CrossEncoderModel(clf, tok, hf, pad, Path(folder), limit).eval()
    # the readers of the saved folder (CrossEncoder.load, sentence-transformers) truncate at the position limit,
    # not at a bi-encoder's max_seq_length: so does this model unless max_length says otherwise (for training)
    enc = encoderkit.load(name_or_path, max_length=max_length or 1 << 20)
    if not isinstance(enc.model, BertModel) or enc.config.model_type not in _PREFIX:
        raise ValueError(f"{name_or_path} is a {getattr(enc.config, 'model_type', type(enc.model).__name__)} model; "
                         f"cross-encoders train from BERT-family encoders ({', '.join(_PREFIX)})")
    if enc.tokenizer is None:
        raise ValueError(f"{name_or_path} has no tokenizer; a cross-encoder needs one to read text pairs")
    cfg = enc.config
    style = classifier_key_map(cfg, _PREFIX[cfg.model_type])[1]
    g = torch.Generator().manual_seed(seed)
    clf = BertForSequenceClassification(cfg, num_labels, style)
    clf.encoder.load_state_dict(enc.model.state_dict())
    std = float((enc.hf_config or {}).get("initializer_range", 0.02))
    with torch.no_grad():
        for lin in (clf.head.dense, clf.head.out):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * std)
            lin.bias.zero_()
        pw, pb = enc.extra_tensors.get("pooler.dense.weight"), enc.extra_tensors.get("pooler.dense.bias")
        if style == "bert" and pw is not None and pb is not None and tuple(pw.shape) == tuple(clf.head.dense.weight.shape):
            clf.head.dense.weight.copy_(pw)
            clf.head.dense.bias.copy_(pb)
    hf_config = dict(enc.hf_config or {})
    tdir = Path(enc.source) if enc.source is not None else None
    if tdir is not None and not (tdir / "config.json").is_file() and (tdir / "0_Transformer").is_dir():
        tdir = tdir / "0_Transformer"  # an older sentence-transformers layout keeps the tokenizer there
    return CrossEncoderModel(clf, enc.tokenizer, hf_config, enc.pad_id, tdir, enc.max_length).eval()


# ------------------------------------------------------------------------------------ losses and data
def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pointwise binary cross-entropy on one logit per pair."""
    return F.binary_cross_entropy_with_logits(logits.reshape(-1), labels.to(logits.dtype).reshape(-1))


def listwise_loss(logits: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over (Q, 1 + K) logits whose column 0 is each query's positive."""
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def read_mined(path: str | Path) -> list[dict]:
    """{"query", "positive", "negatives": [...]} records (the output of `encoderkit mine`)."""
    from encoderkit.train.recipes.retrieval import numbered_records

    p = Path(path)
    out = []
    for n, d in numbered_records(p):
        if not isinstance(d, dict) or not all(isinstance(d.get(k), str) and d[k] for k in ("query", "positive")) \
                or not isinstance(d.get("negatives"), list) or not all(isinstance(x, str) for x in d["negatives"]):
            raise ValueError(f"{p}:{n}: expected {{\"query\": str, \"positive\": str, \"negatives\": [str, ...]}}")
        out.append(d)
    if not out:
        raise ValueError(f"{p} holds no records")
    return out


class _List(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class CrossEncoderTrainable(nn.Module):
    """The Trainer's view: bce batches are [(query, passage, label)], listwise batches [(query, [pos, negs...])]."""

    def __init__(self, model: CrossEncoderModel, loss: str = "bce"):
        super().__init__()
        if loss not in ("bce", "listwise"):
            raise ValueError(f"unknown cross-encoder loss {loss!r}; use 'bce' or 'listwise'")
        self.model, self.kind = model, loss

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        if self.kind == "bce":
            z = self.model([(q, d) for q, d, _ in batch])[:, 0]
            y = torch.tensor([float(lab) for _, _, lab in batch])
            return bce_loss(z, y), {"accuracy": float(((z > 0).float() == y).float().mean())}
        k = len(batch[0][1])
        if any(len(c) != k for _, c in batch):
            raise ValueError("listwise batches need the same number of negatives for every query")
        z = self.model([(q, d) for q, cands in batch for d in cands])[:, 0].reshape(len(batch), k)
        return listwise_loss(z), {"top1": float((z.argmax(1) == 0).float().mean())}


def training_items(records: list[dict], loss: str, num_negatives: int | None = None) -> list:
    """bce: one (query, passage, label) per positive and negative; listwise: (query, [positive, negatives])."""
    if loss == "bce":
        items = []
        for r in records:
            items.append((r["query"], r["positive"], 1.0))
            items.extend((r["query"], n, 0.0) for n in r["negatives"][:num_negatives])
        return items
    k = num_negatives or min(len(r["negatives"]) for r in records)
    keep = [r for r in records if len(r["negatives"]) >= k]
    if not keep or k < 1:
        raise ValueError("listwise training needs records with at least one negative each")
    return [(r["query"], [r["positive"], *r["negatives"][:k]]) for r in keep]


def head_optimizer(model: CrossEncoderModel, lr: float, head_lr: float, weight_decay: float = 0.01,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with two rates: the encoder at lr, the classification head (pooler dense + output layer) at head_lr.

    Why: Adam moves each weight by about lr per step, so a head drawn N(0, 0.02) on top of a bi-encoder's pooler
    (all-MiniLM-L6-v2's: tanh features of |0.05|, spread 0.02 across a query's passages; initial logits within
    +-0.02 of each other) needs thousands of steps at lr 2e-5 before its logits can separate a list: 110 steps
    on SciFact's 877 mined lists left the listwise loss at 1.5998 against chance 1.6094, though the ranking
    (top-1 0.32 against chance 0.20) had started to move. A head rate 50x the encoder's lets the scale grow in
    a few dozen steps while the pretrained encoder still moves at its usual fine-tuning rate."""
    head = [p for p in model.clf.head.parameters() if p.requires_grad]
    ids = {id(p) for p in head}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}], lr=lr,
                             weight_decay=weight_decay, betas=tuple(betas))


def train_cross_encoder(model: CrossEncoderModel, records: list[dict], loss: str = "bce", config=None,
                        num_negatives: int | None = None, *, evaluator=None, report: dict | None = None,
                        head_lr: float | None = None) -> list[dict[str, Any]]:
    """Fine-tune model in place on mined records; returns the Trainer's history (model left in eval mode).
    evaluator (e.g. a RerankEvaluator, called on the model) runs at each epoch end and every config.eval_steps
    steps; report receives the step losses and the best evaluation. head_lr: the classification head's peak
    learning rate (default HEAD_LR_SCALE x config.lr; config.lr = one rate for all; see head_optimizer), on the
    same warmup and decay."""
    from encoderkit.train.recipes._evaluation import fit
    from encoderkit.train.trainer import TrainConfig

    cfg = config or TrainConfig(epochs=1, batch_size=16, lr=2e-5, warmup_steps=10, restore_best=False)
    items = training_items(records, loss, num_negatives)
    trainable = CrossEncoderTrainable(model, loss)
    loader = torch.utils.data.DataLoader(_List(items), batch_size=cfg.batch_size, shuffle=cfg.shuffle,
                                         generator=torch.Generator().manual_seed(cfg.seed), collate_fn=list)
    head_lr = HEAD_LR_SCALE * cfg.lr if head_lr is None else head_lr
    opt = None if head_lr == cfg.lr else head_optimizer(model, cfg.lr, head_lr, cfg.weight_decay, cfg.betas)
    try:
        return fit(trainable, loader, cfg, evaluator, model, report, optimizer=opt)
    finally:
        model.eval()


# ------------------------------------------------------------------------------------ CLI recipe
def _args(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="BERT-family encoder (or cross-encoder) to start from")
    p.add_argument("--loss", choices=("bce", "listwise"), default="bce", help="pointwise BCE or listwise softmax CE")
    p.add_argument("--num-negatives", type=int, help="negatives used per record (default: all / the fewest)")
    p.add_argument("--max-length", type=int, default=256, help="token limit of a (query, passage) pair")
    p.add_argument("--head-lr", type=float, help=f"peak learning rate of the new classification head (default "
                                                 f"{HEAD_LR_SCALE:g} x --lr; --head-lr equal to --lr: one rate)")
    add_eval_arguments(p, "dev set reranked during training (MRR@10, NDCG@10): a JSONL of {query, positive, "
                          "negatives} like --data (e.g. `encoderkit mine` on held-out queries)")


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.data:
        raise ValueError("--data is required: the JSONL of {query, positive, negatives} that `encoderkit mine` writes")
    records = read_mined(args.data)
    if args.limit:
        records = records[: args.limit]
    evaluator = None
    if args.dev:
        from encoderkit.evaluate.evaluators import RerankEvaluator, rerank_samples

        evaluator = RerankEvaluator(rerank_samples(read_mined(args.dev)[: args.dev_max]))
    cfg = configure_evaluation(train_config_from_args(args, epochs=1, batch_size=16, lr=2e-5, warmup_steps=10,
                                                      restore_best=False), evaluator, args)
    cfg.out_dir = None  # the output folder is the transformers checkpoint written below
    model = cross_encoder_from(args.model, max_length=args.max_length, seed=cfg.seed)
    t0 = time.perf_counter()
    report: dict = {}
    if args.head_lr is not None and not args.head_lr > 0:
        raise ValueError(f"--head-lr must be > 0, got {args.head_lr}")
    history = train_cross_encoder(model, records, args.loss, cfg, args.num_negatives, evaluator=evaluator,
                                  report=report, head_lr=args.head_lr)
    seconds = round(time.perf_counter() - t0, 1)
    model.save(args.out)
    return _summary(args, records, cfg, evaluator, history, report, seconds)


def _summary(args, records, cfg, evaluator, history, report, seconds) -> dict[str, Any]:
    """Write the model card, history and curves into the saved folder; the CLI's JSON summary."""
    from encoderkit.train.model_card import CardInfo, write_training_report

    info = CardInfo("cross-encoder", args.model, {Path(args.data).name: len(records)}, args.loss,
                    {"num_negatives": args.num_negatives, "max_length": args.max_length,
                     "head_lr": args.head_lr if args.head_lr is not None else HEAD_LR_SCALE * cfg.lr}, cfg,
                    f"{evaluator.describe()} ({args.dev})" if evaluator is not None else "",
                    report.get("best", {}), seconds)
    files = write_training_report(args.out, info, history, report.get("steps"))
    last = history[-1]
    out = {"recipe": "cross-encoder", "out": str(args.out), "records": len(records), "loss": args.loss,
           "epochs": sum(1 for r in history if "train_loss" in r), "train_loss": last.get("train_loss"),
           "seconds": seconds, **files}
    if evaluator is not None:
        out.update({"best": report["best"], "last_dev": {k[5:]: v for k, v in last.items() if k.startswith("eval_")}})
    return out


register_recipe("cross-encoder", _args, _run,
                "train a cross-encoder (reranker) from a BERT-family encoder on mined (query, positive, negatives)")
