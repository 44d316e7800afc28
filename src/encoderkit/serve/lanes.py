"""The forward pass of a served embedding model's batch, and compute lanes that run it in processes of their own.

`forward_batch` turns token-id sequences into pooled vectors (longest first, padded micro-batches). A server
runs it in its batcher's lane threads; a `ProcessLane` runs it in a child process holding a copy of the encoder
(pickled once at start), so the forward pass shares no interpreter lock with the event loop or the other lanes:
encoderkit's AMX kernels are called once per layer from Python, and in one process those Python steps queue
behind HTTP handling (benchmarks/README.md: serve_load, lanes)."""
from __future__ import annotations

import logging
import multiprocessing
import pickle
import threading
from typing import Any, Callable, Sequence

import numpy as np

from encoderkit.serve.batcher import Abandoned

log = logging.getLogger(__name__)

START_SECONDS = 300.0  # a lane process must load its encoder copy within this


def forward_batch(enc: Any, seqs: Sequence[Sequence[int]], max_batch_tokens: int,
                  keep_going: Callable[[], bool] | None = None) -> list[np.ndarray]:
    """Pooled (projected, unnormalized) vectors for token-id sequences, longest first in padded micro-batches of
    at most max_batch_tokens tokens. A sequence's `prompt_length` attribute (tokens of an instruction prompt
    left out of the pooling) is honoured. keep_going() is asked between micro-batches; False raises Abandoned."""
    import torch

    order = np.argsort([-len(s) for s in seqs], kind="stable")
    out: list[np.ndarray | None] = [None] * len(seqs)
    pos = 0
    with torch.inference_mode():
        while pos < len(order):
            if pos and keep_going is not None and not keep_going():
                raise Abandoned()
            T = max(1, len(seqs[order[pos]]))
            size = max(1, max_batch_tokens // T)
            idx = order[pos: pos + size]
            pos += len(idx)
            ids = np.full((len(idx), T), enc.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), T), dtype=np.int64)
            for r, i in enumerate(idx):
                ids[r, : len(seqs[i])], mask[r, : len(seqs[i])] = seqs[i], 1
            m = torch.from_numpy(mask).to(enc.device)
            hidden = enc._forward({"input_ids": torch.from_numpy(ids).to(enc.device), "attention_mask": m,
                                   "token_type_ids": torch.zeros_like(m)})  # (B, T, H), torch or exported engine
            skip = [getattr(seqs[i], "prompt_length", 0) for i in idx]
            v = enc.pool_hidden(hidden, m, torch.tensor(skip) if any(skip) else None).cpu().numpy()  # (B, D)
            for r, i in enumerate(idx):
                out[i] = v[r].copy()
    return out  # type: ignore[return-value]


class TokenIds(list):
    """A text's token ids as the batcher carries them (to a lane process too), with how many leading ids are the
    model's prompt (left out of pooling when the model's Pooling has include_prompt = false, as Encoder.encode
    does)."""

    def __init__(self, ids: Sequence[int] = (), prompt_length: int = 0):
        super().__init__(ids)
        self.prompt_length = prompt_length

    def __reduce__(self):
        return TokenIds, (list(self), self.prompt_length)


class LaneError(RuntimeError):
    """A lane process failed to start or died; the batch it held gets this error."""


