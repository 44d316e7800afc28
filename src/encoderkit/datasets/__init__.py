"""Datasets: readers for real data (MNIST, the Python standard library docstrings, ...) and `load_array`,
which reads the array files the CLI accepts (.npy, .npz, .pt, IDX, an MNIST folder)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def load_array(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(X, y or None) from a .npy / .npz (keys X or x or images, y or labels) / .pt file, an IDX file, or a
    folder holding MNIST's t10k IDX files. Images stay as stored (uint8 or float)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data {p} not found")
    if p.is_dir():
        from encoderkit.datasets.mnist import load_mnist

        return load_mnist(p)
    name = p.name.lower()
    if name.endswith(".npy"):
        return np.load(p, allow_pickle=False), None
    if name.endswith(".npz"):
        z = np.load(p, allow_pickle=False)
        xk = next((k for k in ("X", "x", "images", "data") if k in z), None)
        if xk is None:
            raise ValueError(f"{p} holds {sorted(z.files)}; expected an array named X (and optionally y)")
        yk = next((k for k in ("y", "labels", "targets") if k in z), None)
        return z[xk], (z[yk] if yk else None)
    if name.endswith(".pt"):
        import torch

        obj = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            x, y = obj.get("X", obj.get("x")), obj.get("y")
            if x is None:
                raise ValueError(f"{p} is a dict with keys {sorted(obj)}; expected X (and optionally y)")
            return x.numpy(), (None if y is None else y.numpy())
        return obj.numpy(), None
    if "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
        from encoderkit.datasets.mnist import read_idx

        return read_idx(p), None
    raise ValueError(f"cannot read {p}: use .npy, .npz (X, y), .pt, an IDX file or an MNIST folder")


__all__ = ["load_array"]
