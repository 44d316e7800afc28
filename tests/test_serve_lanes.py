"""Compute lanes of a served model (issue 19): several batches of one model run side by side, as threads of the
server or as processes holding a copy of the model; process lanes give the vectors of the model in the server,
a lane that dies is started again, a batch that fails in a lane names the cause, and the automatic choice
follows the model's engine."""
from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")

import encoderkit  # noqa: E402
from encoderkit.compute import amx  # noqa: E402
from encoderkit.serve.batcher import Batcher  # noqa: E402
from encoderkit.serve.lanes import LaneError, ProcessLane, start_process_lanes  # noqa: E402
from encoderkit.serve.models import EmbeddingModel, Limits, lane_plan  # noqa: E402
from tiny_checkpoints import TINY_VOCAB, sentences, tiny_family_folder  # noqa: E402

TEXTS = sentences(24, TINY_VOCAB, seed=11, min_len=1, max_len=40)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tiny_family_folder("bert", tmp_path_factory.mktemp("lanes")))


# ------------------------------------------------------------------ the batcher's lanes
@pytest.mark.parametrize("lanes", [1, 2])
def test_two_lanes_run_two_batches_at_once(lanes):
    """Each batch holds one request (a budget of one token) and waits at a barrier for a second batch: only two
    lanes get both through; each lane ran lane_init in its own thread, and wanted() sees the lane's own batch."""
    barrier = threading.Barrier(2, timeout=3)
    inits, wanted = [], []

    def run(items):
        wanted.append(b.wanted())
        barrier.wait()
        return [x * 2 for x in items]

    b = Batcher("t", run, max_batch_tokens=1, max_wait_ms=0, lanes=lanes,
                lane_init=lambda: inits.append(threading.current_thread().name))

    async def main():
        return await asyncio.gather(b.submit([1], cost=1), b.submit([2], cost=1), return_exceptions=True)

    out = asyncio.run(main())
    b.close(timeout=5)
    if lanes == 2:
        assert out == [[2], [4]] and wanted == [True, True]
        assert sorted(inits) == ["batcher-t-0", "batcher-t-1"]
    else:  # one lane: the first batch waits alone at the barrier, which breaks
        assert isinstance(out[0], threading.BrokenBarrierError)
        assert inits == ["batcher-t"]


def test_batcher_refuses_zero_lanes():
    with pytest.raises(ValueError, match="lanes must be >= 1"):
        Batcher("t", lambda items: items, lanes=0)


def test_serve_flags_for_lanes_are_checked(capsys):
    from encoderkit.cli import main

    assert main(["serve", "--lanes", "0"]) != 0
    assert "--lanes must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--lane-kind", "fork"])
    assert "invalid choice: 'fork'" in capsys.readouterr().err


