"""Data-parallel encode: W workers of one thread each instead of one process of W threads, for large inputs.

torch compute modes fork W child processes after the model is loaded: each sets one torch thread and reads the
parent's weights copy-on-write (nothing is copied or reloaded). ONNX Runtime and OpenVINO are not fork-safe (a
forked child hangs in them), so the exported backends run W Python threads instead, each on a one-thread session of
the same exported graph (both engines release the GIL while they compute). Where the linear layers run in
encoderkit's own AMX kernels (compute="bf16x3", or "int8" on AMX-INT8 CPUs; `uses_amx_kernels`), the workers are W
Python threads too, each running torch and the kernels on one thread of its own: the kernels release the GIL and
are called once per layer, and no fork (nor its copy-on-write faults in a large process) is paid.

The rule `workers=None` (auto) follows what was measured (texts/s, all-MiniLM-L6-v2, 2 threads, one process vs 2
workers). A quiet 2-core AVX2 host (2026-12-02): torch fp32 on SciFact queries 179 vs 191 (workers win: per-op
overhead of eager torch does not shrink with more threads), on 256-token abstracts 18.4 vs 14.6 (one process wins:
GEMMs dominate); OpenVINO 208 vs 170 short, 17.3 vs 17.1 long (its own threads win). A quiet 2-core AMX host
(Sapphire Rapids class, 2026-12-02): SciFact queries fp32 578 vs 489, bf16 1366 vs 1146 (oneDNN's AVX-512 / AMX
GEMMs scale: one process wins), bf16x3 709 vs 838 and int8 1284 vs 1681 (threads; the kernels' small per-layer calls
gain little from splitting rows); abstracts int8 161 vs 115, bf16x3 75 vs 58 (one process). So auto uses W =
min(torch threads, usable CPUs, batches // 4) workers for texts of at most AUTO_MAX_MEAN_CHARS characters on
average and at least AUTO_MIN_BATCHES batches, for a torch compute mode that runs the AMX kernels or, on CPUs
without AMX, any torch compute mode; encode called from the main thread (forking a process that other threads are
using, such as the server's batcher, is unsafe), on the CPU, on Linux (fork); otherwise one process. `workers=1`
forces one process with all threads, `workers=N` forces N workers. Inputs are sorted by length and dealt out in
chunks of whole batches on demand, so padding stays as small as in one process and a slower worker takes fewer
chunks."""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import queue
import re
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

AUTO_MIN_BATCHES = 8  # auto uses workers only for inputs of at least this many batches
AUTO_MAX_MEAN_CHARS = 400  # ... of short texts (mean characters; ~100 tokens), where per-op overhead dominates
BATCHES_PER_CHUNK = 2  # work handed to a worker at a time (whole batches; smaller chunks balance better)
_IN_WORKER = False  # set in a forked worker: its encode never forks again


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_workers(workers: Any) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer or None (automatic), got {workers!r}")


