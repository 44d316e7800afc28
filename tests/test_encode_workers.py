"""Data-parallel encode (issue 19): for large inputs `encode` runs one-thread workers (forked processes for torch,
threads over a one-thread engine for ONNX Runtime / OpenVINO, threads running torch on one thread each for
encoderkit's AMX kernels) and returns what one process returns, in the same
order, for dense, token, sparse and multi-vector outputs; a failing or dying worker surfaces as one exception naming
the caller's input; no worker process is left behind."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

import encoderkit
from encoderkit.compute import amx
from encoderkit.compute import workers as workers_mod
from encoderkit.compute.workers import plan_workers
from tiny_checkpoints import TINY_VOCAB, sentences, tiny_family_folder

TOL = 1e-6
TEXTS = sentences(120, TINY_VOCAB, seed=11, min_len=1, max_len=40)
B = 8  # batch size: 15 batches, over the automatic rule's minimum of 8


@pytest.fixture(autouse=True)
def two_threads():
    """The automatic rule gives one worker per torch thread (the conftest fixture restores the count)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs for 2 workers")
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    return tiny_family_folder("bert", tmp_path_factory.mktemp("workers"))


_BEFORE: set[str] = set()


@pytest.fixture(autouse=True)
def _children_before():
    """The children this process had when the test began: a server or database another module of this xdist worker
    started (session fixtures) is not the workers' to clean up."""
    _BEFORE.clear()
    _BEFORE.update(p.split(" ")[0] for p in _children_left())
    yield


def _comm(stat: str) -> str:
    return stat.split("(", 1)[1].rsplit(")", 1)[0]


def _children_left() -> list[str]:
    """Forked copies of this interpreter (same process name; zombies included) whose parent is this process and
    that the test did not find there at its start. Other children (a `uname` or `pg_ctl` another library of this
    xdist worker ran at that moment; once seen as a zombie for over 5 s in a full run) are not encode workers."""
    me, found = str(os.getpid()), []
    mine = _comm(open(f"/proc/{me}/stat").read())
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = open(f"/proc/{pid}/stat").read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[1] == me and pid not in _BEFORE and _comm(stat) == mine:
                found.append(f"{pid} ({fields[0]} {_comm(stat)})")
    return found