def _lane_main(conn, payload: bytes, threads: int, max_batch_tokens: int) -> None:
    """The child: load the encoder copy, then answer batches until told to stop (None) or the pipe closes. It
    ignores SIGINT and SIGTERM: Ctrl-C or a stop sent to the server's whole process group reaches the lanes too,
    and the server, which drains its requests first, ends them by closing the pipe (or by exiting)."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    torch.set_num_threads(threads)
    try:
        enc = pickle.loads(payload)
    except BaseException as exc:  # noqa: BLE001  (reported to the parent, which names it)
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            seqs = conn.recv()
        except (EOFError, OSError):
            return
        if seqs is None:
            return
        try:
            vecs = forward_batch(enc, seqs, max_batch_tokens)
            conn.send(("ok", np.stack(vecs) if vecs else None))
        except Exception as exc:  # noqa: BLE001  (the parent raises it for the batch's callers)
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class ProcessLane:
    """A child process (spawned, not forked: the server already runs threads) holding a copy of `enc` that runs
    forward_batch on batches sent by one lane thread. A lane that died is started again for the next batch.
    The pickled copy is not kept: `payload` (enc already pickled) serves the first start, later ones pickle
    `enc` again."""

    def __init__(self, enc: Any, name: str, max_batch_tokens: int, threads: int = 1, payload: bytes | None = None):
        self.enc, self.name, self.max_batch_tokens, self.threads = enc, name, max_batch_tokens, threads
        self._payload = payload
        self._lock = threading.Lock()
        self._proc = self._conn = None
        self.starts = 0

    def start(self) -> None:
        """Start the process (if it is not running) and wait until its encoder is loaded."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        payload, self._payload = self._payload, None
        if payload is None:
            payload = copy_payload(self.enc, self.name)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_lane_main, args=(child, payload, self.threads, self.max_batch_tokens),
                           name=f"encoderkit-lane-{self.name}", daemon=True)
        proc.start()
        child.close()
        del payload
        self.starts += 1
        if not parent.poll(START_SECONDS):
            proc.kill()
            raise LaneError(f"the compute lane for model {self.name} did not start within {START_SECONDS:.0f} s")
        try:
            kind, detail = parent.recv()
        except EOFError:
            proc.join(5)
            raise LaneError(f"the compute lane for model {self.name} exited while starting "
                            f"(exit code {proc.exitcode})") from None
        if kind != "ready":
            proc.join(5)
            raise LaneError(f"the compute lane for model {self.name} could not load the model: {detail}")
        self._proc, self._conn = proc, parent

    def run(self, seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """The batch's vectors, computed in the lane process (started again first if it had died)."""
        with self._lock:
            self._start()
            try:
                self._conn.send([s if isinstance(s, TokenIds) else TokenIds(s) for s in seqs])
                kind, result = self._conn.recv()
            except (EOFError, OSError):
                self._proc.join(5)
                code = self._proc.exitcode
                self._proc = self._conn = None
                raise LaneError(f"the compute lane for model {self.name} died during a batch "
                                f"(exit code {code}); it is started again for the next one") from None
        if kind == "error":
            raise LaneError(f"batch failed in the compute lane for model {self.name}: {result}")
        return [] if result is None else list(result)

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            proc, conn, self._proc, self._conn = self._proc, self._conn, None, None
        if proc is None:
            return
        try:
            conn.send(None)
        except OSError:
            pass
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        conn.close()


def copy_payload(enc: Any, name: str) -> bytes:
    """`enc` pickled for a lane process, or a LaneError saying why it cannot be copied."""
    try:
        return pickle.dumps(enc, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001  (e.g. an exported engine's session)
        raise LaneError(f"model {name} cannot be copied into lane processes ({type(exc).__name__}: {exc}); "
                        "use thread lanes (--lane-kind thread)") from None


def start_process_lanes(enc: Any, name: str, max_batch_tokens: int, lanes: int, threads: int) -> list[ProcessLane]:
    """`lanes` started ProcessLanes for `enc` (pickled once for all), each computing on `threads` threads."""
    payload = copy_payload(enc, name)
    out = [ProcessLane(enc, name, max_batch_tokens, threads, payload) for _ in range(lanes)]
    del payload
    errors: list[BaseException] = []

    def start(lane: ProcessLane) -> None:
        try:
            lane.start()
        except BaseException as exc:  # noqa: BLE001  (re-raised below, after every start has ended)
            errors.append(exc)

    starters = [threading.Thread(target=start, args=(lane,), daemon=True) for lane in out]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    if errors:
        for lane in out:
            lane.close()
        raise errors[0]
    log.info("model %s: %d compute lane processes of %d thread(s)", name, lanes, threads)
    return out
