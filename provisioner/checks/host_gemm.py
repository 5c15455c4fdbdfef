"""Low-precision GEMMs on random data, checked against a torch reference and timed against BF16."""

from __future__ import annotations

import importlib
from typing import Any

from . import host_timing

GROUP = 64  # nunchaku's INT4 quantization group along K
RANK = 32  # low-rank branch width; nunchaku needs a multiple of 16


def _relative_error(torch: Any, out: Any, ref: Any) -> float:
    return float(torch.linalg.vector_norm(out.float() - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-12))


def w4a4_vs_bf16(torch: Any, index: int, precision: str | None, gemm: dict[str, Any]) -> dict[str, Any]:
    """nunchaku's INT4 activation quantizer + W4A4 GEMM vs a dequantized-weight torch reference."""
    if precision == "fp4":
        return {"unsupported": "the W4A4 reference check covers INT4 weights; this GPU runs NVFP4"}
    try:
        gemm_ops = importlib.import_module("nunchaku.ops.gemm")
        quantize_ops = importlib.import_module("nunchaku.ops.quantize")
        packer_module = importlib.import_module("nunchaku.lora.flux.packer")
    except ImportError as exc:
        return {"unsupported": f"this nunchaku has no Python ops API (nunchaku >= 1.0 has it): {exc}"}
    if not hasattr(quantize_ops, "svdq_quantize_w4a4_act_fuse_lora_cuda") or not hasattr(
            gemm_ops, "svdq_gemm_w4a4_cuda") or not hasattr(packer_module, "NunchakuWeightPacker"):
        return {"unsupported": "this nunchaku lacks svdq_quantize_w4a4_act_fuse_lora_cuda / svdq_gemm_w4a4_cuda / "
                "NunchakuWeightPacker (released nunchaku >= 1.0 has them)"}
    m, n, k = (int(v) for v in gemm.get("w4a4_shape", (4096, 3072, 3072)))
    device = torch.device("cuda", index)
    dtype = torch.bfloat16
    with torch.cuda.device(device):
        generator = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(m, k, device=device, dtype=dtype, generator=generator)
        w = torch.randn(n, k, device=device, dtype=torch.float32, generator=generator)
        # Symmetric INT4 per (row, group of 64 along K), as nunchaku's converters quantize weights.
        scale = (w.view(n, k // GROUP, GROUP).abs().amax(dim=-1) / 7.0).clamp_min(1e-8).to(dtype)
        expanded = scale.float().repeat_interleave(GROUP, dim=1)
        codes = torch.round(w / expanded).clamp_(-8, 7).to(torch.int32)
        w_dequant = codes.float() * expanded
        packer = packer_module.NunchakuWeightPacker(bits=4)
        qweight = packer.pack_weight(packer.pad_weight(codes))
        wscales = packer.pack_scale(packer.pad_scale(scale.view(n, 1, k // GROUP, 1), group_size=GROUP),
                                    group_size=GROUP)
        # Zero low-rank factors and unit smoothing are layout-invariant, so they need no packing.
        lora_down = torch.zeros(k, RANK, device=device, dtype=dtype)
        lora_up = torch.zeros(n, RANK, device=device, dtype=dtype)
        smooth = torch.ones(k, device=device, dtype=dtype)
        out = torch.empty(m, n, device=device, dtype=dtype)

        def w4a4() -> Any:
            qx, ascales, lora_act = quantize_ops.svdq_quantize_w4a4_act_fuse_lora_cuda(
                x, lora_down=lora_down, smooth=smooth, fp4=False)
            gemm_ops.svdq_gemm_w4a4_cuda(act=qx, wgt=qweight, out=out, ascales=ascales, wscales=wscales,
                                         lora_act_in=lora_act, lora_up=lora_up, fp4=False)
            return out

        w4a4()
        torch.cuda.synchronize()
        reference = x.float() @ w_dequant.t()
        error = _relative_error(torch, out[:m], reference)
        # The activation quantizer's own rounding, emulated, should bring the two much closer.
        xs = x.float().view(m, k // GROUP, GROUP)
        x_scale = (xs.abs().amax(dim=-1, keepdim=True) / 7.0).clamp_min(1e-8).to(dtype).float()
        x_dequant = (torch.round(xs / x_scale).clamp_(-8, 7) * x_scale).view(m, k)
        emulated_error = _relative_error(torch, out[:m], x_dequant @ w_dequant.t())
        del reference, x_dequant, xs, w, expanded, codes
        w_bf16 = w_dequant.to(dtype)
        bf16_out = torch.empty(m, n, device=device, dtype=dtype)
        timing = host_timing.settings(gemm)
        w4a4_ms, bf16_ms = host_timing.paired_median_ms(
            torch, w4a4, lambda: torch.matmul(x, w_bf16.t(), out=bf16_out), **timing)
        finite = bool(torch.isfinite(out).all())
    torch.cuda.empty_cache()
    return {
        "shape": [m, n, k], "rank": RANK, "group_size": GROUP,
        "relative_error": round(error, 5), "emulated_relative_error": round(emulated_error, 5), "finite": finite,
        "w4a4_ms": round(w4a4_ms, 4), "bf16_ms": round(bf16_ms, 4),
        "w4a4_tops": round(host_timing.tflops(m, n, k, w4a4_ms), 1),
        "bf16_tflops": round(host_timing.tflops(m, n, k, bf16_ms), 1),
        "speedup": round(bf16_ms / w4a4_ms, 3),
    }


def fp8_vs_bf16(torch: Any, index: int, gemm: dict[str, Any]) -> dict[str, Any]:
    """torch._scaled_mm in e4m3 with per-tensor scales vs BF16 of the same shape."""
    if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        return {"unsupported": f"torch {torch.__version__} has no torch._scaled_mm / float8_e4m3fn"}
    size = int(gemm.get("size", 8192))
    m = n = k = size
    device = torch.device("cuda", index)
    dtype = torch.bfloat16
    fp8 = torch.float8_e4m3fn
    fp8_max = float(torch.finfo(fp8).max)
    with torch.cuda.device(device):
        generator = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(m, k, device=device, dtype=dtype, generator=generator)
        w = torch.randn(n, k, device=device, dtype=dtype, generator=generator)
        scale_a = (a.abs().amax().float() / fp8_max).clamp_min(1e-12)
        scale_w = (w.abs().amax().float() / fp8_max).clamp_min(1e-12)
        a8 = (a.float() / scale_a).to(fp8)
        w8 = (w.float() / scale_w).to(fp8)
        b8 = w8.t()  # _scaled_mm wants its second operand column-major

        def scaled() -> Any:
            result = torch._scaled_mm(a8, b8, scale_a=scale_a, scale_b=scale_w, out_dtype=dtype)
            return result[0] if isinstance(result, tuple) else result  # torch < 2.5 also returned amax

        out = scaled()
        torch.cuda.synchronize()
        reference = (a8.float() * scale_a) @ (w8.float() * scale_w).t()
        error = _relative_error(torch, out, reference)
        del reference
        quantization_error = _relative_error(torch, out, a.float() @ w.float().t())
        finite = bool(torch.isfinite(out).all())
        del out
        bf16_out = torch.empty(m, n, device=device, dtype=dtype)
        timing = host_timing.settings(gemm)
        fp8_ms, bf16_ms = host_timing.paired_median_ms(
            torch, scaled, lambda: torch.matmul(a, w.t(), out=bf16_out), **timing)
    torch.cuda.empty_cache()
    return {
        "shape": [m, n, k], "scaling": "per-tensor", "fp8_dtype": "float8_e4m3fn", "out_dtype": "bfloat16",
        "relative_error": round(error, 5), "quantization_error": round(quantization_error, 5), "finite": finite,
        "fp8_ms": round(fp8_ms, 4), "bf16_ms": round(bf16_ms, 4),
        "fp8_tflops": round(host_timing.tflops(m, n, k, fp8_ms), 1),
        "bf16_tflops": round(host_timing.tflops(m, n, k, bf16_ms), 1),
        "speedup": round(bf16_ms / fp8_ms, 3),
    }
