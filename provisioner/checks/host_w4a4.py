"""The W4A4 GEMM through nunchaku's own layer, on data its quantizer reproduces exactly.

`SVDQW4A4Linear` gets weights packed by nunchaku's `NunchakuWeightPacker` (as nunchaku's converters pack
them), a zero low-rank branch and unit smoothing. Every activation group holds integer grid codes times a
power-of-two scale and one code of the largest magnitude, so the layer's own activation quantizer
(scale = amax / qmax, round to nearest) finds exactly those codes and scales. The layer's output must then
equal an FP32 matmul of the dequantized operands up to the kernel's bf16 roundings; a wrong layout, scale
or arch gives errors near 1. Timed: the layer's forward (quantize + GEMM) vs torch's BF16 matmul.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import host_timing

RANK = 32  # the low-rank width of nunchaku's FLUX models; the branch is zero here
# (tokens, in_features, out_features): FLUX.1's attention/MLP projections at 1024x1024 (4096 image tokens).
DEFAULT_SHAPES = ((4096, 3072, 3072), (4096, 3072, 12288))
# The layer's precision names, their activation group and the largest grid magnitude.
GRIDS = {"int4": ("int4", 64, 7.0), "fp4": ("nvfp4", 16, 6.0)}
# e2m1 magnitudes by 3-bit code (NVFP4's element grid); the sign is bit 3 of the nibble.
E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def layer_api(version: str | None) -> tuple[Any, Any] | str:
    """(SVDQW4A4Linear, NunchakuWeightPacker), or why this nunchaku has no such layer."""
    label = f"nunchaku {version or '(unknown version)'}"
    try:
        linear = importlib.import_module("nunchaku.models.linear")
        packer = importlib.import_module("nunchaku.lora.flux.packer")
    except ImportError as exc:
        return (f"{label} has no nunchaku.models.linear / nunchaku.lora.flux.packer ({exc}); the layer check "
                "needs nunchaku >= 1.0.0")
    layer_class = getattr(linear, "SVDQW4A4Linear", None)
    packer_class = getattr(packer, "NunchakuWeightPacker", None)
    if layer_class is None or packer_class is None:
        missing = "SVDQW4A4Linear" if layer_class is None else "NunchakuWeightPacker"
        return f"{label} has no {missing}; the layer check needs nunchaku >= 1.0.0"
    return layer_class, packer_class


def shapes(gemm: dict[str, Any]) -> list[tuple[int, int, int]]:
    return [(int(s[0]), int(s[1]), int(s[2])) for s in gemm.get("w4a4_shapes") or DEFAULT_SHAPES]


def w4a4_layer_check(torch: Any, index: int, precision: str | None, gemm: dict[str, Any],
                     version: str | None) -> dict[str, Any]:
    """Per shape: errors vs the FP32 and BF16 references, finiteness, and the timings."""
    precision = precision or "int4"
    api = layer_api(version)
    if isinstance(api, str):
        return {"unsupported": api, "precision": precision}
    if precision == "fp4" and not hasattr(torch, "float8_e4m3fn"):
        return {"unsupported": f"torch {torch.__version__} has no float8_e4m3fn for NVFP4 scales",
                "precision": precision}
    device = torch.device("cuda", index)
    results = []
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the FP32 reference must be FP32
    try:
        with torch.cuda.device(device):
            for seed, (tokens, k, n) in enumerate(shapes(gemm)):
                results.append(_one_shape(torch, device, api, precision, tokens, k, n, gemm, seed))
                torch.cuda.empty_cache()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
    return {"precision": precision, "layer": "nunchaku.models.linear.SVDQW4A4Linear",
            "packer": "nunchaku.lora.flux.packer.NunchakuWeightPacker", "rank": RANK,
            "group_size": GRIDS[precision][1], "shapes": results}


def _one_shape(torch: Any, device: Any, api: tuple[Any, Any], precision: str, tokens: int, k: int, n: int,
               gemm: dict[str, Any], seed: int) -> dict[str, Any]:
    layer_class, packer_class = api
    name, group, _qmax = GRIDS[precision]
    generator = torch.Generator(device=device).manual_seed(seed)
    x_dequant = _activations(torch, device, generator, tokens, k, precision)
    w_codes, w_scales, w_dequant = _weights(torch, device, generator, n, k, precision)
    x = x_dequant.to(torch.bfloat16)  # exact: every value has at most 4 significant bits
    layer = layer_class(in_features=k, out_features=n, rank=RANK, bias=False, precision=name,
                        torch_dtype=torch.bfloat16, device=device)
    packer = packer_class(bits=4)
    with torch.no_grad():
        layer.qweight.data.copy_(packer.pack_weight(packer.pad_weight(w_codes)))
        scale = packer.pad_scale(w_scales.view(n, 1, k // group, 1), group_size=group)
        layer.wscales.data.copy_(packer.pack_scale(scale, group_size=group).to(layer.wscales.dtype))
        layer.smooth_factor.data.fill_(1.0)
        layer.smooth_factor_orig.data.fill_(1.0)
        zero_down = torch.zeros(RANK, k, device=device, dtype=torch.bfloat16)
        zero_up = torch.zeros(n, RANK, device=device, dtype=torch.bfloat16)
        layer.proj_down.data.copy_(packer.pack_lowrank_weight(zero_down, down=True))
        layer.proj_up.data.copy_(packer.pack_lowrank_weight(zero_up, down=False))
        if getattr(layer, "wcscales", None) is not None:
            layer.wcscales.data.fill_(1.0)
        batch = x.view(1, tokens, k)
        out = layer(batch).view(tokens, n)
        torch.cuda.synchronize()
        reference = x_dequant @ w_dequant.t()
        w_bf16 = w_dequant.to(torch.bfloat16)  # exact too (at most 8 significant bits)
        bf16_out = torch.matmul(x, w_bf16.t())
        finite = bool(torch.isfinite(out).all())
        measured = {
            "shape": {"tokens": tokens, "in_features": k, "out_features": n},
            "relative_error": _relative(torch, out, reference),
            "max_abs_error": round(float((out.float() - reference).abs().max()), 6),
            "reference_max_abs": round(float(reference.abs().max()), 4),
            "bf16_relative_error": _relative(torch, out, bf16_out.float()),
            "bf16_vs_fp32_error": _relative(torch, bf16_out, reference),
            "finite": finite,
        }
        del reference, w_dequant, x_dequant
        result = torch.empty(tokens, n, device=device, dtype=torch.bfloat16)
        layer_ms, bf16_ms = host_timing.paired_median_ms(
            torch, lambda: layer(batch), lambda: torch.matmul(x, w_bf16.t(), out=result), **host_timing.settings(gemm))
    measured.update({
        "w4a4_ms": round(layer_ms, 4), "bf16_ms": round(bf16_ms, 4),
        "w4a4_tops": round(host_timing.tflops(tokens, n, k, layer_ms), 1),
        "bf16_tflops": round(host_timing.tflops(tokens, n, k, bf16_ms), 1),
        "speedup": round(bf16_ms / layer_ms, 3),
    })
    return measured


def _relative(torch: Any, out: Any, ref: Any) -> float:
    value = torch.linalg.vector_norm(out.float() - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-30)
    return round(float(value), 6)


def _activations(torch: Any, device: Any, generator: Any, m: int, k: int, precision: str) -> Any:
    """FP32 activations on the grid: per group of the quantizer, codes times a power of two, with one code
    of the grid's largest magnitude, so amax / qmax is that power of two exactly (also in bf16 and fp8)."""
    _name, group, qmax = GRIDS[precision]
    groups = k // group
    if precision == "int4":
        codes = torch.randint(-7, 8, (m, groups, group), generator=generator, device=device).float()
    else:
        codes = _e2m1_values(torch, torch.randint(0, 16, (m, groups, group), generator=generator, device=device))
    where = torch.randint(0, group, (m, groups, 1), generator=generator, device=device)
    sign = torch.randint(0, 2, (m, groups, 1), generator=generator, device=device).float() * 2 - 1
    codes.scatter_(2, where, sign * qmax)
    exponents = torch.randint(-3, 1, (m, groups, 1), generator=generator, device=device).float()
    return (codes * torch.pow(2.0, exponents)).view(m, k)


