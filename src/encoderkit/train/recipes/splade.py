"""SPLADE training (Formal et al., SPLADE v2, 2021) from a BERT-family model: the model's tokens get a masked-language-
model head (dense h -> h, GELU, LayerNorm, decoder tied to the word embeddings plus a bias), SPLADE-max pooling turns
its logits into a vocabulary-sized vector w_v = max_t log(1 + relu(logit_tv)), and backbone and head learn from
in-batch contrastive ranking over sparse dot products plus the FLOPS regularizer (objectives/sparse.py), a lambda for
queries and one for documents, each warmed up quadratically. A dense checkpoint without an MLM head (all-MiniLM-L6-v2)
gets a new one; a model that has one (a SPLADE / SparseEncoder folder) trains on. The folder written is a
sentence-transformers SparseEncoder folder (Transformer(fill-mask) -> SpladePooling): encoderkit.load and
sentence_transformers.SparseEncoder read it with the same vectors.

    encoderkit train splade --pairs BEIR_DIR --split train -o FOLDER     # (query, positive) pairs of qrels/train.tsv
    encoderkit train splade --pairs mined.jsonl -o FOLDER                # {"query", "positive", "negatives": [...]}
    encoderkit eval beir BEIR_DIR -m FOLDER --mode sparse                # exact sparse dot products, whole corpus

Head initialisation (--head-init): "identity" (default) sets the transform's dense layer to the identity (bias 0) and
LayerNorm to (1, 0), so an untrained token's logits are <LayerNorm(GELU(h_t)), e_v> + b: its final hidden state read
against the word embeddings, which the residual stream keeps close to the input token's own embedding. Untrained
all-MiniLM-L6-v2 then scores its own token highest at most positions (logit 5-10, e.g. "smoking" -> smoking, smoke,
tobacco, cigarettes) while the other 30k entries sit near N(0, 1.1); the decoder bias b (--head-bias, one constant)
sets how many fire: b = 0 makes every entry positive somewhere (30k active dimensions, NDCG@10 0.004 on SciFact dev),
b = -5 leaves ~110 per query and ~770 per abstract (dev 0.615, the best of 0, -2 ... -7). "bert" is BERT's own init
(dense N(0, 0.02), biases 0), a random transform; measured untrained the same way it scores dev 0.654 at b = -3 but
with ~2,000 / ~8,200 active dimensions per query / abstract, and 0.597 at b = -4 (195 / 1,192): at the sparsity SPLADE
is for, identity starts ahead and is the default (not compared after training)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoderkit.train.recipes import add_common_arguments, register_recipe, train_config_from_args
from encoderkit.train.recipes.text import attention_dropout_while_training

HEAD_INITS = ("identity", "bert")


def _word_embeddings(model: nn.Module, vocab: int) -> nn.Embedding:
    found = [m for _, m in model.named_modules() if isinstance(m, nn.Embedding) and m.num_embeddings == vocab]
    if not found:
        raise ValueError(f"no word embedding of {vocab} rows in the backbone to tie an MLM decoder to")
    return found[0]


def add_splade_head(enc: Any, init: str = "identity", seed: int = 0, bias: float = 0.0) -> Any:
    """A SPLADE Encoder (MaskedLM + sparse spec max / relu) from a loaded dense BERT-family text Encoder: a new MLM
    head whose decoder shares the word embeddings' weight (tied, as BertForMaskedLM and the saved folder tie it),
    initialized as `init` says (module docstring), its decoder bias the constant `bias` (a negative one leaves only
    the logits above -bias active: a sparse start). The backbone is shared with `enc`. A SPLADE Encoder is returned
    as it is, its decoder re-tied to the word embeddings when its config ties them."""
    from encoderkit.checkpoints.mlm_heads import build_mlm_head, has_mlm_head, tied
    from encoderkit.encoder import Encoder
    from encoderkit.models.mlm_head import MaskedLM
    from encoderkit.sparse import SparseSpec

    if enc.sparse is not None:
        if enc.sparse.kind != "splade" or enc.routes:
            raise ValueError(f"{enc.name or 'this model'}: training needs one SPLADE pipeline (Transformer(fill-mask) "
                             "-> SpladePooling), not an inference-free or routed sparse model")
        if tied(enc.hf_config or {}):  # loaded tied weights are two equal copies: share them so both learn as one
            enc.model.head.decoder.weight = _word_embeddings(enc.model.backbone, enc.config.vocab_size).weight
        return enc
    mt = (enc.hf_config or {}).get("model_type")
    if enc.tokenizer is None or enc.routes or enc.late is not None or len(enc.head.dense) or not has_mlm_head(mt or ""):
        raise ValueError(f"{enc.name or 'this model'}: a SPLADE head goes on a plain BERT-family text encoder "
                         f"(model_type bert, roberta, distilbert...; this one is {mt!r}, with no Dense layers or routes)")
    if init not in HEAD_INITS:
        raise ValueError(f"head init must be one of {HEAD_INITS}, got {init!r}")
    torch.manual_seed(seed)
    head = build_mlm_head(enc.hf_config, enc.config)
    with torch.no_grad():
        if init == "identity":
            if head.dense.in_features != head.dense.out_features:
                raise ValueError("an identity head init needs hidden size == embedding size")
            head.dense.weight.copy_(torch.eye(head.dense.in_features))
        else:
            head.dense.weight.normal_(0.0, 0.02)
        head.dense.bias.zero_()
        head.norm.weight.fill_(1.0)
        head.norm.bias.zero_()
        head.decoder.bias.fill_(bias)
    head.decoder.weight = _word_embeddings(enc.model, enc.config.vocab_size).weight  # tied: (V, H)
    hf = {**enc.hf_config, "tie_word_embeddings": True}
    out = Encoder(MaskedLM(enc.model, head.to(enc.device)), enc.tokenizer, max_length=enc.max_length,
                  pad_id=enc.pad_id, do_lower_case=enc.do_lower_case, family=enc.family, config=enc.config,
                  hf_config=hf, source=enc.source, embedding_dim=enc.config.vocab_size, name=enc.name,
                  similarity_fn="dot", prompts=enc.prompts, default_prompt_name=enc.default_prompt_name)
    out.sparse = SparseSpec("splade", "max", "relu")
    return out


class SpladeTrainable(nn.Module):
    """A SPLADE Encoder's backbone and MLM head trained with objectives.sparse.splade_loss on (queries, positives,
    negatives) batches; the regularization lambdas warm up over the first `warmup_steps` optimizer steps."""

    def __init__(self, encoder: Any, *, lambda_q: float = 3e-4, lambda_d: float = 1e-4, warmup_steps: int = 0,
                 temperature: float = 1.0, grad_accum: int = 1, chunk: int = 32):
        super().__init__()
        if getattr(encoder, "sparse", None) is None or encoder.sparse.kind != "splade":
            raise ValueError(f"{encoder.name or 'this model'} is not a SPLADE encoder; build one with add_splade_head")
        if encoder.sparse.pooling != "max" or encoder.sparse.activation != "relu":
            raise ValueError("training implements SPLADE-max pooling with the relu activation; this model uses "
                             f"{encoder.sparse.pooling} / {encoder.sparse.activation}")
        self.backbone, self.head = encoder.model.backbone, encoder.model.head
        self.enc = encoder  # not a submodule: tokenizer and limits
        self.lambda_q, self.lambda_d, self.warmup_steps = lambda_q, lambda_d, warmup_steps
        self.temperature, self.grad_accum, self.chunk = temperature, grad_accum, chunk
        self.calls = 0  # training micro-batches seen: the optimizer step is calls // grad_accum

    def vectors(self, texts: list[str]) -> torch.Tensor:
        """(B, V) SPLADE-max vectors of texts, with gradients (the Encoder's tokenization and truncation)."""
        from encoderkit.objectives.sparse import splade_max_vectors

        dev = next(self.backbone.parameters()).device
        batch = {k: v.to(dev) for k, v in self.enc._batch_tensors(self.enc.tokenize(texts)).items()}
        hidden = self.backbone(**batch)
        hidden = hidden.last_hidden_state if hasattr(hidden, "last_hidden_state") else hidden  # (B, T, H)
        return splade_max_vectors(self.head, hidden, batch["attention_mask"], self.chunk).float()

    def loss(self, batch: tuple[list[str], list[str], list[str]]) -> tuple[torch.Tensor, dict[str, float]]:
        from encoderkit.objectives.sparse import splade_loss

        queries, positives, negatives = batch
        step = self.calls // self.grad_accum
        if self.training:
            self.calls += 1
        q, d = self.vectors(queries), self.vectors(positives)
        n = self.vectors(negatives) if negatives else None
        return splade_loss(q, d, n, lambda_q=self.lambda_q, lambda_d=self.lambda_d, step=step,
                           warmup_steps=self.warmup_steps, temperature=self.temperature)


def train_splade(encoder: Any, data: list[Any], config: Any = None, *, lambda_q: float = 3e-4,
                 lambda_d: float = 1e-4, flops_warmup: int | None = None, temperature: float = 1.0,
                 num_negatives: int | None = None, attention_dropout: float | None = 0.0,
                 report: dict | None = None) -> list[dict[str, Any]]:
    """Train a SPLADE Encoder (add_splade_head, or a loaded SparseEncoder folder) in place on (query, positive) pairs
    or {"query", "positive", "negatives"} records; returns the Trainer's history (per epoch: loss, contrastive, flops
    and mean active dimensions of each side). flops_warmup: optimizer steps of the lambdas' quadratic warm-up (None:
    a third of the run, as SPLADE v2 warms up over 50k of 150k steps). The encoder is left in eval mode."""
    from encoderkit.train.recipes._evaluation import fit
    from encoderkit.train.recipes.colbert import _collate, as_examples
    from encoderkit.train.trainer import TrainConfig

    examples = as_examples(data)
    cfg = config or TrainConfig(epochs=1, batch_size=32, lr=2e-5, warmup_steps=10, restore_best=False)
    if len(examples) < cfg.batch_size:
        raise ValueError(f"{len(examples)} examples give no full batch of {cfg.batch_size}; lower the batch size")
    loader = torch.utils.data.DataLoader(examples, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(cfg.seed),
                                         collate_fn=_collate(num_negatives))
    total = len(loader) * cfg.epochs // cfg.grad_accum
    warm = total // 3 if flops_warmup is None else flops_warmup
    model = SpladeTrainable(encoder, lambda_q=lambda_q, lambda_d=lambda_d, warmup_steps=warm,
                            temperature=temperature, grad_accum=cfg.grad_accum)
    with attention_dropout_while_training(encoder, attention_dropout):
        history = fit(model, loader, cfg, None, encoder, report)
    encoder.model.eval()
    return history


def load_splade(model: str, *, max_length: int = 256, head_init: str = "identity", head_bias: float = 0.0,
                seed: int = 0) -> Any:
    """The model to train: a SPLADE folder as it is (`new_head` False), or a dense BERT-family model given a new MLM
    head (`new_head` True)."""
    import encoderkit

    base = encoderkit.load(model, max_length=max_length)
    enc = add_splade_head(base, head_init, seed, head_bias)
    enc.new_head = base.sparse is None
    return enc


def _args(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--pairs", dest="data", help="same as --data: a BEIR folder (pairs of qrels/SPLIT.tsv), a "
                                                "query<TAB>document TSV, or a JSONL of {query, positive, negatives}")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="a dense BERT-family model to give an MLM head, or a SPLADE folder to train on")
    p.add_argument("--split", default="train", help="qrels split of a BEIR folder (default train)")
    p.add_argument("--max-length", type=int, default=256, help="token limit of queries and documents (default 256)")
    p.add_argument("--head-init", choices=HEAD_INITS, default="identity",
                   help="a new MLM head's transform: identity (default) or bert (N(0, 0.02)); see the recipe's doc")
    p.add_argument("--head-bias", type=float, default=-5.0,
                   help="a new MLM head's decoder bias, one constant for every vocabulary entry: only logits above "
                        "-bias fire (default -5, chosen on SciFact dev for all-MiniLM-L6-v2 untrained; 0 leaves all "
                        "30k entries active)")
    p.add_argument("--lambda-q", type=float, default=3e-4, help="FLOPS weight of queries (default 3e-4, SPLADE v2)")
    p.add_argument("--lambda-d", type=float, default=1e-4, help="FLOPS weight of documents (default 1e-4, SPLADE v2)")
    p.add_argument("--flops-warmup", type=int,
                   help="optimizer steps of the lambdas' quadratic warm-up (default: a third of the run)")
    p.add_argument("--temperature", type=float, default=1.0, help="dot products are divided by it (default 1)")
    p.add_argument("--num-negatives", type=int, help="hard negatives used per JSONL record (default: all)")
    p.add_argument("--attention-dropout", type=float, default=0.0,
                   help="dropout on attention probabilities while training (default 0: the fused attention kernel; "
                        "-1 keeps the checkpoint's own)")


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from encoderkit.train.model_card import CardInfo, write_training_report
    from encoderkit.train.recipes.colbert import pair_examples

    examples = pair_examples(args, "--pairs (or --data)")
    cfg = train_config_from_args(args, epochs=1, batch_size=32, lr=2e-5, warmup_steps=10, restore_best=False)
    cfg.out_dir = None  # the output folder is the SparseEncoder checkpoint written below
    enc = load_splade(args.model, max_length=args.max_length, head_init=args.head_init,
                      head_bias=args.head_bias, seed=cfg.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    report: dict = {}
    history = train_splade(enc, examples, cfg, lambda_q=args.lambda_q, lambda_d=args.lambda_d,
                           flops_warmup=args.flops_warmup, temperature=args.temperature,
                           num_negatives=args.num_negatives,
                           attention_dropout=None if args.attention_dropout < 0 else args.attention_dropout,
                           report=report)
    seconds, cpu = round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1)
    enc.save(args.out)
    total = sum(1 for r in history if "train_loss" in r) * (len(examples) // cfg.batch_size) // cfg.grad_accum
    params = {"lambda_q": args.lambda_q, "lambda_d": args.lambda_d,
              "flops_warmup": total // 3 if args.flops_warmup is None else args.flops_warmup,
              "temperature": args.temperature, "head_init": args.head_init if enc.new_head else "the model's own",
              "head_bias": args.head_bias if enc.new_head else None,
              "max_length": args.max_length, "num_negatives": args.num_negatives}
    info = CardInfo("SPLADE", args.model, {Path(args.data).name: len(examples)}, "splade (contrastive + FLOPS)", params,
                    cfg, "", {}, seconds)
    files = write_training_report(args.out, info, history, report.get("steps"))
    last = history[-1]
    return {"recipe": "splade", "out": str(args.out), "examples": len(examples), "vocabulary": enc.dim,
            "epochs": sum(1 for r in history if "train_loss" in r), "train_loss": last.get("train_loss"),
            **{k: last[k] for k in ("train_contrastive", "train_active_q", "train_active_d") if k in last},
            "seconds": seconds, "cpu_seconds": cpu, **files}


register_recipe("splade", _args, _run,
                "train a SPLADE sparse encoder: an MLM head on a BERT-family model, in-batch contrastive over sparse "
                "dot products + FLOPS regularization")
