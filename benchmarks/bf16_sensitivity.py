"""Which GEMMs of all-MiniLM-L6-v2 can run in bf16 while the sentence vector stays within cosine 0.99999 of fp32?
An accuracy study, not a timing: each GEMM (per layer: the fused QKV projection, Q K^T, attention x V, the output
projection, FFN in, FFN out) is emulated in bf16 (both operands rounded to bfloat16, products summed in fp32 and
the result kept in fp32, as oneDNN's bf16 GEMM with an f32 destination does) alone, by kind over all layers, by
layer, and greedily together; the worst and mean cosine of the normalized sentence vectors to the fp32 ones over
the texts are printed as a Markdown table.

    .venv/bin/python benchmarks/bf16_sensitivity.py [--n 1000] [--max-length 256] [--batch-size 32]

Texts: the first --n SciFact abstracts (title + " " + text), truncated to --max-length tokens. Layer inputs of the
fp32 pass are cached, so a GEMM of layer l only re-runs layers l..L-1."""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_throughput import load_texts  # noqa: E402

KINDS = ("qkv", "scores", "context", "out", "ffn_in", "ffn_out")
FLOOR = 0.99999


def _r(t: torch.Tensor) -> torch.Tensor:
    """Round to bfloat16 and back: a bf16 operand held in fp32 (its products are exact in fp32)."""
    return t.bfloat16().float()


def _linear(lin: torch.nn.Linear, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    if not bf16:
        return lin(x)
    y = F.linear(_r(x), _r(lin.weight))
    return y + lin.bias if lin.bias is not None else y


def layer_forward(layer, x: torch.Tensor, bias: torch.Tensor | None, kinds: set[str]) -> torch.Tensor:
    """One post-norm BERT layer with the GEMMs named in `kinds` in emulated bf16 (attention written out)."""
    a = layer.attn
    B, T, _ = x.shape
    H, d = a.n_heads, a.d_k
    q, k, v = _linear(a.qkv, x, "qkv" in kinds).view(B, T, 3, H, d).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, d)
    qs, ks = (_r(q), _r(k)) if "scores" in kinds else (q, k)
    s = qs @ ks.transpose(-1, -2) / math.sqrt(d)  # (B, H, T, T)
    if bias is not None:
        s = s + bias
    p = s.softmax(-1)
    ps, vs = (_r(p), _r(v)) if "context" in kinds else (p, v)
    y = (ps @ vs).transpose(1, 2).reshape(B, T, H * d)  # (B, T, H*d)
    h = layer.ln1(x + _linear(a.o, y, "out" in kinds))
    f = layer.ffn
    inner = f.act(_linear(f.fc1, h, "ffn_in" in kinds))
    return layer.ln2(h + _linear(f.fc2, inner, "ffn_out" in kinds))


class Study:
    """The fp32 pass with every layer's input cached, and re-runs with chosen GEMMs in bf16."""

    def __init__(self, enc, texts: list[str], batch_size: int):
        from encoderkit.nn.attention import attention_mask_bias

        self.enc, self.model = enc, enc.model
        self.layers = list(enc.model.encoder.layers)
        encs = enc.tokenize(texts)
        order = np.argsort([-len(e.ids) for e in encs], kind="stable")
        self.inverse = np.argsort(order)  # sorted position of each text
        self.batches, self.cache = [], []  # per batch: (tensors, bias); per batch: [input of layer 0..L-1]
        with torch.inference_mode():
            for i in range(0, len(encs), batch_size):
                t = enc._batch_tensors([encs[j] for j in order[i:i + batch_size]])
                x = self.model.embeddings(t["input_ids"], t["token_type_ids"], None, t["attention_mask"])
                bias = attention_mask_bias(t["attention_mask"], x.dtype) if not bool(t["attention_mask"].all()) else None
                ins = []
                for layer in self.layers:
                    ins.append(x)
                    x = layer(x, bias)
                self.batches.append((t, bias))
                self.cache.append(ins)
        self.ref = self.vectors({})

    def vectors(self, plan: dict[int, set[str]]) -> np.ndarray:
        """Normalized sentence vectors with plan[layer] = the GEMM kinds run in bf16 in that layer."""
        start = min(plan) if plan else len(self.layers) - 1
        out = []
        with torch.inference_mode():
            for (t, bias), ins in zip(self.batches, self.cache):
                x = ins[start]
                for li in range(start, len(self.layers)):
                    kinds = plan.get(li)
                    x = layer_forward(self.layers[li], x, bias, kinds) if kinds else self.layers[li](x, bias)
                out.append(self.enc.pool_hidden(x, t["attention_mask"]).numpy())
        v = np.concatenate(out).astype(np.float64)[self.inverse]  # input order, fp64 for the cosines
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def cosine(self, plan: dict[int, set[str]]) -> tuple[float, float]:
        c = (self.vectors(plan) * self.ref).sum(1)
        return float(c.min()), float(c.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--per-gemm", action=argparse.BooleanOptionalAction, default=True,
                    help="also each GEMM kind of each layer alone (36 more rows)")
    args = ap.parse_args()
    import encoderkit

    enc = encoderkit.load("all-MiniLM-L6-v2", max_length=args.max_length)
    t0 = time.perf_counter()
    study = Study(enc, load_texts("scifact", args.n), args.batch_size)
    L = len(study.layers)
    check = study.cosine({li: set() for li in range(L)})  # written-out attention, nothing in bf16: must be 1
    direct = enc.encode(load_texts("scifact", args.n), normalize=True, progress=False).astype(np.float64)
    print(f"# {args.n} SciFact abstracts, {args.max_length} tokens, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; fp32 pass {time.perf_counter() - t0:.0f} s; written-out layer vs "
          f"module min cosine {check[0]:.8f}; cached pass vs encode() min cosine "
          f"{float((direct * study.ref).sum(1).min()):.8f}\n", flush=True)
    rows = [("GEMM", "layer", "min cosine", "mean cosine", f">= {FLOOR}")]

    def row(name: str, where: str, plan: dict[int, set[str]]) -> tuple[float, float]:
        lo, mean = study.cosine(plan)
        rows.append((name, where, f"{lo:.7f}", f"{mean:.8f}", "yes" if lo >= FLOOR else "no"))
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
        return lo, mean

    # most telling rows first (printed as they come): each kind in every layer, all, the greedy set, then per layer
    by_kind = {kind: row(kind, "all", {li: {kind} for li in range(L)}) for kind in KINDS}
    row("all six", "all", {li: set(KINDS) for li in range(L)})
    chosen: list[str] = []  # greedy: add whole kinds, least sensitive first, while the floor holds
    for kind in sorted(KINDS, key=lambda k: -by_kind[k][0]):
        lo, _ = row("+".join([*chosen, kind]), "all", {li: {*chosen, kind} for li in range(L)})
        if lo >= FLOOR:
            chosen.append(kind)
    print(f"\ngreedy by kind, floor {FLOOR}: {', '.join(chosen) or 'none'} can run in bf16 in every layer "
          f"({time.perf_counter() - t0:.0f} s so far)\n", flush=True)
    for li in range(L):
        row("all six", str(li), {li: set(KINDS)})
    if args.per_gemm:
        for kind in KINDS:
            for li in range(L):
                row(kind, str(li), {li: {kind}})
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
