"""Export a text backbone to ONNX and run it under ONNX Runtime or OpenVINO, fp32 (exact)."""
from __future__ import annotations

import importlib.util
import inspect
import io
import logging
import threading
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

# compute name -> (python module that must be importable, pip requirement to name in the error)
EXACT_BACKENDS = {"onnx": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino")}
# "auto": the first installed, fastest first (benchmarks/README.md, encode_throughput.py)
AUTO_ORDER = ("openvino", "onnx")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def available_backends() -> list[str]:
    """The exact backends whose engine (and the onnx package, for the export) is installed here."""
    if importlib.util.find_spec("onnx") is None:
        return []
    return [name for name, (mod, _) in EXACT_BACKENDS.items() if importlib.util.find_spec(mod) is not None]


def best_exact_backend() -> str:
    """What compute="auto" picks: torch with the AMX bf16x3 linear layers where the CPU has AMX-BF16 (and a C
    compiler built the kernel), else the fastest exact backend installed, else the torch fp32 path."""
    from encoderkit.compute import amx

    if amx.available():
        return "bf16x3"
    have = available_backends()
    return next((b for b in AUTO_ORDER if b in have), "fp32")


def require(backend: str) -> None:
    """A one-line ImportError naming the package to install when a backend's engine is absent."""
    mod, pip_name = EXACT_BACKENDS[backend]
    for mod, pip_name in ((mod, pip_name), ("onnx", "onnx")):  # onnx: torch.onnx.export writes through it
        if importlib.util.find_spec(mod) is not None:
            continue
        raise ImportError(f"compute={backend!r} needs the {pip_name} package, which is not installed: "
                          f"pip install 'encoderkit[fast]' (or pip install {pip_name}), or use compute='fp32'")


class _Backbone(nn.Module):
    """The backbone with a fixed positional signature and a plain (B, T, H) tensor output, for export."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, args)))
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


def input_names(model: nn.Module) -> tuple[str, ...]:
    """Which of input_ids / attention_mask / token_type_ids the backbone's forward takes."""
    params = inspect.signature(model.forward).parameters
    names = tuple(n for n in INPUTS if n in params)
    if "input_ids" not in names:
        raise ValueError(f"{type(model).__name__} does not take input_ids: compute backends export text "
                         "backbones only; use compute='fp32'")
    return names


_SYMBOLICS_DONE = False


def _register_symbolics(opset: int) -> None:
    """In-place boolean and (`band &= ...`, nn.attention.attention_bias's sliding-window / causal band) has no
    TorchScript-exporter symbolic; it is ONNX And."""
    global _SYMBOLICS_DONE
    if not _SYMBOLICS_DONE:
        torch.onnx.register_custom_op_symbolic("aten::__iand_", lambda g, a, b: g.op("And", a, b), opset)
        torch.onnx.register_custom_op_symbolic("aten::__ior_", lambda g, a, b: g.op("Or", a, b), opset)
        _SYMBOLICS_DONE = True


def export_onnx(model: nn.Module, pad_id: int = 0, opset: int = 17) -> tuple[bytes, tuple[str, ...]]:
    """The backbone as an ONNX model (bytes) with dynamic batch and sequence axes. Traced on a padded batch, so
    branches taken only when some row is padded (the attention bias) are in the graph; an all-ones mask gives a
    zero bias, the same result."""
    names = input_names(model)
    B, T = 3, 11
    ids = torch.randint(5, 100, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = pad_id
    example = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros(B, T, dtype=torch.long)}
    args = tuple(example[n] for n in names)
    buf = io.BytesIO()
    _register_symbolics(opset)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches on tensors: see the docstring
        torch.onnx.export(_Backbone(model, names).eval(), args, buf, input_names=list(names),
                          output_names=["last_hidden_state"], opset_version=opset, dynamo=False,
                          dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names},
                                        "last_hidden_state": {0: "batch", 1: "sequence"}})
    return buf.getvalue(), names


