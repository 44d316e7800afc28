"""Ray Data batch encoding on a local 2-CPU Ray: the vectors equal single-process encode. One local cluster per
module (starting Ray costs far more than encoding the few texts the claims need); the CLI test joins it through
--ray-address, which is the path a user with a cluster takes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_ray_vectors_equal_local_encode(tmp_path, local_ray):
    import encoderkit
    from encoderkit.datasets.stdlib import stdlib_docstrings
    from encoderkit.distributed.ray_encode import ray_encode, read_parquet_vectors

    docs = stdlib_docstrings()[:96]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"id": d.id, "body": d.text, "kind": d.kind}) + "\n" for d in docs[:48]))
    b.write_text("".join(json.dumps({"id": d.id, "body": d.text, "kind": d.kind}) + "\n" for d in docs[48:]))
    summary = ray_encode("all-MiniLM-L6-v2", [str(a), str(b)], str(tmp_path / "out.parquet"), field="body",
                         actors=2, batch_size=16)
    assert summary["count"] == 96 and summary["dim"] == 384
    ids, vecs = read_parquet_vectors(str(tmp_path / "out.parquet"))
    assert sorted(ids) == sorted(d.id for d in docs)
    want = dict(zip([d.id for d in docs], encoderkit.load("all-MiniLM-L6-v2").encode([d.text for d in docs])))
    diff = max(np.abs(vecs[i] - want[id_]).max() for i, id_ in enumerate(ids))
    assert diff <= 1e-5
    import pyarrow.parquet as pq

    assert "kind" in pq.read_table(str(tmp_path / "out.parquet")).column_names  # metadata kept


def test_ray_bad_input(tmp_path, local_ray):
    from encoderkit.distributed.ray_encode import ray_encode

    (tmp_path / "x.jsonl").write_text('{"id": 1, "text": "a"}\n')
    with pytest.raises(ValueError, match=".parquet"):
        ray_encode("all-MiniLM-L6-v2", [str(tmp_path / "x.jsonl")], str(tmp_path / "o.npy"))
    with pytest.raises(ValueError, match="no column 'body'"):
        ray_encode("all-MiniLM-L6-v2", [str(tmp_path / "x.jsonl")], str(tmp_path / "o.parquet"), field="body")
    with pytest.raises(FileNotFoundError):
        ray_encode("all-MiniLM-L6-v2", [str(tmp_path / "nope.jsonl")], str(tmp_path / "o.parquet"))
    assert not (tmp_path / "o.parquet").exists()


def test_cli_ray_engine(tmp_path, local_ray):
    src = tmp_path / "in.txt"
    src.write_text("first text\nsecond text\nthird\n")
    out = subprocess.run([sys.executable, "-m", "encoderkit.cli", "encode", "--engine", "ray", "--actors", "1",
                          "--ray-address", local_ray, str(src), "-o", str(tmp_path / "v.parquet"), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["count"] == 3
