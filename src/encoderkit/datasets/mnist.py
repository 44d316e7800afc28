"""MNIST from its IDX files: the reader, the 8,000 / 2,000 split of the 10,000-image test set used in
the results, and a seeded stochastic binarization (done once, so train and test never change)."""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGES = "t10k-images-idx3-ubyte.gz"
LABELS = "t10k-labels-idx1-ubyte.gz"
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
           0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped): magic (0, 0, dtype code, ndim), ndim big-endian sizes, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic {raw[:4].hex()}); expected MNIST's idx1/idx3 format")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes) but {len(raw) - offset} bytes follow; "
                         "the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist(root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 from a folder holding the two t10k IDX files."""
    root = Path(root)
    img_path, lab_path = root / IMAGES, root / LABELS
    for p in (img_path, lab_path):
        if not p.exists():
            raise FileNotFoundError(f"MNIST file {p} not found; point at the folder holding {IMAGES} and {LABELS}")
    images, labels = read_idx(img_path), read_idx(lab_path).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"MNIST images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def binarize(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Stochastic binarization: pixel ~ Bernoulli(intensity), drawn once from a seeded generator."""
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


@dataclass
class MNISTSplit:
    """Flattened float32 images in [0, 1] (or {0, 1} when binarized) and int64 labels."""

    train_x: np.ndarray  # (n_train, 784)
    train_y: np.ndarray  # (n_train,)
    test_x: np.ndarray  # (N - n_train, 784)
    test_y: np.ndarray  # (N - n_train,)


def mnist_split(root: str | Path, n_train: int = 8000, binarized: bool = False, seed: int = 0,
                digits: tuple[int, ...] | None = None) -> MNISTSplit:
    """The first n_train images train, the rest test (MNIST's t10k set: 8,000 / 2,000). `binarized` draws
    the Bernoulli pixels once with `seed`; `digits` keeps only those classes in the train part."""
    images, labels = load_mnist(root)
    if not 0 < n_train < len(images):
        raise ValueError(f"n_train={n_train} must be between 1 and {len(images) - 1}")
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    if binarized:
        x = binarize(x, seed)
    tr_x, tr_y, te_x, te_y = x[:n_train], labels[:n_train], x[n_train:], labels[n_train:]
    if digits is not None:
        keep = np.isin(tr_y, digits)
        tr_x, tr_y = tr_x[keep], tr_y[keep]
    return MNISTSplit(tr_x, tr_y, te_x, te_y)


def random_shift(x, max_shift: int = 1, p: float = 0.5, generator=None):
    """Augmentation for a batch of 28x28 images (flat or (B, C, H, W) torch tensor): with probability p,
    roll the whole batch by one random (dy, dx) in [-max_shift, max_shift] (MNIST's borders are empty)."""
    import torch

    if float(torch.rand((), generator=generator)) >= p:
        return x
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    side = int(round((x.shape[-1] if x.dim() > 2 else x.shape[-1] ** 0.5)))
    img = x.reshape(len(x), -1, side, side)
    return torch.roll(img, (dy, dx), (2, 3)).reshape(x.shape)
