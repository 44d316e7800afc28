"""Issue 16: NDCG@10 of a BEIR split searched hybrid (all-MiniLM-L6-v2 + BM25, RRF) in the collection that
examples/issue16_figures.sh builds, and of the same top-N reranked by a cross-encoder: the encoder under bf16
autocast (AMX: ~2.4x faster than fp32 on this CPU), the head in fp32, pairs cut at --max-length tokens as in
training. A --split may be a shard of the test qrels (test_a / test_b: two processes, means averaged).
--weights lists rerank weights w: each reorders the top-N by w z(cross-encoder) + (1 - w) z(hybrid score)
(Collection.search's rerank_weight; 1 = the cross-encoder alone); the pairs are scored once for all of them.

    python examples/issue16_rerank.py [CE_FOLDER] --store STORE [--data SCIFACT] [--split test] [--top 100]
        [--max-length 256] [--weights 1,0.2] [--out result.json]"""
import argparse
import json
import time

import torch
from encoderkit.evaluate.beir import evaluate_beir
from encoderkit.store import Collection, collection_path
from encoderkit.tasks.rerank import CrossEncoder

p = argparse.ArgumentParser()
p.add_argument("ce", nargs="?")
p.add_argument("--top", type=int, default=100)
p.add_argument("--max-length", type=int, default=256)
p.add_argument("--data", default="/work/shared/data/scifact")
p.add_argument("--split", default="test")
p.add_argument("--fp32", action="store_true", help="the cross-encoder in fp32 (default bf16 autocast)")
p.add_argument("--store", default="/work/issue16_runs/store", help="collections folder holding scifact16")
p.add_argument("--weights", default="1", help="comma-separated rerank weights (1: the cross-encoder alone)")
p.add_argument("--out")
a = p.parse_args()


class BF16:
    """The cross-encoder's scores, computed once per (query, passages) and kept for the next weight."""

    def __init__(self, ce, bf16):
        self.ce, self.bf16, self.pairs, self.cache = ce, bf16, 0, {}

    def score(self, query, passages):
        key = (query, tuple(passages))
        if key not in self.cache:
            self.pairs += len(passages)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                self.cache[key] = self.ce.score(query, passages)
        return self.cache[key]


col = Collection.open(collection_path("scifact16", a.store), create=False)
res = {"hybrid": evaluate_beir(a.data, mode="hybrid", split=a.split, collection=col, progress=False)}
print("hybrid", res["hybrid"]["ndcg@10"], flush=True)
if a.ce:
    ce = CrossEncoder.load(a.ce, max_length=a.max_length)
    head = ce.model.head.forward

    def fp32_head(h):  # the encoder in bf16, the head (and so the logits) in fp32: no ties from bf16 rounding
        with torch.autocast("cpu", enabled=False):
            return head(h.float())
    ce.model.head.forward = fp32_head
    r = BF16(ce, not a.fp32)
    for w in [float(x) for x in a.weights.split(",")]:
        t0 = time.process_time()
        key = "rerank" if w == 1 else f"rerank_weight_{w:g}"
        res[key] = evaluate_beir(a.data, mode="hybrid", split=a.split, collection=col, progress=False, rerank=r,
                                 rerank_top=a.top, rerank_weight=w)
        res[key].update(cpu_seconds=round(time.process_time() - t0, 1), pairs=r.pairs, ce=a.ce, top=a.top,
                        max_length=a.max_length, bf16=not a.fp32, rerank_weight=w)
        print(key, res[key], flush=True)
col.close()
if a.out:
    open(a.out, "w").write(json.dumps(res, indent=1))
