"""Retrieval losses: each against a direct recomputation of its paper's formula (float64 loops) and against
sentence-transformers' loss on the same embeddings; GradCache gradients equal the uncached loss's."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.objectives.retrieval import (AnglELoss, CachedMultipleNegativesRankingLoss, CoSENTLoss, GISTEmbedLoss,
                                             MatryoshkaLoss, gist_loss, kl_distill_loss, margin_mse_loss, mnrl_loss)

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
N, D = 9, 16


def _emb(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _labels():
    return torch.tensor([0.1, 0.9, 0.5, 0.5, 0.0, 1.0, 0.3, 0.7, 0.5])  # ties included


def _ranking_sum(s: list[float], y: list[float]) -> float:
    """log(1 + sum_{y_i > y_j} exp(s_j - s_i)), by the loop."""
    return math.log(1 + sum(math.exp(s[j] - s[i]) for i in range(len(s)) for j in range(len(s)) if y[i] > y[j]))


def _cos(u, v):
    return float(u.double() @ v.double() / (u.double().norm() * v.double().norm()))


def test_cosent_formula_and_sentence_transformers():
    a, b, y = _emb(N, D), _emb(N, D, seed=1), _labels()
    got = CoSENTLoss()(a, b, y)
    want = _ranking_sum([20 * _cos(a[i], b[i]) for i in range(N)], y.tolist())
    assert abs(float(got) - want) <= 1e-5
    ref = st_losses.CoSENTLoss(model=None).compute_loss_from_embeddings([a, b], y)
    assert abs(float(got) - float(ref)) <= 1e-5
    with pytest.raises(ValueError, match="one label per pair"):
        CoSENTLoss()(a, b, y[:3])


def test_angle_formula_and_sentence_transformers():
    a, b, y = _emb(N, D), _emb(N, D, seed=1), _labels()
    got = AnglELoss()(a, b, y)
    s = []
    for i in range(N):  # the paper's complex quotient (a+bi)/(c+di), rescaled by |z_b| / |z_a|, summed
        za = torch.complex(*a[i].double().chunk(2))
        zb = torch.complex(*b[i].double().chunk(2))
        q = za * zb.conj() / (zb.abs() ** 2).sum()  # z_a / z_b, elementwise, over |z_b|^2 = sum_k |z_b,k|^2
        q = q / ((za.abs() ** 2).sum().sqrt() / (zb.abs() ** 2).sum().sqrt())  # rescaled by |z_b| / |z_a|
        s.append(20 * abs(float(q.real.sum() + q.imag.sum())))
    want = _ranking_sum(s, y.tolist())
    assert abs(float(got) - want) <= 1e-5
    ref = st_losses.AnglELoss(model=None).compute_loss_from_embeddings([a, b], y)
    assert abs(float(got) - float(ref)) <= 1e-5
    both = AnglELoss(cosine_weight=0.5)(a, b, y)
    assert abs(float(both) - want - 0.5 * float(CoSENTLoss()(a, b, y))) <= 1e-5


def _mnrl_by_hand(q, p, negs, scale=20.0) -> float:
    cands = [p[j] for j in range(len(p))] + [n[j] for n in negs for j in range(len(n))]
    total = 0.0
    for i in range(len(q)):
        logits = [scale * _cos(q[i], c) for c in cands]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / len(q)


def test_mnrl_formula_and_sentence_transformers():
    q, p, n1, n2 = (_emb(N, D, seed=s) for s in range(4))
    got = mnrl_loss(q, p, n1, n2)
    assert abs(float(got) - _mnrl_by_hand(q, p, [n1, n2])) <= 1e-5
    ref = st_losses.MultipleNegativesRankingLoss(model=None).compute_loss_from_embeddings([q, p, n1, n2], None)
    assert abs(float(got) - float(ref)) <= 1e-5


def test_matryoshka_wraps_any_loss():
    q, p, n1 = (_emb(N, D, seed=s) for s in range(3))
    y = _labels()
    dims, weights = [16, 8, 4], [1.0, 0.5, 0.25]
    got = MatryoshkaLoss(mnrl_loss, dims, weights)(q, p, n1)
    want = sum(w * _mnrl_by_hand(q[:, :d], p[:, :d], [n1[:, :d]]) for d, w in zip(dims, weights))
    assert abs(float(got) - want) <= 1e-5
    got = MatryoshkaLoss(CoSENTLoss(), dims)(q, p, labels=y)
    want = sum(_ranking_sum([20 * _cos(q[i, :d], p[i, :d]) for i in range(N)], y.tolist()) for d in dims)
    assert abs(float(got) - want) <= 1e-5
    # with a dot-product loss the truncated vectors are renormalized first (sentence-transformers' shrink)
    t = _emb(N, 2, seed=5)
    got = MatryoshkaLoss(margin_mse_loss, [8])(q, p, n1, teacher=t)
    qs, ps, ns = (F.normalize(x[:, :8], dim=-1) for x in (q, p, n1))
    assert abs(float(got) - float(margin_mse_loss(qs, ps, ns, t))) <= 1e-6
    with pytest.raises(ValueError, match="exceed the embedding size"):
        MatryoshkaLoss(mnrl_loss, [32])(q, p)
    with pytest.raises(ValueError, match="one weight per dim"):
        MatryoshkaLoss(mnrl_loss, [8, 4], [1.0])


def test_margin_mse_formula_and_sentence_transformers():
    q, p, n1, n2 = (_emb(N, D, seed=s) for s in range(4))
    teacher = _emb(N, 3, seed=9) * 5  # scores, positive first
    got = margin_mse_loss(q, p, [n1, n2], teacher)
    want = 0.0
    for i in range(N):
        for k, n in enumerate((n1, n2)):
            m_s = float(q[i].double() @ p[i].double() - q[i].double() @ n[i].double())
            m_t = float(teacher[i, 0] - teacher[i, k + 1])
            want += (m_s - m_t) ** 2
    assert abs(float(got) - want / (2 * N)) <= 1e-4 * max(1.0, want / (2 * N))
    ref = st_losses.MarginMSELoss(model=None).compute_loss_from_embeddings([q, p, n1, n2], teacher)
    assert abs(float(got) - float(ref)) <= 1e-5 * max(1.0, float(ref))
    margins = teacher[:, :1] - teacher[:, 1:]  # the margins form gives the same loss
    assert abs(float(margin_mse_loss(q, p, torch.stack([n1, n2], 1), margins)) - float(got)) <= 1e-4
    with pytest.raises(ValueError, match="margins or"):
        margin_mse_loss(q, p, [n1, n2], teacher[:, :1].repeat(1, 5))
    want20 = sum((20 * float(q[i].double() @ p[i].double() - q[i].double() @ n[i].double())
                  - float(teacher[i, 0] - teacher[i, k + 1])) ** 2
                 for i in range(N) for k, n in enumerate((n1, n2))) / (2 * N)
    got20 = float(margin_mse_loss(q, p, [n1, n2], teacher, scale=20.0))  # the student's similarities x 20
    assert abs(got20 - want20) <= 1e-4 * max(1.0, want20)
    with pytest.raises(ValueError, match="scale must be > 0"):
        margin_mse_loss(q, p, [n1, n2], teacher, scale=0.0)


def test_kl_distill_formula_and_sentence_transformers():
    q, p, n1, n2 = (_emb(N, D, seed=s) for s in range(4))
    q = q / 3
    teacher = _emb(N, 3, seed=9) * 3
    for T in (1.0, 2.0):
        got = kl_distill_loss(q, p, [n1, n2], teacher, temperature=T)
        want = 0.0
        for i in range(N):
            s = [float(q[i].double() @ c[i].double()) / T for c in (p, n1, n2)]
            t = [float(x) / T for x in teacher[i].double()]
            zs, zt = math.log(sum(math.exp(x) for x in s)), math.log(sum(math.exp(x) for x in t))
            want += sum(math.exp(t[k] - zt) * ((t[k] - zt) - (s[k] - zs)) for k in range(3))
        assert abs(float(got) - T * T * want / N) <= 1e-5
        ref = st_losses.DistillKLDivLoss(model=None, temperature=T).compute_loss_from_embeddings([q, p, n1, n2], teacher)
        assert abs(float(got) - float(ref)) <= 1e-5


# ------------------------------------------------------------------------------------ GISTEmbed
class _Stub(nn.Module):
    """A sentence-transformers stand-in that hands back precomputed embeddings stored in the features."""

    def __init__(self, key: str):
        super().__init__()
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        self.key = key
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
        self.max_seq_length = 8

    def forward(self, features):
        return {"sentence_embedding": features[self.key]}


def _gist_by_hand(a, p, ga, gp, n=None, gn=None, tau=0.01, margin=0.0, relative=False) -> float:
    total = 0.0
    for i in range(len(a)):
        g_pos = _cos(ga[i], gp[i])
        thr = g_pos - (abs(g_pos) * margin if relative else margin)
        logits, pos = [], None
        blocks = [(a, p, ga, gp), (a, a, ga, ga), (p, p, gp, gp)] + ([(a, n, ga, gn)] if n is not None else [])
        for bi, (x, y, gx, gy) in enumerate(blocks):
            for j in range(len(y)):
                if bi == 0 and j == i:
                    pos = len(logits)
                    logits.append(_cos(x[i], y[j]) / tau)
                elif _cos(gx[i], gy[j]) > thr:
                    continue  # masked: the guide thinks it is as close as the positive
                else:
                    logits.append(_cos(x[i], y[j]) / tau)
        m = max(logits)
        total += -(logits[pos] - m - math.log(sum(math.exp(v - m) for v in logits)))
    return total / len(a)


@pytest.mark.parametrize("strategy,margin", [("absolute", 0.0), ("absolute", 0.1), ("relative", 0.05)])
def test_gist_formula_and_sentence_transformers(strategy, margin):
    from sentence_transformers.base.losses.merged_forward import column_merging_disabled

    a, p, n = (_emb(N, D, seed=s) for s in range(3))
    # the guide sees a near-copy, plus a planted false negative: anchor 0 is as close to positive 1 as to its own
    ga, gp, gn = (x + 0.3 * _emb(N, D, seed=10 + s) for s, x in enumerate((a, p, n)))
    gp[1] = gp[0] * 1.01
    got = gist_loss(a, p, ga, gp, n, gn, margin_strategy=strategy, margin=margin)
    want = _gist_by_hand(a, p, ga, gp, n, gn, margin=margin, relative=strategy == "relative")
    assert abs(float(got) - want) <= 1e-4 * max(1.0, want)
    loss = st_losses.GISTEmbedLoss(_Stub("emb"), _Stub("guide"), margin_strategy=strategy, margin=margin)
    feats = [{"emb": x, "guide": g} for x, g in ((a, ga), (p, gp), (n, gn))]
    with column_merging_disabled():
        ref = loss(feats, None)
    assert abs(float(got) - float(ref)) <= 1e-5 * max(1.0, float(ref))
    # the module form calls the guide on the texts
    guide = {f"t{i}": v for i, v in enumerate(torch.cat([ga, gp]))}
    mod = GISTEmbedLoss(lambda texts: torch.stack([guide[t] for t in texts]), margin_strategy=strategy, margin=margin)
    texts = ([f"t{i}" for i in range(N)], [f"t{N + i}" for i in range(N)])
    assert abs(float(mod(a, p, texts=texts)) - float(gist_loss(a, p, ga, gp, margin_strategy=strategy,
                                                                margin=margin))) <= 1e-6


# ------------------------------------------------------------------------------------ GradCache
def _tiny_embedder(seed=0, dropout=0.0):
    from encoderkit.models.bert import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=60, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                     max_position_embeddings=32, dropout=dropout, attention_dropout=dropout)
    model = BertModel(cfg)

    def embed(texts):
        embed.calls.append((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))
        rows = [[int(w[1:]) % 60 for w in t.split()] for t in texts]
        T = max(map(len, rows))
        ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
        h = model(ids, mask)
        h = h.last_hidden_state if hasattr(h, "last_hidden_state") else h
        return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # mean pooling
    embed.calls = []  # (grad enabled, autocast enabled) of every call
    return model, embed


def _texts(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [" ".join(f"w{int(x)}" for x in torch.randint(1, 60, (int(torch.randint(2, 9, (1,), generator=g)),),
                                                          generator=g)) for _ in range(n)]


# GradCache under bf16 autocast, as `train retrieval --loss cached-mnrl --bf16` runs it: the Trainer computes the loss
# inside torch.autocast but calls backward() outside it, and the cached loss re-embeds its chunks during backward. The
# replay must re-enter the same autocast, so that it backpropagates through the same bf16 forward whose embeddings
# gave the cached gradients (not a slower fp32 forward with other values).
def test_cached_mnrl_replays_under_the_callers_bf16_autocast():
    model, embed = _tiny_embedder()
    model.eval()
    seen = embed.calls
    q, p, n = _texts(12, 1), _texts(12, 2), _texts(12, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = mnrl_loss(embed(q), embed(p), embed(n))
    full.float().backward()  # backward outside autocast, as the Trainer does
    want = {k: v.grad.clone() for k, v in model.named_parameters() if v.grad is not None}
    model.zero_grad()
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cached = CachedMultipleNegativesRankingLoss(embed, chunk_size=4)(q, p, n)
    cached.float().backward()
    replays = [autocast for grad, autocast in seen if grad]
    assert len(replays) == 9 and all(replays), seen  # 3 columns x 3 chunks, each re-embedded in bf16
    got = {k: v.grad.clone() for k, v in model.named_parameters() if v.grad is not None}
    assert set(got) == set(want)
    scale = max(float(v.abs().max()) for v in want.values())
    worst = max(float((got[k] - want[k]).abs().max()) for k in want)
    # bf16 rounding of the embeddings and their gradients: measured 0.5-0.8% of the largest gradient on three
    # seeds (an fp32 replay lands about as close on this tiny model, so the autocast check above is the guard;
    # on the real model the fp32 replay costs the speed bf16 was asked for)
    assert worst <= 0.02 * scale, (worst, scale)


def test_cached_mnrl_without_autocast_replays_in_fp32():
    model, embed = _tiny_embedder()
    model.eval()
    seen = embed.calls
    q, p = _texts(8, 4), _texts(8, 5)
    CachedMultipleNegativesRankingLoss(embed, chunk_size=3)(q, p).backward()
    assert [a for g, a in seen if g] == [False] * 6  # 2 columns x 3 chunks, no autocast leaks in


@pytest.mark.parametrize("chunk", [1, 3, 4, 32])
def test_cached_mnrl_gradients_equal_uncached(chunk):
    model, embed = _tiny_embedder()
    model.eval()  # no dropout: both paths see the same network
    q, p, n = _texts(10, 1), _texts(10, 2), _texts(10, 3)
    model.zero_grad()
    full = mnrl_loss(embed(q), embed(p), embed(n))
    (full / 2).backward()  # as the Trainer does with grad_accum = 2
    want = {k: v.grad.clone() for k, v in model.named_parameters()}
    model.zero_grad()
    cached = CachedMultipleNegativesRankingLoss(embed, chunk_size=chunk)(q, p, n)
    assert abs(float(cached) - float(full)) <= 1e-5
    (cached / 2).backward()
    worst = max(float((v.grad - want[k]).abs().max()) for k, v in model.named_parameters())
    assert worst <= 1e-5
    # the cached path also wraps a Matryoshka loss
    model.zero_grad()
    mat = MatryoshkaLoss(mnrl_loss, [32, 8])
    mat(embed(q), embed(p)).backward()
    want = {k: v.grad.clone() for k, v in model.named_parameters()}
    model.zero_grad()
    CachedMultipleNegativesRankingLoss(embed, chunk_size=chunk, loss=mat)(q, p).backward()
    assert max(float((v.grad - want[k]).abs().max()) for k, v in model.named_parameters()) <= 1e-5


def test_cached_mnrl_replays_dropout_and_trains_in_the_trainer():
    from encoderkit.train.trainer import Trainer, TrainConfig

    model, embed = _tiny_embedder(dropout=0.2)
    model.train()
    q, p = _texts(8, 1), _texts(8, 2)
    torch.manual_seed(5)
    loss = CachedMultipleNegativesRankingLoss(embed, chunk_size=3)(q, p)
    loss.backward()  # replays each chunk with its RNG state; no error, finite gradients everywhere
    assert all(torch.isfinite(v.grad).all() for v in model.parameters() if v.grad is not None)
    with torch.no_grad():
        assert CachedMultipleNegativesRankingLoss(embed, chunk_size=3)(q, p).requires_grad is False
    model.eval()
    pairs = list(zip(q * 4, p * 4))
    crit = CachedMultipleNegativesRankingLoss(embed, chunk_size=4)
    before = float(mnrl_loss(embed(q), embed(p)))
    loader = torch.utils.data.DataLoader(pairs, batch_size=8, shuffle=False,
                                         collate_fn=lambda b: ([x for x, _ in b], [y for _, y in b]))
    Trainer(model, lambda m, b: crit(*b), loader,
            config=TrainConfig(epochs=3, lr=1e-3, progress=False, restore_best=False)).fit()
    model.eval()
    with torch.no_grad():
        assert float(mnrl_loss(embed(q), embed(p))) < before
    with pytest.raises(ValueError, match="same length"):
        crit(q, p[:3])


# ------------------------------------------------------------------------------------ the retrieval recipe
def _tiny_encoder(tmp_path):
    import shutil

    import transformers

    import encoderkit
    from encoderkit.checkpoints.hub import packaged_folder

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=128, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    transformers.BertModel(cfg).eval().save_pretrained(tmp_path)
    src = packaged_folder("sentence-transformers/all-MiniLM-L6-v2")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, tmp_path / f)
    return encoderkit.load(str(tmp_path))


def _records(n=16):
    topics = ["heart", "cancer", "vitamin", "brain", "malaria", "protein", "diabetes", "virus"]
    out = []
    for i in range(n):
        t, o, u = topics[i % 8], topics[(i + 3) % 8], topics[(i + 5) % 8]
        out.append({"query": f"about {t} {i}", "positive": f"a study of {t} in patients {i}",
                    "negatives": [f"a study of {o} in mice", f"the {u} trial"], "scores": [3.0, -1.0, -2.0],
                    "sentence1": f"{t} study", "sentence2": f"{t} trial {i}", "score": (i % 5) / 4})
    return out


def test_recipe_cached_equals_uncached_after_a_step(tmp_path):
    from encoderkit.train.recipes.retrieval import train_retrieval
    from encoderkit.train.trainer import TrainConfig

    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, warmup_steps=0, restore_best=False, progress=False, seed=0,
                      grad_clip=None)
    weights = []
    for loss, kw in (("mnrl", {}), ("cached-mnrl", {"chunk_size": 3})):
        enc = _tiny_encoder(tmp_path / loss)
        train_retrieval(enc, _records(8), loss, cfg, matryoshka_dims=[32, 16], **kw)
        weights.append({k: v.clone() for k, v in enc.model.state_dict().items()})
    assert max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0]) <= 1e-5


@pytest.mark.parametrize("loss", ["mnrl", "gist", "margin-mse", "kl", "cosent", "angle"])
def test_recipe_every_loss_trains(tmp_path, loss):
    from encoderkit.train.recipes.retrieval import train_retrieval
    from encoderkit.train.trainer import TrainConfig

    enc = _tiny_encoder(tmp_path / "m")
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    guide = _tiny_encoder(tmp_path / "g") if loss == "gist" else None
    hist = train_retrieval(enc, _records(), loss, TrainConfig(epochs=1, batch_size=8, lr=1e-3, progress=False,
                                                              restore_best=False), guide=guide)
    assert math.isfinite(hist[-1]["train_loss"])
    assert any(not torch.equal(v, before[k]) for k, v in enc.model.state_dict().items())


def test_recipe_cli_and_errors(tmp_path, capsys):
    import json

    from encoderkit.cli import main
    from encoderkit.train.recipes.retrieval import train_retrieval

    enc = _tiny_encoder(tmp_path / "m")
    data = tmp_path / "r.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    assert main(["train", "retrieval", "--data", str(data), "--model", str(tmp_path / "m"), "--out",
                 str(tmp_path / "out"), "--loss", "cached-mnrl", "--chunk-size", "4", "--batch-size", "8",
                 "--matryoshka-dims", "32,16", "--no-progress"]) == 0
    import encoderkit

    assert encoderkit.load(str(tmp_path / "out")).encode(["hi"]).shape == (1, 32)
    with pytest.raises(ValueError, match="lacks sentence1"):
        train_retrieval(enc, [{"query": "q", "positive": "p"}] * 8, "cosent")
    with pytest.raises(ValueError, match="needs a guide"):
        train_retrieval(enc, _records(), "gist")
    with pytest.raises(ValueError, match="unknown retrieval loss"):
        train_retrieval(enc, _records(), "triplet")
    capsys.readouterr()
    assert main(["train", "retrieval", "--data", str(data), "--model", str(tmp_path / "m"), "--out",
                 str(tmp_path / "o2"), "--matryoshka-dims", "32,x"]) == 2
    assert "comma-separated" in capsys.readouterr().err


def test_recipe_drops_attention_dropout_while_training_only(tmp_path, monkeypatch):
    """As train_contrastive: attention_dropout=0 (the default) is what the attention blocks see during the
    fine-tune, the checkpoint's 0.1 comes back afterwards, None keeps it throughout, a value outside [0, 1) is
    refused; the CLI's --attention-dropout passes 0 by default and None for -1."""
    import json

    import encoderkit
    from encoderkit.cli import main
    from encoderkit.nn.attention import MultiHeadSelfAttention
    from encoderkit.train.recipes import retrieval
    from encoderkit.train.trainer import TrainConfig
    from tiny_checkpoints import tiny_family_folder

    folder = tiny_family_folder("bert", tmp_path)
    enc = encoderkit.load(folder)
    blocks = [m for m in enc.model.modules() if isinstance(m, MultiHeadSelfAttention)]
    assert blocks and {m.dropout for m in blocks} == {0.1}
    seen: list[float] = []
    for m in blocks:
        m.register_forward_pre_hook(lambda mod, args: seen.append(mod.dropout) if mod.training else None)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, restore_best=False, progress=False)
    retrieval.train_retrieval(enc, _records(), "cached-mnrl", cfg, chunk_size=4)
    assert seen and set(seen) == {0.0}
    assert {m.dropout for m in blocks} == {0.1} and not enc.model.training
    seen.clear()
    retrieval.train_retrieval(enc, _records(), "mnrl", cfg, attention_dropout=None)
    assert seen and set(seen) == {0.1}
    with pytest.raises(ValueError, match="attention_dropout must be in"):
        retrieval.train_retrieval(enc, _records(), "mnrl", cfg, attention_dropout=1.0)
    assert {m.dropout for m in blocks} == {0.1}

    passed: list = []
    real = retrieval.train_retrieval
    monkeypatch.setattr(retrieval, "train_retrieval",
                        lambda *a, **kw: passed.append(kw["attention_dropout"]) or real(*a, **kw))
    data = tmp_path / "r.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    for extra in ([], ["--attention-dropout", "-1"]):
        assert main(["train", "retrieval", "--data", str(data), "--model", str(folder), "--out",
                     str(tmp_path / f"out{len(extra)}"), "--batch-size", "8", "--no-progress", *extra]) == 0
    assert passed == [0.0, None]
    assert "attention_dropout=checkpoint's" in (tmp_path / "out2" / "README.md").read_text()


