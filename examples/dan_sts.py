"""Train a deep averaging network (models/dan.py) with the contrastive objective on STS Benchmark train pairs
of high similarity, and report STS-B test Spearman next to two bag-of-words baselines (TF-IDF cosine and the
average of random token embeddings) and all-MiniLM-L6-v2's published 0.8203.

    python examples/dan_sts.py --data ../shared/data/stsbenchmark --out runs/dan

Prints one JSON line of figures; the run folder loads with `encoderkit.load(out)` / `train.recipes.dan.load_dan`."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from encoderkit.evaluate.sts import evaluate_sts, load_sts, spearman
from encoderkit.models.dan import DAN, DANConfig
from encoderkit.train.recipes.dan import dan_encoder, load_tokenizer, save_dan, train_dan

MINILM_STSB_TEST = 0.8203  # MTEB's figure for all-MiniLM-L6-v2, reproduced by tests/test_sts.py


def high_score_pairs(path: Path, min_score: float) -> list[tuple[str, str]]:
    """(sentence1, sentence2) of the training file whose gold similarity is >= min_score (of 5)."""
    s1, s2, gold = load_sts(path)
    return [(a, b) for a, b, y in zip(s1, s2, gold) if y >= min_score]


def tfidf_spearman(train: Path, test: Path) -> float:
    """Cosine of TF-IDF vectors (fitted on the train sentences) against the gold scores of the test file."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    t1, t2, _ = load_sts(train)
    s1, s2, gold = load_sts(test)
    vec = TfidfVectorizer().fit(t1 + t2)
    A, B = vec.transform(s1), vec.transform(s2)  # rows are L2-normalized
    return spearman(np.asarray(A.multiply(B).sum(1)).ravel(), gold)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "stsbenchmark"))
    ap.add_argument("--out", default=None, help="run folder to write (optional)")
    ap.add_argument("--min-score", type=float, default=4.0, help="train pairs with gold >= this are positives")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=0.1)
    ap.add_argument("--embed-dim", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--word-dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    train, test = data / "sts-train.csv", data / "sts-test.csv"
    t0 = time.perf_counter()
    pairs = high_score_pairs(train, args.min_score)
    tok = load_tokenizer()
    cfg = DANConfig(vocab_size=tok.get_vocab_size(), embed_dim=args.embed_dim, hidden_size=args.hidden,
                    num_layers=args.layers, out_dim=args.hidden, word_dropout=args.word_dropout)
    torch.manual_seed(args.seed)
    model = DAN(cfg)
    # baseline: the average of the (random, untrained) token embeddings alone
    avg = dan_encoder(_AverageOnly(model), tok, name="random-average")
    random_avg = evaluate_sts(test, avg)["spearman"]
    train_dan(model, tok, pairs, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
              temperature=args.temperature, seed=args.seed,
              log=lambda e, l: print(f"epoch {e} loss {l:.4f}", flush=True))
    enc = dan_encoder(model, tok, name="dan")
    res = {"dan_spearman": evaluate_sts(test, enc)["spearman"], "dev_spearman": evaluate_sts(data / "sts-dev.csv", enc)["spearman"],
           "tfidf_spearman": round(tfidf_spearman(train, test), 5), "random_average_spearman": random_avg,
           "minilm_spearman": MINILM_STSB_TEST, "train_pairs": len(pairs), "seconds": round(time.perf_counter() - t0, 1),
           "config": vars(args)}
    if args.out:
        save_dan(args.out, model, summary={k: v for k, v in res.items() if k != "config"})
    print(json.dumps(res))
    return res


class _AverageOnly(torch.nn.Module):
    """The DAN's masked average of token embeddings, without the layers above it (a bag-of-embeddings baseline)."""

    def __init__(self, dan: DAN):
        super().__init__()
        self.dan = dan
        self.config = DANConfig(**{**dan.config.__dict__, "out_dim": dan.config.embed_dim})

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.dan.average(input_ids, attention_mask)


if __name__ == "__main__":
    main()
