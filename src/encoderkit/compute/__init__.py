"""Exact compute backends: the Encoder's own torch backbone exported once to ONNX (dynamic batch and sequence
axes) and run by ONNX Runtime ("onnx") or OpenVINO ("openvino") in fp32, the two standard CPU engines.
Same vectors as the torch path (cosine >= 0.99999, tests/test_compute_backends.py); `encode` still tokenizes,
sorts by length, batches, pools and normalizes in encoderkit. Engines are the optional extra `encoderkit[fast]`."""
from __future__ import annotations

from encoderkit.compute.backends import (
    EXACT_BACKENDS,
    BackendRunner,
    attach_backend,
    available_backends,
    best_exact_backend,
    make_runner,
)

__all__ = ["EXACT_BACKENDS", "BackendRunner", "attach_backend", "available_backends", "best_exact_backend", "make_runner"]
