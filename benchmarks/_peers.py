"""Peer engines for encode_throughput.py, each the way a user would run all-MiniLM-L6-v2 on it: the
sentence-transformers pipeline (tokenizer, padding to the longest in a batch, mean pooling, normalize) around
- the transformers model in torch fp32 (sentence-transformers' default),
- ONNX Runtime running that transformers model exported by torch.onnx.export (what sentence-transformers'
  backend="onnx" runs via optimum's ORTModelForFeatureExtraction; optimum itself does not install beside
  transformers 5 here, so the same export and session are built directly),
- OpenVINO running openvino.convert_model of that transformers model (what backend="openvino" runs via
  optimum-intel), compiled with INFERENCE_PRECISION_HINT=f32 (exact; the plugin's default is bf16 on CPUs that
  have it),
- "openvino-bf16": the same with INFERENCE_PRECISION_HINT=bf16 (the plugin's default on CPUs with AVX-512-BF16 /
  AMX; where bf16 is not native OpenVINO runs f32),
- "openvino-int8": the same graph statically quantized by NNCF (`nncf.quantize`, model_type TRANSFORMER, the
  OpenVINO recipe for int8 encoders), calibrated on 300 STS-B train sentences (held apart from the SciFact texts
  measured; `pip install nncf`).
The real backend="onnx" / "openvino" and fastembed are used instead when they are installed and load offline."""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn


class _Engine(nn.Module):
    """Stands in for the transformers model inside a SentenceTransformer: same forward keywords, last_hidden_state
    from an engine session."""

    def __init__(self, hf_model: nn.Module, run, names: list[str]):
        super().__init__()
        self.config, self.run, self.names = hf_model.config, run, names
        self.dtype = torch.float32

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kw):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if given["token_type_ids"] is None:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        feeds = {n: given[n].numpy().astype(np.int64) for n in self.names}
        return {"last_hidden_state": torch.from_numpy(self.run(feeds))}


def _example(hf_model):
    ids = torch.randint(1000, 2000, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


class _Wrap(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      return_dict=True).last_hidden_state


def hf_onnx_bytes(hf_model) -> bytes:
    ex = _example(hf_model)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Wrap(hf_model).eval(), tuple(ex[n] for n in names), buf, input_names=names,
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={**{n: {0: "b", 1: "t"} for n in names}, "last_hidden_state": {0: "b", 1: "t"}})
    return buf.getvalue()


def st_model(folder: str, engine: str, threads: int):
    """A SentenceTransformer on `engine`: "torch", "onnx" or "openvino" (see the module docstring); returns
    (model, label)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(folder, device="cpu")
    if engine == "torch":
        return st, "sentence-transformers torch fp32"
    try:  # the real backend when optimum / optimum-intel are installed
        if engine not in ("onnx", "openvino"):
            raise ImportError("the bf16 / int8 variants are built directly")
        import optimum  # noqa: F401

        real = SentenceTransformer(folder, device="cpu", backend=engine,
                                   model_kwargs={"ov_config": {"INFERENCE_PRECISION_HINT": "f32",
                                                               "INFERENCE_NUM_THREADS": str(threads)}}
                                   if engine == "openvino" else {"provider": "CPUExecutionProvider"})
        return real, f"sentence-transformers backend={engine} fp32"
    except Exception:  # noqa: BLE001 - fall back to the same engine, built directly
        pass
    hf = st[0].model.eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    if engine == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(hf_onnx_bytes(hf), so, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        st[0].model = _Engine(hf, lambda f: sess.run(None, f)[0], names)
        return st, f"ONNX Runtime {ort.__version__} fp32 (transformers graph, ST pipeline)"
    return _openvino_peer(st, hf, names, threads, "f32" if engine == "openvino" else engine.split("-", 1)[1])


def calibration_texts(n: int = 300) -> list[str]:
    """The first n distinct sentences of STS-B train (../shared/data), for static int8 calibration: never the
    SciFact texts the benchmark measures."""
    import csv
    import os
    from pathlib import Path

    data = Path(os.environ.get("ENCODERKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    f = data / "stsbenchmark" / "sts-train.csv"
    if not f.is_file():
        raise FileNotFoundError(f"{f} (STS-B train) is needed to calibrate the int8 peer")
    seen: dict[str, None] = {}
    with f.open(newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            for t in row[5:7]:
                seen.setdefault(t, None)
            if len(seen) >= n:
                break
    return list(seen)[:n]


def _openvino_peer(st, hf, names: list[str], threads: int, precision: str):
    """The transformers graph under OpenVINO in f32 / bf16 (inference precision hint) or NNCF static int8."""
    import openvino as ov

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ov_model = ov.convert_model(_Wrap(hf).eval(), example_input=_example(hf))
        except Exception:  # noqa: BLE001 - the ONNX route when the torch frontend does not take it
            ov_model = ov.convert_model(io.BytesIO(hf_onnx_bytes(hf)))
    in_names = [n for i in ov_model.inputs for n in i.get_names() if n in names]
    if precision == "int8":
        import nncf

        feeds = []
        texts = calibration_texts()
        for i in range(0, len(texts), 32):
            t = st.tokenize(texts[i:i + 32])
            feeds.append({n: t[n].numpy().astype(np.int64) if n in t else
                          np.zeros_like(t["input_ids"].numpy(), dtype=np.int64) for n in in_names})
        ov_model = nncf.quantize(ov_model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                                 subset_size=len(texts))
    hint = {"f32": "f32", "bf16": "bf16", "int8": "f32"}[precision]  # int8: the rest of the graph in f32
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                          "PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_NUM_THREADS": str(threads)})
    req = compiled.create_infer_request()
    in_names = [n for i in compiled.inputs for n in i.get_names() if n in names]
    st[0].model = _Engine(hf, lambda f: np.array(req.infer(f)[compiled.output(0)], copy=True), in_names)
    what = {"f32": "fp32", "bf16": "bf16 (precision hint)", "int8": "static int8 (NNCF, 300 STS-B calibration sentences)"}
    return st, f"OpenVINO {ov.__version__.split('-')[0]} {what[precision]} (transformers graph, ST pipeline)"


def fastembed_model(folder: str):
    """fastembed on the local folder, or None with the reason it cannot run here."""
    try:
        from fastembed import TextEmbedding  # noqa: F401
    except ImportError:
        return None, "fastembed is not installed (its dependencies conflict with transformers 5 / torch 2.13 here)"
    return None, "fastembed needs an ONNX file in its own layout; not wired offline"
