"""The Trainer: schedules, clipping, accumulation, determinism, resume, early stopping, freezing, bad input."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from encoderkit.train import TrainConfig, Trainer, TrainingDiverged, freeze_by_prefix, freeze_layers
from encoderkit.train.trainer import _lr_lambda


def _data(n=96, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, 1, generator=g)
    return torch.utils.data.TensorDataset(x, x @ w + 0.1 * torch.randn(n, 1, generator=g))


def _mse(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


class Blocks(nn.Module):
    def __init__(self, d=6, n=3):
        super().__init__()
        self.embed = nn.Linear(d, 8)
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(n))
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        h = self.embed(x)
        for layer in self.layers:
            h = torch.tanh(layer(h))
        return self.head(h)


def _cfg(tmp_path=None, **kw):
    base = dict(epochs=3, batch_size=16, lr=1e-2, progress=False, log_every=2,
                out_dir=str(tmp_path) if tmp_path else None)
    base.update(kw)
    return TrainConfig(**base)


def _fit(tmp_path=None, model=None, data=None, **kw):
    torch.manual_seed(123)
    model = model or nn.Linear(6, 1)
    t = Trainer(model, _mse, data or _data(), config=_cfg(tmp_path, **kw))
    return model, t, t.fit()


def test_loss_goes_down_and_outputs_are_written(tmp_path):
    model, t, hist = _fit(tmp_path, epochs=6, lr=0.1)
    assert len(hist) == 6 and hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("step" in l and "lr" in l and "epoch" in l for l in lines)
    assert sum(1 for l in lines if "train_loss" in l) == 6
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "checkpoint.pt").exists()


def test_warmup_then_cosine_and_linear_schedules():
    cfg = TrainConfig(warmup_steps=4, schedule="cosine")
    f = _lr_lambda(cfg, total=14)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0) and f(9) == pytest.approx(0.5) and f(14) == pytest.approx(0.0, abs=1e-12)
    g = _lr_lambda(TrainConfig(warmup_steps=0, schedule="linear"), total=10)
    assert [g(s) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="schedule"):
        _lr_lambda(TrainConfig(schedule="step"), 10)


def test_same_seed_same_weights_and_different_seed_differs():
    a, _, _ = _fit(seed=3)
    b, _, _ = _fit(seed=3)
    c, _, _ = _fit(seed=4)
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)  # the data order depends on the seed


def test_gradient_accumulation_equals_the_big_batch():
    big, _, _ = _fit(batch_size=32, grad_accum=1, grad_clip=None, shuffle=False, epochs=2)
    acc, _, _ = _fit(batch_size=16, grad_accum=2, grad_clip=None, shuffle=False, epochs=2)
    assert torch.allclose(big.weight, acc.weight, atol=1e-6)


def test_gradient_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = nn.Linear(6, 1)
    w0 = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    data = torch.utils.data.TensorDataset(torch.randn(16, 6) * 100, torch.randn(16, 1) * 100)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    Trainer(model, _mse, data, config=_cfg(epochs=1, batch_size=16, grad_clip=0.5), optimizer=opt).fit()
    w1 = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (w1 - w0).norm().item() == pytest.approx(0.5, rel=1e-4)  # one SGD step of a clipped gradient


def test_resume_continues_exactly(tmp_path):
    full, _, _ = _fit(tmp_path / "full", epochs=4)
    torch.manual_seed(123)
    half = Trainer(nn.Linear(6, 1), _mse, _data(), config=_cfg(tmp_path / "half", epochs=4),
                   callbacks=[lambda tr, rec: setattr(tr, "should_stop", rec["epoch"] == 2)])
    assert len(half.fit()) == 2 and "callback" in half.stop_reason  # interrupted after epoch 2 of 4
    torch.manual_seed(999)  # a different global RNG state must not matter: it is restored from the checkpoint
    resumed = nn.Linear(6, 1)
    t = Trainer(resumed, _mse, _data(), config=_cfg(tmp_path / "half", epochs=4, resume=str(tmp_path / "half")))
    assert t.epoch == 2
    hist = t.fit()
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert torch.equal(full.weight, resumed.weight) and torch.equal(full.bias, resumed.bias)


def test_resume_refuses_a_different_model(tmp_path):
    _fit(tmp_path, model=Blocks(n=3), epochs=1)
    with pytest.raises(ValueError, match=r"layers\.2\.weight"):
        Trainer(Blocks(n=2), _mse, _data(), config=_cfg(resume=str(tmp_path)))
    with pytest.raises(ValueError, match="Blocks but the model is a Linear"):
        Trainer(nn.Linear(6, 1), _mse, _data(), config=_cfg(resume=str(tmp_path)))
    other = Blocks(n=3)
    other.head = nn.Linear(8, 2)
    with pytest.raises(ValueError, match=r"head\.weight has shape \(1, 8\) in the checkpoint but \(2, 8\)"):
        Trainer(other, _mse, _data(), config=_cfg(resume=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(Blocks(), _mse, _data(), config=_cfg(resume=str(tmp_path / "nowhere")))


def test_early_stopping_and_best_weights(tmp_path):
    calls = []

    def eval_fn(model, data):  # improves twice, then gets worse
        calls.append(1)
        return {"loss": [3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 1.0][len(calls) - 1]}

    torch.manual_seed(0)
    model = nn.Linear(6, 1)
    t = Trainer(model, _mse, _data(), config=_cfg(tmp_path, epochs=7, early_stopping_patience=2), eval_data=None,
                eval_fn=eval_fn)
    hist = t.fit()
    assert len(hist) == 4 and t.best_epoch == 2 and "early stopping" in t.stop_reason
    best = torch.load(tmp_path / "best.pt")
    assert torch.equal(model.weight, best["weight"])  # restored the best epoch's weights


def test_freeze_first_layers():
    model = Blocks(n=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _fit(model=model, freeze_layers=2)
    after = model.state_dict()
    for k in before:
        frozen = k.startswith(("embed.", "layers.0.", "layers.1."))
        assert torch.equal(before[k], after[k]) == frozen, k
    with pytest.raises(ValueError, match="only 3 layers"):
        freeze_layers(Blocks(n=3), 4)
    with pytest.raises(ValueError, match="no `layers` ModuleList"):
        freeze_layers(nn.Linear(3, 3), 1)
    names = freeze_by_prefix(Blocks(), ["head."])
    assert names == ["head.weight", "head.bias"]


def test_nan_input_is_refused_with_a_clear_message():
    x = torch.randn(40, 6)
    x[17, 2] = float("nan")
    data = torch.utils.data.TensorDataset(x, torch.randn(40, 1))
    with pytest.raises(ValueError, match="NaN/inf"):
        _fit(data=data, shuffle=False)


def test_diverging_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    state = {"epoch": 0}

    def loss_fn(model, batch):
        loss = _mse(model, batch)
        return loss * float("inf") if state["epoch"] >= 2 else loss

    torch.manual_seed(0)
    model = nn.Linear(6, 1)
    t = Trainer(model, loss_fn, _data(), config=_cfg(tmp_path, epochs=5),
                callbacks=[lambda tr, rec: state.update(epoch=rec["epoch"])])
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 3.*last good checkpoint .*checkpoint\.pt \(epoch 2\)"):
        t.fit()
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["epoch"] == 2 and all(torch.isfinite(v).all() for v in ck["model"].values())


def test_empty_and_malformed_data_errors():
    with pytest.raises(ValueError, match="empty"):
        Trainer(nn.Linear(6, 1), _mse, torch.empty(0, 6), config=_cfg())
    with pytest.raises(TypeError, match="Dataset"):
        Trainer(nn.Linear(6, 1), _mse, 42, config=_cfg())
    with pytest.raises(TypeError, match="scalar"):
        Trainer(nn.Linear(6, 1), lambda m, b: m(b[0]), _data(), config=_cfg()).fit()
    from encoderkit.models.autoencoder import AEConfig, Autoencoder

    ae = Autoencoder(AEConfig(hidden=(16,), latent=4))
    bad = (torch.rand(8, 28, 28) * 255).to(torch.uint8)
    with pytest.raises(ValueError, match="float"):
        Trainer(ae, lambda m, b: m.loss(b), bad, config=_cfg()).fit()
    with pytest.raises(ValueError, match=r"shape \(B, 784\), got \(8, 28, 28\)"):
        Trainer(ae, lambda m, b: m.loss(b), bad.float() / 255, config=_cfg()).fit()


def test_bf16_autocast_trains():
    model, _, hist = _fit(bf16=True, epochs=4)
    assert all(math.isfinite(h["train_loss"]) for h in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert model.weight.dtype == torch.float32


def test_metrics_returned_by_loss_fn_are_averaged():
    def loss_fn(model, batch):
        loss = _mse(model, batch)
        return loss, {"twice": 2 * float(loss.detach())}

    t = Trainer(nn.Linear(6, 1), loss_fn, _data(), config=_cfg(epochs=1))
    rec = t.fit()[0]
    assert rec["train_twice"] == pytest.approx(2 * rec["train_loss"])