def _children_staying(seconds: float = 5.0) -> list[str]:
    """_children_left() once it stays non-empty for `seconds`: a leaked worker stays, while a short-lived child
    another library of this process ran at that moment (a zombie not yet reaped, a `uname` call; seen once on a
    CI run, with openvino) is gone by then."""
    deadline = time.monotonic() + seconds
    while (left := _children_left()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _used_workers(caplog) -> str:
    msgs = [r.getMessage() for r in caplog.records if r.name == "encoderkit.compute.workers"]
    return msgs[-1] if msgs else ""


def _auto_uses_two_workers_with_the_vectors_of_one_process(enc, caplog, how: str) -> None:
    one = enc.encode(TEXTS, workers=1, batch_size=B)
    assert plan_workers(enc, TEXTS, None, B) == 2
    with caplog.at_level(logging.INFO, logger="encoderkit.compute.workers"):
        auto = enc.encode(TEXTS, batch_size=B)
    assert f"over 2 workers ({how})" in _used_workers(caplog)
    assert auto.shape == one.shape and np.abs(auto - one).max() <= TOL


@pytest.fixture
def no_amx(monkeypatch):
    """A CPU without AMX, where forked workers were measured faster than one process for fp32 on short texts."""
    monkeypatch.setattr(workers_mod, "_cpu_flags", lambda: set())


def test_automatic_workers_give_the_vectors_of_one_process_in_order(dense_dir, caplog, no_amx):
    enc = encoderkit.load(str(dense_dir), compute="fp32")
    _auto_uses_two_workers_with_the_vectors_of_one_process(enc, caplog, "one-thread processes")
    assert _children_staying() == []
    assert torch.get_num_threads() == 2  # the parent keeps its threads


def test_workers_keep_every_encode_option(dense_dir):
    enc = encoderkit.load(str(dense_dir))
    kw = dict(normalize=True, dimensions=8, prompt="w3 w4 ", batch_size=B)
    assert np.abs(enc.encode(TEXTS, workers=2, **kw) - enc.encode(TEXTS, workers=1, **kw)).max() <= TOL
    for precision in ("int8", "ubinary"):  # int8 ranges come from all inputs, not from each worker's share
        assert np.array_equal(enc.encode(TEXTS, workers=2, precision=precision, batch_size=B),
                              enc.encode(TEXTS, workers=1, precision=precision, batch_size=B))
    tokens = enc.encode(TEXTS, workers=2, output="tokens", batch_size=B)
    ref = enc.encode(TEXTS, workers=1, output="tokens", batch_size=B)
    assert len(tokens) == len(ref) and all(a.shape == b.shape and np.abs(a - b).max() <= TOL for a, b in zip(tokens, ref))


def test_small_inputs_other_threads_and_one_thread_stay_in_one_process(dense_dir, no_amx):
    enc = encoderkit.load(str(dense_dir), compute="fp32")
    assert plan_workers(enc, TEXTS[:56], None, B) == 1  # 7 batches
    assert plan_workers(enc, TEXTS[0], None, B) == 1
    assert plan_workers(enc, TEXTS, None, B, chunks="sentences") == 1
    got = []
    t = threading.Thread(target=lambda: got.append(plan_workers(enc, TEXTS, None, B)))
    t.start()
    t.join()
    assert got == [1]  # never fork a process whose other threads may hold locks (the server's batcher)
    assert plan_workers(enc, TEXTS, None, B) == 2
    long = [" ".join([t] * 30) for t in TEXTS]  # long texts: one process's threads measured faster
    assert sum(map(len, long)) / len(long) > 400 and plan_workers(enc, long, None, B) == 1
    assert plan_workers(enc, long, 2, B) == 2  # forced
    enc.set_compute("onnx")  # exported engines: their own threads measured faster
    assert plan_workers(enc, TEXTS, None, B) == 1
    torch.set_num_threads(1)
    assert plan_workers(enc, TEXTS, None, B) == 1
    assert plan_workers(enc, TEXTS, 2, B) == 2  # forced


def test_on_amx_cpus_fp32_keeps_one_process(dense_dir, monkeypatch):
    """Measured on an AMX CPU: oneDNN's fp32 and bf16 GEMMs gain more from a second thread than from a second
    worker (SciFact queries, 2 threads: fp32 578 vs 489 texts/s, bf16 1366 vs 1146), so auto keeps one process."""
    monkeypatch.setattr(workers_mod, "_cpu_flags", lambda: {"amx_bf16", "amx_tile"})
    enc = encoderkit.load(str(dense_dir), compute="fp32")
    assert plan_workers(enc, TEXTS, None, B) == 1
    assert plan_workers(enc, TEXTS, 2, B) == 2  # forced: still forked workers


@pytest.mark.skipif(not amx.available(), reason=f"bf16x3 cannot run here: {amx.unavailable_reason()}")
@pytest.mark.parametrize("compute", ["bf16x3", "int8"])
def test_amx_kernel_modes_use_threads_not_processes(dense_dir, caplog, compute):
    """The AMX kernels release the GIL and are called once per layer: auto (and workers=N) runs W threads of this
    process with one compute thread each, no fork, with the vectors of one process; the thread count comes back."""
    enc = encoderkit.load(str(dense_dir), compute=compute)
    if not workers_mod.uses_amx_kernels(enc):
        pytest.skip(f"compute={compute} does not run encoderkit's AMX kernels on this CPU")
    _auto_uses_two_workers_with_the_vectors_of_one_process(enc, caplog, "threads, one compute thread each")
    assert torch.get_num_threads() == 2 and _children_left() == []
    marked = TEXTS[:50] + [" ".join(["w7"] * 400)] + TEXTS[50:]
    with pytest.raises(ValueError, match="input 50 "):  # a failing thread names the caller's input
        enc.encode(marked, workers=2, truncate=False, batch_size=B)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_workers_must_be_a_positive_integer(dense_dir, bad):
    enc = encoderkit.load(str(dense_dir))
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        enc.encode(TEXTS, workers=bad)


def test_a_failing_worker_is_one_exception_naming_the_callers_input(dense_dir):
    enc = encoderkit.load(str(dense_dir))
    long = TEXTS[:101] + [" ".join(["w7"] * 400)] + TEXTS[101:]
    with pytest.raises(ValueError, match=r"^input 101 is longer than the model's limit"):
        enc.encode(long, workers=2, truncate=False, batch_size=B)
    with pytest.raises(TypeError, match="input 5 is a int"):
        enc.encode(TEXTS[:5] + [3] + TEXTS[5:], workers=2)
    with pytest.raises(ValueError, match="unknown precision"):
        enc.encode(TEXTS, workers=2, precision="int4")
    assert _children_staying() == []


def test_a_worker_killed_midway_is_one_clear_error_and_no_zombie(dense_dir):
    enc = encoderkit.load(str(dense_dir))
    parent, forward = os.getpid(), enc._forward

    def dies_in_a_worker(batch):
        if os.getpid() != parent and bool((batch["input_ids"] == TINY_VOCAB - 1).any()):
            os.kill(os.getpid(), signal.SIGKILL)
        return forward(batch)

    enc._forward = dies_in_a_worker  # inherited by the forked workers
    marked = TEXTS[:100] + [f"w{TINY_VOCAB - 13}"] + TEXTS[100:]  # the word with the last id
    assert (enc.tokenize(marked[100:101])[0].ids[1]) == TINY_VOCAB - 1
    with pytest.raises(RuntimeError, match="killed by signal 9"):
        enc.encode(marked, workers=2, batch_size=B)
    assert _children_staying() == []
    assert enc.encode(TEXTS[:50], workers=1).shape[0] == 50  # the parent still works


def test_sparse_output_in_workers(tmp_path):
    pytest.importorskip("sentence_transformers")
    from test_sparse_encoder import V, _mlm, _splade_folder

    enc = encoderkit.load(str(_splade_folder(_mlm(tmp_path / "mlm"), tmp_path / "splade")))
    texts = sentences(120, V, seed=3, min_len=1, max_len=30)
    one = enc.encode(texts, output="sparse", workers=1, batch_size=B)
    two = enc.encode(texts, output="sparse", workers=2, batch_size=B)
    assert one.shape == two.shape and np.abs((one - two).toarray()).max() <= TOL
    assert one.nnz == two.nnz  # same active dimensions, row for row
    kept = enc.encode(texts, output="sparse", workers=2, max_active_dims=5, batch_size=B)
    ref = enc.encode(texts, output="sparse", workers=1, max_active_dims=5, batch_size=B)
    assert np.array_equal(np.diff(kept.indptr), np.diff(ref.indptr))


def test_multivector_output_in_workers(tmp_path):
    pytest.importorskip("sentence_transformers")
    from test_multivector_encoder import _mve_folder, _text

    enc = encoderkit.load(str(_mve_folder(tmp_path, expansion=None, query_length=12)))
    texts = [_text(n) for n in np.random.default_rng(2).integers(1, 30, 120)]
    for task in ("document", "query"):
        one = enc.encode(texts, output="multivector", task=task, workers=1, batch_size=B)
        two = enc.encode(texts, output="multivector", task=task, workers=2, batch_size=B)
        assert len(one) == len(two) == len(texts)
        assert all(a.shape == b.shape and np.abs(a - b).max() <= TOL for a, b in zip(one, two))


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_exported_backends_use_threads_over_a_one_thread_engine(dense_dir, backend, caplog):
    pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino"}[backend])
    enc = encoderkit.load(str(dense_dir), compute=backend)
    one = enc.encode(TEXTS, workers=1, batch_size=B)
    with caplog.at_level(logging.INFO, logger="encoderkit.compute.workers"):
        two = enc.encode(TEXTS, batch_size=B, workers=2)  # forced: auto keeps the engine's own threads (measured)
    assert "over 2 workers (threads on a one-thread engine)" in _used_workers(caplog)
    assert np.abs(two - one).max() <= TOL
    with pytest.raises(ValueError, match=r"^input 101 is longer"):
        enc.encode(TEXTS[:101] + [" ".join(["w7"] * 400)] + TEXTS[101:], workers=2, truncate=False, batch_size=B)
    assert _children_staying() == []
