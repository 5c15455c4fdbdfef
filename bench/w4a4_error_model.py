"""Calibrate the W4A4 check's error bound: the check's own grid-exact data, run through a torch model of
nunchaku's INT4 arithmetic (v1.2.1 gemm_w4a4_block with USE_FP32_ACCUM=false: each 64-group's exact int32
dot product converted to bf16, times the bf16 product of the two scales, accumulated by bf16 FMAs), and
compared with the FP32 matmul of the dequantized operands the check uses as its reference.

Needs torch (a GPU if there is one):  python bench/w4a4_error_model.py [--tokens 1024] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.checks import host_w4a4  # stdlib-only module; torch is passed in

GROUP = 64
# As in provisioner/catalog/nunchaku.yaml kernel_check.error.
SAFETY = 3.0
BF16_ROUNDING = 0.00166


def model_output(torch, x_dequant, w_codes, w_scales, x_scales, x_codes):  # type: ignore[no-untyped-def]
    """The kernel's INT4 result, group by group in its accumulation order."""
    m, k = x_codes.shape
    n = w_codes.shape[0]
    acc = torch.zeros(m, n, device=x_codes.device, dtype=torch.bfloat16)
    for g in range(k // GROUP):
        cols = slice(g * GROUP, (g + 1) * GROUP)
        psum = x_codes[:, cols] @ w_codes[:, cols].t()  # exact: |psum| <= 64 * 7 * 8 < 2^24
        product = (x_scales[:, g:g + 1].to(torch.bfloat16) * w_scales[:, g].view(1, n)).float()
        acc = (psum.to(torch.bfloat16).float() * product + acc.float()).to(torch.bfloat16)
    return acc


def calibrate(torch, tokens: int, k: int, n: int, device) -> dict[str, float]:  # type: ignore[no-untyped-def]
    generator = torch.Generator(device=device).manual_seed(0)
    x_dequant = host_w4a4._activations(torch, device, generator, tokens, k, "int4")
    w_codes, w_scales, w_dequant = host_w4a4._weights(torch, device, generator, n, k, "int4")
    groups = x_dequant.view(tokens, k // GROUP, GROUP)
    x_scales = groups.abs().amax(dim=-1) / 7.0  # what the layer's quantizer finds: a power of two
    x_codes = (groups / x_scales.unsqueeze(-1)).view(tokens, k)
    assert bool((x_codes == x_codes.round()).all()) and float(x_codes.abs().max()) <= 7
    exact = bool((x_dequant.to(torch.bfloat16).float() == x_dequant).all())
    reference = x_dequant @ w_dequant.t()
    out = model_output(torch, x_dequant, w_codes.float(), w_scales, x_scales, x_codes)
    bf16 = (x_dequant.to(torch.bfloat16) @ w_dequant.to(torch.bfloat16).t()).float()
    norm = float(torch.linalg.vector_norm(reference))
    bound = SAFETY * BF16_ROUNDING * math.sqrt(1 + (k // GROUP) / 2)
    return {
        "tokens": tokens, "in_features": k, "out_features": n, "activations_exact_in_bf16": exact,
        "model_relative_error": float(torch.linalg.vector_norm(out.float() - reference)) / norm,
        "bf16_matmul_relative_error": float(torch.linalg.vector_norm(bf16 - reference)) / norm,
        "bound": round(bound, 5),
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [calibrate(torch, args.tokens, k, n, device)
            for k, n in ((3072, 3072), (3072, 12288), (12288, 3072), (1024, 1024))]
    for row in rows:
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
