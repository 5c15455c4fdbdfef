"""The FP8 GEMM on random data, checked against a torch reference and timed against BF16."""

from __future__ import annotations

from typing import Any

from . import host_timing


def _relative_error(torch: Any, out: Any, ref: Any) -> float:
    return float(torch.linalg.vector_norm(out.float() - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-12))


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
