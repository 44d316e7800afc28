"""`encoderkit serve --compute` (issue 19): the server runs its models on the chosen engine (default auto: the fastest
exact exported engine installed, else torch), names it in TEI's GET /info, and its vectors stay within cosine
0.99999 of the torch fp32 ones through the OpenAI, Ollama and TEI routes."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

import encoderkit
from encoderkit.cli import main as cli
from tiny_checkpoints import TINY_VOCAB, sentences, tiny_family_folder

TEXTS = sentences(40, TINY_VOCAB, seed=4, min_len=1, max_len=30)
ENGINES = {"onnx": "onnxruntime", "openvino": "openvino"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tiny_family_folder("bert", tmp_path_factory.mktemp("serve_compute")))


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("compute", ["onnx", "openvino", "fp32", "bf16x3"])
def test_served_vectors_follow_compute_and_match_torch(folder, compute):
    if compute in ENGINES:
        pytest.importorskip(ENGINES[compute])
    from encoderkit.compute import amx

    if compute == "bf16x3" and not amx.available():
        pytest.skip(f"bf16x3 cannot run here: {amx.unavailable_reason()}")
    from encoderkit.serve.app import create_app
    from encoderkit.serve.state import ServeConfig
    from encoderkit.serve.testing import LiveServer

    want = encoderkit.load(folder).encode(TEXTS)  # torch fp32
    # bf16x3 with 2 lanes: on the AMX kernels, the automatic kind is processes holding a copy of the model each
    cfg = ServeConfig(models=[folder], compute=compute, lanes=2 if compute == "bf16x3" else 1)
    with LiveServer(create_app(cfg)) as srv:
        info = httpx.get(srv.url + "/info").json()
        assert info["compute"] == compute
        assert info["compute_lanes"] == ("2 process lanes" if compute == "bf16x3" else "1 thread lane")
        assert info["compute_engine"].startswith({"onnx": "onnxruntime", "openvino": "openvino"}.get(compute, "torch"))
        assert ("AMX" in info["compute_engine"]) == (compute == "bf16x3")
        got = {"tei": np.array(httpx.post(srv.url + "/embed", json={"inputs": TEXTS, "normalize": False}).json()),
               "openai": np.array([d["embedding"] for d in httpx.post(
                   srv.url + "/v1/embeddings", json={"model": folder, "input": TEXTS}).json()["data"]]),
               "ollama": np.array(httpx.post(srv.url + "/api/embed", json={"model": folder, "input": TEXTS}
                                             ).json()["embeddings"])}
    for api, vecs in got.items():
        assert vecs.shape == want.shape, api
        assert _cos(vecs, want).min() >= 0.99999, api


def test_serve_cli_passes_compute_and_defaults_to_auto(monkeypatch):
    seen = []
    monkeypatch.setattr("encoderkit.serve.app.run", lambda cfg, log_level="info": seen.append(cfg))
    monkeypatch.setattr("encoderkit.serve.app.check_bind", lambda cfg: None)
    assert cli(["serve", "--port", "8999"]) == 0
    assert cli(["serve", "--port", "8999", "--compute", "onnx"]) == 0
    assert [c.compute for c in seen] == ["auto", "onnx"]


def test_serve_cli_refuses_an_unknown_compute(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["serve", "--compute", "fp64"])
    assert exc.value.code == 2
    assert "--compute: invalid choice: 'fp64'" in capsys.readouterr().err


def test_auto_falls_back_to_torch_when_the_export_fails(folder, monkeypatch, caplog):
    pytest.importorskip("onnxruntime")
    import encoderkit.compute.backends as backends

    def broken(*a, **k):
        raise RuntimeError("exporter cannot trace this model")

    monkeypatch.setattr(backends, "make_runner", broken)
    monkeypatch.setattr("encoderkit.compute.amx.available", lambda: False)  # else auto takes bf16x3, not an export
    enc = encoderkit.load(folder, compute="auto")
    assert enc.compute == "fp32" and enc.info()["compute_engine"].startswith("torch")
    assert "using torch fp32" in caplog.text
    with pytest.raises(RuntimeError, match="exporter cannot trace"):
        encoderkit.load(folder, compute="onnx")  # asked for by name: the failure is the caller's to see
