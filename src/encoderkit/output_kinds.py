"""The output kinds beyond one pooled vector, as `Encoder.encode(output=...)` dispatches them: "sparse" (SPLADE /
static sparse, scipy CSR), "multivector" (ColBERT token vectors) and late chunking (`chunks=`); and the folders that
carry them (sentence-transformers SparseEncoder / MultiVectorEncoder, PyLate ColBERT), loaded and saved here."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def encode_kind(enc: Any, inputs: Any, output: str, *, task: str | None = None, chunks: Any = None,
                batch_size: int = 32, normalize: bool | None = None, prompt: str | None = None,
                prompt_name: str | None = None, max_active_dims: int | None = None, progress: bool | None = None,
                truncate: bool = True) -> Any:
    """encode() for output "sparse" | "multivector", for `chunks`, and for output="pooled" of a sparse model (its
    vocabulary-sized vectors as a dense array)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if output not in ("pooled", "sparse", "multivector"):
        raise ValueError(f"output must be 'pooled', 'tokens', 'sparse' or 'multivector', got {output!r}")
    if chunks is not None:
        if output != "pooled" or enc.sparse is not None or enc.late is not None:
            raise ValueError("late chunking (chunks=) pools token vectors into one dense vector per chunk: use it with "
                             "output='pooled' on a dense model")
        from encoderkit.late_chunking import encode_chunks

        return encode_chunks(enc, inputs, chunks, prompt=prompt, prompt_name=prompt_name, normalize=normalize)
    if output == "multivector":
        if enc.sparse is not None:
            raise ValueError(f"{enc.name or 'this model'} is a sparse encoder; it has no multivector output")
        from encoderkit.multivector import encode_multivector

        return encode_multivector(enc, inputs, task=task, batch_size=batch_size, prompt=prompt,
                                  prompt_name=prompt_name, normalize=normalize, progress=progress)
    if enc.late is not None:
        raise ValueError(f"{enc.name or 'this model'} is a multi-vector (late-interaction) model: it gives token "
                         "vectors (output='multivector'), not one pooled vector")
    from encoderkit.sparse import encode_sparse

    csr = encode_sparse(enc, inputs, batch_size=batch_size, prompt=prompt, prompt_name=prompt_name,
                        max_active_dims=max_active_dims, progress=progress, truncate=truncate)
    if output == "sparse":
        return csr
    dense = csr.toarray().astype(np.float32)
    if normalize:
        dense /= np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)
    return dense[0] if isinstance(inputs, str) else dense


def load_kind(folder: Path, name: str, max_length: int | None = None) -> Any:
    """An Encoder for a SparseEncoder / MultiVectorEncoder / PyLate folder; None for any other folder."""
    from encoderkit.checkpoints.st_multivector import is_multivector_folder, load_multivector_folder
    from encoderkit.checkpoints.st_sparse import is_sparse_folder, load_sparse_folder

    folder = Path(folder)
    if is_sparse_folder(folder):
        return load_sparse_folder(folder, name, max_length)
    if is_multivector_folder(folder):
        return load_multivector_folder(folder, name, max_length)
    return None


def save_kind(enc: Any, path: Path) -> Path:
    if enc.sparse is not None:
        from encoderkit.checkpoints.st_sparse import save_sparse

        return save_sparse(enc, path)
    from encoderkit.checkpoints.st_multivector import save_multivector

    return save_multivector(enc, path)
