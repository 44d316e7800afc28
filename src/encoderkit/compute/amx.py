"""Exact compute on Intel AMX: `compute="bf16x3"`.

Every `nn.Linear` of the backbone becomes a `Bf16x3Linear`, whose product runs on the CPU's AMX-BF16 tiles with
each fp32 operand split into two bfloat16 parts, x = x_hi + x_lo (kernels/amx_bf16x3.c):

    x . w  ~=  x_hi . w_hi + x_hi . w_lo + x_lo . w_hi        (x_lo . w_lo, ~2^-16 of the result, dropped)

Each bf16 x bf16 product is exact in fp32 and AMX accumulates in fp32, so the result has a relative error of
~4e-6 against float64 (the fp32 GEMM: ~4e-7) — vectors with cosine >= 0.99999 to fp32, the exact path's bar —
while AMX's bf16 throughput is ~11x the fp32 FMA units' on MiniLM's shapes, so three products still cost about a
third of one fp32 GEMM. torch / oneDNN cannot do this themselves: their bf16 GEMMs round the output to bf16
(relative error ~3e-3), and oneDNN's fp32 GEMM with bf16 "fpmath" converts both operands on every call (2x fp32,
not 3x). Attention with a per-key (padding) bias runs on the tiles too (AmxAttention): softmax(scale q k^T + bias) v
with both products split the same way and the softmax in fp32, one call per layer for every head. LayerNorm and the
residuals stay fp32 (one pass per row, kernels/ek_addnorm.c); a feed-forward block's exact GELU runs in the
kernel's epilogue (kernels/ek_gelu.h) on rows still in cache.

The int8 compute mode uses a second kernel of the same build (kernels/amx_int8.c, `load_int8`, on AMX-INT8 CPUs).

The kernel is C with AMX intrinsics, compiled once per machine by the system's C compiler (`cc`, or $CC) into
encoderkit's cache folder and loaded with ctypes (which releases the GIL: several threads run disjoint row
ranges). It needs Linux on an x86-64 CPU with AMX-BF16 and AVX512-BF16 (Intel Sapphire Rapids and later) and a
compiler that knows `-mamx-bf16` (gcc >= 11, clang >= 12); `available()` says whether all of that holds and
`unavailable_reason()` why not.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from encoderkit.compute.int8 import cpu_flags

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "amx_bf16x3.c"
COMMON_FLAGS = ("-O3", "-ffp-contract=off", "-mavx512f", "-mavx512bw", "-mavx512vl", "-shared", "-fPIC")
FLAGS = COMMON_FLAGS + ("-mavx512bf16", "-mamx-tile", "-mamx-bf16")
NEEDED_CPU = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512bw", "avx512vl")
INT8_SOURCE = SOURCE.with_name("amx_int8.c")
INT8_FLAGS = COMMON_FLAGS + ("-mamx-tile", "-mamx-int8")
INT8_NEEDED_CPU = ("amx_int8", "amx_tile", "avx512bw", "avx512vl")
ADDNORM_SOURCE = SOURCE.with_name("ek_addnorm.c")
ROWS_PER_TASK = 256  # rows given to one thread at a time (a multiple of 32, the kernel's row block)
MIN_ROWS_PER_TASK = 64  # the smallest share worth a thread hand-off (measured: benchmarks/README.md)
ATTENTION_GROUP_BYTES = 2 << 20  # attention packs as many heads of one text at once as fit this (about L2)


def _up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def cache_dir() -> Path:
    base = os.environ.get("ENCODERKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "encoderkit")
    return Path(base) / "kernels"


def _cache_dirs() -> list[Path]:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return [cache_dir(), Path(tempfile.gettempdir()) / f"encoderkit-kernels-{uid}"]


def _compile(cc: str, flags: tuple[str, ...], source: Path, so: Path) -> Path:
    """Build `source` into `so` (OSError: the folder is not writable; RuntimeError: the compiler failed)."""
    so.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=so.parent) as tmp:
        out = Path(tmp) / so.name
        try:
            res = subprocess.run(cc.split() + list(flags) + [str(source), "-o", str(out)], capture_output=True,
                                 text=True, timeout=120)
        except subprocess.SubprocessError as e:
            raise RuntimeError(f"building the AMX kernel with {cc!r} failed: {e}") from None
        if res.returncode != 0:
            first = (res.stderr.strip().splitlines() or ["(no message)"])[0]
            raise RuntimeError(f"building the AMX kernel with {cc!r} failed: {first}")
        os.replace(out, so)  # atomic: concurrent first uses each build, one file wins, none is torn
    stem = so.name.rsplit("-", 1)[0]
    for stale in so.parent.glob(f"{stem}-*.so"):  # builds of older sources or compilers
        if stale != so:
            stale.unlink(missing_ok=True)  # (a process that has one loaded keeps its mapping)
    return so


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc and shutil.which(cc.split()[0]):
        return cc
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


def _build(source: Path, flags: tuple[str, ...], needed: tuple[str, ...]) -> tuple[ctypes.CDLL | None, str]:
    """(the kernel library compiled from `source` and loaded, "") or (None, why it cannot be used here)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"AMX kernels need Linux on x86-64 (this is {platform.system()} {platform.machine()})"
    missing = [f for f in needed if f not in cpu_flags()]
    if missing:
        return None, f"this CPU lacks {', '.join(missing)} (AMX: Intel Sapphire Rapids or later)"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (cc, gcc or clang; or set CC) to build the AMX kernel"
    src = source.read_bytes() + b"".join(h.read_bytes() for h in sorted(source.parent.glob("*.h")))
    try:
        version = subprocess.run(cc.split() + ["--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"the C compiler {cc!r} does not run: {e}"
    key = hashlib.sha256(src + " ".join(flags).encode() + version.encode()).hexdigest()[:16]
    name = f"{source.stem}-{key}.so"
    so = next((d / name for d in _cache_dirs() if (d / name).exists()), None)
    if so is None:
        errors = []
        for d in _cache_dirs():  # the user's cache, else a private temporary folder (a read-only home)
            try:
                so = _compile(cc, flags, source, d / name)
                break
            except OSError as e:
                errors.append(f"{d}: {e}")
            except RuntimeError as e:
                return None, str(e)
        if so is None:
            return None, "no writable folder for the kernel build: " + "; ".join(errors)
    try:
        lib = ctypes.CDLL(str(so))
    except OSError as e:
        return None, f"the built kernel does not load: {e}"
    if _request_tiles() != 0:
        return None, "the Linux kernel refused AMX tile state to this process (arch_prctl XTILEDATA; Linux >= 5.16)"
    return lib, ""


def _request_tiles() -> int:
    """Linux gives a process AMX tile state only after it asks (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.syscall(158, 0x1023, 18))  # SYS_arch_prctl on x86-64, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA


P, I, INT, FLOAT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float


def _load_kernel(source: Path, flags: tuple[str, ...], needed: tuple[str, ...],
                 signatures: dict[str, list | tuple]) -> tuple[ctypes.CDLL | None, str]:
    """_build, then declare each exported function's argument types: a list (the function returns void) or
    (argument types, return type)."""
    lib, why = _build(source, flags, needed)
    if lib is None:
        return None, why
    for name, sig in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = sig if isinstance(sig, tuple) else (sig, None)
    return lib, ""


@functools.lru_cache(maxsize=1)
def _load() -> tuple[ctypes.CDLL | None, str]:
    """The bf16x3 kernel library (see _build)."""
    return _load_kernel(SOURCE, FLAGS, NEEDED_CPU, {
        "ek_split_rows": [P, I, I, I, P, I, I, I],
        "ek_pack_weight": [P, I, I, P, I, I],
        "ek_gemm_rows": [P, I, P, I, P, P, I, I, I, INT, I],
        "ek_attention_scratch": ([I, I, I], I),
        "ek_attention_rows": [P, P, P, P, P, I, P, I, I, I, FLOAT, I, I, I, P]})


@functools.lru_cache(maxsize=1)
def load_int8() -> tuple[ctypes.CDLL | None, str]:
    """The fused W8A8 AMX-INT8 kernel library (kernels/amx_int8.c; used by compute.int8), or (None, why not)."""
    return _load_kernel(INT8_SOURCE, INT8_FLAGS, INT8_NEEDED_CPU, {
        "ek_i8_quantize_rows": [P, I, I, I, P, P, I, I, I],
        "ek_i8_pack_weight": [P, I, I, P, I, I],
        "ek_i8_gemm_rows": [P, P, I, P, P, I, I, P, P, I, P, I, I, INT],
        "ek_i8_ffn_rows": [P, I, I, I, P, P, P, I, I, I, P, P, P, I, I, I, P, I, P, P, P, P, P, I, I]})


@functools.lru_cache(maxsize=1)
def load_addnorm() -> tuple[ctypes.CDLL | None, str]:
    """The residual add + LayerNorm row kernel (kernels/ek_addnorm.c; AVX-512 only, no AMX), or (None, why not)."""
    return _load_kernel(ADDNORM_SOURCE, COMMON_FLAGS, ("avx512f", "avx512bw", "avx512vl"),
                        {"ek_add_layernorm_rows": [P, P, I, P, P, FLOAT, P, I, I]})


class _KernelCall:
    """A callable a model's layer holds that runs a built kernel library. Copies of the model (deepcopy, pickle,
    torch.save) load the library again through `loader` instead of copying the ctypes handle, which cannot be."""

    loader: Callable[[], tuple[ctypes.CDLL | None, str]]

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.lib = type(self).loader()[0]


class AddLayerNorm(_KernelCall):
    """ln(x + y) for a post-norm encoder layer (nn.layers.EncoderLayer.add_norm) in one pass over each row on
    AVX-512 CPUs, for inference on contiguous fp32 CPU tensors; anything else goes through torch."""

    loader = staticmethod(load_addnorm)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
        D = x.shape[-1]
        if (torch.is_grad_enabled() and (x.requires_grad or y.requires_grad or ln.weight.requires_grad)) \
                or x.device.type != "cpu" or x.dtype != torch.float32 or y.dtype != torch.float32 \
                or x.shape != y.shape or tuple(ln.normalized_shape) != (D,) \
                or (ln.weight is not None and ln.weight.dtype != torch.float32):
            return ln(x + y)
        x2, y2 = x.contiguous(), y.contiguous()
        out = torch.empty_like(x2)
        rows = x2.numel() // D
        g = ln.weight.detach().data_ptr() if ln.weight is not None else None
        b = ln.bias.detach().data_ptr() if ln.bias is not None else None
        xp, yp, op = x2.data_ptr(), y2.data_ptr(), out.data_ptr()
        run_rows(lambda m0, m1: self.lib.ek_add_layernorm_rows(xp, yp, D, g, b, float(ln.eps), op, m0, min(m1, rows)),
                 -(-rows // 32) * 32, kernel_threads())
        return out


def fuse_add_norms(model: nn.Module) -> nn.Module:
    """Post-norm EncoderLayers compute LN(x + f(x)) with AddLayerNorm where the row kernel builds; returns model."""
    from encoderkit.nn.layers import EncoderLayer

    lib, _ = load_addnorm()
    if lib is not None:
        for m in model.modules():
            if isinstance(m, EncoderLayer) and not m.norm_first:
                m.add_norm = AddLayerNorm(lib)
    return model


class AmxAttention(_KernelCall):
    """softmax(scale * q k^T + key bias) v for inference on AMX-BF16, both products split three ways like
    Bf16x3Linear (fp32 accuracy; kernels/amx_bf16x3.c, ek_attention_rows), one call per layer for every head.

    Installed as MultiHeadSelfAttention.fused_sdpa by the AMX compute modes (fuse_attention). It returns None —
    and the layer runs torch's SDPA — for anything it does not cover: autograd, non-CPU or non-fp32 tensors,
    autocast, and biases other than a per-key one of shape (B|1, 1, 1, T) (padding masks; relative-position or
    causal biases vary per query)."""

    loader = staticmethod(_load)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                 scale: float | None) -> torch.Tensor | None:
        if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape or q.device.type != "cpu" \
                or any(t.dtype != torch.float32 or t.stride(-1) != 1 for t in (q, k, v)) \
                or (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))) \
                or torch.is_autocast_cpu_enabled():
            return None
        B, H, T, D = q.shape
        kb, kb_ld = None, 0
        if bias is not None:
            if bias.dim() != 4 or bias.shape[1:3] != (1, 1) or bias.shape[3] != T or bias.shape[0] not in (1, B) \
                    or not bias.is_floating_point() or bias.device.type != "cpu" \
                    or (bias.requires_grad and torch.is_grad_enabled()):  # (a boolean mask means "may attend")
                return None
            kb = bias.reshape(bias.shape[0], T).float().contiguous()
            kb_ld = T if bias.shape[0] == B else 0
        if B * H == 0 or T == 0:
            return q.new_zeros(B, T, H * D)
        out = torch.empty(B, T, H * D)
        strides = torch.tensor([s for t in (q, k, v) for s in t.stride()[:3]], dtype=torch.int64)
        per_head = int(self.lib.ek_attention_scratch(T, D, 2)) - int(self.lib.ek_attention_scratch(T, D, 1))
        group = max(1, min(H, ATTENTION_GROUP_BYTES // per_head))  # heads packed together (read token-major)
        scratch_bytes = int(self.lib.ek_attention_scratch(T, D, group))
        sc = float(scale) if scale is not None else D ** -0.5
        qp, kp, vp, sp, op = q.data_ptr(), k.data_ptr(), v.data_ptr(), strides.data_ptr(), out.data_ptr()
        kbp = kb.data_ptr() if kb is not None else None

        def heads(h0: int, h1: int) -> None:
            scratch = torch.empty(scratch_bytes, dtype=torch.uint8)
            self.lib.ek_attention_rows(qp, kp, vp, sp, kbp, kb_ld, op, H, T, D, sc, h0, h1, group, scratch.data_ptr())

        threads = max(1, min(kernel_threads(), B * H))
        run_rows(heads, B * H, threads, block=-(-(B * H) // threads))
        return out


def fuse_attention(model: nn.Module) -> nn.Module:
    """Every MultiHeadSelfAttention that runs the base class's forward gets AmxAttention as its fused_sdpa (where
    the bf16x3 kernel builds); returns model."""
    from encoderkit.nn.attention import MultiHeadSelfAttention

    lib, _ = _load()
    if lib is not None:
        for m in model.modules():
            if isinstance(m, MultiHeadSelfAttention) and type(m).forward is MultiHeadSelfAttention.forward:
                m.fused_sdpa = AmxAttention(lib)
    return model


def available() -> bool:
    """Whether compute="bf16x3" can run here (CPU, OS and compiler; the kernel is built on first call)."""
    return _load()[0] is not None


def unavailable_reason() -> str:
    return _load()[1]


def require() -> ctypes.CDLL:
    lib, why = _load()
    if lib is None:
        raise RuntimeError(f"compute='bf16x3' cannot run here: {why}; use compute='fp32' or 'auto'")
    return lib


_pool: tuple[int, int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _executor(threads: int) -> ThreadPoolExecutor:
    """A pool of threads - 1 helpers (the calling thread takes a share too), remade after fork or a thread change."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != threads:
            _pool = (os.getpid(), threads, ThreadPoolExecutor(max_workers=threads - 1,
                                                              thread_name_prefix="encoderkit-amx"))
        return _pool[2]


