"""`encoderkit serve` as operators run it: a subprocess on loopback, flags for keys and limits, body-size
limit in each API's error format, and graceful shutdown (SIGTERM lets in-flight requests finish)."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from encoderkit.serve.auth import KeyStore  # noqa: E402
from encoderkit.serve.testing import free_port  # noqa: E402


@pytest.mark.slow  # ~20 s here: a server process loads the model, then a 128-input request is cut by SIGTERM
def test_cli_server_limits_and_graceful_shutdown(tmp_path):
    key, _ = KeyStore(tmp_path / "keys.json").add(role="read")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "encoderkit.cli", "serve", "--model", "all-minilm",
                             "--port", str(port), "--api-keys", str(tmp_path / "keys.json"), "--max-body-mb", "0.05",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url, H = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(url + "/health", headers=H, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        assert httpx.get(url + "/health").status_code == 401
        r = httpx.post(url + "/api/embed", json={"model": "all-minilm:latest", "input": "hi"}, headers=H)
        assert r.status_code == 200 and len(r.json()["embeddings"][0]) == 384
        big = {"model": "all-minilm", "input": ["x" * 1000] * 60}  # ~60 kB > 0.05 MiB
        for path, check in (("/v1/embeddings", lambda b: b["error"]["code"] == "request_too_large"),
                            ("/api/embed", lambda b: set(b) == {"error"}),
                            ("/embed", lambda b: b["error_type"] == "Validation")):
            r = httpx.post(url + path, json=big | {"inputs": big["input"]}, headers=H)
            assert r.status_code == 413 and check(r.json()), (path, r.text)

        done = {}

        def in_flight():
            texts = [f"sentence {i} about terns, heaps and markets " * 5 for i in range(128)]
            r = httpx.post(url + "/embed", json={"inputs": texts}, headers=H, timeout=120)
            done["status"], done["n"] = r.status_code, len(r.json())

        th = threading.Thread(target=in_flight)
        th.start()
        time.sleep(0.5)  # the request is in the batcher now
        proc.send_signal(signal.SIGTERM)
        th.join(120)
        assert done == {"status": 200, "n": 128}  # the in-flight request finished
        # uvicorn re-raises the signal once it has shut down cleanly, so the exit status may be -SIGTERM
        assert proc.wait(60) in (0, -signal.SIGTERM)
        assert "Traceback" not in proc.stderr.read()
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/health", headers=H, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