# ------------------------------------------------------------------------------------ STS-B (real data, slow)
STS_BASE = 0.8203  # all-MiniLM-L6-v2, STS-B test Spearman (MTEB; tests/test_sts.py)
# 1,600 random train pairs, 1 epoch: CoSENT measured 0.82502 (Pearson 0.82519; 30 min of training at load ~12);
# AnglE not measured yet (its run did not fit the session), so its test skips
STS_MEASURED = {"cosent": 0.82502, "angle": None}


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["cosent", "angle"])
def test_sts_b_training_from_minilm(loss):
    """all-MiniLM-L6-v2 fine-tuned with CoSENT / AnglE (scale 20) on 1,600 random STS-B train pairs (seed 0; gold
    scores / 5), 1 epoch of 100 steps of 16 pairs, lr 2e-5, 10 warmup steps, the checkpoint's attention dropout
    kept (train_retrieval's default drops it since issue 16's SciFact runs: here that gave 0.82199, no better than
    the untrained 0.82032); STS-B test Spearman reproducible within 0.005 of the measured figure."""
    import random

    import encoderkit
    from conftest import data_path
    from encoderkit.evaluate.sts import evaluate_sts, load_sts
    from encoderkit.train.recipes.retrieval import train_retrieval
    from encoderkit.train.trainer import TrainConfig

    if STS_MEASURED[loss] is None:
        pytest.skip("no measured figure recorded yet")
    s1, s2, gold = load_sts(data_path("stsbenchmark", "sts-train.csv"))
    recs = [{"sentence1": a, "sentence2": b, "score": float(g) / 5} for a, b, g in zip(s1, s2, gold)]
    recs = random.Random(0).sample(recs, 1600)
    enc = encoderkit.load("all-MiniLM-L6-v2")
    train_retrieval(enc, recs, loss, TrainConfig(epochs=1, batch_size=16, lr=2e-5, warmup_steps=10,
                                                 restore_best=False, progress=False, seed=0),
                    attention_dropout=None)  # measured with the checkpoint's attention dropout 0.1 (0.82199 without)
    res = evaluate_sts(data_path("stsbenchmark", "sts-test.csv"), enc)
    assert abs(res["spearman"] - STS_MEASURED[loss]) <= 0.005, res
    # and above the untrained model: the band alone (0.820-0.830) holds all-MiniLM-L6-v2 itself (0.82032 measured
    # 2026-12-02 here), so a no-op objective passed it; the gain measured is +0.0047, the bar +0.002
    assert res["spearman"] >= STS_BASE + 0.002, res
