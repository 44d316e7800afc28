"""Which torch device to run on: "cpu", "cuda", "cuda:1", "mps", checked against what this machine has."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch.device this machine has ("cpu", "cuda", "cuda:1", "mps"), or a one-line ValueError naming it."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cpu":
        return dev
    backend = getattr(torch.backends, dev.type, None) if dev.type == "mps" else getattr(torch, dev.type, None)
    ok = bool(backend is not None and getattr(backend, "is_available", lambda: False)())
    if ok and dev.index is not None and hasattr(backend, "device_count"):
        ok = dev.index < backend.device_count()
    if not ok:
        have = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] + \
            (["mps"] if torch.backends.mps.is_available() else [])
        raise ValueError(f"device {str(device)!r} is not available to torch {torch.__version__} on this machine "
                         f"(available: {', '.join(have)})")
    return dev
