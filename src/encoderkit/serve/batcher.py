"""Dynamic batching: concurrent requests for one model are queued, coalesced into batches bounded by a
token budget and a short wait, run in worker threads (the event loop never runs a forward pass) and split
back to their callers. One worker ("lane") by default; several lanes each take the next batch while the others
compute, for engines whose single-threaded batches run side by side better than one batch split over threads."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher's queue holds as many inputs as allowed; the caller should retry later."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class TooManyInputs(Exception):
    """One request holds more inputs than the whole queue (max_queue): it can never be admitted."""

    def __init__(self, n: int, limit: int):
        super().__init__(f"{n} inputs in one request, more than the queue holds ({limit}); split the request")
        self.n, self.limit = n, limit


class Closed(Exception):
    """The batcher is shutting down and takes no new work."""


class Abandoned(Exception):
    """Raised by a run_batch that stopped early because every caller of the batch went away (`Batcher.wanted`)."""


@dataclass
class _Job:
    items: list
    cost: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the worker reports after each batch (for /metrics)."""
    inputs: int
    requests: int
    tokens: int
    seconds: float


class Batcher:
    """Runs `run_batch(items) -> results` (same length and order) on the union of queued requests' items.
    max_batch_tokens bounds the summed cost of a batch (a single larger request runs alone; run_batch
    splits it), max_wait_ms is how long the worker waits for more requests once one arrived (only while traffic
    is concurrent: after a batch that held a single request, a lone request runs at once), max_queue
    bounds queued inputs (beyond it `submit` raises QueueFull), batching=False runs one request at a time.
    lanes: worker threads taking batches from the one queue; each first calls lane_init() (e.g. to run its
    compute on one thread)."""

    def __init__(self, name: str, run_batch: Callable[[list], Sequence[Any]], *, max_batch_tokens: int = 16384,
                 max_wait_ms: float = 2.0, max_queue: int = 4096, batching: bool = True,
                 on_batch: Callable[[BatchStats], None] | None = None, lanes: int = 1,
                 lane_init: Callable[[], None] | None = None):
        if max_batch_tokens < 1 or max_queue < 1 or max_wait_ms < 0 or lanes < 1:
            raise ValueError("max_batch_tokens, max_queue and lanes must be >= 1 and max_wait_ms >= 0")
        self.name, self.run_batch = name, run_batch
        self.max_batch_tokens, self.max_wait = max_batch_tokens, max_wait_ms / 1000.0
        self.max_queue, self.batching, self.on_batch = max_queue, batching, on_batch
        self._queue: deque[_Job] = deque()
        self._queued_inputs = 0
        self._cv = threading.Condition()
        self._closed = False
        self._busy_since: float | None = None
        self._ewma_batch_seconds = 0.05
        self._last_jobs = 0  # requests in the previous batch: > 1 means concurrent traffic, worth waiting for
        self._running: dict[int, list[_Job]] = {}  # lane thread id -> the jobs of the batch it runs
        self.lanes, self._lane_init = lanes, lane_init
        self._threads = [threading.Thread(target=self._work, name=f"batcher-{name}" + (f"-{i}" if lanes > 1 else ""),
                                          daemon=True) for i in range(lanes)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ caller side
    @property
    def queue_depth(self) -> int:
        """Inputs waiting (not yet in a running batch)."""
        return self._queued_inputs

    async def submit(self, items: list, cost: int) -> list:
        """Queue `items` (costing `cost` tokens) and wait for their results."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._cv:
            if self._closed:
                raise Closed(f"model {self.name} is shutting down")
            if len(items) > self.max_queue:
                raise TooManyInputs(len(items), self.max_queue)
            if self._queued_inputs + len(items) > self.max_queue:
                wait = max(1, round(self._ewma_batch_seconds * (1 + self._queued_inputs / max(1, len(items)))))
                raise QueueFull(f"the queue for model {self.name} is full ({self._queued_inputs} inputs waiting, "
                                f"limit {self.max_queue}); retry after {wait} s or send fewer inputs", retry_after=wait)
            self._queue.append(_Job(list(items), int(cost), fut, loop))
            self._queued_inputs += len(items)
            self._cv.notify()
        return await fut

    def wanted(self) -> bool:
        """Whether any caller still waits for the batch the calling lane runs (a long run_batch checks this
        between its micro-batches, so work cancelled by shutdown stops within one of them)."""
        return any(not j.future.done() for j in self._running.get(threading.get_ident(), ()))

    def close(self, timeout: float = 30.0) -> None:
        """Finish queued work that a caller still waits for, then stop the worker. Work nobody waits for (callers
        cancelled by shutdown) is not waited on: the daemon worker stops after its current micro-batch, or at exit."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        while any(t.is_alive() for t in self._threads) and time.monotonic() < deadline:
            with self._cv:
                waited_for = any(not j.future.done() for jobs in list(self._running.values()) for j in jobs) \
                    or any(not j.future.done() for j in self._queue)
            if not waited_for:
                break
            next(t for t in self._threads if t.is_alive()).join(0.05)

    # ------------------------------------------------------------------ worker side
    def _take(self) -> list[_Job] | None:
        """Block for the next batch of jobs (None when closed and drained)."""
        with self._cv:
            while not self._queue:
                if self._closed:
                    return None
                self._cv.wait()
            jobs = [self._queue.popleft()]
            cost = jobs[0].cost
            if self.batching:
                # a lone caller (the previous batch held one request, nothing else queued) gains nothing from waiting
                wait = self.max_wait if (self._last_jobs > 1 or self._queue) else 0.0
                deadline = time.perf_counter() + wait
                while cost < self.max_batch_tokens:
                    if self._queue:
                        nxt = self._queue[0]
                        if cost + nxt.cost > self.max_batch_tokens:
                            break
                        jobs.append(self._queue.popleft())
                        cost += nxt.cost
                        continue
                    left = deadline - time.perf_counter()
                    if left <= 0 or self._closed:
                        break
                    self._cv.wait(left)
            self._queued_inputs -= sum(len(j.items) for j in jobs)
            self._last_jobs = len(jobs)
            return jobs

    def _work(self) -> None:
        if self._lane_init is not None:
            try:
                self._lane_init()
            except Exception:  # a lane that cannot set itself up still serves, as set up by default
                log.exception("lane set-up failed on model %s", self.name)
        me = threading.get_ident()
        while True:
            self._running.pop(me, None)
            jobs = self._take()
            if jobs is None:
                return
            jobs = [j for j in jobs if not j.future.cancelled()]  # callers that went away
            if not jobs:
                continue
            items = [it for j in jobs for it in j.items]
            t0 = time.perf_counter()
            self._running[me] = jobs
            try:
                results = list(self.run_batch(items))
                if len(results) != len(items):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(items)} inputs")
                error = None
            except Abandoned:  # nobody waits for it any more
                log.info("batch of %d inputs on model %s stopped: its callers went away", len(items), self.name)
                continue
            except Exception as exc:  # the model failed: every caller of this batch gets the error
                log.exception("batch of %d inputs failed on model %s", len(items), self.name)
                results, error = [], exc
            seconds = time.perf_counter() - t0
            self._ewma_batch_seconds = 0.8 * self._ewma_batch_seconds + 0.2 * seconds
            start = 0
            for j in jobs:
                part = results[start:start + len(j.items)] if error is None else None
                start += len(j.items)
                j.loop.call_soon_threadsafe(_resolve, j.future, part, error)
            if self.on_batch is not None:
                try:
                    self.on_batch(BatchStats(len(items), len(jobs), sum(j.cost for j in jobs), seconds))
                except Exception:  # metrics must never break serving
                    log.exception("on_batch hook failed")


def _resolve(fut: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if fut.cancelled() or fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