def plan_workers(enc: Any, inputs: Any, workers: int | None, batch_size: int, chunks: Any = None) -> int:
    """How many workers encode should use for these inputs (1 = in this process, as before)."""
    check_workers(workers)
    if workers == 1 or _IN_WORKER or chunks is not None or isinstance(inputs, (str, bytes, dict)) \
            or not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
        return 1
    if getattr(enc, "processor", None) is not None and getattr(enc.processor, "is_single", None) is not None \
            and enc.processor.is_single(inputs):
        return 1
    if workers is not None:  # forced
        if enc.device.type != "cpu":
            raise ValueError(f"workers={workers} runs CPU workers; this encoder is on {enc.device} (use workers=1)")
        if getattr(enc, "_runner", None) is None and not uses_amx_kernels(enc) \
                and ("fork" not in mp.get_all_start_methods() or mp.current_process().daemon):
            raise ValueError(f"workers={workers} forks worker processes, which this process (platform "
                             f"{sys.platform}{', daemonic' if mp.current_process().daemon else ''}) cannot do; "
                             "use workers=1")
        return min(workers, len(inputs))
    if enc.device.type != "cpu" or threading.current_thread() is not threading.main_thread() \
            or not sys.platform.startswith("linux") or mp.current_process().daemon:
        return 1
    n_batches = -(-len(inputs) // batch_size)
    if n_batches < AUTO_MIN_BATCHES or getattr(enc, "_runner", None) is not None:
        return 1  # measured: the exported engines' own threads beat W one-thread sessions (0.81x on short texts)
    texts = [x for x in inputs if isinstance(x, str)]
    if texts and sum(map(len, texts)) / len(texts) > AUTO_MAX_MEAN_CHARS:
        return 1  # measured: on long texts GEMMs dominate and 2 threads of one process win (workers 0.79x)
    if not uses_amx_kernels(enc) and "amx_bf16" in _cpu_flags():
        return 1  # measured on AMX CPUs: oneDNN's fp32 / bf16 GEMMs scale with threads (one process 1.2x workers)
    return max(1, min(torch.get_num_threads(), usable_cpus(), n_batches // 4))


def _cpu_flags() -> set[str]:
    from encoderkit.compute.int8 import cpu_flags

    return set(cpu_flags())


def uses_amx_kernels(enc: Any) -> bool:
    """Whether the encoder's linear layers run in encoderkit's own AMX kernels (compute="bf16x3", or "int8" on an
    AMX-INT8 CPU). Those are called once per layer from Python and release the GIL, so W threads of one process,
    each running torch on one thread, encode in parallel without forking."""
    from encoderkit.compute.amx import Bf16x3Linear
    from encoderkit.compute.int8 import Int8Linear

    model = getattr(enc, "model", None)
    if getattr(enc, "_runner", None) is not None or not isinstance(model, torch.nn.Module):
        return False
    return any(isinstance(m, Bf16x3Linear) or (isinstance(m, Int8Linear) and getattr(m, "_amx", None) is not None)
               for m in model.modules())


def batch_lanes(model: Any) -> int:
    """How many batches a server runs side by side for `model` (an Encoder or CrossEncoder): one per torch thread
    for a model torch runs on the CPU (each lane's batch on one thread), else 1 (an exported engine splits one
    batch over its own threads: two ONNX Runtime lanes measured slower than one). A server's batches are small,
    and splitting each over threads that also serve HTTP stalls it on its slowest share (benchmarks/README.md:
    serve_load, lanes)."""
    threads = torch.get_num_threads()
    net = getattr(model, "model", None)
    on_cpu = isinstance(net, torch.nn.Module) and all(p.device.type == "cpu" for p in net.parameters())
    return threads if threads > 1 and on_cpu and getattr(model, "_runner", None) is None else 1


def model_bytes(model: Any) -> int:
    """Bytes of the tensors a copy of `model` holds (parameters and buffers, packed kernel weights included)."""
    net = getattr(model, "model", None)
    if not isinstance(net, torch.nn.Module):
        return 0
    seen, total = set(), 0
    for t in [*net.parameters(), *net.buffers()]:
        if t is not None and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 when the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def copies_fit(model: Any, copies: int) -> bool:
    """Whether `copies` more copies of `model` plus the one loaded take at most half of this machine's RAM."""
    ram = physical_memory()
    return ram > 0 and (copies + 1) * model_bytes(model) <= ram // 2


def _chunks(enc: Any, inputs: list, batch_size: int, workers: int) -> list[np.ndarray]:
    """Input indices in chunks of whole batches, longest first (characters as the length for text)."""
    if all(isinstance(t, str) for t in inputs):
        order = np.argsort([-len(t) for t in inputs], kind="stable")
    else:
        order = np.arange(len(inputs))
    per_worker = -(-len(inputs) // workers)
    size = batch_size * max(1, min(BATCHES_PER_CHUNK, per_worker // batch_size))
    return [order[i:i + size] for i in range(0, len(inputs), size)]


def _remap(exc: BaseException, idx: np.ndarray) -> BaseException:
    """The worker's exception with "input k" of its chunk renamed to the caller's index."""
    msg = str(exc)
    new = re.sub(r"\binput (\d+)\b", lambda m: f"input {int(idx[int(m.group(1))])}"
                 if int(m.group(1)) < len(idx) else m.group(0), msg)
    if new == msg or not exc.args or not isinstance(exc.args[0], str):
        return exc
    try:
        return type(exc)(new)
    except Exception:  # an exception type with other required arguments
        return exc


def _merge(parts: list[Any], chunks: list[np.ndarray], n: int) -> Any:
    """One result in the caller's order from per-chunk results (arrays, CSR matrices or lists)."""
    perm = np.concatenate(chunks)
    first = parts[0]
    if isinstance(first, np.ndarray):
        out = np.empty((n, *first.shape[1:]), first.dtype)
        out[perm] = np.concatenate(parts)
        return out
    if hasattr(first, "tocsr"):
        import scipy.sparse as sp

        return sp.vstack(parts, format="csr")[np.argsort(perm)]
    out_list: list[Any] = [None] * n
    for chunk, part in zip(chunks, parts):
        for i, item in zip(chunk, part):
            out_list[i] = item
    return out_list


def _progress(total: int, show: bool | None) -> Any:
    if not (show if show is not None else sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encode", unit="input")


def _worker_loop(enc: Any, inputs: list, chunks: list[np.ndarray], kw: dict, counter: Any, results: Any) -> None:
    """A forked worker: one torch thread; takes the next chunk until none is left; sends (j, result, error)."""
    global _IN_WORKER
    _IN_WORKER = True
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the parent's tokenizer threads do not exist here
    torch.set_num_threads(1)
    while True:
        with counter.get_lock():
            j = counter.value
            counter.value += 1
        if j >= len(chunks):
            return
        try:
            results.put((j, enc.encode([inputs[i] for i in chunks[j]], workers=1, **kw), None))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            exc = _remap(exc, chunks[j])
            try:
                pickle.dumps(exc)
            except Exception:
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            log.debug("encode worker failed:\n%s", traceback.format_exc())
            results.put((j, None, exc))
            return


def _run_processes(enc: Any, inputs: list, chunks: list[np.ndarray], kw: dict, workers: int,
                   done: Callable[[int], None]) -> list[Any]:
    ctx = mp.get_context("fork")
    counter, results = ctx.Value("l", 0), ctx.Queue()
    procs = [ctx.Process(target=_worker_loop, args=(enc, inputs, chunks, kw, counter, results), daemon=True)
             for _ in range(workers)]
    parts: list[Any] = [None] * len(chunks)
    try:
        for p in procs:
            p.start()
        for _ in range(len(chunks)):
            j, part, exc = _next_result(results, procs)
            if exc is not None:
                raise exc
            parts[j] = part
            done(len(chunks[j]))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join()
        results.close()
    return parts


def _next_result(results: Any, procs: list) -> tuple:
    """The next (chunk, result, error) from the workers; an error when a worker died without sending one."""
    while True:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if not dead and all(p.exitcode is not None for p in procs):
                try:  # every worker is gone: what they sent before exiting is in the pipe by now
                    return results.get(timeout=1.0)
                except queue.Empty:
                    pass
            if dead or all(p.exitcode is not None for p in procs):
                code = dead[0].exitcode if dead else 0
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                raise RuntimeError(f"an encode worker process {how} before finishing its inputs (out of memory?); "
                                   "encode again with workers=1") from None


def _run_threads(enc: Any, inputs: list, chunks: list[np.ndarray], kw: dict, workers: int,
                 done: Callable[[int], None]) -> list[Any]:
    """W threads of this process. The exported backends: each encodes chunks through a one-thread copy of the
    engine. encoderkit's AMX kernels: each runs torch (and the kernels) on one thread of its own; the process's
    torch thread count is restored afterwards."""
    import copy

    if getattr(enc, "_runner", None) is not None:
        from encoderkit.compute.backends import make_runner

        key = (enc.compute, workers)
        if getattr(enc, "_worker_runners", (None,))[0] != key:
            runner = make_runner(enc.model, enc.compute, pad_id=int(enc.pad_id or 0), threads=1, streams=workers)
            enc._worker_runners = (key, runner)
        view = copy.copy(enc)
        view._runner, view.routes = enc._worker_runners[1], {}
        one_thread = False
    else:
        view, one_thread = enc, True
    torch_threads = torch.get_num_threads()
    next_chunk = iter(range(len(chunks)))
    lock = threading.Lock()
    parts: list[Any] = [None] * len(chunks)
    failed: list[BaseException] = []

    def work() -> None:
        if one_thread:
            torch.set_num_threads(1)  # this thread's OpenMP team (and threads started from now on)
        while not failed:
            with lock:
                j = next(next_chunk, None)
            if j is None:
                return
            try:
                parts[j] = view.encode([inputs[i] for i in chunks[j]], workers=1, **kw)
            except BaseException as exc:  # noqa: BLE001
                failed.append(_remap(exc, chunks[j]))
                return
            done(len(chunks[j]))

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="encoderkit-encode") as pool:
            for f in [pool.submit(work) for _ in range(workers)]:
                f.result()
    finally:
        if one_thread:
            torch.set_num_threads(torch_threads)
    if failed:
        raise failed[0]
    return parts


def encode_in_workers(enc: Any, inputs: list | tuple, workers: int, kw: dict) -> Any:
    """enc.encode(inputs, **kw) computed by `workers` one-thread workers; the same result in the same order."""
    from encoderkit.quantize import PRECISIONS, quantize

    inputs = list(inputs)
    precision = kw.pop("precision", "float32")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if enc.processor is None:  # name a bad input by its index in the caller's list, before any work
        for i, t in enumerate(inputs):
            if not isinstance(t, str):
                raise TypeError(f"input {i} is a {type(t).__name__}, expected str")
    ranges, calib = kw.pop("ranges", None), kw.pop("calibration_embeddings", None)
    show, kw["progress"] = kw.get("progress"), False
    chunks = _chunks(enc, inputs, kw.get("batch_size", 32), workers)
    bar = _progress(len(inputs), show)
    done = bar.update if bar is not None else (lambda n: None)
    if getattr(enc, "_runner", None) is not None:
        run, how = _run_threads, "threads on a one-thread engine"
    elif uses_amx_kernels(enc):
        run, how = _run_threads, "threads, one compute thread each"
    else:
        run, how = _run_processes, "one-thread processes"
    log.info("encode: %d inputs in %d chunks over %d workers (%s)", len(inputs), len(chunks), workers, how)
    try:
        out = _merge(run(enc, inputs, chunks, kw, workers, done), chunks, len(inputs))
    finally:
        if bar is not None:
            bar.close()
    if precision != "float32" and isinstance(out, np.ndarray):
        out = quantize(out, precision, ranges=ranges, calibration_embeddings=calib)
    return out
