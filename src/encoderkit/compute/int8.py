"""int8 compute: W8A8 linear layers with per-channel weight scales and per-token activation scales.

Every `nn.Linear` of the backbone becomes an `Int8Linear`: its weight is stored once as int8 with one scale per
output channel, s_w[n] = max_k |W[n, k]| / 127; at each call every token (row) x of the input gets its own scale
s_x = max_k |x[k]| / 127, so

    y[m, n] = s_x[m] * s_w[n] * sum_k round(x[m, k] / s_x[m]) * round(W[n, k] / s_w[n])  + b[n]

with the sum an exact int32 product (`torch._int_mm`; oneDNN's VNNI / AMX-INT8 kernels). One scale per token
keeps a token with large activations from crushing the others' resolution, which a per-tensor (per-batch) scale
does: on all-MiniLM-L6-v2 the per-token form gives cosine 0.997 mean / 0.996 min to fp32 where the per-tensor
dynamic quantization gives 0.977 / 0.946 (benchmarks/README.md). Everything between the GEMMs (LayerNorm,
softmax, GELU, residuals, pooling) stays fp32.

`torch._int_mm` is fast only where the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX-INT8);
on an AVX2-only CPU it is many times slower than fp32, so there `compute="int8"` keeps the fbgemm per-tensor
dynamic quantization (see `fast_int8_matmul`). Where the CPU has AMX-INT8 (and a C compiler built it), the same
layer runs kernels/amx_int8.c instead: each token's quantization, the tile products and the rescaling fused per
32-row strip, with the same numbers as the torch path (tested bit for bit), and each GELU feed-forward block is one
call (Int8FeedForward). In the torch path rows are processed in blocks so that the int32 product, the scales and
the output stay in cache (a 8,192-row batch of long texts in one product ran at a third of the speed).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

ROWS = 256  # rows (tokens) per block: measured 256 > 128 > 512 > unblocked on MiniLM's long-text batches


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux: /proc/cpuinfo); empty where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
                          []))


def fast_int8_matmul() -> bool:
    """Whether this CPU has int8 dot-product instructions that torch._int_mm (oneDNN) uses: AMX-INT8,
    AVX512-VNNI or AVX-VNNI. Elsewhere int8 GEMMs are slower than fp32."""
    return bool({"amx_int8", "avx512_vnni", "avx_vnni"} & cpu_flags())


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, fp32 scales (rows, 1)): symmetric per-row quantization, scale = max |x| / 127."""
    scale = x.abs().amax(1, keepdim=True).clamp_min_(1e-12).div_(127.0)  # (faster than one aminmax pass)
    return torch.round(x / scale).to(torch.int8), scale  # |x / scale| <= 127 by construction: no clamp