class BackendRunner:
    """Callable like Encoder._forward: batch dict of (B, T) tensors -> (B, T, H) fp32 tensor."""

    backend = ""
    description = ""

    def __init__(self, names: tuple[str, ...], threads: int):
        self.names, self.threads = names, threads

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feeds = {n: np.ascontiguousarray(batch[n].cpu().numpy(), dtype=np.int64) for n in self.names if n in batch}
        if "token_type_ids" in self.names and "token_type_ids" not in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        if "attention_mask" in self.names and "attention_mask" not in feeds:
            feeds["attention_mask"] = np.ones_like(feeds["input_ids"])
        return torch.from_numpy(self.run(feeds))

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class OrtRunner(BackendRunner):
    backend = "onnx"

    def __init__(self, onnx_bytes: bytes, names: tuple[str, ...], threads: int):
        super().__init__(names, threads)
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "1")
        self.session = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        self.names = tuple(i.name for i in self.session.get_inputs())  # the exporter drops inputs the graph ignores
        self.description = f"onnxruntime {ort.__version__} (exported fp32 graph, {threads} threads)"

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feeds)[0]


class OpenVinoRunner(BackendRunner):
    backend = "openvino"

    def __init__(self, onnx_bytes: bytes, names: tuple[str, ...], threads: int, streams: int = 1):
        super().__init__(names, threads)
        import openvino as ov

        core = ov.Core()
        ov_model = ov.convert_model(io.BytesIO(onnx_bytes))
        # fp32 everywhere: the CPU plugin's default precision on bf16-capable CPUs is bf16 (not exact).
        # streams > 1: that many callers at once (encode workers), each on its own stream of `threads` threads
        self.compiled = core.compile_model(ov_model, "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
            "INFERENCE_NUM_THREADS": str(threads * streams), "NUM_STREAMS": str(streams)})
        self._local = threading.local()  # one infer request per calling thread
        self.names = tuple(n for i in self.compiled.inputs for n in i.get_names() if n in INPUTS)
        self.description = f"openvino {ov.__version__} (exported fp32 graph, f32 precision hint, {threads} threads)"

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        res = request.infer(feeds)
        return np.array(res[self.compiled.output(0)], copy=True)


def make_runner(model: nn.Module, backend: str, *, pad_id: int = 0, threads: int | None = None,
                streams: int = 1) -> BackendRunner:
    """Export `model` (a text backbone, fp32 on the CPU) and load it under `backend` ("onnx" | "openvino").
    streams: how many threads may call the runner at once, each computing with `threads` threads (an ONNX Runtime
    session takes concurrent calls as is; OpenVINO gets that many streams)."""
    if backend not in EXACT_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(EXACT_BACKENDS)}")
    require(backend)
    threads = threads or torch.get_num_threads()
    onnx_bytes, names = export_onnx(model, pad_id)
    runner = OrtRunner(onnx_bytes, names, threads) if backend == "onnx" else \
        OpenVinoRunner(onnx_bytes, names, threads, streams)
    log.info("compute=%s: backbone exported to ONNX (%.1f MB), %d threads", backend, len(onnx_bytes) / 1e6, threads)
    return runner


def attach_backend(encoder: Any, compute: str) -> Any:
    """Encoder.set_compute for "onnx" / "openvino" / "auto": export the encoder's backbone and route its forward
    passes through the engine (the torch modules stay, for save and training). "auto" falls back to the torch fp32
    path when no engine is installed or the backbone is not a text model."""
    requested = compute
    if compute == "auto":
        compute = best_exact_backend()
        if compute == "bf16x3":  # any family: only its nn.Linear layers change
            if encoder.device.type != "cpu" or encoder.compute != "fp32":
                return encoder
            return encoder.set_compute("bf16x3")
        if compute != "fp32" and getattr(encoder, "modality", "text") != "text":
            compute = "fp32"
    if compute == encoder.compute:
        return encoder
    if encoder.compute != "fp32":
        raise ValueError(f"this encoder already computes in {encoder.compute}; load it again for {requested}")
    if compute == "fp32":
        return encoder
    if encoder.device.type != "cpu":
        raise ValueError(f"compute={compute!r} runs on the CPU only; this encoder is on {encoder.device}")
    if getattr(encoder, "modality", "text") != "text":
        raise ValueError(f"compute={compute!r} exports text backbones only; this is a {encoder.modality} encoder "
                         "(use compute='fp32')")
    try:
        encoder._runner = make_runner(encoder.model, compute, pad_id=int(getattr(encoder, "pad_id", 0) or 0))
    except Exception as exc:  # noqa: BLE001 - "auto" promises a working encoder: the torch path is exact too
        if requested != "auto":
            raise
        log.warning("compute='auto': %s cannot run %s (%s: %s); using torch fp32", compute,
                    type(encoder.model).__name__, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return encoder
    encoder.compute = compute
    return encoder
