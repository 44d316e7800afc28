"""Shutdown that tells the truth: a store write that has begun runs to its end and its request is answered, even
when shutdown cancels the request (past --graceful-timeout); the lifespan waits for those writes before it
closes the stores. A request cancelled before its write began gets a 503 (serve/app.py): nothing was done."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)


class WriteTracker:
    """Counts store writes in flight; `run` shields one from cancellation, `drain` waits for all of them."""

    def __init__(self) -> None:
        self.active = 0

    async def run(self, fn: Callable, *args: Any, **kw: Any) -> Any:
        """fn(*args, **kw) in a worker thread, finished and returned even if the calling request is cancelled."""
        task = asyncio.ensure_future(run_in_threadpool(fn, *args, **kw))
        self.active += 1
        try:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done() and task.cancelled():
                    raise
                log.info("shutdown reached a store write in progress: finishing it and answering its request")
                return await task
        finally:
            self.active -= 1

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait (at most `timeout` s) until no write is in flight, then a moment for their answers to go out."""
        deadline = time.monotonic() + timeout
        if self.active:
            log.info("waiting for %d store write(s) to finish", self.active)
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