class Int8Linear(nn.Module):
    """y = x W^T + b with W in int8 (one scale per output channel) and x quantized per token at each call."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()  # (N, K)
        q, scale = quantize_rows(w)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", q)  # (N, K)
        self.register_buffer("weight_scale", scale.reshape(-1))  # (N,)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.act: str | None = None  # "gelu": the exact GELU applied to the output too (amx.fuse_activations)
        self._prepare_amx()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).float()  # (M, K)
        if self._amx is not None and x2.device.type == "cpu":
            return self._forward_amx(x2.contiguous()).reshape(*lead, self.out_features)
        out = torch.empty(x2.shape[0], self.out_features, dtype=torch.float32, device=x.device)  # (M, N)
        w_t = self.weight_int8.t()  # (K, N) view of the row-major (N, K) weight, as oneDNN wants it
        for i in range(0, x2.shape[0], ROWS):
            xq, sx = quantize_rows(x2[i:i + ROWS])
            y = out[i:i + ROWS]
            y.copy_(torch._int_mm(xq, w_t)).mul_(sx)  # exact int32 sums, times the tokens' scales
            if self.bias is None:
                y.mul_(self.weight_scale)
            else:  # (a mixed int32 x fp32 product, or one more pass per scale, measured slower)
                torch.addcmul(self.bias, y, self.weight_scale, out=y)
        if self.act == "gelu":
            out = torch.nn.functional.gelu(out)
        return out.reshape(*lead, self.out_features)

    def _prepare_amx(self) -> None:
        """Where the CPU has AMX-INT8: the same product by kernels/amx_int8.c, quantization of each token, the
        tile products and the scaling fused per 32 x 32 block (the torch path runs each as its own pass)."""
        from encoderkit.compute.amx import load_int8

        self._amx = None
        lib, _ = load_int8() if "amx_int8" in cpu_flags() else (None, "")
        if lib is None:
            return
        k_pad, n_pad = -(-self.in_features // 64) * 64, -(-self.out_features // 32) * 32
        packed = torch.empty(n_pad * k_pad, dtype=torch.int8)
        lib.ek_i8_pack_weight(self.weight_int8.contiguous().data_ptr(), self.out_features, self.in_features,
                              packed.data_ptr(), n_pad, k_pad)
        wscale = torch.zeros(n_pad)
        wscale[:self.out_features] = self.weight_scale
        bias = None
        if self.bias is not None:
            bias = torch.zeros(n_pad)
            bias[:self.out_features] = self.bias
        self._amx = (k_pad, n_pad, packed, wscale, bias)  # (the library is looked up per call: copies stay copyable)

    def _forward_amx(self, x2: torch.Tensor) -> torch.Tensor:
        from encoderkit.compute.amx import kernel_threads, load_int8, run_rows

        lib = load_int8()[0]
        k_pad, n_pad, packed, wscale, bias = self._amx
        M = x2.shape[0]
        Mp = -(-max(M, 1) // 32) * 32
        q = torch.empty(Mp, k_pad, dtype=torch.int8)
        sx = torch.empty(Mp, dtype=torch.float32)
        out = torch.empty(Mp, self.out_features, dtype=torch.float32)
        xp, qp, sp, wp, ws, op = (x2.data_ptr(), q.data_ptr(), sx.data_ptr(), packed.data_ptr(), wscale.data_ptr(),
                                  out.data_ptr())
        bp = bias.data_ptr() if bias is not None else None
        K, N = self.in_features, self.out_features
        gelu = int(self.act == "gelu")

        def rows(m0: int, m1: int) -> None:
            panel = torch.empty(32, n_pad, dtype=torch.int32)  # per call: threads each need their own
            lib.ek_i8_quantize_rows(xp, M, K, K, qp, sp, k_pad, m0, m1)
            lib.ek_i8_gemm_rows(qp, sp, k_pad, wp, ws, N, n_pad, bp, op, N, panel.data_ptr(), m0, m1, gelu)

        run_rows(rows, Mp, kernel_threads())
        return out[:M]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, W8A8 per-channel / per-token"


class Int8FeedForward(nn.Module):
    """A FeedForward block (fc2(gelu(fc1(x)))) whose two Int8Linear layers run as one AMX call per 32-row strip
    (kernels/amx_int8.c, ek_i8_ffn_rows): the d_ff-wide intermediate stays in cache instead of being written and
    read back as fp32. Same numbers as the two layers one after the other (tested bit for bit)."""

    def __init__(self, ffn: nn.Module):
        super().__init__()
        self.fc1, self.fc2, self.drop = ffn.fc1, ffn.fc2, ffn.drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc1, fc2 = self.fc1, self.fc2
        if x.device.type != "cpu" or fc1._amx is None or fc2._amx is None or (self.training and self.drop.p > 0):
            return fc2(self.drop(fc1(x)))  # fc1 applies the GELU itself (act "gelu")
        from encoderkit.compute.amx import kernel_threads, load_int8, run_rows

        lib = load_int8()[0]
        kp1, fp, w1, ws1, b1 = fc1._amx
        kp2, np_, w2, ws2, b2 = fc2._amx
        lead = x.shape[:-1]
        x2 = x.reshape(-1, fc1.in_features).float().contiguous()
        M, K, F, N = x2.shape[0], fc1.in_features, fc1.out_features, fc2.out_features
        Mp = -(-max(M, 1) // 32) * 32
        out = torch.empty(Mp, N, dtype=torch.float32)
        ptr = lambda t: None if t is None else t.data_ptr()  # noqa: E731

        def rows(m0: int, m1: int) -> None:  # scratch per call: threads each need their own
            q1, p1 = torch.empty(32, kp1, dtype=torch.int8), torch.empty(32, fp, dtype=torch.int32)
            h, q2 = torch.empty(32, F), torch.empty(32, kp2, dtype=torch.int8)
            p2 = torch.empty(32, np_, dtype=torch.int32)
            lib.ek_i8_ffn_rows(x2.data_ptr(), M, K, K, w1.data_ptr(), ws1.data_ptr(), ptr(b1), F, kp1, fp,
                               w2.data_ptr(), ws2.data_ptr(), ptr(b2), N, kp2, np_, out.data_ptr(), N,
                               q1.data_ptr(), p1.data_ptr(), h.data_ptr(), q2.data_ptr(), p2.data_ptr(), m0, m1)

        run_rows(rows, Mp, kernel_threads())
        return out[:M].reshape(*lead, N)


def fuse_feed_forwards(model: nn.Module) -> nn.Module:
    """Replace each FeedForward whose fc1 (GELU fused) and fc2 run the AMX-INT8 kernel by an Int8FeedForward."""
    from encoderkit.nn.layers import FeedForward

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FeedForward) and isinstance(child.fc1, Int8Linear) and child.fc1.act == "gelu" \
                    and isinstance(child.fc2, Int8Linear) and child.fc1._amx is not None \
                    and child.fc2._amx is not None and child.fc2.act is None:
                setattr(parent, name, Int8FeedForward(child))
    return model


def quantize_linears(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear inside `model` by an Int8Linear, in place; returns the model. Where the fused AMX
    kernel runs, feed-forward blocks' exact GELU moves into their first layer's epilogue (amx.fuse_activations)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
    if any(getattr(m, "_amx", None) is not None for m in model.modules()):
        from encoderkit.compute.amx import fuse_activations, fuse_add_norms, fuse_attention

        fuse_activations(model, Int8Linear)
        fuse_feed_forwards(model)
        fuse_add_norms(model)
        fuse_attention(model)
    return model


__all__ = ["Int8FeedForward", "Int8Linear", "cpu_flags", "fast_int8_matmul", "fuse_feed_forwards", "quantize_linears",
           "quantize_rows"]
