"""Batch encoding on Ray Data: files are read by Ray, a pool of actors (each loads the model once)
encodes batches in parallel, and the driver streams the results into one Parquet file (id, text, vector,
plus the input's other columns as metadata). Works on a local Ray or a cluster (`address="ray://host:10001"`)."""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)


class _EncodeActor:
    """One per Ray actor: loads the encoder once, then encodes every batch it is handed."""

    def __init__(self, model: str, text_column: str, batch_size: int, normalize: bool | None, threads: int):
        import torch

        import encoderkit

        torch.set_num_threads(max(1, threads))
        self.enc = encoderkit.load(model)
        self.col, self.batch_size, self.normalize = text_column, batch_size, normalize

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch[self.col]]
        vecs = self.enc.encode(texts, batch_size=self.batch_size, normalize=self.normalize, progress=False)
        out = dict(batch)
        out["vector"] = vecs.astype(np.float32)
        return out


_READ_CPUS = 0.25  # read tasks are light; a small CPU request keeps them schedulable beside the actors


def _read(paths: Sequence[str], field: str, column: str):
    import ray.data

    args = {"num_cpus": _READ_CPUS}
    suffixes = {Path(p).suffix.lower() for p in paths}
    if len(suffixes) != 1:
        raise ValueError(f"give inputs of one kind at a time (got {sorted(suffixes)})")
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"input file not found: {p}")
    suffix = suffixes.pop()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return ray.data.read_json(list(paths), lines=suffix != ".json", **args), field
    if suffix == ".csv":
        return ray.data.read_csv(list(paths), **args), column
    return ray.data.read_text(list(paths), drop_empty_lines=True, **args), "text"


def _ids(batch: dict[str, np.ndarray], text_col: str) -> np.ndarray:
    for name in ("id", "_id"):
        if name in batch:
            return np.asarray([str(x) for x in batch[name]], dtype=object)
    # no id in the input: a content id, stable across runs and engines
    return np.asarray([hashlib.sha256(str(t).encode()).hexdigest()[:16] for t in batch[text_col]], dtype=object)


def ray_encode(model: str, inputs: Sequence[str], output: str, *, field: str = "text", column: str = "text",
               actors: int = 2, batch_size: int = 256, encode_batch_size: int = 32, normalize: bool | None = None,
               address: str | None = None, threads_per_actor: int = 1) -> dict[str, Any]:
    """Encode every text of `inputs` with `actors` Ray actors and write `output` (.parquet). Returns a summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    out = Path(output)
    if out.suffix.lower() != ".parquet":
        raise ValueError(f"the Ray engine writes Parquet: the output must end in .parquet, got {out.name!r}")
    if actors < 1:
        raise ValueError("actors must be at least 1")
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False,
                 **({} if address else {"num_cpus": actors * threads_per_actor + 1}))
    # Each actor asks for at most its thread count, and together they leave room for the read tasks:
    # a 2-CPU Ray with 2 actors must not starve its readers.
    total = float(ray.cluster_resources().get("CPU", 1))
    actor_cpus = max(0.1, min(float(threads_per_actor), (total - _READ_CPUS) / actors))
    ds, text_col = _read(list(inputs), field, column)
    if text_col not in ds.schema().names:
        raise ValueError(f"inputs have no column {text_col!r} (columns: {ds.schema().names}); "
                         f"choose one with --field / --column")
    t0 = time.perf_counter()
    encoded = ds.map_batches(_EncodeActor, fn_constructor_kwargs=dict(
        model=model, text_column=text_col, batch_size=encode_batch_size, normalize=normalize,
        threads=threads_per_actor), batch_size=batch_size, concurrency=actors, num_cpus=actor_cpus,
        batch_format="numpy")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer, n, dim = None, 0, 0
    try:
        for batch in encoded.iter_batches(batch_format="numpy", batch_size=batch_size):
            vecs = np.asarray(batch.pop("vector"), dtype=np.float32)
            dim = vecs.shape[1]
            cols = {"id": pa.array(_ids(batch, text_col), pa.string()),
                    "text": pa.array([str(t) for t in batch[text_col]], pa.string()),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), dim)}
            for k, v in batch.items():  # everything else the input had: metadata
                if k not in (text_col, "id", "_id"):
                    cols[k] = pa.array(v.tolist())
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), table.schema)
            writer.write_table(table.cast(writer.schema))
            n += len(vecs)
        if writer is None:
            raise ValueError("the inputs hold no texts")
        writer.close()
        writer = None
        tmp.replace(out)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    seconds = time.perf_counter() - t0
    return {"count": n, "dim": dim, "actors": actors, "seconds": round(seconds, 3),
            "texts_per_second": round(n / seconds, 1) if seconds else None, "output": str(out), "engine": "ray"}


def read_parquet_vectors(path: str) -> tuple[list[str], np.ndarray]:
    """(ids, vectors) from a Parquet file written by ray_encode."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    vec = t.column("vector").combine_chunks()
    dim = vec.type.list_size
    return t.column("id").to_pylist(), vec.flatten().to_numpy().reshape(-1, dim)
