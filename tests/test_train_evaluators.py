"""Evaluation during training (#16 item 4): the IR / STS / reranking evaluators give the figures worked out by
hand; the Trainer evaluates every N steps and at epoch ends (once when both fall on the same step), keeps and
restores the best weights, stops after `patience` evaluations without improvement; the retrieval and
cross-encoder recipes take --dev / --eval-steps / --monitor, save the best weights and write a model card
(README.md) naming the real figures, training_history.json and curves.png."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from encoderkit.cli import main
from encoderkit.evaluate.evaluators import IREvaluator, RerankEvaluator, RerankSample, STSEvaluator
from encoderkit.train.trainer import Trainer, TrainConfig


class _Lookup:
    """A stand-in encoder: each text's vector is fixed in advance."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def encode(self, texts, **_):
        X = np.array([self.vectors[t] for t in texts], np.float32)
        return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_ir_evaluator_gives_hand_computed_ndcg_mrr_recall():
    # q1 ranks d1 (cos 1), d2 (0.8), d3 (0); relevant: d2 -> ndcg = 1/log2(3), mrr = 1/2, recall@1 = 0
    # q2 ranks d3 first; relevant: d3 and d1 (d1 ranked 3rd) -> ndcg = (1 + 1/2) / (1 + 1/log2(3))
    enc = _Lookup({"q1": [1, 0], "q2": [0, 1], "d1": [1, 0], "d2": [0.8, 0.6], "d3": [0, 1]})
    ev = IREvaluator({"1": "q1", "2": "q2", "3": "q1"}, {"a": "d1", "b": "d2", "c": "d3"},
                     {"1": {"b": 1}, "2": {"c": 1, "a": 1}, "3": {"a": 0}}, metrics=("ndcg@10", "mrr@10", "recall@1"))
    got = ev(enc)
    assert ev.qids == ["1", "2"]  # query 3 has no relevant document: not averaged, as BEIR does
    assert got["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1.5 / (1 + 1 / math.log2(3))) / 2, abs=1e-9)
    assert got["mrr@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["recall@1"] == pytest.approx((0 + 0.5) / 2)


def test_sts_evaluator_gives_hand_computed_spearman():
    # cosines 1.0, 0.8, 0.0, 0.6 against gold 4, 3, 1, 2: ranks agree -> 1; swap gold of the last two -> 0.8
    enc = _Lookup({"a": [1, 0], "b": [1, 0], "c": [0.8, 0.6], "d": [0, 1], "e": [0.6, 0.8]})
    assert STSEvaluator(["a", "a", "a", "a"], ["b", "c", "d", "e"], [4, 3, 1, 2])(enc)["spearman"] == pytest.approx(1.0)
    assert STSEvaluator(["a", "a", "a", "a"], ["b", "c", "d", "e"], [4, 3, 2, 1])(enc)["spearman"] == pytest.approx(0.8)


def test_rerank_evaluator_gives_hand_computed_mrr_and_ndcg():
    score = {"p1": 0.1, "n1": 0.9, "n2": 0.5, "p2": 2.0, "n3": 1.0, "p3": 0.2}

    def model(pairs):
        return torch.tensor([[score[d]] for _, d in pairs])

    # sample 1: order n1, n2, p1 -> mrr 1/3, ndcg 1/log2(4) = 0.5; sample 2: p2, n3, p3 -> mrr 1,
    # ndcg (1 + 1/log2(4)) / (1 + 1/log2(3))
    ev = RerankEvaluator([RerankSample("q", ["p1", "n1", "n2"], {0}), RerankSample("q", ["p2", "n3", "p3"], {0, 2})],
                         batch_size=4)
    got = ev(model)
    assert got["mrr@10"] == pytest.approx((1 / 3 + 1) / 2)
    assert got["ndcg@10"] == pytest.approx((0.5 + 1.5 / (1 + 1 / math.log2(3))) / 2)
    # a constant score earns nothing from the positive being listed first: ties rank it last
    flat = RerankEvaluator([RerankSample("q", ["p1", "n1", "n2"], {0})])(lambda pairs: torch.zeros(len(pairs), 1))
    assert flat["mrr@10"] == pytest.approx(1 / 3)


def test_evaluator_inputs_are_checked():
    with pytest.raises(ValueError, match="relevant document"):
        IREvaluator({"1": "q"}, {"a": "d"}, {"1": {"a": 0}})
    with pytest.raises(ValueError, match="unknown metric"):
        IREvaluator({"1": "q"}, {"a": "d"}, {"1": {"a": 1}}, metrics=("ndgc@10",))
    with pytest.raises(ValueError, match="must be equal"):
        STSEvaluator(["a"], ["b", "c"], [1.0])
    with pytest.raises(ValueError, match="two candidates"):
        RerankEvaluator([RerankSample("q", ["p"], {0})])


def test_trainer_evaluates_every_n_steps_restores_best_weights_and_stops_after_patience():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    X = torch.randn(16, 3)
    scripted = iter([0.2, 0.6, 0.5, 0.4, 0.9, 0.9])  # the metric each evaluation reports
    snapshots, steps = [], []

    def eval_fn(m, _):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        steps.append(trainer.step)
        return {"ndcg@10": next(scripted)}

    cfg = TrainConfig(epochs=5, batch_size=2, lr=0.05, progress=False, eval_steps=4, monitor="ndcg@10",
                      monitor_mode="max", early_stopping_patience=2, shuffle=False)
    trainer = Trainer(model, lambda m, b: (m(b) ** 2).mean(), X, config=cfg, eval_fn=eval_fn)
    history = trainer.fit()
    # 8 steps per epoch: evaluations at steps 4, 8 (the epoch end reuses it), 12, 16, then 2 without improvement
    assert steps == [4, 8, 12, 16]
    assert [(r["step"], r["eval_ndcg@10"]) for r in history] == [(4, 0.2), (8, 0.6), (12, 0.5), (16, 0.4)]
    assert [r["epoch"] for r in history] == [0.5, 1, 1.5, 2]
    assert "train_loss" in history[1] and "train_loss" not in history[0]
    assert (trainer.best, trainer.best_step, trainer.best_epoch) == (0.6, 8, 1)
    assert "did not improve for 2 evaluations" in trainer.stop_reason and trainer.epoch == 2
    for k, v in model.state_dict().items():  # the weights of step 8, not those of step 16
        assert torch.equal(v, snapshots[1][k]) and not torch.equal(v, snapshots[3][k])


def test_early_stopping_can_end_an_epoch_midway():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    scripted = iter([0.5, 0.4, 0.3])
    cfg = TrainConfig(epochs=3, batch_size=2, lr=0.05, progress=False, eval_steps=3, monitor="m", monitor_mode="max",
                      early_stopping_patience=1, shuffle=False)
    trainer = Trainer(model, lambda m, b: (m(b) ** 2).mean(), torch.randn(16, 3), config=cfg,
                      eval_fn=lambda m, _: {"m": next(scripted)})
    history = trainer.fit()
    assert trainer.step == 6 and (trainer.best_step, trainer.best) == (3, 0.5)  # stopped after 6 of 8 steps
    assert [(r["epoch"], r["step"], r["eval_m"], "train_loss" in r) for r in history] == [
        (0.375, 3, 0.5, False), (0.75, 6, 0.4, True)]


def test_trainer_keep_last_weights_when_restore_best_is_off():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    values = iter([0.9, 0.1])
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.05, progress=False, monitor="m", monitor_mode="max",
                      restore_best=False)
    trainer = Trainer(model, lambda m, b: (m(b) ** 2).mean(), torch.randn(8, 3), config=cfg,
                      eval_fn=lambda m, _: {"m": next(values)})
    before_last = {}
    trainer.callbacks.append(lambda t, rec: before_last.update({k: v.clone() for k, v in t.model.state_dict().items()}))
    trainer.fit()
    assert trainer.best_step == 2 and all(torch.equal(v, before_last[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="eval_steps must be >= 1"):
        Trainer(model, lambda m, b: m(b).mean(), torch.randn(8, 3), config=TrainConfig(eval_steps=0, progress=False))


# ------------------------------------------------------------------------------------ recipes on tiny data
TOPICS = list(range(10, 26))  # topic t: query word w{t}, its documents mention w{t} among filler words w60..w99


def _doc(rng, t):
    words = [f"w{rng.randrange(60, 100)}" for _ in range(6)]
    words.insert(rng.randrange(7), f"w{t}")
    return " ".join(words)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random BERT (sentence-transformers folder), training records, and a BEIR dev folder."""
    from tiny_checkpoints import tiny_family_folder

    base = tmp_path_factory.mktemp("tiny")
    model = tiny_family_folder("bert", base / "model")
    rng = random.Random(0)
    recs = [{"query": f"w{t} w{rng.randrange(30, 60)}", "positive": _doc(rng, t),
             "negatives": [_doc(rng, rng.choice([o for o in TOPICS if o != t])) for _ in range(2)]}
            for t in TOPICS * 4]
    (base / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    beir = base / "dev"
    (beir / "qrels").mkdir(parents=True)
    docs = {f"d{t}_{j}": _doc(rng, t) for t in TOPICS for j in range(2)}
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": x}) + "\n"
                                               for d, x in docs.items()))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{t}", "text": f"w{t}"}) + "\n" for t in TOPICS))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{t}\td{t}_{j}\t1\n" for t in TOPICS for j in range(2)))
    dev_mined = base / "dev.jsonl"
    dev_mined.write_text("".join(json.dumps({"query": f"w{t}", "positive": _doc(rng, t), "negatives": [
        _doc(rng, o) for o in rng.sample([o for o in TOPICS if o != t], 4)]}) + "\n" for t in TOPICS))
    sts = base / "sts-dev.csv"
    sts.write_text("".join(f"g\tf\t2017\t{i}\t{(i % 6):.1f}\tw{10 + i} w{60 + i}\tw{10 + i} w{60 + i + i % 6}\n"
                           for i in range(24)))
    return {"model": model, "data": base / "train.jsonl", "beir": beir, "mined": dev_mined, "sts": sts}


def _run(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _card_names_figures(folder, summary, n_records, data_name):
    card = (folder / "README.md").read_text()
    hist = json.loads((folder / "training_history.json").read_text())
    evals = [r for r in hist if any(k.startswith("eval_") for k in r)]
    assert evals and f"`{data_name}`: {n_records:,} examples" in card
    assert f"Best {summary['best']['monitor']}: {summary['best']['value']:.4f}" in card
    for r in evals:  # every evaluation's figure is in the card's table
        assert f"{r['eval_' + summary['best']['monitor']]:.4f}" in card
    assert "encoderkit" in card and "sentence_transformers" in card
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG" and "![training curves](curves.png)" in card
    return card, evals


def test_retrieval_recipe_evaluates_on_dev_saves_best_and_writes_card(tiny, tmp_path, capsys):
    import encoderkit
    from encoderkit.evaluate.evaluators import ir_evaluator_from_beir

    out = tmp_path / "bi"
    s = _run(capsys, ["train", "retrieval", "--data", str(tiny["data"]), "--model", str(tiny["model"]),
                      "--out", str(out), "--batch-size", "8", "--lr", "2e-3", "--epochs", "2", "--eval-steps", "3",
                      "--dev", str(tiny["beir"]), "--dev-split", "test", "--no-progress", "--json"])
    card, evals = _card_names_figures(out, s, 64, "train.jsonl")
    assert [r["step"] for r in evals] == [3, 6, 8, 9, 12, 15, 16]  # every 3 steps and both epoch ends
    assert "`mnrl` with scale=20.0" in card and "| eval_steps | 3 |" in card and "IR: 16 queries, 32 documents" in card
    assert s["best"]["value"] == max(r["eval_ndcg@10"] for r in evals)
    saved = ir_evaluator_from_beir(tiny["beir"], "test")(encoderkit.load(str(out)))
    assert saved["ndcg@10"] == pytest.approx(s["best"]["value"], abs=1e-5)  # the best weights were saved


def test_cosent_recipe_is_evaluated_by_spearman_on_an_sts_file(tiny, tmp_path, capsys):
    rng = random.Random(1)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"sentence1": f"w{rng.randrange(10, 60)}", "sentence2": f"w{rng.randrange(10, 60)}",
                                        "score": rng.random()}) + "\n" for _ in range(32)))
    s = _run(capsys, ["train", "retrieval", "--loss", "cosent", "--data", str(data), "--model", str(tiny["model"]),
                      "--out", str(tmp_path / "sts"), "--batch-size", "8", "--dev", str(tiny["sts"]), "--no-progress",
                      "--json"])
    assert s["best"]["monitor"] == "spearman" and -1 <= s["best"]["value"] <= 1
    _card_names_figures(tmp_path / "sts", s, 32, "pairs.jsonl")


def test_cross_encoder_recipe_reranks_dev_saves_best_and_writes_card(tiny, tmp_path, capsys):
    from encoderkit.evaluate.evaluators import RerankEvaluator, rerank_samples
    from encoderkit.train.recipes.cross_encoder import cross_encoder_from, read_mined

    out = tmp_path / "ce"
    s = _run(capsys, ["train", "cross-encoder", "--data", str(tiny["data"]), "--model", str(tiny["model"]),
                      "--out", str(out), "--batch-size", "16", "--lr", "1e-3", "--eval-steps", "4", "--dev",
                      str(tiny["mined"]), "--monitor", "mrr@10", "--no-progress", "--json"])
    card, evals = _card_names_figures(out, s, 64, "train.jsonl")
    assert s["best"]["monitor"] == "mrr@10" and "reranking: 16 queries" in card and "CrossEncoder(" in card
    again = RerankEvaluator(rerank_samples(read_mined(tiny["mined"])))(cross_encoder_from(str(out)))
    assert again["mrr@10"] == pytest.approx(s["best"]["value"], abs=1e-5)


@pytest.mark.parametrize("extra,message", [
    (["--eval-steps", "2"], "need a dev set"),
    (["--dev", "BEIR", "--dev-split", "test", "--monitor", "ndgc@10"], "is not a metric of the dev evaluation"),
    (["--dev", "MINED"], "is not a BEIR folder"),
    (["--dev", "BEIR", "--dev-split", "dev"], "qrels/dev.tsv not found"),
])
def test_bad_evaluation_options_fail_in_one_line(tiny, tmp_path, capsys, extra, message):
    extra = [str(tiny["beir"]) if a == "BEIR" else str(tiny["mined"]) if a == "MINED" else a for a in extra]
    capsys.readouterr()
    rc = main(["train", "retrieval", "--data", str(tiny["data"]), "--model", str(tiny["model"]), "--out",
               str(tmp_path / "x"), "--batch-size", "8", "--no-progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err


def test_model_card_without_matplotlib_says_so_and_still_names_the_figures(tmp_path, monkeypatch):
    import sys

    from encoderkit.train.model_card import CardInfo, write_training_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    history = [{"epoch": 0.5, "step": 2, "eval_ndcg@10": 0.4321}, {"epoch": 1, "step": 4, "train_loss": 0.75,
                                                                   "eval_ndcg@10": 0.5678}]
    info = CardInfo("bi-encoder", "base-model", {"a.jsonl": 3}, "mnrl", {"scale": 20.0}, TrainConfig(epochs=1),
                    best={"monitor": "ndcg@10", "value": 0.5678, "epoch": 1, "step": 4, "restored": True})
    files = write_training_report(tmp_path, info, history)
    card = (tmp_path / "README.md").read_text()
    assert "curves" not in files and not (tmp_path / "curves.png").exists() and "matplotlib was not installed" in card
    assert "| 0.5 | 2 | 0.4321 |" in card and "| 1 | 4 | 0.5678 |" in card and "Final training loss: 0.7500" in card
    assert "Best ndcg@10: 0.5678 at epoch 1, step 4" in card and "`base-model`" in card
    assert json.loads((tmp_path / "training_history.json").read_text()) == history
