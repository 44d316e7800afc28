"""Peer engines for encode_throughput.py, each the way a user would run all-MiniLM-L6-v2 on it: the
sentence-transformers pipeline (tokenizer, padding to the longest in a batch, mean pooling, normalize) around
- the transformers model in torch fp32 (sentence-transformers' default),
- ONNX Runtime running that transformers model exported by torch.onnx.export (what sentence-transformers'
  backend="onnx" runs via optimum's ORTModelForFeatureExtraction; optimum itself does not install beside
  transformers 5 here, so the same export and session are built directly),
- OpenVINO running openvino.convert_model of that transformers model (what backend="openvino" runs via
  optimum-intel), compiled with INFERENCE_PRECISION_HINT=f32 (exact; the plugin's default is bf16 on CPUs that
  have it).
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
    import openvino as ov

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ov_model = ov.convert_model(_Wrap(hf).eval(), example_input=_example(hf))
        except Exception:  # noqa: BLE001 - the ONNX route when the torch frontend does not take it
            ov_model = ov.convert_model(io.BytesIO(hf_onnx_bytes(hf)))
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                          "PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_NUM_THREADS": str(threads)})
    req = compiled.create_infer_request()
    in_names = [n for i in compiled.inputs for n in i.get_names() if n in names]
    st[0].model = _Engine(hf, lambda f: np.array(req.infer(f)[compiled.output(0)], copy=True), in_names)
    return st, f"OpenVINO {ov.__version__.split('-')[0]} fp32 (transformers graph, ST pipeline)"


def fastembed_model(folder: str):
    """fastembed on the local folder, or None with the reason it cannot run here."""
    try:
        from fastembed import TextEmbedding  # noqa: F401
    except ImportError:
        return None, "fastembed is not installed (its dependencies conflict with transformers 5 / torch 2.13 here)"
    return None, "fastembed needs an ONNX file in its own layout; not wired offline"