# ------------------------------------------------------------------ the automatic choice
def test_lane_plan_follows_the_engine(folder, monkeypatch):
    import torch

    from encoderkit.compute import workers

    fp32 = encoderkit.load(folder)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert lane_plan(Limits(), fp32) == (2, "process", 1)  # a process per thread
    assert lane_plan(Limits(lanes=2, lane_kind="thread"), fp32) == (2, "thread", 1)
    assert lane_plan(Limits(lane_kind="thread"), fp32) == (1, "thread", 2)  # torch splits one batch instead
    assert lane_plan(Limits(batching=False, lanes=2), fp32) == (1, "thread", 2)
    with pytest.raises(ValueError, match="lane kind must be one of auto, thread, process, got 'fork'"):
        lane_plan(Limits(lane_kind="fork"), fp32)
    # three copies must fit in half the RAM, else one lane whose batch torch splits over both threads
    size = workers.model_bytes(fp32)
    assert size == sum(p.numel() * 4 for p in fp32.model.parameters()) + sum(
        b.numel() * b.element_size() for b in fp32.model.buffers())
    monkeypatch.setattr(workers, "physical_memory", lambda: 6 * size - 1)
    assert lane_plan(Limits(), fp32) == (1, "thread", 2)
    assert lane_plan(Limits(lanes=2), fp32) == (2, "thread", 1)  # a count given is kept
    if amx.available():  # AMX-kernel lanes measured faster than one lane as threads too
        assert lane_plan(Limits(), encoderkit.load(folder, compute="bf16x3")) == (2, "thread", 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(workers, "physical_memory", lambda: 1 << 40)
    assert lane_plan(Limits(), fp32) == (1, "thread", 1)


def test_a_model_that_cannot_be_copied_runs_in_the_server_unless_processes_were_asked_for(folder, monkeypatch,
                                                                                            caplog):
    import torch

    class Unpicklable:
        def __reduce__(self):
            raise TypeError("cannot pickle this")

    enc = encoderkit.load(folder)
    enc.session = Unpicklable()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    m = EmbeddingModel("tiny", enc, Limits())
    try:
        assert m.processes == [] and m.lane_kind == "thread" and m.batcher.lanes == 1
        assert "model tiny cannot be copied into lane processes (TypeError: cannot pickle this)" in caplog.text
        assert _embed(m, TEXTS[:4]).shape == (4, enc.dim)
    finally:
        m.close()
    with pytest.raises(LaneError, match="model tiny cannot be copied into lane processes"):
        EmbeddingModel("tiny", enc, Limits(lanes=2, lane_kind="process"))


# ------------------------------------------------------------------ process lanes
def _embed(model: EmbeddingModel, texts: list[str], per_request: int = 3) -> np.ndarray:
    async def main():
        parts = [model.embed(model.prepare_texts(texts[i:i + per_request]))
                 for i in range(0, len(texts), per_request)]
        return np.concatenate(await asyncio.gather(*parts))
    return asyncio.run(main())


@pytest.mark.parametrize("compute", ["fp32", "bf16x3"])
def test_process_lanes_give_the_vectors_of_the_model_in_the_server(folder, compute):
    if compute == "bf16x3" and not amx.available():
        pytest.skip(f"bf16x3 cannot run here: {amx.unavailable_reason()}")
    enc = encoderkit.load(folder, compute=compute)
    here = EmbeddingModel("tiny", enc, Limits(max_wait_ms=1))
    there = EmbeddingModel("tiny", enc, Limits(max_wait_ms=1, lanes=2, lane_kind="process"))
    try:
        assert len(there.processes) == 2 and there.lane_kind == "process"
        pids = {lane._proc.pid for lane in there.processes}
        assert os.getpid() not in pids and len(pids) == 2
        want, got = _embed(here, TEXTS), _embed(there, TEXTS)
        # the same code on the same weights; a batch's padding may differ, which moves the last bits only
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
        np.testing.assert_allclose(got, enc.encode(TEXTS), rtol=0, atol=2e-6)
    finally:
        here.close()
        there.close()
    assert all(lane._proc is None for lane in there.processes)


def test_a_dead_lane_is_started_again_and_a_failed_batch_names_the_cause(folder):
    enc = encoderkit.load(folder)
    lane = ProcessLane(enc, "tiny", max_batch_tokens=4096)
    try:
        lane.start()
        first = lane._proc.pid
        ids = [[2, 5, 7, 3], [2, 9, 3]]
        want = lane.run(ids)
        lane._proc.kill()  # between batches: the next batch starts it again
        lane._proc.join(10)
        again = lane.run(ids)
        assert lane.starts == 2 and lane._proc.pid != first
        assert np.array_equal(np.stack(again), np.stack(want))
        with pytest.raises(LaneError, match=r"batch failed in the compute lane for model tiny: IndexError"):
            lane.run([[2, 10 ** 6, 3]])  # a token id past the vocabulary
        assert np.array_equal(np.stack(lane.run(ids)), np.stack(want))  # the lane still serves
    finally:
        lane.close()


def test_the_prompt_length_reaches_the_lane(folder):
    """A model that leaves its instruction prompt out of the pooling: the prompt length of each sequence travels
    with its ids to the lane process, which pools as the server would."""
    from encoderkit.serve.lanes import TokenIds, forward_batch

    enc = encoderkit.load(folder)
    enc.head.include_prompt = False
    seqs = [TokenIds([2, 5, 7, 9, 11, 3], 3), TokenIds([2, 5, 7, 9, 11, 3], 0), TokenIds([2, 8, 3])]
    want = np.stack(forward_batch(enc, seqs, 4096))
    assert not np.allclose(want[0], want[1])  # so the test can tell a lost prompt length
    lane = ProcessLane(enc, "tiny", max_batch_tokens=4096)
    try:
        assert np.array_equal(np.stack(lane.run(seqs)), want)
    finally:
        lane.close()


def test_a_lane_that_dies_during_a_batch_fails_that_batch_only(folder, monkeypatch):
    enc = encoderkit.load(folder)
    lane = ProcessLane(enc, "tiny", max_batch_tokens=4096)
    try:
        lane.start()
        victim = lane._proc
        threading.Timer(0.3, victim.kill).start()
        with pytest.raises(LaneError, match="died during a batch .*started again for the next one"):
            lane.run([[2] + [5] * 60 + [3]] * 4000)  # long enough to be running when it is killed
        assert np.stack(lane.run([[2, 5, 3]])).shape == (1, enc.dim)
        assert lane.starts == 2
    finally:
        lane.close()


def test_a_model_that_cannot_be_copied_says_so():
    class Unpicklable:
        def __reduce__(self):
            raise TypeError("cannot pickle 'onnxruntime.InferenceSession' object")

    with pytest.raises(LaneError, match=r"model x cannot be copied into lane processes \(TypeError: cannot pickle "
                                        r"'onnxruntime.InferenceSession' object\); use thread lanes"):
        start_process_lanes(Unpicklable(), "x", 64, lanes=2, threads=1)


def test_a_lane_that_cannot_load_the_model_says_so():
    lane = ProcessLane(None, "broken", max_batch_tokens=64, payload=b"not a pickle")
    t0 = time.monotonic()
    with pytest.raises(LaneError, match="the compute lane for model broken could not load the model: UnpicklingError"):
        lane.start()
    assert time.monotonic() - t0 < 120


# ------------------------------------------------------------------ a signal to the server's process group
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_to_the_process_group_drains_and_leaves_no_lane_behind(sig):
    """Ctrl-C (SIGINT) or a stop sent to the whole process group reaches the lane processes too: they ignore it,
    the request in flight still gets its vectors, the server exits cleanly (no traceback) and no process of the
    group is left."""
    import signal
    import subprocess
    import sys

    import httpx

    from encoderkit.serve.testing import free_port
    from test_cli_ux import _wait_up

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "encoderkit.cli", "serve", "--port", str(port), "--lanes", "2",
                             "--lane-kind", "process", "--log-level", "warning"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_up(proc, url)
        assert httpx.get(url + "/info").json()["compute_lanes"] == "2 process lanes"
        texts = [f"text {i} " + "words of a longer input " * 12 for i in range(2048)]
        result: dict = {}

        def post() -> None:
            r = httpx.post(url + "/v1/embeddings", json={"input": texts, "model": "all-MiniLM-L6-v2"}, timeout=300)
            result["status"], result["n"], result["done"] = r.status_code, len(r.json().get("data", [])), \
                time.monotonic()

        t = threading.Thread(target=post)
        t.start()
        time.sleep(1.0)
        sent = time.monotonic()
        os.killpg(proc.pid, getattr(signal, sig))
        t.join(300)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert result["done"] > sent, "the request ended before the signal; it must be in flight"
    assert result["status"] == 200 and result["n"] == 2048
    # uvicorn re-raises SIGTERM after its graceful shutdown (exit status -15); Ctrl-C ends the CLI with 0
    assert proc.returncode == (0 if sig == "SIGINT" else -signal.SIGTERM) and "Traceback" not in err, err[-2000:]
    deadline = time.monotonic() + 30
    while True:  # every process of the group has exited
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a lane process outlived the server"
        time.sleep(0.2)