def _weights(torch: Any, device: Any, generator: Any, n: int, k: int, precision: str) -> tuple[Any, Any, Any]:
    """(codes as the packer wants them, per-group scales (n, k // group) in bf16, FP32 dequantized weights).

    Scales carry 4 significant bits ((8 + m) / 8 * 2^e), so they are exact in bf16 and in fp8 e4m3, and so
    is each dequantized weight."""
    _name, group, _qmax = GRIDS[precision]
    groups = k // group
    if precision == "int4":
        codes = torch.randint(-8, 8, (n, k), generator=generator, device=device, dtype=torch.int32)
        values = codes.float()
    else:  # e2m1 nibbles, as nunchaku's NVFP4 weights store them
        codes = torch.randint(0, 16, (n, k), generator=generator, device=device, dtype=torch.int32)
        values = _e2m1_values(torch, codes)
    mantissa = torch.randint(8, 16, (n, groups), generator=generator, device=device).float() / 8
    exponents = torch.randint(-6, -2, (n, groups), generator=generator, device=device).float()
    scales = (mantissa * torch.pow(2.0, exponents)).to(torch.bfloat16)
    dequant = values * scales.float().repeat_interleave(group, dim=1)
    return codes, scales, dequant


def _e2m1_values(torch: Any, nibbles: Any) -> Any:
    table = torch.tensor(E2M1, device=nibbles.device)
    magnitude = table[(nibbles & 7).long()]
    return torch.where((nibbles & 8) != 0, -magnitude, magnitude)