_lane = threading.local()


def kernel_threads() -> int:
    """Threads one kernel call is split over: torch's intra-op count, or what `set_lane_threads` set for the
    calling thread (a server lane that runs whole batches of its own beside other lanes)."""
    return getattr(_lane, "threads", None) or torch.get_num_threads()


def set_lane_threads(threads: int | None) -> None:
    """Split this thread's kernel calls over `threads` threads (None: torch's intra-op count again)."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    _lane.threads = threads


def run_rows(fn, rows: int, threads: int, block: int | None = None) -> None:
    """fn(m0, m1) over [0, rows) in blocks of `block` rows, on up to `threads` threads. The default block is
    ROWS_PER_TASK, or an equal share per thread (a multiple of 32, at least MIN_ROWS_PER_TASK) when the rows are
    fewer than that per thread, so a small batch (a server's) still uses every thread."""
    if block is None:
        block = min(ROWS_PER_TASK, max(MIN_ROWS_PER_TASK, _up(-(-rows // max(threads, 1)), 32)))
    bounds = [(m, min(m + block, rows)) for m in range(0, rows, block)]
    if threads <= 1 or len(bounds) == 1:
        for m0, m1 in bounds:
            fn(m0, m1)
        return
    per = -(-len(bounds) // threads)
    shares = [bounds[i:i + per] for i in range(0, len(bounds), per)]
    futures = [_executor(threads).submit(lambda s=s: [fn(a, b) for a, b in s]) for s in shares[1:]]
    for a, b in shares[0]:
        fn(a, b)
    for f in futures:
        f.result()


class Bf16x3Linear(nn.Linear):
    """An nn.Linear whose inference product runs in fp32 accuracy on AMX-BF16 (see the module docstring).

    It keeps the fp32 `weight` and `bias` (same state_dict as nn.Linear, so the model saves unchanged) and a packed
    copy of the weight, re-packed when the weight changes (its version counter). Autograd (weights requiring
    grad with grad enabled) and other devices take nn.Linear's own path."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.k_pad, self.n_pad = _up(self.in_features, 32), _up(self.out_features, 32)
        self.act: str | None = None  # "gelu": the exact GELU applied to the output too (fuse_activations)
        self._packed_version: tuple | None = None
        self.register_buffer("weight_packed", torch.empty(0, dtype=torch.int16), persistent=False)
        self.register_buffer("bias_padded", None, persistent=False)
        self._pack()

    def _version(self) -> tuple:
        return (self.weight._version, self.weight.data_ptr(),
                None if self.bias is None else (self.bias._version, self.bias.data_ptr()))

    def _pack(self) -> None:
        lib = require()
        w = self.weight.detach().float().contiguous()
        packed = torch.empty(self.n_pad * self.k_pad * 2, dtype=torch.int16)  # bf16 bits: hi and lo parts
        lib.ek_pack_weight(w.data_ptr(), self.out_features, self.in_features, packed.data_ptr(), self.n_pad,
                           self.k_pad)
        self.weight_packed = packed
        if self.bias is not None:
            bias = torch.zeros(self.n_pad)
            bias[:self.out_features] = self.bias.detach().float()
            self.bias_padded = bias
        self._packed_version = self._version()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or self.weight.device.type != "cpu" or (
                torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            y = super().forward(x)
            return F.gelu(y) if self.act == "gelu" else y
        if self._packed_version != self._version():
            self._pack()
        lib = require()
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).float().contiguous()
        M, Mp = x2.shape[0], _up(max(x2.shape[0], 1), 16)  # the kernel takes 32 rows at a time, the last 16 alone
        split = torch.empty(Mp, 2 * self.k_pad, dtype=torch.int16)
        out = torch.empty(Mp, self.n_pad, dtype=torch.float32)
        bias = self.bias_padded.data_ptr() if self.bias_padded is not None else None
        xp, sp, wp, op = x2.data_ptr(), split.data_ptr(), self.weight_packed.data_ptr(), out.data_ptr()
        gelu = int(self.act == "gelu")

        def rows(m0: int, m1: int) -> None:
            lib.ek_split_rows(xp, M, self.in_features, self.in_features, sp, self.k_pad, m0, m1)
            lib.ek_gemm_rows(sp, self.k_pad, wp, self.n_pad, bias, op, self.n_pad, m0, m1, gelu,
                             self.out_features)

        run_rows(rows, Mp, kernel_threads())
        y = out[:M] if self.n_pad == self.out_features else out[:M, :self.out_features]
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        act = f", then {self.act}" if self.act else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, AMX bf16x3 (fp32 accuracy){act}"


def convert_linears(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear inside `model` by a Bf16x3Linear, in place, and fuse the exact GELU of feed-forward
    blocks into their first layer; returns the model."""
    require()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.dtype == torch.float32:
                setattr(parent, name, Bf16x3Linear(child))
    return fuse_attention(fuse_add_norms(fuse_activations(model, Bf16x3Linear)))


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def fuse_activations(model: nn.Module, kind: type) -> nn.Module:
    """In every FeedForward (act(x W1 + b1) W2 + b2) whose act is the exact GELU and whose fc1 is a `kind` layer
    with an `act` slot, the layer applies the GELU in its own epilogue and the block's act becomes the identity."""
    from encoderkit.nn.layers import FeedForward

    for m in model.modules():
        if isinstance(m, FeedForward) and m.act is F.gelu and isinstance(m.fc1, kind) and m.fc1.act is None:
            m.fc1.act, m.act = "gelu", identity
    return model


__all__ = ["Bf16x3Linear", "available", "convert_linears", "fuse_activations", "require", "unavailable_reason"]
