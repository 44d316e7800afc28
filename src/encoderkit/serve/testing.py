"""Run an app on a free loopback port in a background thread (tests, notebooks, benchmarks)."""
from __future__ import annotations

import socket
import threading
import time
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """`with LiveServer(app) as srv: httpx.get(srv.url + "/health")` — a real uvicorn server on 127.0.0.1."""

    def __init__(self, app: Any, port: int | None = None, log_level: str = "warning", **uvicorn_kw: Any):
        import uvicorn

        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level=log_level, **uvicorn_kw)
        self.server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self.server.run, name="encoderkit-live-server", daemon=True)

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self._thread.join(60)
