"""The context-vector bottleneck of recurrent seq2seq, measured: GRU and LSTM encoder-decoders with and without
Bahdanau attention learn to reverse random symbol sequences of length MIN..MAX with the same budget (steps x
batch), then are scored by exact match on fresh sequences of each length; the figure plots accuracy vs length.

    python examples/seq2seq_bottleneck.py --out docs/figures              # all four models, one after another
    python examples/seq2seq_bottleneck.py --out DIR --only gru-attention   # one model (run several in parallel)
    python examples/seq2seq_bottleneck.py --out DIR --plot-only            # redraw from DIR/seq2seq_*.json"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from encoderkit.models.recurrent import Seq2SeqConfig, exact_match_by_length, train_reversal

MODELS = {"gru-attention": ("gru", True), "gru-none": ("gru", False),
          "lstm-attention": ("lstm", True), "lstm-none": ("lstm", False)}


def run_one(name: str, args: argparse.Namespace) -> dict:
    cell, attention = MODELS[name]
    cfg = Seq2SeqConfig(src_vocab_size=3 + args.symbols, tgt_vocab_size=3 + args.symbols, cell=cell,
                        embed_dim=args.embed, hidden_size=args.hidden, attention=attention, attention_dim=args.hidden)
    t0 = time.perf_counter()
    model = train_reversal(cfg, min_len=args.min_len, max_len=args.max_len, n_symbols=args.symbols, steps=args.steps,
                           batch_size=args.batch_size, lr=args.lr, seed=args.seed, log_every=100,
                           log=lambda s, l: print(f"{name} step {s} loss {l:.4f} ({time.perf_counter() - t0:.0f}s)",
                                                  flush=True))
    train_s = time.perf_counter() - t0
    lengths = list(range(args.min_len, args.max_len + 1, args.eval_every))
    if lengths[-1] != args.max_len:
        lengths.append(args.max_len)
    acc = exact_match_by_length(model, lengths, args.eval_n, args.symbols, seed=10_000 + args.seed)
    res = {"model": name, "cell": cell, "attention": attention, "accuracy": {str(k): v for k, v in acc.items()},
           "train_seconds": round(train_s, 1), "parameters": sum(p.numel() for p in model.parameters()),
           "config": {k: v for k, v in vars(args).items() if k not in ("out", "only", "plot_only")}}
    (Path(args.out) / f"seq2seq_{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({"model": name, "accuracy": res["accuracy"]}), flush=True)
    return res


def plot(out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    style = {"gru-attention": ("C0", "-", "o"), "lstm-attention": ("C1", "-", "s"),
             "gru-none": ("C0", "--", "o"), "lstm-none": ("C1", "--", "s")}
    found = None
    for name in MODELS:
        f = out / f"seq2seq_{name}.json"
        if not f.exists():
            continue
        r = json.loads(f.read_text())
        found = r["config"]
        xs = [int(k) for k in r["accuracy"]]
        c, ls, mk = style[name]
        ax.plot(xs, [100 * v for v in r["accuracy"].values()], color=c, linestyle=ls, marker=mk,
                label=f"{r['cell'].upper()} {'+ Bahdanau attention' if r['attention'] else '(no attention)'}")
    if found is None:
        raise FileNotFoundError(f"no seq2seq_*.json results in {out}; run without --plot-only first")
    ax.set_xlabel("input length (symbols to reverse)")
    ax.set_ylabel("exact match on held-out sequences (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(f"Sequence reversal, same budget per model ({found['steps']} steps x {found['batch_size']})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    ax.set_xticks(sorted({int(k) for k in r["accuracy"]}))
    fig.tight_layout()
    path = out / "seq2seq_bottleneck.png"
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/figures")
    ap.add_argument("--only", choices=list(MODELS), action="append", help="train only these models (repeatable)")
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--min-len", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=24)
    ap.add_argument("--eval-every", type=int, default=4, help="evaluate lengths min, min+this, ..., max")
    ap.add_argument("--eval-n", type=int, default=500, help="held-out sequences per length")
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--embed", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.plot_only:
        for name in args.only or list(MODELS):
            run_one(name, args)
    print(plot(out))


if __name__ == "__main__":
    main()
